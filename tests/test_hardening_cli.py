"""Issue 12, defects 2, 4, 5, 6, 7: run names, terminal escapes, markup in errors,
clean errors instead of tracebacks, and values validated at load."""

from __future__ import annotations

import json
import sqlite3

import pytest

from _hardening import MOCK_MODELS, flat, make_run, run_cli
from superalign.config import load_config
from superalign.errors import ConfigError, StoreError

# -- defect 2: run names stay one directory under runs/ ------------------------------


@pytest.mark.parametrize("name", ["..", ".", "/abs/path", "../../x", "a/../../../b", "a/b", ""])
def test_run_names_cannot_escape_runs_dir(tmp_path, name) -> None:
    from superalign.loop import start

    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match="not a valid run name"):
        start(None, list(MOCK_MODELS), name, runs)
    with pytest.raises(ConfigError, match=r"name: .*not a valid run name"):
        load_config(overrides=[*MOCK_MODELS, f"name={json.dumps(name)}"])
    assert not (tmp_path / "superalign.db").exists()
    assert not any(tmp_path.rglob("superalign.db"))


def test_run_cli_rejects_bad_name_without_touching_other_runs(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    make_run(runs, "k1")
    before = (runs / "k1" / "config.yaml").read_text()
    code, _, err = run_cli(
        monkeypatch, capsys, "run", "--runs-dir", str(runs / "k1" / "sub"), "--name", "..",
        *[a for s in MOCK_MODELS for a in ("--set", s)],
    )  # fmt: skip
    assert code == 2 and "notavalidrunname" in flat(err)
    assert (runs / "k1" / "config.yaml").read_text() == before


def test_resume_of_a_database_file_or_missing_dir_is_a_clear_error(tmp_path) -> None:
    from superalign.loop import resume

    run = make_run(tmp_path / "runs")
    with pytest.raises(StoreError, match="run directory"):
        resume(run / "superalign.db")
    with pytest.raises(StoreError, match="no run directory"):
        resume(tmp_path / "runs" / "nope")


# -- defect 4: terminal escape sequences never reach the terminal -----------------------

EVIL = "before\x1bc\x1b[2J\x1b]0;title\x07\x9b31mafter\x00\x08\x7f"


def test_printable_strips_control_sequences() -> None:
    from superalign.textsafe import printable

    assert printable(EVIL) == "beforeafter"
    assert printable("line\n\ttab é 日本") == "line\n\ttab é 日本"


def test_label_strips_escapes_from_responses(tmp_path, monkeypatch, capsys) -> None:
    run = make_run(tmp_path / "runs", pending_text=f"harmless {EVIL}")
    code, out, err = run_cli(monkeypatch, capsys, "label", str(run), "--limit", "1", stdin="s\n")
    assert code == 0, err
    assert "\x1b" not in out and "\x9b" not in out and "\x07" not in out
    assert "beforeafter" in out
    assert (run / "labels-inbox.jsonl").is_file()


def test_chat_strips_escapes(monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "chat", f"mock:{EVIL}", "hello")
    assert code == 0, err
    assert out.strip() == "beforeafter"


def test_attack_table_and_eval_title_strip_escapes() -> None:
    from rich.console import Console

    from superalign.eval._cli import metrics_table

    console = Console(record=True, width=200, force_terminal=False)
    console.print(metrics_table({}, f"frozen tier: {EVIL}"))
    assert "\x1b" not in console.export_text()


# -- defect 5: markup in error messages is printed, not parsed --------------------------


def test_markup_in_override_is_printed_not_parsed(monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "config", "show", "--set", "loop.rounds=x[/red]")
    assert code == 2
    assert "x[/red]" in err and "loop.rounds" in err


def test_config_path_with_bracket(tmp_path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "config", "show", str(tmp_path / "a[b]" / "c.yaml"))
    assert code == 2 and "a[b]" in flat(err)


def test_error_messages_strip_escapes(monkeypatch, capsys) -> None:
    code, _, err = run_cli(
        monkeypatch, capsys, "config", "show", "--set", "loop.rounds=x\x1bc\x1b[31m"
    )
    assert code == 2 and "\x1bc" not in err and "\x1b[31m" not in err


# -- defect 6: clean errors instead of tracebacks ------------------------------------


def test_config_file_not_utf8(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"loop:\n  rounds: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


@pytest.mark.parametrize("command", ["report", "export", "label"])
def test_corrupt_or_empty_database(tmp_path, monkeypatch, capsys, command) -> None:
    run = make_run(tmp_path / "runs")
    db = run / "superalign.db"
    db.write_bytes(db.read_bytes()[:100])  # truncated
    code, _, err = run_cli(monkeypatch, capsys, command, str(run))
    assert code == 2 and "error" in err and "Traceback" not in err
    db.write_bytes(b"")  # zero length
    code, _, err = run_cli(monkeypatch, capsys, command, str(run))
    assert code == 2 and "notasuperalignrundatabase" in flat(err)


def test_database_path_is_a_directory(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "r" / "superalign.db").mkdir(parents=True)
    for args in (["report", str(tmp_path / "r")], ["label", str(tmp_path / "r")]):
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2 and "isadirectory" in flat(err)
    from superalign.loop import Store

    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path / "r" / "superalign.db")


def test_reading_commands_open_the_database_read_only(tmp_path, monkeypatch, capsys) -> None:
    from superalign.loop import Store

    run = make_run(tmp_path / "runs")
    store = Store(run / "superalign.db", write=False)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.db.execute("INSERT INTO meta VALUES ('x', 'y')")
    store.close()
    (run / "superalign.lock").unlink()
    code, out, err = run_cli(monkeypatch, capsys, "label", str(run), "--list")
    assert code == 0, err
    assert "1 pending" in out
    out_html = tmp_path / "elsewhere" / "report.html"
    code, out, err = run_cli(monkeypatch, capsys, "report", str(run), "--output", str(out_html))
    assert code == 0, err and out_html.is_file()
    assert not (run / "superalign.lock").exists()  # no writer's lock taken


def test_label_files_with_bad_rows_are_clear_errors(tmp_path) -> None:
    from superalign.loop._human import _read_labels

    cases = {
        "[1, 2]\n": "must be a JSON object",
        '{"response_id": 5, "label": "safe"}\n': "'response_id' must be a string",
        '{"response_id": "a", "label": null}\n': "'label' must be one of",
        '{"response_id": null, "label": "safe", "query": null, "response": "x"}\n': "needs",
        '{"query": 3, "response": "x", "label": "safe"}\n': "'query' must be a string",
    }
    for text, message in cases.items():
        path = tmp_path / "labels.jsonl"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            _read_labels(path, "import")
    path.write_bytes(b'{"response_id": "\xff", "label": "safe"}\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        _read_labels(path, "import")
    path.write_text('{"response_id": "a", "label": "safe", "annotator": null}\n')
    assert _read_labels(path, "import")[0]["a"].annotator == ""


def test_malformed_inbox_line_in_label(tmp_path, monkeypatch, capsys) -> None:
    run = make_run(tmp_path / "runs")
    (run / "labels-inbox.jsonl").write_text('{"response_id": "x", "label": "safe"}\nnot json\n')
    code, _, err = run_cli(monkeypatch, capsys, "label", str(run), "--list")
    assert code == 2 and "labels-inbox.jsonl:2" in flat(err)


@pytest.mark.parametrize(
    "option", [["--max-new-tokens", "0"], ["--temperature", "-1"], ["--top-p", "5"],
               ["--top-p", "0"], ["--seed", str(10**30)], ["--seed", "-1"]],
)  # fmt: skip
def test_chat_rejects_bad_sampling_values(monkeypatch, capsys, option) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "chat", "mock:hi", "hello", *option)
    assert code == 2 and "Invalid value" in err and "Traceback" not in err


def test_export_output_that_is_a_file(tmp_path, monkeypatch, capsys) -> None:
    run = make_run(tmp_path / "runs")
    (run / "superalign.lock").unlink()
    target = tmp_path / "afile"
    target.write_text("keep me")
    code, _, err = run_cli(monkeypatch, capsys, "export", str(run), "--output", str(target))
    assert code == 2 and "isafile" in flat(err)
    assert target.read_text() == "keep me"


def test_eval_output_is_checked_before_the_evaluation(tmp_path, monkeypatch, capsys) -> None:
    from superalign.eval import _cli as eval_cli

    def no_evaluation(*a, **k):
        raise AssertionError("the evaluation ran before --output was checked")

    monkeypatch.setattr(eval_cli.EvalSuite, "run_tier", no_evaluation)
    code, _, err = run_cli(monkeypatch, capsys, "eval", "mock", "--output", str(tmp_path))
    assert code == 2 and "isadirectory" in flat(err)


# -- defect 7: values that make no sense are refused at load, with the key path ---------


@pytest.mark.parametrize(
    "mix",
    ["{harmful: 0, benign: 0, capability: 0}", "{}", "{harmful: -1, benign: 2}",
     "{harmful: 1e300, benign: 1}", "{harmful: .nan}"],
)  # fmt: skip
def test_attacker_mix_must_be_sane(mix) -> None:
    with pytest.raises(ConfigError, match=r"attacker\.mix"):
        load_config(overrides=[*MOCK_MODELS, f"attacker.mix={mix}"])


def test_negative_mix_no_longer_doubles_the_queries() -> None:
    from superalign.attack._attacker import split_counts
    from superalign.types import Intent

    with pytest.raises(ValueError, match="non-negative"):
        split_counts(10, {Intent.harmful: -1.0, Intent.benign: 2.0})
    counts = split_counts(10, {Intent.harmful: 1.0, Intent.benign: 2.0, Intent.capability: 0.0})
    assert sum(counts.values()) == 10


@pytest.mark.parametrize("item", ["loop.rounds=1e12", "loop.queries_per_round=1e14"])
def test_loop_sizes_have_upper_bounds(item) -> None:
    key = item.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: Input should be less than or equal"):
        load_config(overrides=[*MOCK_MODELS, item])


def test_misspelt_attacker_fails_at_load() -> None:
    with pytest.raises(ConfigError, match=r"unknown attacker 'archiv' at attacker\.name"):
        load_config(overrides=[*MOCK_MODELS, "attacker.name=archiv"])


def test_unknown_algorithm_names_learner_algorithm() -> None:
    with pytest.raises(ConfigError, match=r"at learner\.algorithm;"):
        load_config(overrides=[*MOCK_MODELS, "learner.algorithm=magic"])
