"""The oversight configs load, validate, name their critics and keep the judges apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from superalign import registry
from superalign.config import check_judges_apart, load_config
from superalign.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(("name", "critic"), [("debate", "debate"), ("decompose", "decompose")])
def test_config_loads_with_its_oversight_critic(name: str, critic: str) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.name == name
    names = [s.name for s in cfg.critic.critics]
    assert critic in names
    for spec in cfg.critic.critics:  # every critic's arguments validate
        component = registry.get("critic", spec.name)
        if component.settings is not None:
            component.settings(**spec.args)
    # The evaluation judge and the simulated expert share no signal with training.
    assert check_judges_apart(cfg) == []


def test_served_judge_is_one_change() -> None:
    served = "{backend: openai, model: m, base_url: 'http://127.0.0.1:8000/v1'}"
    cfg = load_config(CONFIGS / "debate.yaml", [f"models.judge={served}"])
    assert cfg.models["judge"].backend == "openai"
    assert any(s.name == "debate" for s in cfg.critic.critics)


def test_bad_debate_argument_fails_at_load(tmp_path: Path) -> None:
    text = (CONFIGS / "debate.yaml").read_text().replace("turns: 1", "turn: 1")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="turn"):
        load_config(bad)


def test_decompose_shares_the_refusal_rule_with_a_rules_judge() -> None:
    from superalign.critic import check_apart
    from superalign.settings import ComponentSpec

    problems = check_apart(
        [ComponentSpec(name="decompose")], ComponentSpec(name="rules"), allow=True
    )
    assert problems and "rules:refusal" in problems[0]
