"""Issue 24, defects 2, 3 and 5 at the web labeller's door: pair ids are plain integers
(and export reads the loose ones already stored), the token's redirect stays on this
origin, and an empty or foreign database is refused at start without being written."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import httpx
import pytest

from _hardening import flat, run_cli
from _labelrun import make_label_run
from _servers import running
from superalign.errors import StoreError
from superalign.loop import Annotation, AnnotationLog
from superalign.loop._inbox import pair_id
from superalign.serve import LabelApp


@pytest.fixture()
def labelled(tmp_path: Path):
    run, ids = make_label_run(tmp_path)
    app = LabelApp(run, token="secret-token")
    with running(app.app) as base:
        yield run, ids, base


def _login(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, follow_redirects=True)
    assert client.get("/?token=secret-token").status_code == 200
    client.post("/start", data={"annotator": "alice"})
    return client


def _pair_rows(run: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(run / "superalign.db")
    try:
        return db.execute("SELECT item, answer FROM annotations WHERE kind = 'pair'").fetchall()
    finally:
        db.close()


# -- defect 2: pair ids -------------------------------------------------------------------


@pytest.mark.parametrize("item", ["1.0", "01", " 1", "1 ", "+1", "1e0", "0x1", "\u0661"])
def test_a_pair_id_that_is_not_a_plain_integer_is_refused(labelled, item) -> None:
    run, _, base = labelled
    client = _login(base)
    answer = client.post("/pair", data={"item": item, "choice": "A"})
    assert answer.status_code == 400 and "plain whole number" in answer.text
    assert _pair_rows(run) == []
    assert client.post("/pair", data={"item": "1", "choice": "A"}).status_code == 200
    assert [item for item, _ in _pair_rows(run)] == ["1"]


def test_pair_id_reads_what_sqlite_matched_and_nothing_else() -> None:
    for item in ("79", "79.0", "079", " 79", "79 ", "+79", "7.9e1", "79."):
        assert pair_id(item) == 79, item
    for item in ("79.5", "abc", "", "-79", "1e400", "7_9", "\u0667\u0669", "nan", "0x4f"):
        assert pair_id(item) is None, item


def test_export_reads_loosely_stored_pair_ids_and_skips_others_with_a_warning(
    tmp_path: Path, monkeypatch, capsys, caplog
) -> None:
    run, _ = make_label_run(tmp_path)
    with AnnotationLog(run / "superalign.db") as log:  # as the unchecked page stored them
        for who, item in (("a", "1.0"), ("b", "01"), ("c", " 1")):
            log.append(Annotation(kind="pair", item=item, answer="rejected", annotator=who))
        for item in ("abc", "2.5"):
            log.append(Annotation(kind="pair", item=item, answer="chosen", annotator="d"))
    with caplog.at_level(logging.WARNING):
        code, _, err = run_cli(monkeypatch, capsys, "export", str(run))
    assert code == 0, err
    (row,) = [json.loads(x) for x in (run / "export" / "human_preferences.jsonl").open()]
    assert row["source"] == "human:a,b,c"
    assert row["chosen"] == [{"role": "assistant", "content": "<b>Sure</b>, first..."}]
    assert "2 pair answer(s) name no preference id" in caplog.text
    assert "'abc'" in caplog.text and "'2.5'" in caplog.text


# -- defect 3: the token's redirect ---------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["//evil.example.com/", "//evil.example.com/point", "///evil.example.com/", "/%2F%2Fevil",
     "/\\evil.example.com/", "/nowhere"],
)  # fmt: skip
def test_the_token_redirect_never_leaves_this_origin(labelled, path) -> None:
    _, _, base = labelled
    answer = httpx.get(f"{base}{path}?token=secret-token", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"
    assert "sa_token" in answer.headers.get("set-cookie", "")


def test_the_token_redirect_keeps_a_page_of_this_app(labelled) -> None:
    _, _, base = labelled
    for page in ("/", "/point", "/pair"):
        answer = httpx.get(f"{base}{page}?token=secret-token", follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == page


# -- defect 5: an empty or foreign database ---------------------------------------------------


def _foreign(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE songs (title TEXT)")
    con.commit()
    con.close()


@pytest.mark.parametrize("kind", ["empty", "foreign"])
def test_label_web_refuses_a_database_that_is_not_a_run_without_writing_it(
    tmp_path: Path, monkeypatch, capsys, kind
) -> None:
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    db = run / "superalign.db"
    if kind == "empty":
        db.write_bytes(b"")
    else:
        _foreign(db)
    before = db.read_bytes()
    with pytest.raises(StoreError, match="not a superalign run database"):
        LabelApp(run)
    with pytest.raises(StoreError, match="not a superalign run database"):
        AnnotationLog(db)
    code, _, err = run_cli(monkeypatch, capsys, "label", str(run), "--web")
    assert code == 2 and "notasuperalignrundatabase" in flat(err) and "Traceback" not in err
    assert db.read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["superalign.db"]
