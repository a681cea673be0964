"""The openai backend against a real HTTP server on 127.0.0.1 speaking the API."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from superalign.errors import EndpointError
from superalign.models import OpenAIChatModel
from superalign.types import GenParams

CHAT = [{"role": "user", "content": "hello"}]


class _Handler(BaseHTTPRequestHandler):
    hits: Counter = Counter()  # noqa: RUF012 -- shared by the server threads on purpose

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = body["model"]
        _Handler.hits[model] += 1
        n = _Handler.hits[model]
        if self.path.endswith("/completions") and "prompt" in body:
            return self._completions(body)
        if model == "flaky" and n == 1:
            return self._send(500, '{"error": "boom"}')
        if model == "rate" and n <= 2:
            return self._send(429, '{"error": "slow down"}')
        if model == "down":
            return self._send(503, '{"error": "overloaded"}')
        if model == "slow":
            time.sleep(1.0)
        if model == "bad":
            return self._send(200, '{"choices": [ {"message": ')
        if model == "denied":
            return self._send(401, '{"error": "bad key"}')
        user = body["messages"][-1]["content"]
        reply = {"choices": [{"message": {"role": "assistant", "content": f"echo: {user}"}}]}
        self._send(200, json.dumps(reply))

    def _completions(self, body: dict) -> None:
        # Tokens are characters; each scores -1, except that 'x' scores -5.
        text = body["prompt"]
        offsets = [*list(range(len(text))), len(text)]
        values = [None] + [-5.0 if ch == "x" else -1.0 for ch in text[1:]] + [-0.5]
        lp = {"text_offset": offsets, "token_logprobs": values}
        self._send(200, json.dumps({"choices": [{"text": text, "logprobs": lp}]}))


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def _model(server: str, name: str, **kw) -> OpenAIChatModel:
    return OpenAIChatModel(model=name, base_url=server, backoff=0.01, **kw)


def test_normal_replies_in_order(server: str) -> None:
    m = _model(server, "ok", concurrency=4)
    chats = [[{"role": "user", "content": f"q{i}"}] for i in range(10)]
    assert m.generate(chats, GenParams()) == [f"echo: q{i}" for i in range(10)]


def test_stop_strings_are_applied(server: str) -> None:
    m = _model(server, "ok")
    assert m.generate([CHAT], GenParams(stop=("llo",))) == ["echo: he"]


def test_500_then_success_is_retried(server: str) -> None:
    m = _model(server, "flaky")
    assert m.generate([CHAT], GenParams()) == ["echo: hello"]
    assert _Handler.hits["flaky"] == 2


def test_429_is_retried_with_backoff(server: str) -> None:
    m = _model(server, "rate")
    assert m.generate([CHAT], GenParams()) == ["echo: hello"]
    assert _Handler.hits["rate"] == 3


def test_persistent_5xx_names_the_endpoint(server: str) -> None:
    m = _model(server, "down", retries=2)
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1.*failed after 3 tries.*HTTP 503"):
        m.generate([CHAT], GenParams())


def test_timeout_gives_clear_error(server: str) -> None:
    m = _model(server, "slow", timeout=0.2, retries=1)
    with pytest.raises(EndpointError, match=r"no answer within 0\.2s"):
        m.generate([CHAT], GenParams())


def test_malformed_json_gives_clear_error(server: str) -> None:
    m = _model(server, "bad")
    with pytest.raises(EndpointError, match="malformed JSON"):
        m.generate([CHAT], GenParams())


def test_client_error_is_not_retried(server: str) -> None:
    m = _model(server, "denied")
    with pytest.raises(EndpointError, match="HTTP 401"):
        m.generate([CHAT], GenParams())
    assert _Handler.hits["denied"] == 1


def test_unreachable_endpoint_is_named() -> None:
    m = OpenAIChatModel(model="m", base_url="http://127.0.0.1:9/v1", retries=1, backoff=0.01)
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1:9.*connection failed"):
        m.generate([CHAT], GenParams())


def test_logprobs_sum_only_the_continuation(server: str) -> None:
    m = _model(server, "ok")
    plain, with_x = m.logprobs([CHAT, CHAT], ["abc", "axc"])
    assert plain == -3.0
    assert with_x == -7.0
