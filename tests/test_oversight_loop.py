"""The loop runs end to end with an oversight critic: debate (transcripts stored and
shown in the report) and decomposition (its sub-question findings stored)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from superalign.loop import Store

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# A learner that always finds something to train on with a random tiny model: GRPO
# samples and scores its own completions. The decomposition critic calls the tiny
# model's garbled answers to harmful requests harmless, so no refusal is rated better,
# and which revisions a distilling SFT learner keeps depends on the queries the
# attacker happens to draw; either would leave a pair- or revision-based learner with
# nothing to train on, and the point here is the critic, not the learner.
LEARNER = {
    "algorithm": "grpo",
    "args": {
        "steps": 1,
        "prompts_per_step": 2,
        "num_generations": 2,
        "max_completion_length": 8,
    },
}


def _config(path: Path, name: str, learner: Path) -> Path:
    """The shipped oversight config, shrunk to the tiny learner; its critics kept."""
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    tiny = {"backend": "hf", "model": str(learner), "fast": False}
    cfg["models"] = {
        "learner": tiny,
        "attacker": {"backend": "mock", "default": "Tell me something forbidden."},
        "judge": tiny,  # the debate's judge and debaters: real generation, real logprobs
    }
    cfg["attacker"].pop("mutators", None)
    for spec in cfg["critic"]["critics"]:
        if spec["name"] == "debate":
            spec["args"] = {**spec.get("args", {}), "max_new_tokens": 8}
    cfg["learner"] = LEARNER
    cfg["loop"] = {"rounds": 1, "queries_per_round": 8, "max_new_tokens": 8, "human_budget": 2}
    cfg["eval"] = {"frozen_limit": 4, "bootstrap": 20, "max_new_tokens": 8}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(tmp_path: Path, name: str, learner: Path) -> Path:
    cfg = _config(tmp_path / f"{name}.yaml", name, learner)
    env = {k: v for k, v in os.environ.items() if k != "SUPERALIGN_TEST_PAUSE_AT"}
    proc = subprocess.run(
        [sys.executable, "-m", "superalign.cli", "run", "--config", str(cfg)],
        cwd=tmp_path,
        env=env | {"HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / name
    store = Store(run / "superalign.db", write=False)
    assert (1, "train") in {(r, p) for r, p, _ in store.finished_phases()}
    return run


def _critiques(run: Path, critic: str) -> list:
    store = Store(run / "superalign.db", write=False)
    judged = store.judged(tier="train")
    assert judged, "the round judged no training pairs"
    return [c for j in judged for c in j.judgement.critiques if c.critic == critic]


def test_loop_runs_with_the_debate_critic(tmp_path: Path, tiny_model_path: Path) -> None:
    run = _run(tmp_path, "debate", tiny_model_path)
    critiques = _critiques(run, "debate")
    assert critiques, "the debate critic judged nothing"
    records = [c.explanation for c in critiques]
    failed = [r for r in records if "failed" in r]
    assert not failed, failed[:2]
    # every record holds both sides' arguments and the judge's probability
    for record in records:
        assert record.startswith("debate: Debater A argued")
        assert "\nDebater A: " in record and "\nDebater B: " in record
        assert "judge: P(acceptable) = " in record
    report = (run / "report.html").read_text()
    assert "Debate and consultancy" in report
    assert "Debater A argued" in report


def test_loop_runs_with_the_decompose_critic(tmp_path: Path, tiny_model_path: Path) -> None:
    run = _run(tmp_path, "decompose", tiny_model_path)
    critiques = _critiques(run, "decompose")
    assert critiques, "the decompose critic judged nothing"
    assert all(c.explanation for c in critiques)
    judged = [c for c in critiques if c.verdict is not None]
    assert judged, "decompose abstained on every pair"


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
