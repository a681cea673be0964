"""Which critics need a chat model: declared once, at registration, read by every CLI."""

from __future__ import annotations

from typer.testing import CliRunner

from superalign import registry
from superalign.cli import app
from superalign.errors import UnknownComponentError


def test_critics_declare_whether_they_need_a_model() -> None:
    declared = {n for n in registry.names("critic") if registry.get("critic", n).needs_model}
    assert {"judge", "self_critique", "pairwise", "query_risk"} <= declared
    assert not {"refusal", "verifier"} & declared
    assert registry.needs_model("critic", ["refusal", "judge"])
    assert not registry.needs_model("critic", ["refusal", "verifier"])


def test_needs_model_checks_every_name() -> None:
    import pytest

    with pytest.raises(UnknownComponentError, match="--critics"):
        registry.needs_model("critic", ["judge", "oracle"], "--critics")


def test_critic_eval_loads_no_model_for_rule_critics(tmp_path, monkeypatch) -> None:
    import superalign.models

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded for critics that need none")

    monkeypatch.setattr(superalign.models, "load_model", no_model)
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app, ["critic-eval", "--critics", "refusal,verifier", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file()
