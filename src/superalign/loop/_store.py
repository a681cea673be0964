"""The run store: one SQLite database (WAL) per run directory.

Each phase of a round writes all its rows and its completion marker in one
transaction, so a process killed at any moment leaves either the whole phase or none
of it: resuming redoes the unfinished phase and never duplicates a row. One process
at a time may write a run; a second gets a clear error instead of a corrupt database.

Every store carries the schema version that laid it out (``meta.schema_version``).
Opening one checks it before anything is written: a newer or unknown version, or tables
whose columns are not those of the version declared, are refused with a ``StoreError``
that leaves the file untouched; an older version is brought up to date by the migration
steps (``_MIGRATIONS``) when opened for writing, and read through a migrated copy in
memory otherwise.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, Field

from ..errors import StoreBusyError, StoreError
from ..types import (
    Critique,
    HumanLabel,
    Judged,
    Judgement,
    Label,
    Preference,
    Query,
    Response,
    Verdict,
)

# The layout of schema version 1, as the first release wrote it (one statement each).
_V1_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS phases (
    round INTEGER NOT NULL, phase TEXT NOT NULL, finished REAL NOT NULL, seconds REAL,
    PRIMARY KEY (round, phase))""",
    """CREATE TABLE IF NOT EXISTS queries (
    id TEXT PRIMARY KEY, round INTEGER NOT NULL, tier TEXT NOT NULL, hash TEXT NOT NULL,
    intent TEXT NOT NULL, category TEXT NOT NULL, style TEXT NOT NULL, producer TEXT NOT NULL,
    json TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS queries_round ON queries (round, tier)",
    """CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY, query_id TEXT NOT NULL, round INTEGER NOT NULL, tier TEXT NOT NULL,
    model TEXT NOT NULL, text TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS responses_round ON responses (round, tier)",
    """CREATE TABLE IF NOT EXISTS critiques (
    response_id TEXT NOT NULL, critic TEXT NOT NULL, version TEXT NOT NULL, json TEXT NOT NULL,
    PRIMARY KEY (response_id, critic))""",
    """CREATE TABLE IF NOT EXISTS labels (
    response_id TEXT PRIMARY KEY, producer TEXT NOT NULL, json TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS human_labels (
    response_id TEXT PRIMARY KEY, verdict TEXT NOT NULL, source TEXT NOT NULL,
    json TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS pending_labels (
    response_id TEXT PRIMARY KEY, round INTEGER NOT NULL, priority REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS preferences (
    id INTEGER PRIMARY KEY AUTOINCREMENT, round INTEGER NOT NULL, producer TEXT NOT NULL,
    json TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS training (
    round INTEGER PRIMARY KEY, algorithm TEXT NOT NULL, json TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS metrics (
    round INTEGER NOT NULL, tier TEXT NOT NULL, name TEXT NOT NULL, value REAL,
    lo REAL, hi REAL, n INTEGER, PRIMARY KEY (round, tier, name))""",
    """CREATE TABLE IF NOT EXISTS state (
    key TEXT NOT NULL, round INTEGER NOT NULL, json TEXT NOT NULL, PRIMARY KEY (key, round))""",
)
# The migration steps: ``_MIGRATIONS[n]`` turns a store of schema version n into version
# n + 1. A step runs in one transaction with the version bump, and only adds (tables,
# indexes, columns with a default) or copies: nothing stored is dropped. A change to the
# layout is a new step here, never an edit of an earlier one.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (  # 1 -> 2: multi-turn conversations
        """CREATE TABLE IF NOT EXISTS transcripts (
        id TEXT PRIMARY KEY, round INTEGER NOT NULL, tier TEXT NOT NULL, query_id TEXT,
        outcome TEXT NOT NULL, json TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS transcripts_round ON transcripts (round, tier)",
    ),
}
SCHEMA_VERSION = 1 + len(_MIGRATIONS)  # the version this superalign writes

# The label inbox's table: created by the first labeller (``AnnotationLog``), not by the
# loop, so a run nobody labelled on the web has none (read as empty).
_ANNOTATIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, item TEXT NOT NULL,
    answer TEXT NOT NULL, reason TEXT NOT NULL, annotator TEXT NOT NULL,
    assisted INTEGER NOT NULL, created REAL NOT NULL, source TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS annotations_item ON annotations (kind, item);
"""


