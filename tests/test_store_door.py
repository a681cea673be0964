"""The run database behind one door: SQL lives only in ``loop/_store.py``.

A static scan finds ``sqlite3`` imports, ``execute*`` calls, SQL text and reaches into a
store's connection anywhere else; the store operations that the label inbox, the web
labeller, the report and ``critic train`` use instead are tested here.
"""

from __future__ import annotations

import ast
import re
import sqlite3
from pathlib import Path

import pytest

import superalign
from _labelrun import make_label_run
from superalign.critic._cli import run_judged
from superalign.critic._train import training_rows
from superalign.errors import ConfigError, StoreBusyError, StoreError
from superalign.loop import Annotation, AnnotationLog, LabelInbox, Store
from superalign.loop._inbox import agreement_report, human_preferences
from superalign.types import Intent, Label, Query, Response, Verdict

ROOT = Path(superalign.__file__).parent
DOOR = ROOT / "loop" / "_store.py"
_SQL = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|BEGIN|REPLACE)\s", re.MULTILINE
)
_EXECUTE = {"execute", "executemany", "executescript"}


def sql_uses(source: str) -> list[str]:
    """Where ``source`` touches SQLite itself: what a module outside the store must not do."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"line {line}: import {a.name}" for a in node.names if a.name == "sqlite3"]
        elif isinstance(node, ast.ImportFrom) and node.module == "sqlite3":
            found.append(f"line {line}: from sqlite3 import ...")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in _EXECUTE:
                found.append(f"line {line}: .{node.func.attr}(...)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _SQL.search(node.value):
                found.append(f"line {line}: SQL text {node.value.strip()[:40]!r}")
        elif isinstance(node, ast.Attribute) and node.attr == "db":
            found.append(f"line {line}: reaches into a store's connection (.db)")
    return found


def test_scan_sees_sql() -> None:
    source = (
        "import sqlite3\n"
        "def f(store):\n"
        "    store.db.execute('SELECT 1 FROM meta')\n"
        "Q = 'INSERT INTO annotations VALUES (?)'\n"
        "TEXT = 'select a critic; insert it'\n"
    )
    found = sql_uses(source)
    assert any("import sqlite3" in f for f in found)
    assert any(".execute(" in f for f in found)
    assert any("SQL text 'SELECT 1" in f for f in found)
    assert any("SQL text 'INSERT" in f for f in found)
    assert any(".db" in f for f in found)
    assert not any("select a critic" in f for f in found)  # prose is not SQL


def test_no_sql_outside_the_store() -> None:
    found = [
        f"{path.relative_to(ROOT)} {use}"
        for path in sorted(ROOT.rglob("*.py"))
        if path != DOOR
        for use in sql_uses(path.read_text(encoding="utf-8"))
    ]
    assert not found, "SQL outside loop/_store.py (give Store an operation):\n" + "\n".join(found)


def test_the_store_itself_is_scanned_as_sql() -> None:
    assert sql_uses(DOOR.read_text(encoding="utf-8"))  # the scan would see it, were it elsewhere


# -- the store's operations --------------------------------------------------------------


@pytest.fixture()
def run(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return make_label_run(tmp_path)


def test_response_and_query(run) -> None:
    path, ids = run
    with Store(path / "superalign.db", write=False) as store:
        found = store.response_and_query(ids["math"])
        assert found is not None
        response, query = found
        assert (response.id, response.text, response.round) == (ids["math"], "42", 1)
        assert query.text == "What is 6*7?" and query.id == response.query_id
        assert store.response_and_query("nope") is None


def test_latest_preferences_and_preference(run, tmp_path: Path) -> None:
    path, _ = run
    with Store(path / "superalign.db", write=False) as store:
        latest = store.latest_preferences()
        assert [i for i, _ in latest] == [1, 2]
        assert latest[0][1].chosen == "I will not help."
        assert store.preference(2) == latest[1][1]
        assert store.preference(99) is None
    with Store(tmp_path / "empty.db") as empty:
        assert empty.latest_preferences() == []


def test_annotations_read_empty_without_the_table(run) -> None:
    path, _ = run
    with Store(path / "superalign.db", write=False) as store:
        assert store.annotations() == []
        assert store.annotated_items("point") == []


def test_annotation_log_appends_and_store_reads(run) -> None:
    path, ids = run
    db = path / "superalign.db"
    with AnnotationLog(db) as log:
        assert log.has_item("point", ids["math"]) and not log.has_item("point", "x")
        assert log.has_item("pair", "1") and not log.has_item("pair", "7")
        log.append(Annotation(kind="point", item=ids["math"], answer="correct", annotator="a"))
        log.append(Annotation(kind="point", item=ids["math"], answer="incorrect", annotator="b"))
        log.append(Annotation(kind="pair", item="1", answer="chosen", annotator="a"))
        assert log.pending_ids() == {ids["hostile"], ids["math"], ids["long"], ids["later"]}
        crits = log.critiques([ids["hostile"], ids["math"]])
        assert [c.critic for c in crits[ids["hostile"]]] == ["rules", "learned"]
    with Store(db, write=False) as store:
        assert [(a.annotator, a.answer) for a in store.annotations("point")] == [
            ("a", "correct"),
            ("b", "incorrect"),
        ]
        assert len(store.annotations()) == 3
        assert store.annotated_items("point") == [ids["math"]]
        assert store.annotated_items("pair", "a") == ["1"]
        assert store.annotated_items("pair", "b") == []


def test_annotations_keep_their_on_disk_format(run) -> None:
    path, ids = run
    with LabelInbox(path / "superalign.db") as box:
        box.add(
            Annotation(
                kind="point", item=ids["math"], answer="correct", annotator=" ann\x07 ",
                reason=" fine\x1b ", assisted=True, created=5.0,
            )
        )  # fmt: skip
    db = sqlite3.connect(path / "superalign.db")
    try:
        rows = db.execute("SELECT kind, item, answer, reason, annotator, assisted, created, "
                          "source FROM annotations").fetchall()  # fmt: skip
    finally:
        db.close()
    assert rows == [("point", ids["math"], "correct", "fine", "ann", 1, 5.0, "web")]


def test_a_busy_database_is_a_store_busy_error(run) -> None:
    path, ids = run
    with AnnotationLog(path / "superalign.db") as log:
        log.db.execute("PRAGMA busy_timeout=50")
        holder = sqlite3.connect(path / "superalign.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreBusyError):
                log.append(Annotation(kind="point", item=ids["math"], answer="safe", annotator="a"))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert issubclass(StoreBusyError, StoreError)


def test_report_and_export_read_annotations_through_the_store(run) -> None:
    path, ids = run
    with LabelInbox(path / "superalign.db") as box:
        for who in ("a", "b"):
            box.add(Annotation(kind="point", item=ids["math"], answer="correct", annotator=who))
            box.add(Annotation(kind="pair", item="1", answer="rejected", annotator=who))
    with Store(path / "superalign.db", write=False) as store:
        header, cells = agreement_report(store)
        assert header[0] == "annotator" and [c[0] for c in cells] == ["a", "b"]
        (pref,) = human_preferences(store)
        assert pref.chosen.startswith("<b>Sure</b>") and pref.source == "human:a,b"


# -- critic train: the CLI reads the run, the critic layer gets plain objects ---------------


def test_critic_training_rows_come_from_judged_pairs_the_cli_reads(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    q = Query(text="How do I pick a lock?", intent=Intent.harmful, round=0, tier="train")
    r = Response(query_id=q.id, text="No.", model="m", round=0)
    label = Label(response_id=r.id, verdict=Verdict.refusal, p_acceptable=0.9, confidence=0.7)
    with Store(run / "superalign.db") as store, store.phase(0, "oversee"):
        store.add_queries([q], producer="t")
        store.add_responses([r], "train")
        store.add_labels([label], producer="label_model")
    judged = run_judged(run)
    assert [j.response.id for j in judged] == [r.id]
    rows, prov = training_rows([], [], [("r", judged)])
    assert [(row.response, row.label, row.weight) for row in rows] == [
        ("No.", Verdict.refusal, pytest.approx(0.7))
    ]
    assert any(e.get("source") == "run:r" for e in prov.sources)
    with pytest.raises(ConfigError, match="not a run directory"):
        run_judged(tmp_path / "elsewhere")
