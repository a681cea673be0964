"""configs/smoke.yaml end to end on the real bundled model, as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from superalign.loop import PHASES, Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.bundled
def test_smoke_config_runs_end_to_end(tmp_path, bundled_path) -> None:
    cmd = [sys.executable, "-m", "superalign.cli", "run", "--config",
           str(ROOT / "configs" / "smoke.yaml"), "--runs-dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "attack success rate" in proc.stdout and "round 0" in proc.stdout
    run = tmp_path / "smoke"
    store = Store(run / "superalign.db", write=False)
    assert [p for _, p, _ in store.finished_phases()] == ["evaluate", *PHASES]
    critics = {
        c.critic for r in store.responses(round=1, tier="train") for c in store.critiques(r.id)
    }
    assert critics == {"refusal", "query_risk", "verifier", "judge", "learned"}
    # the learned critic was retrained on this round's labels, stored with the run
    assert (run / "critics" / "learned-round-1" / "critic.json").is_file()
    assert (run / "checkpoints" / "round-1" / "adapter_config.json").is_file()
    assert "<svg" in (run / "report.html").read_text()
    # helpfulness: round 1's benign answers against the untouched model's, in the headline
    helpful = [m for m in store.metrics() if m["name"] == "helpfulness_win_rate"]
    assert [(m["round"], m["tier"]) for m in helpful] == [(1, "frozen")]
    assert 0 <= helpful[0]["lo"] <= helpful[0]["value"] <= helpful[0]["hi"] <= 1
    assert "helpfulness: win rate against the untouched model" in proc.stdout
    # and the blind hand comparison can be drawn from it
    blind = tmp_path / "blind"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "helpfulness_blind.py"), "export", str(run),
           "--round", "1", "--out", str(blind), "--n", "40"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    key = json.loads((blind / "key.json").read_text())
    text = (blind / "blind.md").read_text()
    assert key and all(f"## {i}" in text for i in key)
    assert "later_is" not in text and all(v["judge"] in (0.0, 0.5, 1.0) for v in key.values())
