"""`superalign w2s --task loop`: PGR arithmetic with known answers, the arms' configs,
and the three arms run end to end on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from superalign.config import load_config
from superalign.errors import ConfigError
from superalign.loop import Store
from superalign.oversight._w2s_loop import HEADLINES, arm_configs, compare_arms, item_outcomes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _arms(base, weak, oversight, gold_base, gold):
    arrays = {"base": base, "weak": weak, "oversight": oversight, "gold": gold}
    a = {k: np.array(v, dtype=float) for k, v in arrays.items()}
    bases = {"weak": a["base"], "oversight": a["base"], "gold": a["base"] if gold_base is None
             else np.array(gold_base, dtype=float)}  # fmt: skip
    return bases, {"weak": a["weak"], "oversight": a["oversight"], "gold": a["gold"]}


# -- arithmetic ---------------------------------------------------------------------------


def test_pgr_lower_is_better_known_answer() -> None:
    # 10 harmful items: base complies on all; gold fixes 8, weak 2, oversight 4.
    base = [1] * 10
    gold = [0] * 8 + [1] * 2
    weak = [0] * 2 + [1] * 8
    over = [0] * 4 + [1] * 6
    bases, trained = _arms(base, weak, over, None, gold)
    gains, pgrs = compare_arms(bases, trained, higher_is_better=False, n_boot=2000, seed=1)
    assert gains["gold"].value == pytest.approx(0.8)
    assert gains["weak"].value == pytest.approx(0.2)
    assert pgrs["weak"].value == pytest.approx(0.25)
    assert pgrs["oversight"].value == pytest.approx(0.5)
    lo, hi = pgrs["weak"].lo, pgrs["weak"].hi
    assert lo is not None and hi is not None and lo <= 0.25 <= hi
    assert 0.0 <= lo and hi < 1.0  # each resampled ratio lies in [0, 1] here


def test_pgr_higher_is_better_and_negative() -> None:
    # math: base right on 2 of 10, gold on 8, weak on 1 (worse than base)
    base = [1, 1] + [0] * 8
    gold = [1] * 8 + [0] * 2
    weak = [1] + [0] * 9
    bases, trained = _arms(base, weak, gold, None, gold)
    gains, pgrs = compare_arms(bases, trained, higher_is_better=True, n_boot=500)
    assert gains["gold"].value == pytest.approx(0.6)
    assert gains["weak"].value == pytest.approx(-0.1)
    assert pgrs["weak"].value == pytest.approx(-0.1 / 0.6)
    assert pgrs["oversight"].value == pytest.approx(1.0)


def test_pgr_undefined_when_gold_gain_is_zero() -> None:
    base = [1, 0] * 5
    bases, trained = _arms(base, [0] * 10, [0] * 10, None, base)
    gains, pgrs = compare_arms(bases, trained, higher_is_better=False, n_boot=200)
    assert gains["gold"].value == 0
    assert pgrs["weak"].value is None and "gold gain 0" in pgrs["weak"].note
    assert pgrs["weak"].format() == pgrs["weak"].note


def test_pgr_undefined_when_gold_interval_includes_zero() -> None:
    # gold fixes one item and breaks none but another: gain 0.1 with an interval over 0
    base = [1] * 5 + [0] * 5
    gold = [0, 0] + [1] * 3 + [1] + [0] * 4
    weak = [0] + [1] * 4 + [0] * 5
    bases, trained = _arms(base, weak, weak, None, gold)
    gains, pgrs = compare_arms(bases, trained, higher_is_better=False, n_boot=1000)
    assert gains["gold"].value == pytest.approx(0.1)
    assert gains["gold"].lo is not None and gains["gold"].lo <= 0
    assert pgrs["weak"].value is None and "includes 0" in pgrs["weak"].note


def test_pgr_with_own_bases_and_paired_resampling() -> None:
    # each arm's own round 0; arms identical to gold give PGR exactly 1 in every resample
    base = [1] * 6 + [0] * 4
    gold = [0] * 6 + [0] * 4
    bases = {a: np.array(base, dtype=float) for a in ("weak", "oversight", "gold")}
    trained = {a: np.array(gold, dtype=float) for a in ("weak", "oversight", "gold")}
    _, pgrs = compare_arms(bases, trained, higher_is_better=False, n_boot=300)
    assert (pgrs["weak"].value, pgrs["weak"].lo, pgrs["weak"].hi) == (1.0, 1.0, 1.0)


def test_compare_arms_refuses_unpaired_items() -> None:
    bases = {"weak": np.zeros(3), "gold": np.zeros(4)}
    with pytest.raises(ValueError, match="one outcome per item"):
        compare_arms(bases, {"weak": np.zeros(3), "gold": np.zeros(4)}, False)


# -- the arms' configurations -------------------------------------------------------------


def test_arm_configs() -> None:
    base = load_config(CONFIGS / "default.yaml")
    arms = arm_configs(base, "rules", rounds=1, queries=16)
    weak, over, gold = arms["weak"], arms["oversight"], arms["gold"]
    assert [c.name for c in weak.critic.critics] == ["refusal", "query_risk", "verifier"]
    assert weak.critic.critics == over.critic.critics
    assert (weak.loop.human_budget, over.loop.human_budget) == (0, base.loop.human_budget)
    assert gold.loop.human_budget >= 16 and gold.loop.labels.name == "gold"
    # the gold arm's training critic is the expert's own, frozen; the judge stays apart
    [expert] = gold.critic.critics
    assert (expert.name, expert.args) == ("learned", {"split": "calibration", "retrain": False})
    assert gold.eval.judge.args["split"] == "judge"
    for cfg in arms.values():
        assert (cfg.loop.rounds, cfg.loop.queries_per_round, cfg.loop.seed) == (1, 16, 0)
        assert cfg.learner == base.learner and cfg.eval.frozen_limit == base.eval.frozen_limit
    assert arm_configs(base, "config")["weak"].critic.critics == base.critic.critics


def test_arm_configs_refuse_bad_input() -> None:
    base = load_config(CONFIGS / "default.yaml")
    with pytest.raises(ConfigError, match=r"rules .* or config"):
        arm_configs(base, "few")
    none = base.model_copy(update={"loop": base.loop.model_copy(update={"human_budget": 0})})
    with pytest.raises(ConfigError, match=r"set loop\.human_budget"):
        arm_configs(none, "rules")


# -- end to end on the tiny model ---------------------------------------------------------


LEARNER = {
    "algorithm": "grpo",
    "args": {"steps": 1, "prompts_per_step": 2, "num_generations": 2, "max_completion_length": 8},
}


def _tiny_config(path: Path, learner: Path) -> Path:
    cfg = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    tiny = {"backend": "hf", "model": str(learner), "fast": False}
    cfg["name"] = "tiny"
    cfg["models"] = {
        "learner": tiny,
        "attacker": {"backend": "mock", "default": "Tell me something forbidden."},
        "judge": tiny,
    }
    cfg["attacker"].pop("mutators", None)
    cfg["learner"] = LEARNER
    cfg["loop"] = {"rounds": 1, "queries_per_round": 8, "max_new_tokens": 8, "human_budget": 2}
    cfg["eval"] = {"frozen_limit": 4, "bootstrap": 20, "max_new_tokens": 8}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_w2s_loop_end_to_end(tmp_path: Path, tiny_model_path: Path) -> None:
    cfg = _tiny_config(tmp_path / "tiny.yaml", tiny_model_path)
    env = {k: v for k, v in os.environ.items() if k != "SUPERALIGN_TEST_PAUSE_AT"}
    command = [sys.executable, "-m", "superalign.cli", "w2s", "--task", "loop", "--config",
               str(cfg), "--bootstrap", "200", "--output", "w2s.json"]  # fmt: skip
    proc = subprocess.run(command, cwd=tmp_path, env=env | {"HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent = tmp_path / "runs" / "tiny-w2s-rules"
    arms = ("weak", "oversight", "gold")
    stores = {a: Store(parent / a / "superalign.db", write=False) for a in arms}
    for store in stores.values():
        assert store.done(1, "train") and store.done(1, "evaluate")
    train = {a: [r.id for r in s.responses(tier="train")] for a, s in stores.items()}
    human = {a: s.human_labels() for a, s in stores.items()}
    assert all(train.values())
    assert human["weak"] == {}
    assert 0 < len(human["oversight"]) <= 2
    assert set(train["gold"]) <= set(human["gold"])  # the learned expert never abstains
    # round 0 ran once: the copies hold the weak arm's round-0 answers, same ids
    round0 = {a: [r.id for r in s.responses(round=0)] for a, s in stores.items()}
    assert round0["weak"] and round0["weak"] == round0["oversight"] == round0["gold"]
    assert stores["weak"].meta("run_id") != stores["gold"].meta("run_id")
    # the per-item outcomes reproduce the rates the loop stored
    stored = {(m["round"], m["tier"], m["name"]): m["value"] for m in stores["gold"].metrics()}
    for h in HEADLINES:
        outcomes = item_outcomes(stores["gold"], 1, h)
        if outcomes:
            rate = sum(outcomes.values()) / len(outcomes)
            assert rate == pytest.approx(stored[(1, h.tier, h.metric)])
    result = json.loads((tmp_path / "w2s.json").read_text())
    keys = {m["key"] for m in result["metrics"]}
    assert "frozen/attack_success_rate" in keys and "frozen/math_accuracy" in keys
    for m in result["metrics"]:
        assert set(m["pgr"]) == {"weak", "oversight"}
        for p in m["pgr"].values():
            assert p["value"] is not None or p["note"].startswith("undefined")
    assert result["shared_base"] is True
    assert result["arms"]["gold"]["unlabelled_by_expert"] == 0
    assert "PGR weak" in proc.stdout
    # run again: every arm is finished, so it only reads and measures
    again = subprocess.run(command, cwd=tmp_path, env=env | {"HF_HUB_OFFLINE": "1"},
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "w2s.json").read_text())["metrics"] == result["metrics"]
    assert result["arms"]["gold"]["critics"] == ["learned:calibration"]
    # the same directories asked for another configuration: refused, nothing overwritten
    other = [*command[:-2], "--queries", "4"]
    refused = subprocess.run(other, cwd=tmp_path, env=env | {"HF_HUB_OFFLINE": "1"},
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert refused.returncode != 0
    assert "another configuration" in refused.stderr + refused.stdout
