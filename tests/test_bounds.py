"""Values no run can mean are refused at start-up, with the key that holds them; a URL's
credentials are masked whole, even when the password holds an "@"."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from superalign.cli import app
from superalign.config import load_config
from superalign.errors import ConfigError
from superalign.textsafe import redact


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("learner.learning_rate=1e999", "learning_rate"),
        ("learner.learning_rate=nan", "learning_rate"),
        ("learner.learning_rate=3", "learning_rate"),
        ("eval.bootstrap=99999999999", "bootstrap"),
    ],
)
def test_out_of_range_settings_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(overrides=[override])


@pytest.mark.parametrize("algorithm", ["sft", "dpo"])
def test_negative_max_steps_is_refused(algorithm):
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(overrides=[f"learner.algorithm={algorithm}", "learner.args.max_steps=-5"])
    load_config(overrides=[f"learner.algorithm={algorithm}", "learner.args.max_steps=-1"])


def test_attack_refuses_a_negative_reply_length():
    result = CliRunner().invoke(app, ["attack", "--target", "mock:hi", "--max-new-tokens", "-5"])
    assert result.exit_code == 2 and "max-new-tokens" in result.output
    assert "Traceback" not in result.output


def test_a_password_with_an_at_sign_is_masked_whole():
    assert redact("http://u:p@ss@host:8000/v1") == "http://***@host:8000/v1"
    assert redact("see http://u:p@host/x?email=a@b.c") == "see http://***@host/x?email=a@b.c"
    assert redact("openai:m@http://127.0.0.1:8000/v1") == "openai:m@http://127.0.0.1:8000/v1"
