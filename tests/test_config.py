"""Configuration: YAML, dotted overrides, and the errors users see."""

from __future__ import annotations

import pytest
import yaml

from superalign import registry
from superalign.config import RunConfig, apply_overrides, load_config, parse_override
from superalign.errors import ConfigError, UnknownComponentError


def test_defaults_resolve_and_round_trip(tmp_path) -> None:
    cfg = load_config()
    assert cfg.models["learner"].model_extra["model"] == "smollm2-135m"
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_overrides_parse_yaml_values() -> None:
    assert parse_override("learner.learning_rate=1e-5") == (["learner", "learning_rate"], 1e-5)
    assert parse_override("loop.rounds=3") == (["loop", "rounds"], 3)
    assert parse_override("attacker.mutators=[rot13, base64]")[1] == ["rot13", "base64"]
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        parse_override("no-equals-sign")


def test_override_sets_nested_and_list_items(tmp_path) -> None:
    cfg = load_config(overrides=["learner.learning_rate=1e-5", "critic.critics.0.name=verifier"])
    assert cfg.learner.learning_rate == 1e-5
    assert cfg.critic.critics[0].name == "verifier"
    data = {"a": [1, 2]}
    with pytest.raises(ConfigError, match=r"a\.5: '5' is not an index of a list of 2"):
        apply_overrides(data, ["a.5.b=1"])


def test_file_and_overrides_combine(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"loop": {"rounds": 5, "seed": 3}}))
    cfg = load_config(path, ["loop.rounds=7"])
    assert (cfg.loop.rounds, cfg.loop.seed) == (7, 3)


def test_wrong_type_names_the_key_path() -> None:
    with pytest.raises(
        ConfigError, match=r"learner\.learning_rate: Input should be a valid number"
    ):
        load_config(overrides=["learner.learning_rate=fast"])


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"loop\.roundz: Extra inputs are not permitted"):
        load_config(overrides=["loop.roundz=3"])


def test_unknown_component_lists_valid_names() -> None:
    with pytest.raises(UnknownComponentError) as e:
        load_config(overrides=["critic.critics.1.name=oracle"])
    msg = str(e.value)
    assert "critic.critics.1.name" in msg and "'oracle'" in msg
    for name in registry.names("critic"):
        assert name in msg


def test_unknown_backend_and_algorithm() -> None:
    with pytest.raises(UnknownComponentError, match=r"models\.judge\.backend.*hf, mock, openai"):
        load_config(overrides=["models.judge.backend=llamafile"])
    with pytest.raises(UnknownComponentError, match=r"learner\.algorithm.*valid names: .*dpo"):
        load_config(overrides=["learner.algorithm=magic"])


def test_backend_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"models\.judge\.batch_size"):
        load_config(overrides=["models.judge.batch_size=0"])


def test_section_model_reference_must_exist() -> None:
    with pytest.raises(ConfigError, match=r"critic\.model: 'oracle' is not a model"):
        load_config(overrides=["critic.model=oracle"])


def test_missing_and_malformed_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_shipped_configs_validate() -> None:
    from pathlib import Path

    configs = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
    assert configs, "configs/*.yaml are shipped"
    for path in configs:
        assert isinstance(load_config(path), RunConfig), path


def test_every_settings_error_names_its_key_path_the_same_way(tmp_path) -> None:
    from superalign.learn import LearnerSection, build_learner
    from superalign.models import validate_spec

    expected = r"invalid configuration:\n  {}: .* \(got {}\)"
    with pytest.raises(ConfigError, match=expected.format(r"models\.judge\.batch_size", "0")):
        validate_spec({"backend": "hf", "batch_size": 0}, where="models.judge")
    with pytest.raises(ConfigError, match=expected.format(r"learner\.args\.epochs", "-1")):
        build_learner(LearnerSection(algorithm="sft", args={"epochs": -1}), None, None, tmp_path)
    with pytest.raises(ConfigError, match=expected.format(r"critic\.critics\.0\.args\.nope", "1")):
        load_config(overrides=['critic.critics=[{"name": "refusal", "args": {"nope": 1}}]'])
    with pytest.raises(ConfigError, match=expected.format(r"critic 'refusal'\.nope", "1")):
        registry.create("critic", "refusal", {"nope": 1})
