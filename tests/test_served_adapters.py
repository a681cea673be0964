"""Rollouts on servers with per-round adapters (issue 22, item 3): `superalign serve`'s
vLLM-style LoRA endpoints, its API key, and an hf learner that trains here but generates
through a server, against real HTTP on 127.0.0.1 with a tiny random Llama."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from _servers import running
from superalign.errors import ModelError
from superalign.models import HFChatModel, MockModel, OpenAIChatModel
from superalign.serve import Batcher, create_app, free_port
from superalign.types import GenParams

GREEDY = GenParams(max_new_tokens=8, temperature=0.0)
CHATS = [
    [{"role": "user", "content": "hello"}],
    [{"role": "user", "content": "What is 17 times 23?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
]
KEY = "s3cret-key"


def _adapter(base: Path, target: Path, seed: int, scale: float = 1.0) -> Path:
    """A LoRA adapter of ``base`` with random, non-zero weights, saved at ``target``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    lora = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.mul_(scale)
    lora.save_pretrained(target)
    return target


def _reference(path: Path, adapter: Path | None = None) -> list[str]:
    """Greedy replies of the in-process peft model (plain generate, no server)."""
    model = HFChatModel(
        model=str(path), adapter=str(adapter) if adapter else None, device="cpu", fast=False
    )
    return model.generate(CHATS, GREEDY)


def _ask(base: str, model: str, chat, headers: dict | None = None) -> httpx.Response:
    body = {"model": model, "messages": chat, "max_tokens": 8, "temperature": 0}
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60)


def _load(base: str, name, path, headers: dict | None = None) -> httpx.Response:
    body = {"lora_name": name, "lora_path": str(path) if isinstance(path, Path) else path}
    return httpx.post(f"{base}/v1/load_lora_adapter", json=body, headers=headers, timeout=60)


def _unload(base: str, name, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/unload_lora_adapter", json={"lora_name": name}, headers=headers, timeout=60
    )


