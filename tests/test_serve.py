"""The OpenAI-compatible server, against real HTTP on 127.0.0.1, through the project's own
openai backend."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from _servers import running
from superalign.models import MockModel, load_model
from superalign.serve import create_app, served_name
from superalign.types import GenParams

GREEDY = GenParams(max_new_tokens=6, temperature=0.0)


def _echo(chat) -> str:
    return f"echo: {chat[-1]['content']}"


def test_openai_backend_talks_to_the_server_and_concurrent_requests_share_batches() -> None:
    mock = MockModel(_echo, name="m")
    app = create_app(mock, "echo", window_ms=50, max_batch=64)
    with running(app) as base:
        client = load_model(f"openai:echo@{base}/v1")
        prompts = [f"question {i}" for i in range(12)]
        replies = client.generate([[{"role": "user", "content": p}] for p in prompts], GREEDY)
        listed = httpx.get(f"{base}/v1/models").json()
    assert replies == [f"echo: {p}" for p in prompts]  # each answer goes to its own request
    stats = app.state.batcher.stats
    assert stats.chats == 12
    assert stats.calls < 12 and stats.largest > 1  # the backend's 8 concurrent requests batched
    assert [m["id"] for m in listed["data"]] == ["echo"]


def test_greedy_requests_with_per_chat_seeds_still_share_batches() -> None:
    """The openai backend sends ``seed + i`` with each chat; a greedy reply does not depend
    on it, so those requests batch together (a learner's rollouts through a server)."""
    app = create_app(MockModel(_echo, name="m"), "echo", window_ms=50, max_batch=64)
    with running(app) as base:
        client = load_model(f"openai:echo@{base}/v1")
        chats = [[{"role": "user", "content": f"q{i}"}] for i in range(12)]
        replies = client.generate(chats, GenParams(max_new_tokens=6, seed=7))
    assert replies == [f"echo: q{i}" for i in range(12)]
    stats = app.state.batcher.stats
    assert stats.chats == 12 and stats.calls < 12 and stats.largest > 1


def test_different_sampling_parameters_are_never_mixed_in_one_call() -> None:
    seen: list[tuple[int, int]] = []

    class Recording(MockModel):
        def generate(self, chats, params):
            seen.append((len(chats), params.max_new_tokens))
            return super().generate(chats, params)

    app = create_app(Recording(_echo), "echo", window_ms=50)
    with running(app) as base:
        client = load_model(f"openai:echo@{base}/v1")
        import threading

        out: dict[int, list[str]] = {}

        def ask(tokens: int) -> None:
            chats = [[{"role": "user", "content": f"t{tokens}-{i}"}] for i in range(3)]
            out[tokens] = client.generate(chats, GenParams(max_new_tokens=tokens))

        threads = [threading.Thread(target=ask, args=(t,)) for t in (5, 7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert out[5] == [f"echo: t5-{i}" for i in range(3)]
    assert out[7] == [f"echo: t7-{i}" for i in range(3)]
    assert sum(n for n, _ in seen) == 6
    assert {tokens for _, tokens in seen} == {5, 7}


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": "echo"}, "messages", "'messages' must be a non-empty list"),
        ({"model": "echo", "messages": "hi"}, "messages", "non-empty list"),
        ({"model": "echo", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role",
         "must be one of system, user, assistant"),
        ({"model": "echo", "messages": [{"role": "user", "content": 3}]}, "messages[0].content",
         "must be a string"),
        ({"model": "echo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
         "max_tokens", "positive integer"),
        ({"model": "echo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6},
         "max_tokens", "above this server's limit"),
        ({"model": "echo", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
         "temperature", "number from 0 to 2"),
        ({"model": "echo", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n", "'n'"),
        ([1, 2], None, "must be a JSON object"),
        ({"model": "echo", "messages": [{"role": "user", "content": "x"}], "seed": 2**70},
         "seed", "from 0 to 2**63 - 1"),
    ],
)  # fmt: skip
def test_malformed_requests_get_a_400_with_an_openai_error_body(
    body: object, param: str | None, words: str
) -> None:
    with running(create_app(MockModel(_echo), "echo")) as base:
        r = httpx.post(f"{base}/v1/chat/completions", json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words in error["message"]


def test_invalid_json_unknown_model_and_unknown_route_are_refused_clearly() -> None:
    with running(create_app(MockModel(_echo), "echo")) as base:
        bad_json = httpx.post(
            f"{base}/v1/chat/completions",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        unknown = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]},
        )
        route = httpx.get(f"{base}/v1/embeddings")
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
    assert unknown.status_code == 404
    assert "'gpt-9' is not served here" in unknown.json()["error"]["message"]
    assert route.status_code == 404 and "/v1/chat/completions" in route.json()["error"]["message"]


def test_deeply_nested_json_gets_a_400_not_a_500() -> None:
    deep = b'{"model": "echo", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with running(create_app(MockModel(_echo), "echo")) as base:
        r = httpx.post(
            f"{base}/v1/chat/completions",
            content=deep,
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code == 400 and "nests too deeply" in r.json()["error"]["message"]


def test_streaming_sends_the_reply_then_done() -> None:
    with running(create_app(MockModel(_echo), "echo")) as base:
        body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
            lines = [x for x in r.iter_lines() if x]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(x.removeprefix("data: ")) for x in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "echo: hi"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_failing_model_answers_500_and_the_server_keeps_serving() -> None:
    calls = {"n": 0}

    def flaky(chat) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("out of memory")
        return "fine"

    with running(create_app(MockModel(flaky), "echo", window_ms=0)) as base:
        body = {"model": "echo", "messages": [{"role": "user", "content": "x"}]}
        first = httpx.post(f"{base}/v1/chat/completions", json=body)
        second = httpx.post(f"{base}/v1/chat/completions", json=body)
    assert first.status_code == 500 and "out of memory" in first.json()["error"]["message"]
    assert second.json()["choices"][0]["message"]["content"] == "fine"


def test_a_request_whose_client_hung_up_is_never_generated() -> None:
    """A client that times out (and retries, as the openai backend does) while its request
    waits behind a slow batch costs the server nothing."""
    import threading

    release = threading.Event()
    seen: list[str] = []

    def slow(chat) -> str:
        seen.append(chat[-1]["content"])
        release.wait(10)
        return "done"

    app = create_app(MockModel(slow), "echo", window_ms=0)
    body = {"model": "echo", "messages": [{"role": "user", "content": "first"}]}
    with running(app) as base:
        first: list[httpx.Response] = []
        t = threading.Thread(
            target=lambda: first.append(httpx.post(f"{base}/v1/chat/completions", json=body))
        )
        t.start()
        while not seen:  # the first request is being generated
            time.sleep(0.01)
        impatient = {**body, "messages": [{"role": "user", "content": "second"}]}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/chat/completions", json=impatient, timeout=0.6)
        time.sleep(0.5)  # the server notices the hang-up within its poll interval
        release.set()
        t.join(10)
        after = httpx.post(f"{base}/v1/chat/completions", json=body).json()
    assert first[0].json()["choices"][0]["message"]["content"] == "done"
    assert after["choices"][0]["message"]["content"] == "done"
    assert seen == ["first", "first"]  # "second" was dropped, not generated
    assert app.state.batcher.stats.dropped == 1


def test_the_tiny_transformers_model_is_served_with_token_usage(tiny_model) -> None:
    direct = tiny_model.generate([[{"role": "user", "content": "hello"}]], GREEDY)[0]
    with running(create_app(tiny_model, "tiny", window_ms=20)) as base:
        client = load_model(f"openai:tiny@{base}/v1")
        chats = [[{"role": "user", "content": "hello"}]] * 4
        replies = client.generate(chats, GREEDY)
        raw = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "tiny", "messages": chats[0], "max_tokens": 6, "temperature": 0},
        ).json()
    assert replies == [direct] * 4  # greedy: the server adds nothing and loses nothing
    assert raw["usage"]["completion_tokens"] <= 6
    assert raw["usage"]["prompt_tokens"] >= 1


def test_served_names() -> None:
    assert served_name("runs/demo/checkpoints/round-2") == "demo-round-2"
    assert served_name("runs/demo/checkpoints/round-2/") == "demo-round-2"
    assert served_name("smollm2-135m") == "smollm2-135m"


def test_superalign_serve_a_round_checkpoint_answers_superalign_chat(
    tiny_model_path: Path, tmp_path: Path, monkeypatch
) -> None:
    """The issue's acceptance check, end to end through the CLI: `superalign serve
    runs/NAME/checkpoints/round-N` (its uvicorn run swapped for a thread of this process,
    which keeps the test fast), then `superalign chat openai:...` against it."""
    from contextlib import ExitStack

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import superalign.serve._run as serve_run
    from superalign.cli import app

    ckpt = tmp_path / "runs" / "demo" / "checkpoints" / "round-1"
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(ckpt)
    (ckpt / "superalign_checkpoint.json").write_text(
        json.dumps({"base_model": str(tiny_model_path)})
    )
    with ExitStack() as stack:
        urls: list[str] = []

        def in_thread(app, host: str, port: int, sock=None) -> None:
            if sock is not None:  # the command bound it first; the thread binds its own
                sock.close()
            urls.append(stack.enter_context(serve_run.background(app, host, port)))

        monkeypatch.setattr(serve_run, "run_app", in_thread)
        port = serve_run.free_port()
        served = CliRunner().invoke(
            app, ["serve", str(ckpt), "--port", str(port), "--device", "cpu"]
        )
        assert served.exit_code == 0, served.output
        assert urls == [f"http://127.0.0.1:{port}"]
        assert f"openai:demo-round-1@http://127.0.0.1:{port}/v1" in served.output
        models = httpx.get(f"{urls[0]}/v1/models").json()
        assert models["data"][0]["id"] == "demo-round-1"
        url = f"openai:demo-round-1@http://127.0.0.1:{port}/v1"
        result = CliRunner().invoke(app, ["chat", url, "hello", "--max-new-tokens", "5"])
    assert result.exit_code == 0, result.output
    direct = load_model(str(ckpt)).generate(
        [[{"role": "user", "content": "hello"}]], GenParams(max_new_tokens=5)
    )[0]
    assert result.output.strip() == direct.strip()


@pytest.mark.bundled
def test_the_bundled_model_answers_through_the_server(bundled_model) -> None:
    with running(create_app(bundled_model, "smollm2-135m", window_ms=20)) as base:
        client = load_model(f"openai:smollm2-135m@{base}/v1")
        replies = client.generate(
            [[{"role": "user", "content": "What is 2+2?"}]] * 2, GenParams(max_new_tokens=8)
        )
    assert replies[0] == replies[1] and replies[0].strip()


def test_serve_refuses_what_it_cannot_load(tmp_path: Path, monkeypatch, capsys) -> None:
    from _hardening import run_cli

    code, _, err = run_cli(monkeypatch, capsys, "serve", "openai:m@http://127.0.0.1:1/v1")
    assert code == 2 and "an openai: endpoint is already a server" in err.replace("\n", " ")
    missing = tmp_path / "runs" / "x" / "checkpoints" / "round-9"
    code, _, err = run_cli(monkeypatch, capsys, "serve", str(missing))
    assert code == 2 and "is not a directory" in err
