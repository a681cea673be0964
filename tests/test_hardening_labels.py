"""Issue 12, defects 8 and 6 (endpoint bodies): no quiet data loss in label imports,
credentials redacted everywhere, endpoint bodies that are not clean UTF-8."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from _hardening import MOCK_MODELS, make_run, run_cli
from superalign import registry
from superalign.errors import ConfigError, EndpointError
from superalign.models import OpenAIChatModel
from superalign.types import GenParams, Intent, Judged, Judgement, Label, Query, Response

# -- defect 8: duplicate and unknown label ids are reported ----------------------------


def _judged(rid: str) -> Judged:
    q = Query(text=f"query {rid}", intent=Intent.harmful)
    r = Response(id=rid, query_id=q.id, text=rid)
    label = Label(verdict=None, p_acceptable=0.5, confidence=0.5, disagreement=0.5)
    return Judged(query=q, response=r, judgement=Judgement(label=label))


def _write(path, rows) -> None:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_conflicting_duplicate_ids_are_an_error_naming_them(tmp_path) -> None:
    path = tmp_path / "labels.jsonl"
    _write(path, [{"response_id": "a", "label": "safe"}, {"response_id": "a", "label": "unsafe"}])
    src = registry.create("label_source", "import", {"file": str(path)})
    with pytest.raises(ConfigError, match=r"1 response\(s\) labelled twice.*a: safe then unsafe"):
        src.label([_judged("a")], tmp_path)


def test_identical_duplicates_and_unknown_ids_are_counted(tmp_path, caplog) -> None:
    path = tmp_path / "labels.jsonl"
    rows = [
        {"response_id": "a", "label": "safe"},
        {"response_id": "a", "label": "safe"},
        {"response_id": "ghost-1", "label": "unsafe"},
        {"response_id": "ghost-2", "label": "unsafe"},
    ]
    _write(path, rows)
    src = registry.create("label_source", "import", {"file": str(path)})
    with caplog.at_level(logging.WARNING):
        got = src.label([_judged("a"), _judged("b")], tmp_path)
    assert [h.response_id for h in got] == ["a"]
    text = caplog.text
    assert "1 repeated identical label" in text
    assert "2 label(s) name response ids not among" in text and "ghost-1" in text


def test_inbox_correction_warns_and_last_answer_wins(tmp_path, caplog) -> None:
    from superalign.loop._human import INBOX

    _write(
        tmp_path / INBOX,
        [{"response_id": "a", "label": "safe"}, {"response_id": "a", "label": "unsafe"}],
    )
    src = registry.create("label_source", "cli", {"wait_seconds": 0})
    with caplog.at_level(logging.WARNING):
        (got,) = src.label([_judged("a")], tmp_path)
    assert got.verdict.value == "unsafe"
    assert "a: safe then unsafe" in caplog.text


# -- defect 8: credentials in endpoint URLs are redacted ---------------------------------

SECRET_URL = "http://alice:hunter2@127.0.0.1:9/v1?api_key=sk-12345"


def test_redact_masks_userinfo_and_key_parameters() -> None:
    from superalign.textsafe import redact

    shown = redact(f"endpoint {SECRET_URL}&x=1 failed")
    assert "hunter2" not in shown and "alice" not in shown and "sk-12345" not in shown
    assert "127.0.0.1:9/v1" in shown and "x=1" in shown


def test_endpoint_errors_do_not_echo_credentials() -> None:
    m = OpenAIChatModel(model="m", base_url=SECRET_URL, retries=0, backoff=0.01)
    with pytest.raises(EndpointError) as e:
        m.generate([[{"role": "user", "content": "hi"}]], GenParams())
    assert "hunter2" not in str(e.value) and "sk-12345" not in str(e.value)


def test_run_files_database_and_report_hold_no_credentials(tmp_path) -> None:
    from superalign.loop import Store, start
    from superalign.loop._report import report_data

    overrides = [
        *MOCK_MODELS,
        "models.judge={backend: openai, model: m, base_url: 'http://alice:hunter2@h/v1'}",
    ]
    loop = start(None, overrides, "cred", tmp_path / "runs")
    loop.close()
    run = tmp_path / "runs" / "cred"
    assert "hunter2" not in (run / "config.yaml").read_text()
    store = Store(run / "superalign.db", write=False)
    assert "hunter2" not in store.meta("config")
    assert "hunter2" not in report_data(store, run).config_yaml
    store.close()


def test_report_redacts_an_old_config_file(tmp_path) -> None:
    from superalign.loop import Store
    from superalign.loop._report import report_data

    run = make_run(tmp_path / "runs")
    (run / "config.yaml").write_text("models:\n  judge: {base_url: 'https://u:pw@h/v1'}\n")
    store = Store(run / "superalign.db", write=False)
    assert ":pw@" not in report_data(store, run).config_yaml
    store.close()


# -- defect 6: endpoint bodies that are not UTF-8 or hold lone surrogates -----------------


class _Raw(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        model = self.path
        if "latin" in model:
            body = '{"choices": [{"message": {"content": "caf\u00e9"}}]}'.encode("latin-1")
            status = 200
        elif "surrogate" in model:
            body = b'{"choices": [{"message": {"content": "a\\ud800b"}}]}'
            status = 200
        else:
            body = b'{"error": "[/red] nope \xff"}'
            status = 400
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def raw_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Raw)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_non_utf8_and_surrogate_bodies_do_not_abort(raw_server: str) -> None:
    chat = [[{"role": "user", "content": "hi"}]]
    latin = OpenAIChatModel(model="m", base_url=f"{raw_server}/latin/v1", retries=0)
    (text,) = latin.generate(chat, GenParams())
    assert text == "caf\ufffd"
    surrogate = OpenAIChatModel(model="m", base_url=f"{raw_server}/surrogate/v1", retries=0)
    (text,) = surrogate.generate(chat, GenParams())
    text.encode("utf-8")  # storable in SQLite
    assert text.startswith("a") and text.endswith("b")


def test_endpoint_error_body_with_markup_prints_cleanly(raw_server, monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "chat", f"openai:m@{raw_server}/error/v1", "hi")
    assert code == 2 and "[/red] nope" in err and "HTTP 400" in err
