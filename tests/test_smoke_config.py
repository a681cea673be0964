"""configs/smoke.yaml end to end on the real bundled model, as a user would run it."""

from __future__ import annotations

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
