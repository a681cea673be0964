"""`config show --explain`, fields nothing reads are gone, every role CLI is registered."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import superalign
from superalign import cli
from superalign.config import RunConfig, explain_fields, load_config
from superalign.errors import ConfigError


def test_explain_walks_every_section_with_types_defaults_and_descriptions() -> None:
    rows = {r["key"]: r for r in explain_fields()}
    assert rows["loop.rounds"] == {
        "key": "loop.rounds",
        "type": "int",
        "default": "2",
        "description": RunConfig.model_fields["loop"].annotation.model_fields["rounds"].description,
    }
    assert rows["learner.lora.enabled"]["default"] == "true"  # nested two levels down
    assert rows["critic.critics[i].name"]["default"] == "(required)"  # items of a list
    assert rows["models.<name>.backend"]["type"] == "str"  # values of a mapping
    assert rows["eval.frontier_share"]["description"] == "held-out share of new attacks"
    sections = [k for k in rows if "." not in k]
    assert sections == list(RunConfig.model_fields)


def test_config_show_explain_prints_each_field() -> None:
    result = CliRunner().invoke(cli.app, ["config", "show", "--explain"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "loop.rounds: int = 2" in lines
    i = lines.index("loop.rounds: int = 2")
    assert lines[i + 1].strip() == "rounds of attack, critique, train, evaluate"
    keys = [line.split(":")[0] for line in lines if line and not line.startswith(" ")]
    assert keys == [r["key"] for r in explain_fields()]


@pytest.mark.parametrize("field", ["eval.frozen", "eval.examples"])
def test_removed_fields_are_rejected_with_their_key(field: str) -> None:
    with pytest.raises(ConfigError, match=field.split(".")[1]):
        load_config(overrides=[f"{field}=true"])


def test_shipped_configs_still_load() -> None:
    root = Path(superalign.__file__).parents[2] / "configs"
    for path in sorted(root.glob("*.yaml")):
        load_config(path)


def test_every_role_cli_is_registered_and_none_is_skipped() -> None:
    package = Path(superalign.__file__).parent
    with_cli = sorted(p.parent.name for p in package.glob("*/_cli.py"))
    assert sorted(cli._ROLE_CLIS) == with_cli