def _text(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


@pytest.fixture(scope="module")
def adapters(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": _adapter(tiny_model_path, root / "a", seed=1, scale=20.0),
        "b": _adapter(tiny_model_path, root / "b", seed=2, scale=20.0),
    }


@pytest.fixture(scope="module")
def references(tiny_model_path: Path, adapters: dict[str, Path]) -> dict[str | None, list[str]]:
    out: dict[str | None, list[str]] = {None: _reference(tiny_model_path)}
    for name, path in adapters.items():
        out[name] = _reference(tiny_model_path, path)
    return out


# -- the server's adapter endpoints ------------------------------------------------------


def test_load_list_generate_and_unload_an_adapter(
    tiny_model_path: Path, adapters: dict[str, Path], references: dict
) -> None:
    # the fast decode engine serves: it must re-merge its weights when the adapter changes
    served = HFChatModel(model=str(tiny_model_path), device="cpu", fast=True)
    assert served.fast is not None
    logged: list[str] = []
    app = create_app(served, "tiny", window_ms=5, log=logged.append)
    assert references["a"] != references[None]  # non-zero adapter weights change the replies
    with running(app) as base:
        before = [_text(_ask(base, "tiny", c)) for c in CHATS]
        loaded = _load(base, "run-round-1", adapters["a"])
        listed = httpx.get(f"{base}/v1/models").json()["data"]
        with_a = [_text(_ask(base, "run-round-1", c)) for c in CHATS]
        base_again = [_text(_ask(base, "tiny", c)) for c in CHATS]
        raw = _ask(base, "run-round-1", CHATS[0]).json()
        unloaded = _unload(base, "run-round-1")
        gone = _ask(base, "run-round-1", CHATS[0])
        listed_after = httpx.get(f"{base}/v1/models").json()["data"]
        base_last = [_text(_ask(base, "tiny", c)) for c in CHATS]
    assert loaded.status_code == 200 and "run-round-1" in loaded.text
    assert [(m["id"], m["parent"]) for m in listed] == [("tiny", None), ("run-round-1", "tiny")]
    assert listed[1]["root"] == str(adapters["a"].resolve())
    assert before == base_again == base_last == references[None]
    assert with_a == references["a"]  # the in-process peft model's greedy replies, exactly
    assert raw["model"] == "run-round-1"
    assert unloaded.status_code == 200
    assert gone.status_code == 404 and "not served here" in gone.json()["error"]["message"]
    assert [m["id"] for m in listed_after] == ["tiny"]
    assert logged[0].startswith("loaded adapter run-round-1 from ")
    assert logged[1] == "unloaded adapter run-round-1"
    assert not served.has_adapter  # the last adapter out: the plain base model again


def test_concurrent_requests_for_two_adapters_and_the_base_are_batched_apart(
    tiny_model_path: Path, adapters: dict[str, Path], references: dict
) -> None:
    served = HFChatModel(model=str(tiny_model_path), device="cpu", fast=True)
    app = create_app(served, "tiny", window_ms=200, max_batch=64)
    with running(app) as base:
        for name, path in adapters.items():
            assert _load(base, name, path).status_code == 200
        jobs = [(name, i) for i in range(len(CHATS)) for name in ("tiny", "a", "b")] * 2
        replies: dict[int, str] = {}

        def ask(k: int, name: str, i: int) -> None:
            replies[k] = _text(_ask(base, name, CHATS[i]))

        threads = [threading.Thread(target=ask, args=(k, *job)) for k, job in enumerate(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for k, (name, i) in enumerate(jobs):
        assert replies[k] == references[None if name == "tiny" else name][i], (name, i)
    stats = app.state.batcher.stats
    assert stats.chats == len(jobs)
    assert set(stats.adapters) == {None, "a", "b"}
    assert stats.calls < len(jobs)  # requests for the same adapter shared calls


def test_the_batcher_never_mixes_adapters_and_batches_greedy_requests_across_seeds() -> None:
    current: list[str | None] = [None]
    calls: list[tuple[str | None, list[str]]] = []

    @contextmanager
    def using(name: str | None):
        current[0] = name
        yield
        current[0] = "nobody"

    class Recording(MockModel):
        def generate(self, chats, params):
            calls.append((current[0], [c[-1]["content"] for c in chats]))
            return [f"{current[0]}:{c[-1]['content']}" for c in chats]

    async def main() -> list[str]:
        batcher = Batcher(Recording(), window_ms=100, max_batch=64, using=using)
        await batcher.start()
        try:
            asks = [
                batcher.generate(
                    [{"role": "user", "content": f"{name}-{i}"}],
                    GenParams(max_new_tokens=4, seed=i),  # greedy: the seed cannot matter
                    name,
                )
                for i in range(4)
                for name in (None, "x", "y")
            ]
            return list(await asyncio.gather(*asks))
        finally:
            await batcher.stop()

    replies = asyncio.run(main())
    assert replies == [f"{n}:{n}-{i}" for i in range(4) for n in (None, "x", "y")]
    assert len(calls) == 3  # one call per adapter, each carrying its 4 requests
    for adapter, contents in calls:
        assert contents == [f"{adapter}-{i}" for i in range(4)]


def test_sampled_requests_with_different_seeds_are_still_kept_apart() -> None:
    calls: list[int] = []

    class Recording(MockModel):
        def generate(self, chats, params):
            calls.append(len(chats))
            return super().generate(chats, params)

    async def main() -> None:
        batcher = Batcher(Recording(), window_ms=50)
        await batcher.start()
        try:
            params = [GenParams(temperature=0.7, seed=s) for s in (1, 2, 1)]
            await asyncio.gather(
                *(batcher.generate([{"role": "user", "content": "x"}], p) for p in params)
            )
        finally:
            await batcher.stop()

    asyncio.run(main())
    assert sorted(calls) == [1, 2]  # seed 1 twice shares a call; seed 2 has its own


def test_a_served_round_checkpoint_keeps_its_own_adapter_for_its_name(
    tiny_model_path: Path, adapters: dict[str, Path], references: dict
) -> None:
    served = HFChatModel(model=str(adapters["a"]), device="cpu", fast=False)
    # adapter_config names the base by path: the checkpoint loads on its own
    app = create_app(served, "ckpt", window_ms=0)
    with running(app) as base:
        own = [_text(_ask(base, "ckpt", c)) for c in CHATS]
        assert _load(base, "b", adapters["b"]).status_code == 200
        with_b = [_text(_ask(base, "b", c)) for c in CHATS]
        own_again = [_text(_ask(base, "ckpt", c)) for c in CHATS]
        assert _unload(base, "b").status_code == 200
        own_last = [_text(_ask(base, "ckpt", c)) for c in CHATS]
    assert own == own_again == own_last == references["a"]
    assert with_b == references["b"]


@pytest.fixture()
def tiny_server(tiny_model_path: Path):
    served = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    app = create_app(served, "tiny", window_ms=0, max_adapters=2)
    with running(app) as base:
        yield base


def _error(r: httpx.Response, status: int, param: str | None, words: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == ("invalid_request_error" if status == 400 else "not_found_error")
    assert error["param"] == param
    assert words in error["message"], error["message"]


def test_bad_load_and_unload_requests_are_refused_clearly(
    tiny_server: str, adapters: dict[str, Path], tmp_path: Path, tiny_model_path: Path
) -> None:
    base = tiny_server
    not_adapter = tmp_path / "plain"
    not_adapter.mkdir()
    (not_adapter / "notes.txt").write_text("hi")
    a_file = tmp_path / "file.bin"
    a_file.write_bytes(b"x")
    # an adapter of a differently sized Llama: its matrices do not fit this model's layers
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other-base"
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(other)
    foreign = _adapter(other, tmp_path / "foreign", seed=3)

    _error(_load(base, None, adapters["a"]), 400, "lora_name", "non-empty string")
    _error(_load(base, "has space", adapters["a"]), 400, "lora_name", "not a plain name")
    _error(_load(base, "../up", adapters["a"]), 400, "lora_name", "not a plain name")
    _error(_load(base, "tiny", adapters["a"]), 400, "lora_name", "base model's own name")
    _error(_load(base, "x", None), 400, "lora_path", "non-empty string")
    _error(_load(base, "x", tmp_path / "missing"), 404, "lora_path", "no such directory")
    _error(_load(base, "x", a_file), 400, "lora_path", "is a file")
    _error(_load(base, "x", not_adapter), 400, "lora_path", "not a peft adapter")
    _error(_load(base, "x", foreign), 400, "lora_path", "not for this base model")
    assert _load(base, "x", adapters["a"]).status_code == 200
    _error(_load(base, "x", adapters["b"]), 400, "lora_name", "already loaded")
    assert _load(base, "y", adapters["b"]).status_code == 200
    _error(_load(base, "z", adapters["b"]), 400, "lora_name", "at most 2 adapters")
    _error(_unload(base, "nope"), 404, "lora_name", "no adapter named 'nope' is loaded")
    _error(_unload(base, 7), 400, "lora_name", "non-empty string")
    not_json = httpx.post(
        f"{base}/v1/load_lora_adapter",
        content=b"{oops",
        headers={"Content-Type": "application/json"},
    )
    _error(not_json, 400, None, "not valid JSON")
    _error(httpx.post(f"{base}/v1/load_lora_adapter", json=[1]), 400, None, "must be a JSON object")
    # the refused loads left the model as it was: the base and both adapters still answer
    listed = [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]]
    assert listed == ["tiny", "x", "y"]
    assert _text(_ask(base, "tiny", CHATS[0])) == _reference(tiny_model_path)[0]


def test_a_model_without_adapters_refuses_loading() -> None:
    with running(create_app(MockModel(lambda chat: "hi"), "echo")) as base:
        r = _load(base, "x", "/tmp")
    assert r.status_code == 400 and "cannot load LoRA adapters" in r.json()["error"]["message"]


# -- the API key --------------------------------------------------------------------------


def test_every_request_needs_the_api_key(monkeypatch) -> None:
    app = create_app(MockModel(lambda chat: "hi"), "echo", api_key=KEY, window_ms=0)
    chat = [{"role": "user", "content": "x"}]
    with running(app) as base:
        none = _ask(base, "echo", chat)
        wrong = _ask(base, "echo", chat, {"Authorization": "Bearer nope"})
        wrong_scheme = _ask(base, "echo", chat, {"Authorization": f"Basic {KEY}"})
        listing = httpx.get(f"{base}/v1/models")
        loading = _load(base, "x", "/tmp")
        unknown = httpx.get(f"{base}/v1/embeddings")
        right = _ask(base, "echo", chat, {"Authorization": f"Bearer {KEY}"})
        monkeypatch.setenv("MY_KEY", KEY)
        client = OpenAIChatModel(model="echo", base_url=f"{base}/v1", api_key_env="MY_KEY")
        through_backend = client.generate([chat], GREEDY)
    for r in (none, wrong, wrong_scheme, listing, loading, unknown):
        assert r.status_code == 401
        error = r.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
        assert r.headers["www-authenticate"] == "Bearer"
    assert "needs an API key" in none.json()["error"]["message"]
    assert "not this server's key" in wrong.json()["error"]["message"]
    assert _text(right) == "hi"
    assert through_backend == ["hi"]
    assert KEY not in json.dumps([r.json() for r in (none, wrong, wrong_scheme)])


def test_serve_takes_the_key_from_the_option_or_the_environment(
    monkeypatch, tiny_model_path
) -> None:
    from typer.testing import CliRunner

    import superalign.serve._run as serve_run
    from superalign.cli import app as cli

    seen: list = []

    def capture(app, host: str, port: int, sock=None) -> None:
        if sock is not None:
            sock.close()
        seen.append(app)

    monkeypatch.setattr(serve_run, "run_app", capture)
    runner = CliRunner()
    args = ["serve", str(tiny_model_path), "--port", "0", "--device", "cpu", "--no-fast"]
    monkeypatch.setenv("SUPERALIGN_API_KEY", "from-env")
    by_env = runner.invoke(cli, args)
    by_option = runner.invoke(cli, [*args, "--api-key", "from-option"])
    monkeypatch.delenv("SUPERALIGN_API_KEY")
    without = runner.invoke(cli, args)
    assert by_env.exit_code == by_option.exit_code == without.exit_code == 0, by_env.output
    assert "from-env" not in by_env.output and "Authorization: Bearer KEY" in by_env.output

    def status(app, key: str | None) -> int:
        with running(app) as base:
            headers = {"Authorization": f"Bearer {key}"} if key else None
            return httpx.get(f"{base}/v1/models", headers=headers).status_code

    assert status(seen[0], "from-env") == 200 and status(seen[0], None) == 401
    assert status(seen[1], "from-option") == 200 and status(seen[1], "from-env") == 401
    assert status(seen[2], None) == 200


# -- a learner whose rollouts go through a server ------------------------------------------


def _train_a_bit(model: HFChatModel, seed: int) -> None:
    """What a round's training does to the learner, in small: LoRA on, weights moved."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if not isinstance(model.model, PeftModel):
        config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        model.model = get_peft_model(model.model, config).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 5)
    model.weights_changed()


def _in_process(model: HFChatModel, tmp: Path) -> list[str]:
    """The learner's current weights, generating in process (its adapter saved and loaded)."""
    model.model.save_pretrained(tmp)
    return _reference(Path(model.settings.model), tmp)


def test_a_learner_generates_through_the_server_with_its_round_adapters(
    tiny_model_path: Path, tmp_path: Path, monkeypatch, adapters: dict[str, Path]
) -> None:
    served = HFChatModel(model=str(tiny_model_path), device="cpu", fast=True)
    logged: list[str] = []
    app = create_app(served, "tiny", window_ms=20, api_key=KEY, log=logged.append)
    monkeypatch.setenv("ROLLOUT_KEY", KEY)
    with running(app) as base:
        auth = {"Authorization": f"Bearer {KEY}"}
        # what an earlier process with this prefix left: dropped, so round 1's name is free
        assert _load(base, "run1-round-1", adapters["b"], auth).status_code == 200
        rollouts = {"url": f"{base}/v1", "api_key_env": "ROLLOUT_KEY", "prefix": "run1"}
        learner = HFChatModel(model=str(tiny_model_path), device="cpu", rollouts=rollouts)
        assert learner.fast is None and learner.served is not None
        round0 = learner.generate(CHATS, GREEDY)
        _train_a_bit(learner, seed=1)
        round1 = learner.generate(CHATS, GREEDY)
        listed1 = [
            m["id"]
            for m in httpx.get(
                f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"}
            ).json()["data"]
        ]
        expected1 = _in_process(learner, tmp_path / "r1")
        with learner.base_weights():
            base_inside = learner.generate(CHATS, GREEDY)
        _train_a_bit(learner, seed=2)
        round2 = learner.generate(CHATS, GREEDY)
        expected2 = _in_process(learner, tmp_path / "r2")
        listed2 = [
            m["id"]
            for m in httpx.get(
                f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"}
            ).json()["data"]
        ]
        stats = app.state.batcher.stats
    reference = _reference(tiny_model_path)
    assert round0 == base_inside == reference
    assert round1 == expected1 and round1 != reference
    assert round2 == expected2 and round2 != round1
    assert listed1 == ["tiny", "run1-round-1"]
    assert listed2 == ["tiny", "run1-round-2"]  # the previous round's adapter unloaded
    assert learner.served.loads == ["run1-round-1", "run1-round-2"]
    assert [line.split(" from ")[0] for line in logged] == [
        "loaded adapter run1-round-1",  # the stale one
        "unloaded adapter run1-round-1",
        "loaded adapter run1-round-1",
        "loaded adapter run1-round-2",
        "unloaded adapter run1-round-1",
    ]
    assert stats.adapters.count(None) >= 2 and "run1-round-2" in stats.adapters
    assert not list((learner.served.dir).glob("run1-round-1"))  # its files removed too


def test_a_resumed_learner_loads_its_checkpoint_on_the_server(
    tiny_model_path: Path, adapters: dict[str, Path], references: dict, tmp_path: Path
) -> None:
    import shutil

    ckpt = tmp_path / "runs" / "demo" / "checkpoints" / "round-2"
    shutil.copytree(adapters["a"], ckpt)
    meta = {"run_id": "abc123", "round": 2, "base_model": str(tiny_model_path)}
    (ckpt / "superalign_checkpoint.json").write_text(json.dumps(meta))
    served = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    with running(create_app(served, "tiny", window_ms=0)) as base:
        # what a killed run left: its round-2 adapter (and an unfinished round 3)
        assert _load(base, "abc123-round-2", adapters["b"]).status_code == 200
        assert _load(base, "abc123-round-3", adapters["b"]).status_code == 200
        assert _load(base, "someone-else", adapters["b"]).status_code == 200
        learner = HFChatModel(
            model=str(ckpt), device="cpu", trainable=True, rollouts={"url": f"{base}/v1"}
        )
        replies = learner.generate(CHATS, GREEDY)
        listed = [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]]
        roots = {m["id"]: m["root"] for m in httpx.get(f"{base}/v1/models").json()["data"]}
    assert replies == references["a"]
    assert listed == ["tiny", "someone-else", "abc123-round-2"]
    assert roots["abc123-round-2"] == str(ckpt.resolve())
    assert learner.served.round == 2 and learner.served.current == "abc123-round-2"


def test_rollout_server_problems_are_named_with_what_to_run(
    tiny_model_path: Path, monkeypatch
) -> None:
    def learner(url: str, **kw) -> HFChatModel:
        return HFChatModel(
            model=str(tiny_model_path), device="cpu", rollouts={"url": url, "retries": 0, **kw}
        )

    port = free_port()
    with pytest.raises(
        ModelError, match=r"cannot reach the rollout server at http://127\.0\.0\.1"
    ) as e:
        learner(f"http://127.0.0.1:{port}/v1")
    assert "superalign serve" in str(e.value) and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in str(e.value)

    keyed = create_app(MockModel(lambda c: "x"), "echo", api_key=KEY)
    with running(keyed) as base:
        monkeypatch.delenv("SUPERALIGN_API_KEY", raising=False)
        with pytest.raises(ModelError, match=r"refused no key \(\$SUPERALIGN_API_KEY is unset\)"):
            learner(f"{base}/v1")
        monkeypatch.setenv("SUPERALIGN_API_KEY", "wrong")
        with pytest.raises(ModelError, match=r"refused the key in \$SUPERALIGN_API_KEY.*HTTP 401"):
            learner(f"{base}/v1")

    # a plain OpenAI-compatible endpoint: chat, but no adapter endpoints
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model"}]})

    plain = Starlette(routes=[Route("/v1/models", models)])
    with running(plain) as base:
        with pytest.raises(ModelError, match="has no POST /v1/load_lora_adapter") as e:
            learner(f"{base}/v1")
    assert "vllm serve" in str(e.value)


def test_sampled_rollouts_send_one_seed_per_call_and_share_batches(tiny_model_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []

    class Recording(MockModel):
        def generate(self, chats, params):
            seen.append((len(chats), params.seed))
            return super().generate(chats, params)

    app = create_app(Recording(lambda chat: "ok"), "echo", window_ms=200, max_batch=64)
    sampled = GenParams(max_new_tokens=4, temperature=0.8, seed=3)
    chats = [[{"role": "user", "content": f"q{i}"}] for i in range(6)]
    with running(app) as base:
        OpenAIChatModel(model="echo", base_url=f"{base}/v1").generate(chats, sampled)
        per_chat = list(seen)
        seen.clear()
        learner = HFChatModel(
            model=str(tiny_model_path), device="cpu", rollouts={"url": f"{base}/v1"}
        )
        replies = learner.generate(chats, sampled)
    assert sorted(seed for _, seed in per_chat) == [3, 4, 5, 6, 7, 8]  # the openai backend
    assert replies == ["ok"] * 6
    assert seen == [(6, 3)]  # the learner's rollouts: the call's seed, one batch


def test_a_full_weight_learner_cannot_roll_out_through_a_server(tiny_model_path: Path) -> None:
    served = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    with running(create_app(served, "tiny", window_ms=0)) as base:
        learner = HFChatModel(
            model=str(tiny_model_path), device="cpu", rollouts={"url": f"{base}/v1"}
        )
        with torch.no_grad():
            next(learner.model.parameters()).add_(1.0)  # a full-weight training step
        with pytest.raises(ModelError, match=r"trains LoRA adapters only.*learner\.lora"):
            learner.weights_changed()
        listed = [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]]
    assert listed == ["tiny"]


def test_a_generation_in_the_middle_of_training_is_served_under_an_update_name(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    """Weights changed without ``weights_changed()`` (an SFT round generating with the
    adapter it is training): the server gets them before the next request, under an update
    name that does not take the round's name."""
    served = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    with running(create_app(served, "tiny", window_ms=0)) as base:
        learner = HFChatModel(
            model=str(tiny_model_path), device="cpu", rollouts={"url": f"{base}/v1", "prefix": "p"}
        )
        _train_a_bit(learner, seed=1)  # round 1 ends
        with torch.no_grad():  # round 2 trains, through .data as some optimizers do
            for name, p in learner.model.named_parameters():
                if "lora_B" in name:
                    p.data.mul_(-1.0)
        mid = learner.generate(CHATS, GREEDY)
        expected = _in_process(learner, tmp_path / "mid")
        listed = [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]]
        learner.weights_changed()  # round 2 ends
        listed_after = [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]]
    assert mid == expected
    assert listed == ["tiny", "p-round-1-update-1"]
    assert listed_after == ["tiny", "p-round-2"]


# -- end to end: `superalign serve` as a process, a loop whose rollouts go through it -------


def _loop_config(path: Path, learner: Path, name: str, rollouts: dict | None) -> Path:
    spec: dict = {"backend": "hf", "model": str(learner), "fast": False}
    if rollouts:
        spec["rollouts"] = rollouts
    config = {
        "name": name,
        "models": {
            "learner": spec,
            "attacker": {"backend": "mock", "default": "Tell me something forbidden."},
            "judge": {"backend": "mock"},
        },
        "critic": {
            "critics": [{"name": n} for n in ("refusal", "query_risk", "verifier", "judge")]
        },
        # Greedy generation only: a sampled revision draws other random numbers on a server
        # (per-request seeds) than in process (one generator per batch).
        "learner": {"algorithm": "dpo", "args": {"max_steps": 2}, "pairs": {"revisions": False}},
        "loop": {"rounds": 2, "queries_per_round": 6, "max_new_tokens": 8, "human_budget": 2},
        "eval": {
            "frozen_limit": 4,
            "bootstrap": 20,
            "max_new_tokens": 8,
            "capability_max_new_tokens": 8,
            "judge_slice": None,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _start_loop(config: Path, cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "superalign.cli", "run", "--config", str(config)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]


def _headline(run_dir: Path) -> dict:
    from superalign.loop import Store

    store = Store(run_dir / "superalign.db", write=False)
    return {
        (m["round"], m["tier"], m["name"]): m["value"]
        for m in store.metrics()
        if m["tier"] == "frozen" and isinstance(m["value"], int | float)
    }


@pytest.mark.slow
def test_a_loop_whose_rollouts_go_through_superalign_serve(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    """`superalign serve` as a real process with an API key; a two-round loop on the tiny
    learner whose rollouts go through it: each round's adapter is loaded there (the previous
    one unloaded), and the frozen-tier metrics equal those of the same run in process."""
    env = {k: v for k, v in os.environ.items() if k != "SUPERALIGN_TEST_PAUSE_AT"}
    env.update(HF_HUB_OFFLINE="1", SUPERALIGN_API_KEY=KEY)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "superalign.cli", "serve", str(tiny_model_path),
         "--port", str(port), "--device", "cpu", "--window-ms", "20", "--no-fast"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                if httpx.get(f"{url}/models", headers=headers).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "superalign serve did not start"
            time.sleep(0.2)
        assert httpx.get(f"{url}/models").status_code == 401  # the key is required
        served_cfg = _loop_config(
            tmp_path / "served.yaml", tiny_model_path, "served", {"url": url, "concurrency": 8}
        )
        local_cfg = _loop_config(tmp_path / "local.yaml", tiny_model_path, "local", None)
        # the in-process run beside the served one: the same seed, the yardstick
        local = _start_loop(local_cfg, tmp_path, env)
        _finish(_start_loop(served_cfg, tmp_path, env))
        _finish(local)
        listed = httpx.get(f"{url}/models", headers=headers).json()["data"]
    finally:
        server.send_signal(signal.SIGINT)
        try:
            _, log = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            _, log = server.communicate()
    from superalign.loop import Store

    run_id = Store(tmp_path / "runs" / "served" / "superalign.db", write=False).meta("run_id")
    events = re.findall(r"(loaded|unloaded) adapter (\S+)", log)
    prefixes = {name.rsplit("-round-", 1)[0] for _, name in events}
    assert len(prefixes) == 1, events
    prefix = prefixes.pop()
    assert events == [
        ("loaded", f"{prefix}-round-1"),
        ("loaded", f"{prefix}-round-2"),
        ("unloaded", f"{prefix}-round-1"),
    ]
    assert [m["id"] for m in listed][1:] == [f"{prefix}-round-2"]
    assert run_id  # the run exists; its adapters were named by this learner's prefix
    served, local = _headline(tmp_path / "runs" / "served"), _headline(tmp_path / "runs" / "local")
    assert served and served.keys() == local.keys()
    assert served == local


def test_a_loops_served_adapters_are_named_after_its_run(
    tiny_model_path: Path, tmp_path: Path, adapters: dict[str, Path]
) -> None:
    """Without ``rollouts.prefix`` the loop names the learner's adapters after the run id,
    so a run resumed before its first checkpoint (killed in round 1's train phase, after
    the server took ``RUNID-round-1``) unloads what the killed process left."""
    from superalign.loop._run import start

    served = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    with running(create_app(served, "tiny", window_ms=0)) as base:
        config = _loop_config(tmp_path / "c.yaml", tiny_model_path, "named", {"url": f"{base}/v1"})
        loop = start(config, [], None, runs_dir=tmp_path / "runs")
        try:
            run_id = loop.store.meta("run_id")
            assert _load(base, f"{run_id}-round-1", adapters["b"]).status_code == 200
            assert _load(base, "another-run-round-1", adapters["b"]).status_code == 200
            learner = loop.learner_model
            listed = [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]]
        finally:
            loop.close()
    assert learner.served is not None and learner.served.prefix == run_id
    assert listed == ["tiny", "another-run-round-1"]