class Annotation(BaseModel):
    """One person's answer. ``kind="point"``: ``item`` is a response id and ``answer`` a
    verdict. ``kind="pair"``: ``item`` is a preference id and ``answer`` one of
    ``PAIR_CHOICES`` (the stored chosen response is better, the rejected one, a tie, or
    both bad)."""

    kind: Literal["point", "pair"]
    item: str
    answer: str
    annotator: str
    reason: str = ""
    assisted: bool = False
    created: float = Field(default_factory=time.time)
    source: str = "web"


class Store:
    """Rows of one run. Use ``with store.phase(round, name):`` to write a phase atomically."""

    def __init__(self, path: str | Path, *, write: bool = True) -> None:
        """``write=False`` opens the database read-only (no lock, nothing created), so
        reading commands work on a run another process writes or on a read-only disk."""
        self.path = Path(path)
        self._lock_file: Any = None
        self._in_tx = False
        if self.path.is_dir():
            raise StoreError(
                f"{self.path} is a directory, not a run database; point at the run directory "
                "that holds it"
            )
        if not write and not self.path.is_file():
            raise StoreError(f"no run store at {self.path}; is this a run directory?")
        if write:
            self._lock()
        try:
            self.db = self._open(write)
        except sqlite3.DatabaseError as e:
            self._unlock()
            raise StoreError(
                f"{self.path} cannot be used as a run database ({e}); it may be truncated, "
                "corrupt or not a superalign database. Nothing was changed."
            ) from e
        except BaseException:
            self._unlock()
            raise

    def _open(self, write: bool) -> sqlite3.Connection:
        """The connection, once the file is known to be a run store this superalign reads:
        its schema version checked (a newer or unknown one refused) and its tables matched
        against that version's layout before anything is written. An older store is
        migrated in place when opened for writing, and read through a migrated copy in
        memory otherwise (the file stays as it is)."""
        db = self._connect(write)
        try:
            version = _checked_version(db, self.path, empty_ok=write)
            if write:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA foreign_keys=ON")
                if version is None:  # a new (empty) database
                    with _immediate(db):
                        _lay_out(db, SCHEMA_VERSION)
                        _set_version(db, SCHEMA_VERSION)
                elif version < SCHEMA_VERSION:
                    _migrate(db, version)
            elif version is not None and version < SCHEMA_VERSION and not _laid_out(db):
                return _migrated_copy(db, version)
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self, write: bool) -> sqlite3.Connection:
        if write:  # nothing is written until the file has been checked (``_open``)
            return sqlite3.connect(self.path, timeout=30, isolation_level=None)
        uri = self.path.resolve().as_uri()
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30, isolation_level=None)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            # A WAL database on a read-only disk cannot create its -shm file; read it as
            # an immutable file instead (no writer can be active on a read-only disk).
            db = sqlite3.connect(
                f"{uri}?mode=ro&immutable=1", uri=True, timeout=30, isolation_level=None
            )
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db

    # -- locking -----------------------------------------------------------------

    def _lock(self) -> None:
        # Keyed on the real database file: a run reached through a symbolic link (the
        # database, or a directory above it) shares its lock with the run it points at.
        real = self.path.resolve()
        lock_path = real.with_suffix(".lock")
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
            f = open(lock_path, "a+")
        except OSError as e:
            raise StoreError(
                f"cannot write the run {self.path.parent} ({e.strerror or e}); reading "
                "commands (report --output, export --output, label --list) work read-only"
            ) from e
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise StoreError(
                f"run {self.path.parent} is being written by another process (pid {holder}); "
                "wait for it to finish or stop it before resuming"
            ) from e
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f

    def close(self) -> None:
        self.db.close()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions and phases -------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_tx:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._in_tx = False

    @contextmanager
    def phase(self, round: int, name: str, started: float | None = None) -> Iterator[None]:
        """Write a phase's rows and its completion marker in one transaction."""
        with self.transaction():
            yield
            _test_pause(round, name)
            seconds = time.time() - started if started else None
            self.db.execute(
                "INSERT INTO phases VALUES (?, ?, ?, ?)", (round, name, time.time(), seconds)
            )

    def done(self, round: int, name: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM phases WHERE round = ? AND phase = ?", (round, name)
        ).fetchone()
        return row is not None

    def finished_phases(self) -> list[tuple[int, str, float | None]]:
        return self.db.execute(
            "SELECT round, phase, seconds FROM phases ORDER BY finished"
        ).fetchall()

    # -- meta and state ----------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put_state(self, key: str, round: int, value: Any) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO state VALUES (?, ?, ?)", (key, round, json.dumps(value))
        )

    def states(self, prefix: str) -> list[tuple[str, int, Any]]:
        """Every (key, round, value) whose key starts with ``prefix``, by round."""
        rows = self.db.execute(
            "SELECT key, round, json FROM state WHERE substr(key, 1, ?) = ? ORDER BY round",
            (len(prefix), prefix),
        )
        return [(k, r, json.loads(v)) for k, r, v in rows]

    def latest_state(self, key: str, before: int | None = None) -> Any:
        sql = "SELECT json FROM state WHERE key = ?"
        args: list[Any] = [key]
        if before is not None:
            sql += " AND round < ?"
            args.append(before)
        row = self.db.execute(sql + " ORDER BY round DESC LIMIT 1", args).fetchone()
        return json.loads(row[0]) if row else None

    # -- queries and responses ---------------------------------------------------------------

    def add_queries(self, queries: Iterable[Query], producer: str) -> None:
        self.db.executemany(
            "INSERT INTO queries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    q.id,
                    q.round,
                    q.tier.value,
                    q.hash,
                    q.intent.value,
                    q.category,
                    q.style,
                    producer,
                    q.model_dump_json(),
                )
                for q in queries
            ],
        )

    def queries(self, round: int | None = None, tier: str | None = None) -> list[Query]:
        sql, args = _where("SELECT json FROM queries", round=round, tier=tier)
        return [
            Query.model_validate_json(r[0]) for r in self.db.execute(sql + " ORDER BY rowid", args)
        ]

    def query_hashes(self, tiers: Sequence[str]) -> set[str]:
        marks = ",".join("?" * len(tiers))
        rows = self.db.execute(f"SELECT hash FROM queries WHERE tier IN ({marks})", list(tiers))
        return {r[0] for r in rows}

    def add_responses(self, responses: Iterable[Response], tier: str) -> None:
        self.db.executemany(
            "INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?)",
            [(r.id, r.query_id, r.round, tier, r.model, r.text) for r in responses],
        )

    def responses(self, round: int | None = None, tier: str | None = None) -> list[Response]:
        sql, args = _where(
            "SELECT id, query_id, round, model, text FROM responses", round=round, tier=tier
        )
        return [
            Response(id=i, query_id=q, round=rd, model=m, text=t)
            for i, q, rd, m, t in self.db.execute(sql + " ORDER BY rowid", args)
        ]

    # -- critiques, labels, human labels ------------------------------------------------------

    def response_groups(self, tier_prefix: str = "") -> list[tuple[int, str]]:
        """The (round, tier) pairs that hold responses, tiers starting with ``tier_prefix``."""
        rows = self.db.execute(
            "SELECT DISTINCT round, tier FROM responses WHERE substr(tier, 1, ?) = ? "
            "ORDER BY round, tier",
            (len(tier_prefix), tier_prefix),
        )
        return [(r, t) for r, t in rows]

    def add_critiques(self, response_id: str, critiques: Sequence[Critique]) -> None:
        self.db.executemany(
            "INSERT INTO critiques VALUES (?, ?, ?, ?)",
            [(response_id, c.critic, c.version, c.model_dump_json()) for c in critiques],
        )

    def critiques(self, response_id: str) -> list[Critique]:
        return _read_critiques(self.db, response_id)

    def add_labels(self, labels: Sequence[Label], producer: str) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO labels VALUES (?, ?, ?)",
            [(lab.response_id, producer, lab.model_dump_json()) for lab in labels],
        )

    def label(self, response_id: str) -> Label | None:
        row = self.db.execute(
            "SELECT json FROM labels WHERE response_id = ?", (response_id,)
        ).fetchone()
        return Label.model_validate_json(row[0]) if row else None

    def add_human_label(self, label: HumanLabel) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO human_labels VALUES (?, ?, ?, ?)",
            (label.response_id, label.verdict.value, label.source, label.model_dump_json()),
        )
        self.db.execute("DELETE FROM pending_labels WHERE response_id = ?", (label.response_id,))

    def human_labels(self) -> dict[str, Verdict]:
        rows = self.db.execute("SELECT response_id, verdict FROM human_labels")
        return {rid: Verdict(v) for rid, v in rows}

    def add_pending(self, round: int, items: Sequence[tuple[str, float]]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO pending_labels VALUES (?, ?, ?)",
            [(rid, round, prio) for rid, prio in items],
        )

    def pending(self) -> list[tuple[str, int]]:
        return self.db.execute(
            "SELECT response_id, round FROM pending_labels ORDER BY round, priority DESC"
        ).fetchall()

    def response_and_query(self, response_id: str) -> tuple[Response, Query] | None:
        """One stored response with the query it answers; None when not in the run."""
        row = self.db.execute(
            "SELECT r.id, r.query_id, r.round, r.model, r.text, q.json FROM responses r "
            "JOIN queries q ON q.id = r.query_id WHERE r.id = ?",
            (response_id,),
        ).fetchone()
        if row is None:
            return None
        i, q, rd, m, t, query = row
        return Response(id=i, query_id=q, round=rd, model=m, text=t), Query.model_validate_json(
            query
        )

    # -- the label inbox (annotations written by AnnotationLog) ----------------------------

    def annotations(self, kind: str | None = None) -> list[Annotation]:
        """People's answers, oldest first; none where nobody labelled on the web yet."""
        return _read_annotations(self.db, kind)

    def annotated_items(self, kind: str, annotator: str | None = None) -> list[str]:
        """The distinct items of ``kind`` someone (or ``annotator``) answered."""
        if not self._has_table("annotations"):
            return []
        sql, args = "SELECT DISTINCT item FROM annotations WHERE kind = ?", [kind]
        if annotator is not None:
            sql += " AND annotator = ?"
            args.append(annotator)
        return [r[0] for r in self.db.execute(sql, args)]

    # -- judged views ---------------------------------------------------------------------

    def judged(self, round: int | None = None, tier: str | None = None) -> list[Judged]:
        """Responses of a round and tier with their query, critiques and label."""
        queries = {q.id: q for q in self.queries()}
        out = []
        for r in self.responses(round=round, tier=tier):
            label = self.label(r.id)
            if label is None:
                continue
            judgement = Judgement(critiques=self.critiques(r.id), label=label)
            out.append(Judged(query=queries[r.query_id], response=r, judgement=judgement))
        return out

    # -- multi-turn transcripts --------------------------------------------------------------

    def add_transcripts(
        self, round: int, tier: str, transcripts: Sequence[Any], query_ids: Sequence[str | None]
    ) -> None:
        """Every turn of each conversation (attack.Transcript), refused ones included;
        ``query_ids``: the stored query each one produced (its final turn), or None."""
        self.db.executemany(
            "INSERT INTO transcripts VALUES (?, ?, ?, ?, ?, ?)",
            [
                (t.id, round, tier, qid, t.outcome, t.model_dump_json())
                for t, qid in zip(transcripts, query_ids, strict=True)
            ],
        )

    def transcripts(self, round: int | None = None, tier: str | None = None) -> list[Any]:
        """Stored conversations (attack.Transcript) by round and tier, in order; empty for
        a run from before transcripts were stored."""
        from ..attack import Transcript

        if not self._has_table("transcripts"):
            return []
        sql, args = _where("SELECT json FROM transcripts", round=round, tier=tier)
        rows = self.db.execute(sql + " ORDER BY rowid", args)
        return [Transcript.model_validate_json(r[0]) for r in rows]

    def transcript_rounds(self) -> list[int]:
        """The rounds that stored conversations, ascending."""
        if not self._has_table("transcripts"):
            return []
        rows = self.db.execute("SELECT DISTINCT round FROM transcripts ORDER BY round")
        return [r[0] for r in rows]

    def _has_table(self, name: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    # -- preferences, training, metrics -------------------------------------------------------

    def add_preferences(self, round: int, prefs: Sequence[Preference], producer: str) -> None:
        self.db.executemany(
            "INSERT INTO preferences (round, producer, json) VALUES (?, ?, ?)",
            [(round, producer, p.model_dump_json()) for p in prefs],
        )

    def preferences(self, round: int | None = None) -> list[Preference]:
        sql, args = _where("SELECT json FROM preferences", round=round)
        return [
            Preference.model_validate_json(r[0])
            for r in self.db.execute(sql + " ORDER BY id", args)
        ]

    def preference(self, id: int) -> Preference | None:
        """The stored preference pair with this id (the label inbox's ``pair`` items)."""
        row = self.db.execute("SELECT json FROM preferences WHERE id = ?", (id,)).fetchone()
        return Preference.model_validate_json(row[0]) if row else None

    def latest_preferences(self) -> list[tuple[int, Preference]]:
        """The pairs of the last round that stored any, with their ids, in order."""
        rows = self.db.execute(
            "SELECT id, json FROM preferences WHERE round = (SELECT MAX(round) FROM preferences) "
            "ORDER BY id"
        )
        return [(i, Preference.model_validate_json(j)) for i, j in rows]

    def add_training(self, round: int, algorithm: str, record: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO training VALUES (?, ?, ?)", (round, algorithm, json.dumps(record))
        )

    def training(self) -> list[dict[str, Any]]:
        """Training records by round; ``path`` is relative to the run directory (rows of
        older runs may hold a path relative to the working directory, or absolute)."""
        rows = self.db.execute("SELECT json FROM training ORDER BY round")
        return [json.loads(r[0]) for r in rows]

    def add_metrics(self, round: int, tier: str, metrics: dict[str, Any]) -> None:
        """``metrics``: name -> object with value, lo, hi, n (or a plain number)."""
        rows = []
        for name, m in metrics.items():
            if isinstance(m, int | float):
                rows.append((round, tier, name, float(m), None, None, None))
            else:
                rows.append((round, tier, name, m.value, m.lo, m.hi, m.n))
        self.db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def delete_metrics(self, round: int, name_like: str) -> None:
        """Drop the metrics of ``round`` whose name matches the SQL LIKE ``name_like``."""
        self.db.execute("DELETE FROM metrics WHERE round = ? AND name LIKE ?", (round, name_like))

    def backup_to(self, path: str | Path) -> None:
        """A consistent copy of the whole database at ``path`` (SQLite's online backup)."""
        target = sqlite3.connect(path)
        try:
            self.db.backup(target)
        finally:
            target.close()

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file, so the file alone is the run."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def metrics(self) -> list[dict[str, Any]]:
        cols = ("round", "tier", "name", "value", "lo", "hi", "n")
        rows = self.db.execute("SELECT * FROM metrics ORDER BY round, tier, name")
        return [dict(zip(cols, r, strict=False)) for r in rows]

    def counts(self) -> dict[str, int]:
        """Row count per table, for tests and `superalign run` summaries."""
        tables = (
            "queries",
            "responses",
            "critiques",
            "labels",
            "human_labels",
            "preferences",
            "training",
            "metrics",
            "phases",
            "transcripts",
        )
        return {
            t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            if self._has_table(t)
            else 0
            for t in tables
        }


class AnnotationLog:
    """The label inbox: appends people's answers to a run's ``annotations`` table beside a
    running loop, over its own connection and without the run's lock (rows are only ever
    appended; a busy database is waited for up to 30 s, then ``StoreBusyError``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"no run store at {self.path}; is this a run directory?")
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            self.db.execute("PRAGMA busy_timeout=30000")
            # Any schema version up to this superalign's: the tables read and written here
            # are the same in all of them. An empty or foreign file is refused unwritten.
            _checked_version(self.db, self.path, empty_ok=False)
            self.db.executescript(_ANNOTATIONS_SCHEMA)
        except StoreError:
            self.db.close()
            raise
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise StoreError(
                f"{self.path} cannot take labels ({e}); check that the run directory is "
                "writable and the file is a superalign run database"
            ) from e

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has_item(self, kind: str, item: str) -> bool:
        """Whether ``item`` names a stored response (``point``) or preference pair (``pair``)."""
        table = "responses" if kind == "point" else "preferences"
        try:
            found = self.db.execute(f"SELECT 1 FROM {table} WHERE id = ?", (item,)).fetchone()
        except sqlite3.OperationalError as e:
            raise StoreBusyError(str(e)) from e
        return found is not None

    def append(self, a: Annotation) -> None:
        """Append one answer as given (the caller checks and cleans it)."""
        try:
            self.db.execute(
                "INSERT INTO annotations (kind, item, answer, reason, annotator, assisted, "
                "created, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (a.kind, a.item, a.answer, a.reason, a.annotator, int(a.assisted), a.created,
                 a.source),
            )  # fmt: skip
        except sqlite3.OperationalError as e:  # the loop held the database for over 30 s
            raise StoreBusyError(str(e)) from e

    def annotations(self, kind: str | None = None) -> list[Annotation]:
        return _read_annotations(self.db, kind)

    def pending_ids(self) -> set[str]:
        """Responses the loop asked people about and has no label for yet (any round)."""
        return {r[0] for r in self.db.execute("SELECT response_id FROM pending_labels")}

    def critiques(self, response_ids: Iterable[str]) -> dict[str, list[Critique]]:
        return {rid: _read_critiques(self.db, rid) for rid in set(response_ids)}


def _read_critiques(db: sqlite3.Connection, response_id: str) -> list[Critique]:
    rows = db.execute(
        "SELECT json FROM critiques WHERE response_id = ? ORDER BY rowid", (response_id,)
    )
    return [Critique.model_validate_json(r[0]) for r in rows]


def _read_annotations(db: sqlite3.Connection, kind: str | None = None) -> list[Annotation]:
    known = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'annotations'"
    ).fetchone()
    if known is None:
        return []
    sql = "SELECT kind, item, answer, reason, annotator, assisted, created, source FROM annotations"
    rows = db.execute(
        sql + (" WHERE kind = ? ORDER BY id" if kind else " ORDER BY id"), (kind,) if kind else ()
    )
    return [
        Annotation(
            kind=k, item=i, answer=ans, reason=r, annotator=who, assisted=bool(s), created=c,
            source=src,
        )
        for k, i, ans, r, who, s, c, src in rows
    ]  # fmt: skip


# -- schema versions -------------------------------------------------------------------


def _tables(db: sqlite3.Connection) -> set[str]:
    rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r[0] for r in rows if not r[0].startswith("sqlite_")}


def _columns(db: sqlite3.Connection, table: str) -> tuple[str, ...]:
    quoted = table.replace('"', '""')
    return tuple(r[1] for r in db.execute(f'PRAGMA table_info("{quoted}")'))


def _lay_out(db: sqlite3.Connection, version: int) -> None:
    """Create the tables of schema ``version`` in an empty database: version 1's, then
    each migration step up to ``version``."""
    for sql in _V1_SCHEMA:
        db.execute(sql)
    for step in range(1, version):
        for sql in _MIGRATIONS[step]:
            db.execute(sql)


@cache
def _layout(version: int) -> dict[str, tuple[str, ...]]:
    """Table -> column names of a store at schema ``version`` (built in memory)."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    try:
        _lay_out(db, version)
        return {t: _columns(db, t) for t in _tables(db)}
    finally:
        db.close()


@cache
def _annotations_layout() -> tuple[str, ...]:
    db = sqlite3.connect(":memory:", isolation_level=None)
    try:
        db.executescript(_ANNOTATIONS_SCHEMA)
        return _columns(db, "annotations")
    finally:
        db.close()


def _checked_version(db: sqlite3.Connection, path: Path, *, empty_ok: bool) -> int | None:
    """The schema version of the run store on ``db``, after checking that this superalign
    reads it and that its tables have the columns of that version; None for a database
    without any table when ``empty_ok`` (a new file). Only reads; raises ``StoreError``
    saying what was found and what to do."""
    tables = _tables(db)
    if not tables and empty_ok:
        return None
    unchanged = "Nothing was changed."
    if "meta" not in tables:
        raise StoreError(
            f"{path} is not a superalign run database (it has no meta table; empty, or "
            f"written by another program). {unchanged}"
        )
    if _columns(db, "meta") != _layout(1)["meta"]:
        raise StoreError(
            f"{path} is not a superalign run database (its meta table has the columns "
            f"{', '.join(_columns(db, 'meta'))}). {unchanged}"
        )
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    # Every release stored the version with the tables; a store without it is one whose
    # first open stopped half-way, laid out as version 1 (its tables are checked below).
    found = "1" if row is None else str(row[0])
    if not re.fullmatch(r"[1-9][0-9]{0,8}", found):
        raise StoreError(
            f"{path} has an unknown store schema version {found!r}; this superalign reads "
            f"versions 1 to {SCHEMA_VERSION} and writes version {SCHEMA_VERSION}. It was "
            "written by another program or changed by hand: open it with the program that "
            f"wrote it, or start a new run. {unchanged}"
        )
    version = int(found)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer superalign (store schema version {version}; "
            f"this superalign reads versions 1 to {SCHEMA_VERSION} and writes version "
            f"{SCHEMA_VERSION}). Upgrade superalign to open this run, or start a new run "
            f"with this one. {unchanged}"
        )
    expected = _layout(version)
    known = {**_layout(SCHEMA_VERSION), "annotations": _annotations_layout(), **expected}
    problems = [f"it lacks the table {t}" for t in sorted(set(expected) - tables)]
    for table in sorted(tables & set(known)):
        found_columns = _columns(db, table)
        if found_columns != known[table]:
            problems.append(
                f"its table {table} has the columns ({', '.join(found_columns)}) where "
                f"({', '.join(known[table])}) belong"
            )
    if problems:
        raise StoreError(
            f"{path} does not have the layout of store schema version {version} that it "
            f"declares: {'; '.join(problems)}. It was changed by hand or written by another "
            "program, and this superalign cannot read it safely; restore the file from a "
            f"copy, or start a new run. {unchanged}"
        )
    return version


def _laid_out(db: sqlite3.Connection, version: int = SCHEMA_VERSION) -> bool:
    """Whether every table of schema ``version`` is there with its columns (an older
    store whose migration would change nothing reads as it is)."""
    return all(_columns(db, t) == columns for t, columns in _layout(version).items())


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _set_version(db: sqlite3.Connection, version: int) -> None:
    db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version),))


