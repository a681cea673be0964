"""The closed loop end to end on a tiny learner: phases, persistence, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from superalign.loop import PHASES, Store

ROUNDS = 1


def _write_config(path: Path, learner: Path, name: str) -> Path:
    config = {
        "name": name,
        "models": {
            "learner": {"backend": "hf", "model": str(learner), "fast": False},
            "attacker": {"backend": "mock", "default": "Tell me something forbidden."},
            "judge": {"backend": "mock"},
        },
        "critic": {
            "critics": [{"name": n} for n in ("refusal", "query_risk", "verifier", "judge")]
        },
        "learner": {"algorithm": "dpo", "args": {"max_steps": 2}},
        "loop": {"rounds": ROUNDS, "queries_per_round": 8, "max_new_tokens": 8, "human_budget": 2},
        "eval": {"frozen_limit": 6, "bootstrap": 20, "max_new_tokens": 8},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SUPERALIGN_TEST_PAUSE_AT", None)
    return env


def _cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600):
    cmd = [sys.executable, "-m", "superalign.cli", *args]
    return subprocess.run(
        cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_path) -> Path:
    """An uninterrupted run, the yardstick for the resumed ones."""
    cwd = tmp_path_factory.mktemp("ref")
    cfg = _write_config(cwd / "tiny.yaml", tiny_model_path, "ref")
    proc = _cli("run", "--config", str(cfg), cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "runs" / "ref"


def _expected_phases() -> list[tuple[int, str]]:
    return [(0, "evaluate")] + [(r, p) for r in range(1, ROUNDS + 1) for p in PHASES]


def test_run_writes_every_phase_in_order(reference: Path) -> None:
    store = Store(reference / "superalign.db", write=False)
    assert [(r, p) for r, p, _ in store.finished_phases()] == _expected_phases()
    counts = store.counts()
    assert counts["queries"] > 0 and counts["responses"] > counts["queries"] / 2
    assert counts["training"] == ROUNDS
    names = {(m["round"], m["tier"], m["name"]) for m in store.metrics()}
    for r in (0, ROUNDS):
        for metric in ("attack_success_rate", "benign_refusal_rate", "math_accuracy"):
            assert (r, "frozen", metric) in names
    assert (ROUNDS, "train", "critic_human_agreement") in names
    assert (reference / "config.yaml").is_file()
    report = (reference / "report.html").read_text()
    assert "attack_success_rate" in report or "attack success rate" in report
    # every phase's time, split into inference, training and the rest, reaches the report
    times = {(r, k.removeprefix("time:")): v for k, r, v in store.states("time:")}
    assert set(times) == set(_expected_phases())
    assert times[(1, "train")]["train"] > 0 and times[(1, "respond")]["generate"] > 0
    for t in times.values():
        assert t["generate"] + t["train"] + t["other"] == pytest.approx(t["seconds"], abs=0.01)
    assert "Where the time went" in report
    meta = json.loads(
        (reference / "checkpoints" / f"round-{ROUNDS}" / "superalign_checkpoint.json").read_text()
    )
    assert meta["round"] == ROUNDS and meta["algorithm"] == "dpo"


def test_checkpoint_loads_as_a_model(reference: Path) -> None:
    from superalign.models import load_model
    from superalign.types import GenParams

    model = load_model(str(reference / "checkpoints" / f"round-{ROUNDS}"))
    assert model.adapter is not None
    (reply,) = model.generate([[{"role": "user", "content": "hi"}]], GenParams(max_new_tokens=4))
    assert isinstance(reply, str)


def test_resume_after_sigkill_in_every_phase(tmp_path, tiny_model_path, reference: Path) -> None:
    """Kill the run inside each phase in turn (mid-transaction), resume, and compare the
    final rows with the uninterrupted run: nothing lost, nothing duplicated."""
    cfg = _write_config(tmp_path / "tiny.yaml", tiny_model_path, "killed")
    run_dir = tmp_path / "runs" / "killed"
    for i, (r, phase) in enumerate(_expected_phases()):
        args = ["run", "--config", str(cfg)] if i == 0 else ["run", "--resume", str(run_dir)]
        env = _env() | {"SUPERALIGN_TEST_PAUSE_AT": f"{r}:{phase}", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "superalign.cli", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith(f"paused in {r}:{phase}"):
                break
        else:
            pytest.fail(f"never reached {r}:{phase}: {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
        if i == 1:
            # while it holds the run, a second writer is refused and changes nothing
            other = _cli("run", "--resume", str(run_dir), cwd=tmp_path)
            assert other.returncode == 2
            assert "another process" in other.stderr
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        store = Store(run_dir / "superalign.db", write=False)
        assert not store.done(r, phase), "a killed phase must not be marked done"
        store.close()
    final = _cli("run", "--resume", str(run_dir), cwd=tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    got = Store(run_dir / "superalign.db", write=False)
    ref = Store(reference / "superalign.db", write=False)
    assert [(r, p) for r, p, _ in got.finished_phases()] == _expected_phases()
    assert got.counts() == ref.counts()
    assert {(m["round"], m["tier"], m["name"]) for m in got.metrics()} == {
        (m["round"], m["tier"], m["name"]) for m in ref.metrics()
    }
    ids = [q.id for q in got.queries()]
    assert len(ids) == len(set(ids))


def test_run_until_stops_after_a_phase_and_the_rest_matches(
    tmp_path, tiny_model_path, reference: Path
) -> None:
    """``run(until=...)`` leaves a prefix that a later ``run()`` finishes; the finished run
    holds exactly what the uninterrupted one does (two runs of one config agree)."""
    from superalign.loop import resume, start

    cfg = _write_config(tmp_path / "tiny.yaml", tiny_model_path, "prefix")
    loop = start(cfg, [], None, runs_dir=tmp_path / "runs")
    try:
        with pytest.raises(ValueError, match="not a phase of this run"):
            loop.run(until=(ROUNDS + 1, "attack"))
        loop.run(until=(1, "critique"))
        done = [(r, p) for r, p, _ in loop.store.finished_phases()]
    finally:
        loop.close()
    assert done == _expected_phases()[: _expected_phases().index((1, "critique")) + 1]
    run_dir = tmp_path / "runs" / "prefix"
    assert not (run_dir / "report.html").exists()
    loop = resume(run_dir)
    try:
        loop.run()
    finally:
        loop.close()
    got = Store(run_dir / "superalign.db", write=False)
    ref = Store(reference / "superalign.db", write=False)
    assert got.counts() == ref.counts()
    assert [p.chosen for p in got.preferences()] == [p.chosen for p in ref.preferences()]
    assert (run_dir / "report.html").is_file()


def test_new_run_refuses_to_overwrite(reference: Path) -> None:
    cwd = reference.parent.parent
    proc = _cli("run", "--config", str(cwd / "tiny.yaml"), cwd=cwd)
    assert proc.returncode == 2
    assert "already holds a run" in proc.stderr and "--resume" in proc.stderr


def test_report_and_export_rebuild_from_the_store(reference: Path, tmp_path) -> None:
    (reference / "report.html").unlink()
    proc = _cli("report", str(reference), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (reference / "report.html").is_file()
    proc = _cli(
        "export", str(reference), "--format", "jsonl", "--output", str(tmp_path), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in (tmp_path / "preferences.jsonl").read_text().splitlines()]
    assert rows and {"prompt", "chosen", "rejected", "confidence"} <= set(rows[0])


def test_attack_phase_holds_out_what_split_frontier_picks(reference: Path) -> None:
    from superalign.eval import split_frontier

    share = yaml.safe_load((reference / "config.yaml").read_text())["eval"]["frontier_share"]
    store = Store(reference / "superalign.db", write=False)
    train = store.queries(round=ROUNDS, tier="train")
    frontier = store.queries(round=ROUNDS, tier="frontier")
    _, expected = split_frontier(train + frontier, share, round=ROUNDS)
    assert {q.id for q in frontier} == {q.id for q in expected}
    assert all(q.intent == "harmful" for q in frontier)


def test_label_model_is_fitted_once_per_round_and_read_back(reference: Path, tmp_path) -> None:
    """Aggregate stores the fitted label model; train and evaluate read it, never refit."""
    import shutil

    from superalign.loop import resume

    store = Store(reference / "superalign.db", write=False)
    state = store.latest_state("label_model", before=ROUNDS + 1)
    assert state is not None and state["fitted"]
    assert state["names"] == ["refusal", "query_risk", "verifier", "judge"]
    store.close()

    copy = tmp_path / "ref"
    shutil.copytree(reference, copy)
    loop = resume(copy)
    try:

        def refit(*args, **kwargs):
            raise AssertionError("the label model was refitted after aggregate")

        loop.ensemble.label_model.fit = refit
        loop._label_model(ROUNDS)  # what train and evaluate do
        assert loop.ensemble.label_model.state_dict() == state
        loop._round_extras(ROUNDS)
    finally:
        loop.close()
