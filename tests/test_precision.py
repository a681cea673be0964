"""``fast_precision: auto``: the choice from timings, its cache and log line, the config
value, and how the fast path's engine resolves it."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from superalign.config import load_config
from superalign.errors import ConfigError
from superalign.models import HFChatModel, _common, _precision
from superalign.models._fast import TorchDecodeEngine
from superalign.models._hf import HFSettings
from superalign.types import GenParams

LOGGER = "superalign.models._common"  # warn_once's logger


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no decision made and no message said."""
    monkeypatch.setattr(_precision, "_decisions", {})
    monkeypatch.setattr(_common, "_warned", set())


@pytest.fixture()
def probe_tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let ``auto`` probe the tiny Llama, below the size it otherwise leaves in float32."""
    monkeypatch.setattr(_precision, "MIN_FLOPS", 0)


class FakeTimer:
    """Injected timings: fixed seconds per run of each precision, calls counted."""

    def __init__(self, f32: list[float], bf16: list[float]) -> None:
        self.f32, self.bf16, self.calls = f32, bf16, []

    def __call__(self, rows: int, k: int, n: int) -> tuple[list[float], list[float]]:
        self.calls.append((rows, k, n))
        return self.f32, self.bf16


def test_bf16_clearly_faster_is_chosen_and_rates_come_from_the_best_runs() -> None:
    timer = FakeTimer(f32=[0.004, 0.002, 0.003], bf16=[0.002, 0.001, 0.005])
    d = _precision.probe(4, 100, 200, timer=timer)
    assert d.precision == "bfloat16"
    assert timer.calls == [(4, 100, 200)]
    gflop = 2 * 4 * 100 * 200 / 1e9
    assert d.float32_gflops == pytest.approx(gflop / 0.002)
    assert d.bfloat16_gflops == pytest.approx(gflop / 0.001)
    # A disturbed first float32 run does not decide: the best runs are within the margin.
    late = _precision.probe(4, 100, 300, timer=FakeTimer([0.010, 0.001], [0.002, 0.0009]))
    assert late.precision == "float32"


@pytest.mark.parametrize(
    ("f32", "bf16", "expected"),
    [
        (1.0, 0.5, "bfloat16"),  # 2x
        (1.2, 1.0, "bfloat16"),  # exactly the margin
        (1.1, 1.0, "float32"),  # faster, but within the margin
        (1.0, 1.0, "float32"),
        (1.0, 6.4, "float32"),  # oneDNN without AMX/AVX512-BF16
    ],
)
def test_choice_needs_the_margin(f32: float, bf16: float, expected: str) -> None:
    assert _precision.choose(f32, bf16) == expected
    d = _precision.probe(32, 64, 128, timer=FakeTimer([f32, 2 * f32], [bf16, 3 * bf16]))
    assert d.precision == expected


def test_decision_is_cached_per_shape_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    timer = FakeTimer(f32=[1.0], bf16=[0.5])
    first = _precision.probe(32, 64, 128, timer=timer)
    assert _precision.probe(32, 64, 128, timer=timer) is first
    assert len(timer.calls) == 1
    _precision.probe(32, 64, 256, timer=timer)  # another model's shape: probed
    assert len(timer.calls) == 2
    monkeypatch.setattr(torch, "get_num_threads", lambda: 99)
    _precision.probe(32, 64, 128, timer=timer)  # another thread count: probed
    assert len(timer.calls) == 3


def test_models_too_small_to_time_stay_float32_unprobed(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timer = FakeTimer(f32=[1.0], bf16=[0.1])  # would pick bfloat16 if asked
    monkeypatch.setattr(_precision, "time_products", timer)
    m = HFChatModel(
        model=str(tiny_model_path), device="cpu", fast_precision="auto"
    )  # 2 x 32 x 32 x 64 FLOPs
    assert m.fast.precision == "float32" and timer.calls == []
    monkeypatch.setattr(_precision, "MIN_FLOPS", 2 * 32 * 32 * 64)  # at the bound: probed
    assert TorchDecodeEngine(m, precision="auto").precision == "bfloat16"
    assert timer.calls == [(32, 32, 64)]


def test_large_products_are_cut_to_a_short_probe() -> None:
    assert _precision.probe_shape(32, 576, 1536) == (32, 576, 1536)  # SmolLM2-135M: whole
    rows, k, n = _precision.probe_shape(32, 4096, 14336)
    assert (rows, k) == (32, 4096) and 256 <= n < 14336
    assert 2 * rows * k * n <= max(_precision.MAX_FLOPS, 2 * rows * k * 256)


def test_real_probe_on_a_tiny_shape_picks_one_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        a = _precision.probe(4, 16, 32)
        b = _precision.probe(4, 16, 32)
    assert a is b and a.precision in ("float32", "bfloat16")
    assert a.float32_gflops > 0 and a.bfloat16_gflops > 0
    lines = [r.message for r in caplog.records if "fast_precision auto" in r.message]
    assert len(lines) == 1
    assert f"auto: {a.precision}" in lines[0] and "4x16 @ 16x32" in lines[0]
    assert lines[0].count("GFLOP/s") == 2


def test_real_timer_returns_runs_of_both_and_spares_the_global_rng() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    f32, bf16 = _precision.time_products(4, 16, 32)
    assert torch.equal(torch.rand(3), expected)
    assert _precision.MIN_REPEATS <= len(f32) <= _precision.REPEATS and len(bf16) == len(f32)
    assert all(s > 0 for s in f32 + bf16)


class _Clock:
    """A fake clock each product advances by its own next duration."""

    def __init__(self) -> None:
        self.now = 0.0

    def product(self, durations: list[float]):
        def run() -> None:
            self.now += durations.pop(0)

        return run


def test_one_slow_bfloat16_run_does_not_end_the_probe() -> None:
    """A hiccup on the first bfloat16 run (30x float32's time, far past ``HOPELESS``)
    must not decide: the probe runs ``MIN_REPEATS`` of each before it may stop, and the
    best runs choose bfloat16. Where bfloat16 is slow every time it stops right after."""
    clock = _Clock()
    f32 = clock.product([1e-3] * 5)
    bf16 = clock.product([3e-2] + [3e-4] * 4)
    f32_s, bf16_s = _precision.interleave(f32, bf16, clock=lambda: clock.now)
    assert len(f32_s) == _precision.REPEATS  # neither hopeless nor over budget
    assert _precision.choose(min(f32_s), min(bf16_s)) == "bfloat16"
    slow = _Clock()
    f32_s, bf16_s = _precision.interleave(
        slow.product([1e-3] * 5), slow.product([2e-2] * 5), clock=lambda: slow.now
    )
    assert len(bf16_s) == _precision.MIN_REPEATS
    assert _precision.choose(min(f32_s), min(bf16_s)) == "float32"


def test_auto_is_the_demo_default_and_accepted_by_config_validation() -> None:
    # The backend's own default stays exact: answers must not depend on the CPU.
    assert HFSettings().fast_precision == "float32"
    assert HFSettings(fast_precision="auto").fast_precision == "auto"
    config = load_config(Path("configs/default.yaml"))
    for role in ("learner", "attacker", "judge"):
        assert config.models[role].settings()["fast_precision"] == "auto"
    assert load_config(overrides=["models.judge.fast_precision=auto"])
    with pytest.raises(ConfigError, match=r"models\.judge\.fast_precision"):
        load_config(overrides=["models.judge.fast_precision=fastest"])


def _decided(shape: tuple[int, int, int], precision: str) -> None:
    _precision._decisions[(*shape, torch.get_num_threads())] = _precision.Decision(
        precision, 1.0, 2.0, shape, torch.get_num_threads()
    )


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.usefixtures("probe_tiny")
def test_engine_takes_the_probes_choice_for_the_loaded_shape(
    tiny_model_path: Path, precision: str
) -> None:
    # The tiny Llama: batch 2 x hidden 32 @ 32 x intermediate 64.
    _decided((2, 32, 64), precision)
    m = HFChatModel(model=str(tiny_model_path), device="cpu", batch_size=2, fast_precision="auto")
    assert isinstance(m.fast, TorchDecodeEngine) and m.fast.precision == precision
    w = m.fast.ensure_weights()
    want = torch.bfloat16 if precision == "bfloat16" else torch.float32
    assert w.layers[0].wgu.dtype == want and w.lm_head.dtype == torch.float32
    prompts = m.encode_prompts([[{"role": "user", "content": "Hi"}]], 4)
    out = m.fast.generate_ids(prompts, GenParams(max_new_tokens=4))
    assert len(out) == 1
    assert list(_precision._decisions) == [(2, 32, 64, torch.get_num_threads())]


@pytest.mark.usefixtures("probe_tiny")
def test_three_models_probe_once(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    timer = FakeTimer(f32=[1.0], bf16=[2.0])
    monkeypatch.setattr(_precision, "time_products", timer)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        models = [
            HFChatModel(model=str(tiny_model_path), device="cpu", fast_precision="auto")
            for _ in range(3)
        ]
    assert timer.calls == [(32, 32, 64)]
    assert all(m.fast.precision == "float32" for m in models)
    assert sum("fast_precision auto" in r.message for r in caplog.records) == 1


@pytest.mark.usefixtures("probe_tiny")
def test_auto_off_the_cpu_is_float32_without_probe_or_warning(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """(The device name is only read here; nothing runs on it.)"""
    timer = FakeTimer(f32=[1.0], bf16=[0.1])  # would pick bfloat16 if asked
    monkeypatch.setattr(_precision, "time_products", timer)
    m = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    m.device = "cuda:0"
    for dtype in (torch.float32, torch.bfloat16):
        m.model.to(dtype)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            caplog.clear()
            engine = TorchDecodeEngine(m, precision="auto")
        assert engine.precision == "float32"
        assert not caplog.records
    m.device = "cpu"  # a CPU model not loaded in float32 keeps its dtype, unprobed
    assert TorchDecodeEngine(m, precision="auto").precision == "float32"
    assert timer.calls == []
    m.model.to(torch.float32)
    assert TorchDecodeEngine(m, precision="auto").precision == "bfloat16"
    assert len(timer.calls) == 1


# -- training precision (train_precision) ---------------------------------------------------


@pytest.mark.usefixtures("probe_tiny")
@pytest.mark.parametrize(("f32", "bf16", "expected"), [(1.0, 0.5, True), (1.0, 2.0, False)])
def test_auto_training_precision_follows_a_probe_at_a_training_shape(
    tiny_model_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    f32: float,
    bf16: float,
    expected: bool,
) -> None:
    from superalign.learn._trl import training_args

    timer = FakeTimer(f32=[f32], bf16=[bf16])
    monkeypatch.setattr(_precision, "time_products", timer)
    m = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False, train_precision="auto")
    common = {"name": "t", "steps": 1, "batch_size": 2, "learning_rate": 1e-3, "seed": 0}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        args = training_args(run_dir=Path("unused"), model=m, **common)
        again = training_args(run_dir=Path("unused"), model=m, **common)
    assert args["bf16"] is again["bf16"] is expected
    # the tiny Llama: 512 tokens x hidden 32 @ 32 x intermediate 64, probed once, said once
    assert timer.calls == [(_precision.TRAIN_ROWS, 32, 64)]
    said = [r.message for r in caplog.records if "train_precision auto" in r.message]
    assert len(said) == 1 and ("bfloat16" if expected else "float32") in said[0]


def test_training_precision_as_set_unprobed_and_float32_by_default(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timer = FakeTimer(f32=[1.0], bf16=[0.1])
    monkeypatch.setattr(_precision, "time_products", timer)
    assert HFSettings().train_precision == "float32"
    m = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    assert _precision.training_precision(m) == "float32"
    m.settings = m.settings.model_copy(update={"train_precision": "bfloat16"})
    assert _precision.training_precision(m) == "bfloat16"
    m.device = "cuda:0"  # off the CPU the model's own dtype rules (only the name is read)
    assert _precision.training_precision(m) == "float32"
    assert timer.calls == []
    config = load_config(Path("configs/default.yaml"))  # the demo measures it
    assert config.models["learner"].settings()["train_precision"] == "auto"


def test_an_sft_step_in_bfloat16_autocast_trains(tiny_model_path: Path, tmp_path: Path) -> None:
    """A real TRL step under bfloat16 autocast on the CPU: the LoRA weights move, the loss
    is finite and near float32's on the same rows and seed."""
    from superalign.learn import LearnerSection, build_learner
    from superalign.types import Intent, Preference, Query, RoundData

    pairs = [
        Preference(query=Query(text=f"fact {i}", intent=Intent.benign), chosen="Yes, a fact.",
                   rejected="No.")
        for i in range(4)
    ]  # fmt: skip
    losses = {}
    for precision in ("float32", "bfloat16"):
        m = HFChatModel(
            model=str(tiny_model_path), device="cpu", fast=False, train_precision=precision
        )
        section = LearnerSection(
            algorithm="sft",
            learning_rate=1e-2,
            args={"mode": "chosen", "batch_size": 2, "max_steps": 2},
        )
        torch.manual_seed(0)
        ckpt = build_learner(section, m, None, tmp_path / precision).train_round(
            RoundData(round=1, judged=[], preferences=pairs)
        )
        losses[precision] = ckpt.metrics["losses"]
        lora_b = [p.detach() for n, p in m.model.named_parameters() if "lora_B" in n]
        moved = sum(float(p.abs().sum()) for p in lora_b)
        assert moved > 0
    assert all(math.isfinite(x) for x in losses["bfloat16"])
    assert losses["bfloat16"] != losses["float32"]  # the autocast was on
    assert abs(losses["bfloat16"][0] - losses["float32"][0]) < 0.05 * abs(losses["float32"][0])


@pytest.mark.usefixtures("probe_tiny")
def test_launched_workers_get_the_loops_decision_not_their_own_probe(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from superalign.learn._launch import model_settings

    monkeypatch.setattr(_precision, "time_products", FakeTimer(f32=[1.0], bf16=[0.5]))
    m = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False, train_precision="auto")
    settings = model_settings(m, tmp_path / "adapter")
    assert settings["train_precision"] == "bfloat16" and settings["trainable"] is True