def _migrate(db: sqlite3.Connection, found: int) -> None:
    """Bring a store of schema version ``found`` up to ``SCHEMA_VERSION``: every step and
    the new version in one transaction, so a failed migration leaves the store as it was."""
    with _immediate(db):
        for step in range(found, SCHEMA_VERSION):
            for sql in _MIGRATIONS[step]:
                db.execute(sql)
        _set_version(db, SCHEMA_VERSION)


def _migrated_copy(db: sqlite3.Connection, found: int) -> sqlite3.Connection:
    """A read-only view of an older store: an in-memory copy migrated to this version
    (``db`` is closed; the file keeps its version until a write open migrates it)."""
    copy = sqlite3.connect(":memory:", isolation_level=None)
    try:
        db.backup(copy)
        _migrate(copy, found)
        copy.execute("PRAGMA query_only=ON")
    except BaseException:
        copy.close()
        raise
    finally:
        db.close()
    return copy


REQUIRED_TABLES = ("meta", "phases", "queries", "responses", "training", "metrics", "state")


def missing_for_resume(path: Path) -> list[str]:
    """What a run database lacks to be resumed (empty when it can be), read-only."""
    if not path.is_file():
        return [f"the database file {path.name}"]
    if path.stat().st_size == 0:
        return [f"everything: {path.name} is an empty file"]
    store = Store(path, write=False)  # a foreign, newer or altered store: its own error
    try:
        tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master")}
        missing = [f"table {t}" for t in REQUIRED_TABLES if t not in tables]
        if "meta" in tables:
            for key in ("schema_version", "config"):
                if store.meta(key) is None:
                    what = " (the config snapshot)" if key == "config" else ""
                    missing.append(f"meta {key!r}{what}")
        checkpoints = sorted(p.name for p in (path.parent / "checkpoints").glob("round-*"))
        if "phases" in tables and not store.finished_phases() and checkpoints:
            # Killed before round 0 finished is a fresh start; but checkpoints on disk
            # and no finished phase mean the database lost its rows (copied without
            # its -wal file after a crash, or replaced).
            missing.append(
                f"finished phases, yet checkpoints/ holds {', '.join(checkpoints[:3])}: its "
                "rows are lost (copied without its -wal file?)"
            )
        return missing
    except sqlite3.DatabaseError as e:
        return [f"a readable database ({e})"]
    finally:
        store.close()


def _test_pause(round: int, name: str) -> None:
    """Test hook: hold a phase's open transaction so a test can SIGKILL the process
    mid-phase (``SUPERALIGN_TEST_PAUSE_AT=round:phase``)."""
    if os.environ.get("SUPERALIGN_TEST_PAUSE_AT") == f"{round}:{name}":
        print(f"paused in {round}:{name}", flush=True)
        time.sleep(600)


def _where(sql: str, **filters: Any) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for col, val in filters.items():
        if val is not None:
            clauses.append(f"{col} = ?")
            args.append(val)
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    return sql, args
