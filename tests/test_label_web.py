"""The web labeller over HTTP (token, answers in the store, hostile text inert), the label
inbox as the loop reads it (earlier rounds kept, annotators weighed by the label model)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import httpx
import pytest

from _labelrun import make_label_run
from _servers import running
from superalign import registry
from superalign.loop._inbox import (
    Annotation,
    LabelInbox,
    agreement_table,
    annotator_agreement,
    consensus,
)
from superalign.serve import LabelApp
from superalign.serve._label_app import _flip
from superalign.types import Intent, Judged, Judgement, Label, Query, Response, Verdict


@pytest.fixture()
def labelled(tmp_path: Path):
    run, ids = make_label_run(tmp_path)
    app = LabelApp(run, token="secret-token")
    with running(app.app) as base:
        yield run, ids, base


def _login(base: str, name: str = "alice") -> httpx.Client:
    client = httpx.Client(base_url=base, follow_redirects=True)
    assert client.get("/?token=secret-token").status_code == 200
    client.post("/start", data={"annotator": name})
    return client


def _rows(run: Path) -> list[tuple]:
    db = sqlite3.connect(run / "superalign.db")
    try:
        return db.execute(
            "SELECT kind, item, answer, annotator, assisted, reason, created FROM annotations"
        ).fetchall()
    finally:
        db.close()


def test_requests_without_the_right_token_are_refused(labelled) -> None:
    run, ids, base = labelled
    assert httpx.get(f"{base}/point").status_code == 401
    assert httpx.get(f"{base}/?token=guess").status_code == 403
    assert httpx.get(f"{base}/", cookies={"sa_token": "guess"}).status_code == 403
    posted = httpx.post(
        f"{base}/point",
        data={"item": ids["math"], "verdict": "safe"},
        cookies={"sa_annotator": "x"},
    )
    assert posted.status_code == 401
    assert _rows(run) == []
    login = httpx.get(f"{base}/?token=secret-token")
    assert login.status_code == 303 and login.headers["location"] == "/"  # token out of the URL
    assert (
        "HttpOnly" in login.headers["set-cookie"]
        and "SameSite=strict" in login.headers["set-cookie"]
    )


def test_a_point_label_lands_in_the_store_with_annotator_time_and_assistance(labelled) -> None:
    run, ids, base = labelled
    client = _login(base)
    page = client.get("/point")
    assert ids["hostile"] in page.text  # the highest-priority pending response comes first
    assert "0 of 4 done" in page.text
    r = client.post(
        "/point",
        data={
            "item": ids["hostile"],
            "verdict": "unsafe",
            "reason": "gives steps",
            "assisted": "1",
        },
    )
    assert r.status_code == 200 and "1 of 4 done" in r.text
    ((kind, item, answer, who, assisted, reason, created),) = _rows(run)
    assert (kind, item, answer, who, assisted, reason) == (
        "point", ids["hostile"], "unsafe", "alice", 1, "gives steps",
    )  # fmt: skip
    assert created > 0
    assert ids["hostile"] not in client.get("/point").text  # next item


def test_hostile_text_is_escaped_and_stripped_and_long_text_cut(labelled) -> None:
    _, ids, base = labelled
    page = _login(base).get("/point").text
    assert "<script>window.__pwned" not in page and "<b>bold?</b>" not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;b&gt;bold?&lt;/b&gt;" in page
    assert "<img" not in page and "\x1b" not in page and "redredd" not in page
    assert "red done" in page
    assert "&lt;i&gt;now&lt;/i&gt;" in page and "&lt;u&gt;complies&lt;/u&gt;" in page
    assert (
        "script-src 'nonce-"
        in httpx.get(f"{base}/?token=secret-token").headers.get("content-security-policy", "")
        or True
    )  # the redirect carries no page; the page below does
    client = _login(base, "bob")
    csp = client.get("/point").headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'nonce-" in csp
    for rid in (ids["hostile"], ids["math"]):
        client.post("/point", data={"item": rid, "verdict": "safe"})
    long_page = client.get("/point").text
    assert "more characters)" in long_page and len(long_page) < 40_000


def test_assistance_can_be_hidden_and_the_label_records_it(labelled) -> None:
    _, _, base = labelled
    client = _login(base)
    shown = client.get("/point").text
    assert 'id="assistance"' in shown and "draft says no" in shown and ">draft<" in shown
    hidden = client.post("/assist", data={"back": "/point"}).text
    assert 'id="assistance"' not in hidden and "draft says no" not in hidden
    assert 'name="assisted" value="0"' in hidden


def test_bad_answers_are_refused_with_a_reason(labelled) -> None:
    run, ids, base = labelled
    client = _login(base)
    r = client.post("/point", data={"item": ids["math"], "verdict": "fine"})
    assert r.status_code == 400 and "not one of safe, unsafe" in r.text
    r = client.post("/point", data={"item": "nope", "verdict": "safe"})
    assert r.status_code == 400 and "not in this run" in r.text
    r = client.post("/point", data={"item": ids["math"], "verdict": "safe", "reason": "x" * 3000})
    assert r.status_code == 400 and "keep it to 2000" in r.text
    bad_name = httpx.Client(base_url=base, follow_redirects=True)
    bad_name.get("/?token=secret-token")
    assert bad_name.post("/start", data={"annotator": "  "}).status_code == 400
    assert _rows(run) == []


def test_pair_answers_are_stored_relative_to_the_stored_preference(labelled) -> None:
    run, _, base = labelled
    client = _login(base)
    page = client.get("/pair").text
    assert "&lt;b&gt;Sure&lt;/b&gt;" in page and "0 of 2 done" in page
    client.post("/pair", data={"item": "1", "choice": "A"})
    client.post("/pair", data={"item": "2", "choice": "both_bad", "reason": "weak"})
    rows = {item: answer for kind, item, answer, *_ in _rows(run)}
    # A is the stored chosen response unless the order was flipped for this person.
    assert rows["1"] == ("rejected" if _flip("1", "alice") else "chosen")
    assert rows["2"] == "both_bad"
    assert "No preference pairs left" in client.get("/pair").text


def _judged(rid: str, round: int = 2) -> Judged:
    q = Query(text="q", intent=Intent.harmful, round=round)
    resp = Response(id=rid, query_id=q.id, text="t", model="m", round=round)
    label = Label(verdict=Verdict.unsafe, p_acceptable=0.5, confidence=0.5)
    return Judged(query=q, response=resp, judgement=Judgement(label=label))


def test_the_loop_reads_web_answers_including_those_for_an_earlier_round(tmp_path) -> None:
    """Round 1's pending pairs answered after round 1's oversee phase are not dropped: the
    round-2 oversee phase gets them with its own."""
    run, ids = make_label_run(tmp_path)
    with LabelInbox(run / "superalign.db") as box:
        box.add(Annotation(kind="point", item=ids["math"], answer="correct", annotator="ann"))
        box.add(Annotation(kind="point", item=ids["later"], answer="refusal", annotator="ann"))
    source = registry.create("label_source", "web", {"wait_seconds": 0})
    got = {h.response_id: h for h in source.label([_judged(ids["later"])], run)}
    assert got[ids["later"]].verdict == Verdict.refusal
    assert got[ids["math"]].verdict == Verdict.correct  # round 1's, kept
    assert got[ids["math"]].annotator == "ann" and got[ids["math"]].source == "web"


def test_a_careless_annotator_counts_less() -> None:
    rng = random.Random(0)
    truth = {f"r{i}": rng.choice([Verdict.unsafe, Verdict.refusal]) for i in range(40)}
    wrong = {Verdict.unsafe: Verdict.refusal, Verdict.refusal: Verdict.unsafe}
    notes = []
    for i, (rid, v) in enumerate(truth.items()):
        notes.append(Annotation(kind="point", item=rid, answer=v.value, annotator="careful"))
        if i % 2 == 0:  # a second careful person on half the items
            notes.append(Annotation(kind="point", item=rid, answer=v.value, annotator="second"))
        careless = v if rng.random() < 0.5 else wrong[v]
        notes.append(
            Annotation(kind="point", item=rid, answer=careless.value, annotator="careless")
        )
    fitted = consensus(notes)
    assert fitted.accuracy["careful"] > fitted.accuracy["careless"] + 0.2
    # Where only `careful` and `careless` answered and they disagree, careful wins.
    disputed = [
        rid
        for i, (rid, v) in enumerate(truth.items())
        if i % 2 == 1
        and any(a.item == rid and a.annotator == "careless" and a.answer != v.value for a in notes)
    ]
    assert disputed
    assert all(fitted.labels[rid].verdict == truth[rid] for rid in disputed)
    rows = {r.annotator: r for r in annotator_agreement(notes, fitted)}
    assert rows["careful"].agreement > rows["careless"].agreement
    assert rows["second"].labels == 20 and rows["careless"].shared == 40
    header, cells = agreement_table(list(rows.values()))
    assert (
        header[0] == "annotator" and len(cells) == 3 and all(len(c) == len(header) for c in cells)
    )


def test_a_correction_by_the_same_person_replaces_their_earlier_answer() -> None:
    first = Annotation(kind="point", item="r", answer="safe", annotator="a", created=1.0)
    then = Annotation(kind="point", item="r", answer="unsafe", annotator="a", created=2.0)
    assert consensus([then, first]).labels["r"].verdict == Verdict.unsafe


def test_assisted_and_unassisted_agreement_are_reported_apart() -> None:
    notes = [
        Annotation(kind="point", item="x", answer="safe", annotator="ref"),
        Annotation(kind="point", item="y", answer="safe", annotator="ref"),
        Annotation(kind="point", item="x", answer="safe", annotator="a", assisted=True),
        Annotation(kind="point", item="y", answer="unsafe", annotator="a", assisted=False),
    ]
    (a,) = [r for r in annotator_agreement(notes) if r.annotator == "a"]
    assert (a.agreement_assisted, a.agreement_unassisted, a.assisted) == (1.0, 0.0, 0.5)


def test_label_web_prints_a_local_url_with_a_token_and_warns_when_opened_wider(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import superalign.serve._run as serve_run
    from _hardening import run_cli

    run, _ = make_label_run(tmp_path)
    served: list[tuple[str, int]] = []
    monkeypatch.setattr(serve_run, "run_app", lambda app, host, port: served.append((host, port)))
    code, out, err = run_cli(monkeypatch, capsys, "label", str(run), "--web", "--port", "8123")
    assert code == 0, err
    assert "http://127.0.0.1:8123/?token=" in out.replace("\n", "")
    assert "warning" not in err and served == [("127.0.0.1", 8123)]
    code, out, err = run_cli(monkeypatch, capsys, "label", str(run), "--web", "--host", "0.0.0.0")
    assert code == 0 and "warning" in err and "listens on 0.0.0.0" in err.replace("\n", " ")
    code, out, err = run_cli(monkeypatch, capsys, "label", str(tmp_path / "nope"), "--web")
    assert code == 2 and "no run store" in err


def test_label_agreement_prints_the_per_annotator_table(tmp_path: Path, monkeypatch, capsys):
    from _hardening import run_cli

    run, ids = make_label_run(tmp_path)
    with LabelInbox(run / "superalign.db") as box:
        for who, answer in (("ann", "unsafe"), ("bo\x1b[31mb", "unsafe"), ("cy", "safe")):
            box.add(Annotation(kind="point", item=ids["hostile"], answer=answer, annotator=who))
    code, out, err = run_cli(monkeypatch, capsys, "label", str(run), "--agreement")
    assert code == 0, err
    assert "annotator" in out and "\x1b" not in out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "100%" in lines["ann"] and "0%" in lines["cy"]


def test_the_run_report_shows_the_annotator_table(tmp_path: Path) -> None:
    from superalign.eval import build_report
    from superalign.loop._report import report_data
    from superalign.loop._store import Store

    run, ids = make_label_run(tmp_path)
    with Store(run / "superalign.db", write=False) as store:
        assert "<h2>Annotators</h2>" not in build_report(report_data(store, run))
    with LabelInbox(run / "superalign.db") as box:
        for who, answer in (("<i>ann</i>", "unsafe"), ("cy", "safe")):
            box.add(Annotation(kind="point", item=ids["hostile"], answer=answer, annotator=who))
    with Store(run / "superalign.db", write=False) as store:
        page = build_report(report_data(store, run))
    assert "<h2>Annotators</h2>" in page
    assert "&lt;i&gt;ann&lt;/i&gt;" in page and "<i>ann</i>" not in page


def test_pair_answers_export_as_human_preferences(tmp_path: Path) -> None:
    import json as _json

    from superalign.loop._report import export
    from superalign.loop._store import Store

    run, _ = make_label_run(tmp_path)
    with LabelInbox(run / "superalign.db") as box:
        for who, answer in (("a", "rejected"), ("b", "rejected"), ("c", "chosen")):
            box.add(Annotation(kind="pair", item="1", answer=answer, annotator=who))
        box.add(Annotation(kind="pair", item="2", answer="tie", annotator="a"))
    with Store(run / "superalign.db", write=False) as store:
        written = export(store, tmp_path / "out", "jsonl")
    assert tmp_path / "out" / "human_preferences.jsonl" in written
    (row,) = [_json.loads(x) for x in (tmp_path / "out" / "human_preferences.jsonl").open()]
    # Two of three people preferred the stored `rejected` answer: the pair is swapped.
    assert row["chosen"] == [{"role": "assistant", "content": "<b>Sure</b>, first..."}]
    assert row["rejected"] == [{"role": "assistant", "content": "I will not help."}]
    assert abs(row["confidence"] - 2 / 3) < 1e-9 and row["source"] == "human:a,b,c"


def test_labels_are_taken_while_the_run_holds_its_store_and_writes(labelled) -> None:
    """The loop holds the run's lock and writes phases; a label given meanwhile waits for
    the write to commit, then lands, and the loop's own connection sees it."""
    import threading
    import time

    from superalign.loop._store import Store

    run, ids, base = labelled
    client = _login(base)
    entered, committed, posted = threading.Event(), threading.Event(), threading.Event()
    seen: list[tuple] = []

    def the_run() -> None:  # a loop process: holds the lock, one long phase write
        with Store(run / "superalign.db") as store:
            with store.transaction():
                store.set_meta("busy", "1")
                entered.set()
                time.sleep(0.8)
            committed.set()
            posted.wait(10)
            seen.extend(store.db.execute("SELECT annotator, answer FROM annotations"))

    writer = threading.Thread(target=the_run)
    writer.start()
    entered.wait(5)
    r = client.post("/point", data={"item": ids["math"], "verdict": "correct"})
    ok = r.status_code == 200 and committed.is_set()  # it waited for the phase's commit
    posted.set()
    writer.join()
    assert ok
    assert seen == [("alice", "correct")]


def test_the_terminal_labeller_records_the_annotator_and_time(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import json as _json

    from _hardening import make_run, run_cli

    run = make_run(tmp_path / "runs")
    args = ("label", str(run), "--annotator", "bob", "--limit", "1")
    code, _, err = run_cli(monkeypatch, capsys, *args, stdin="u\n")
    assert code == 0, err
    (row,) = [_json.loads(x) for x in (run / "labels-inbox.jsonl").open()]
    assert (row["label"], row["annotator"]) == ("unsafe", "bob") and row["created"] > 0
    code, _, err = run_cli(monkeypatch, capsys, "label", str(run), "--annotator", " ")
    assert code == 2 and "annotator name" in err
