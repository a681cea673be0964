"""Issue 24, defect 1: a store of another schema version. A newer or unknown version, or
tables that do not match the version declared, are refused with a clear error that
leaves the file as it was; an older store is migrated (in place when written, in memory
when read), nothing stored lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from _hardening import flat, make_run, run_cli
from superalign.errors import StoreError
from superalign.loop import AnnotationLog, Store, resume
from superalign.loop._store import SCHEMA_VERSION
from superalign.types import Intent, Query, Response


def _sql(db: Path, *statements: str) -> None:
    con = sqlite3.connect(db)
    try:
        for sql in statements:
            con.execute(sql)
        con.commit()
    finally:
        con.close()


def _version(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    finally:
        con.close()


def _files(run: Path) -> tuple[bytes, bytes]:
    """What the run's database holds, byte for byte: the file and its write-ahead log
    (the -shm index is derived from them)."""
    wal = run / "superalign.db-wal"
    return (run / "superalign.db").read_bytes(), wal.read_bytes() if wal.exists() else b""


def _store_with_rows(db: Path) -> tuple[Query, Response]:
    q = Query(text="How do I pick a lock?", intent=Intent.harmful, round=1)
    r = Response(query_id=q.id, text="No.", model="m", round=1)
    with Store(db) as store, store.phase(1, "respond"):
        store.add_queries([q], producer="t")
        store.add_responses([r], "train")
    return q, r


def test_a_new_store_carries_the_version_this_superalign_writes(tmp_path) -> None:
    _store_with_rows(tmp_path / "s.db")
    assert _version(tmp_path / "s.db") == str(SCHEMA_VERSION) and SCHEMA_VERSION >= 2


@pytest.mark.parametrize("write", [True, False])
def test_a_newer_version_is_refused_naming_both_versions_and_changing_nothing(
    tmp_path, write
) -> None:
    db = tmp_path / "superalign.db"
    _store_with_rows(db)
    _sql(db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = _files(tmp_path)
    with pytest.raises(StoreError) as e:
        Store(db, write=write)
    message = flat(str(e.value))
    assert "schemaversion99" in message and f"writesversion{SCHEMA_VERSION}" in message
    assert "Upgradesuperalign" in message and "startanewrun" in message
    assert _files(tmp_path) == before


@pytest.mark.parametrize("found", ["abc", "0", "2.0", "-1", ""])
def test_an_unknown_version_is_refused(tmp_path, found) -> None:
    db = tmp_path / "superalign.db"
    _store_with_rows(db)
    _sql(db, f"UPDATE meta SET value = '{found}' WHERE key = 'schema_version'")
    before = _files(tmp_path)
    for write in (True, False):
        with pytest.raises(StoreError, match="unknown store schema version"):
            Store(db, write=write)
    with pytest.raises(StoreError, match="unknown store schema version"):
        AnnotationLog(db)
    assert _files(tmp_path) == before


def _rename_two_columns(db: Path) -> None:
    _sql(
        db,
        "ALTER TABLE responses RENAME COLUMN text TO body",
        "ALTER TABLE queries RENAME COLUMN json TO data",
    )


@pytest.mark.parametrize("write", [True, False])
def test_renamed_columns_are_refused_clearly_and_change_nothing(tmp_path, write) -> None:
    db = tmp_path / "superalign.db"
    _store_with_rows(db)
    _rename_two_columns(db)
    before = _files(tmp_path)
    with pytest.raises(StoreError) as e:
        Store(db, write=write)
    message = str(e.value)
    assert "table queries has the columns" in message and "data" in message
    assert "table responses has the columns" in message and "body" in message
    assert "Nothing was changed" in message
    assert _files(tmp_path) == before


@pytest.mark.parametrize("command", ["resume", "report", "export"])
def test_cli_on_a_store_of_another_layout_is_an_error_not_a_traceback(
    tmp_path, monkeypatch, capsys, command
) -> None:
    run = make_run(tmp_path / "runs")
    _rename_two_columns(run / "superalign.db")
    before = _files(run)
    args = ["run", "--resume", str(run)] if command == "resume" else [command, str(run)]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "Traceback" not in err and "tableresponseshasthecolumns" in flat(err)
    assert _files(run) == before


def test_resume_of_a_newer_store_is_refused_not_run(tmp_path, monkeypatch, capsys) -> None:
    run = make_run(tmp_path / "runs")
    _sql(run / "superalign.db", "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = _files(run)
    with pytest.raises(StoreError, match="newer superalign"):
        resume(run)
    code, _, err = run_cli(monkeypatch, capsys, "run", "--resume", str(run))
    assert code == 2 and "schemaversion99" in flat(err)
    assert _files(run) == before


def _make_version_1(db: Path) -> None:
    """A store as the first release left it: no transcripts table, version 1."""
    _sql(
        db,
        "DROP TABLE transcripts",
        "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
    )


def test_an_older_store_reads_without_being_changed(tmp_path) -> None:
    db = tmp_path / "superalign.db"
    q, _ = _store_with_rows(db)
    _make_version_1(db)
    before = _files(tmp_path)
    with Store(db, write=False) as old:
        assert [x.id for x in old.queries()] == [q.id]
        assert [x.text for x in old.responses()] == ["No."]
        assert old.transcripts() == [] and old.counts()["transcripts"] == 0
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            old.set_meta("x", "y")  # the migrated copy is read-only too
    assert _files(tmp_path) == before and _version(db) == "1"


def test_an_older_store_is_migrated_when_opened_for_writing_keeping_its_rows(tmp_path) -> None:
    db = tmp_path / "superalign.db"
    q, r = _store_with_rows(db)
    _make_version_1(db)
    with Store(db) as store:
        assert store.meta("schema_version") == str(SCHEMA_VERSION)
        assert [x.id for x in store.queries()] == [q.id] and store.done(1, "respond")
        assert [x.id for x in store.responses()] == [r.id]
        assert store.transcripts() == []
    assert _version(db) == str(SCHEMA_VERSION) != "1"


def test_an_older_store_with_renamed_columns_is_refused_not_migrated(tmp_path) -> None:
    db = tmp_path / "superalign.db"
    _store_with_rows(db)
    _make_version_1(db)
    _rename_two_columns(db)
    before = _files(tmp_path)
    for write in (True, False):
        with pytest.raises(StoreError, match="layout of store schema version 1"):
            Store(db, write=write)
    assert _files(tmp_path) == before and _version(db) == "1"


def test_a_store_missing_a_table_of_its_version_is_refused(tmp_path) -> None:
    db = tmp_path / "superalign.db"
    _store_with_rows(db)
    _sql(db, "DROP TABLE labels")
    with pytest.raises(StoreError, match="lacks the table labels"):
        Store(db, write=False)
    with pytest.raises(StoreError, match="lacks the table labels"):
        Store(db)


def test_a_foreign_meta_table_is_not_a_run_store(tmp_path) -> None:
    db = tmp_path / "superalign.db"
    _sql(db, "CREATE TABLE meta (name TEXT, size INTEGER)")
    before = db.read_bytes()
    for write in (True, False):
        with pytest.raises(StoreError, match="not a superalign run database"):
            Store(db, write=write)
    assert db.read_bytes() == before
