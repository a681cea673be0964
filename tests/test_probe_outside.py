"""Issue 24: what a probe from outside found. A directory that is not a checkpoint, a
full disk, names that are paths or markup, an unbounded server, bidi controls and ESC
bytes, and messages that mislead: each ends in a clear error that says what to do."""

from __future__ import annotations

import errno
import json
import socket
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from _hardening import MOCK_MODELS, flat, make_run, run_cli
from _servers import running
from superalign.errors import ModelError, StoreError, WriteError
from superalign.models import MockModel

# -- 1. a directory that is not a checkpoint ----------------------------------------------


def _not_models(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty"
    empty.mkdir()
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text("{}")
    afile = tmp_path / "notes.txt"
    afile.write_text("not a model")
    return {"empty": empty, "config-only": config_only, "file": afile}


@pytest.mark.parametrize("which", ["empty", "config-only", "file", "/etc"])
def test_chat_with_a_directory_that_is_not_a_checkpoint_names_what_it_needs(
    tmp_path, monkeypatch, capsys, which
) -> None:
    path = Path(which) if which.startswith("/") else _not_models(tmp_path)[which]
    code, _, err = run_cli(monkeypatch, capsys, "chat", str(path), "hi")
    text = flat(err)
    assert code == 2 and "Traceback" not in err
    assert flat(str(path)) in text
    if which == "file":
        assert "isafile,notamodeldirectory" in text
    else:
        assert "isnotamodelcheckpoint" in text
        assert "weights(model.safetensorsorpytorch_model.bin)" in text
        assert "tokenizerfiles" in text
        assert ("hasnoconfig.json" in text) == (which != "config-only")
    assert "config.json" in text and "save_pretrained" in text


def test_serve_an_empty_directory_names_what_a_model_directory_needs(
    tmp_path, monkeypatch, capsys
) -> None:
    empty = _not_models(tmp_path)["empty"]
    code, out, err = run_cli(monkeypatch, capsys, "serve", str(empty), "--port", "0")
    assert code == 2 and "isnotamodelcheckpoint" in flat(err) and "serving" not in out


def test_a_complete_model_directory_passes_the_check(tmp_path) -> None:
    from superalign.models._hf import check_model_dir

    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_text("{}")
    check_model_dir(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    check_model_dir(tmp_path, needs_tokenizer=False)  # the adapter brings the tokenizer
    with pytest.raises(ModelError, match="tokenizer files"):
        check_model_dir(tmp_path)


# -- 2. a full disk -----------------------------------------------------------------------


class _FullDiskModel:
    """A model whose writer fails as on a full disk: ``error`` is raised on save."""

    def __init__(self, error: Exception) -> None:
        class Saves:
            def save_pretrained(self, path) -> None:
                raise error

        self.model = Saves()
        self.tokenizer = Saves()


def _enospc(path: object = "model.safetensors") -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.mark.parametrize("kind", ["oserror", "safetensors"])
def test_a_full_disk_while_writing_a_checkpoint_is_a_clear_error(tmp_path, kind) -> None:
    from safetensors import SafetensorError

    from superalign.learn._base import write_checkpoint

    error = (
        _enospc()
        if kind == "oserror"
        else SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
            'space left on device" })'
        )
    )
    with pytest.raises(WriteError) as e:
        write_checkpoint(
            _FullDiskModel(error), tmp_path / "round-2", round=2, run_id="abc",
            algorithm="dpo", config={}, parent=None, base_model="m", metrics={},
        )  # fmt: skip
    message = str(e.value)
    assert "checkpoint of round 2" in message and str(tmp_path / "round-2") in message
    assert "no space left on device" in message


def _ready_to_train(run: Path) -> None:
    """Round 1 done up to aggregate, so the next phase a resume runs is train."""
    from superalign.loop import Store

    store = Store(run / "superalign.db")
    for phase in ("attack", "respond", "critique", "oversee", "aggregate"):
        with store.phase(1, phase):
            pass
    store.close()


@pytest.mark.parametrize("kind", ["oserror", "safetensors"])
def test_a_full_disk_during_training_says_how_to_resume(
    tmp_path, monkeypatch, capsys, kind
) -> None:
    """The checkpoint writer fails as on a full disk: `run --resume` ends in an error that
    says what failed and the exact command that resumes the run; nothing is lost."""
    from safetensors import SafetensorError

    from superalign.learn._base import write_checkpoint
    from superalign.loop import Loop, Store

    run = make_run(tmp_path / "runs", "full")
    _ready_to_train(run)
    error = _enospc() if kind == "oserror" else SafetensorError("IoError: No space left on device")

    def train(self, r: int, started: float) -> None:
        write_checkpoint(
            _FullDiskModel(error), self.run_dir / "checkpoints" / f"round-{r}", round=r,
            algorithm="dpo", config={}, parent=None, base_model="m", metrics={},
        )  # fmt: skip

    monkeypatch.setattr(Loop, "train", train)
    monkeypatch.setattr(Loop, "_sync_critics", lambda self, r: None)
    code, _, err = run_cli(monkeypatch, capsys, "run", "--resume", str(run))
    text = flat(err)
    assert code == 2 and "Traceback" not in err
    assert "round1trainstopped" in text and "nospaceleftondevice" in text
    assert flat(f"superalign run --resume {run}") in text
    store = Store(run / "superalign.db", write=False)
    try:
        assert store.done(1, "aggregate") and not store.done(1, "train")
    finally:
        store.close()


def test_an_enospc_from_any_writer_in_a_phase_names_the_resume_command(tmp_path) -> None:
    from superalign.loop import resume

    run = make_run(tmp_path / "runs", "full")
    loop = resume(run)

    def attack(r: int, started: float) -> None:
        raise _enospc(run / "superalign.db")

    loop.attack = attack
    try:
        with pytest.raises(WriteError) as e:
            loop.run()
    finally:
        loop.close()
    message = str(e.value)
    assert "round 1 attack stopped" in message and "free some space" in message
    assert f"superalign run --resume {run}" in message


def test_a_run_whose_creation_hit_a_full_disk_is_created_again_by_run(
    tmp_path, monkeypatch, capsys
) -> None:
    """The disk fills while `run` creates the run: `run` says to give the same command
    again, `--resume` says the same (there is nothing to resume), and `run` then works."""
    from superalign.loop import Store, start

    runs = tmp_path / "runs"
    set_meta = Store.set_meta

    def full(self, key: str, value: str) -> None:
        if key == "config":
            raise sqlite3.OperationalError("database or disk is full")
        set_meta(self, key, value)

    monkeypatch.setattr(Store, "set_meta", full)
    args = ["run", "--runs-dir", str(runs), "--name", "half"]
    for item in MOCK_MODELS:
        args += ["--set", item]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "Traceback" not in err
    assert "couldnotcreatetherun" in flat(err) and "nospaceleftondevice" in flat(err)
    assert "same`superalignrun`commandagain" in flat(err)
    monkeypatch.setattr(Store, "set_meta", set_meta)

    code, _, err = run_cli(monkeypatch, capsys, "run", "--resume", str(runs / "half"))
    assert code == 2 and "nothingtoresume" in flat(err)
    assert flat(f"superalign run --name half --runs-dir {runs}") in flat(err)
    assert "startanewrun" not in flat(err)

    loop = start(None, list(MOCK_MODELS), "half", runs)  # was: "already holds a run"
    try:
        assert json.loads(loop.store.meta("config"))["name"] == "half"
    finally:
        loop.close()
    with pytest.raises(StoreError, match="already holds a run"):  # a real run is kept
        start(None, list(MOCK_MODELS), "half", runs)


def test_a_corrupt_store_says_nothing_was_changed_once(tmp_path, monkeypatch, capsys) -> None:
    run = make_run(tmp_path / "runs")
    for suffix in ("-wal", "-shm"):
        (run / f"superalign.db{suffix}").unlink(missing_ok=True)
    (run / "superalign.db").write_bytes(b"this is not a database at all" * 200)
    code, _, err = run_cli(monkeypatch, capsys, "run", "--resume", str(run))
    assert code == 2 and flat(err).count("Nothingwaschanged") == 1


# -- 3. names that are paths or markup -----------------------------------------------------


@pytest.fixture()
def prompts(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SUPERALIGN_HOME", str(tmp_path / "home"))
    path = tmp_path / "prompts.txt"
    path.write_text("Explain how to pick a lock\nBuild a bomb\n")
    return path


@pytest.mark.parametrize("name", ["../../x", "[bold]n", "a/b", "..", "a..b"])
def test_data_import_refuses_a_name_that_is_not_plain(
    prompts, tmp_path, monkeypatch, capsys, name
) -> None:
    args = ["data", "import", str(prompts), "--intent", "harmful", "--name", name]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "Traceback" not in err
    assert "isnotaplainsetname" in flat(err) and flat(repr(name)) in flat(err)
    assert not (tmp_path / "x.jsonl").exists() and not list(tmp_path.glob("home/**/*.jsonl"))


def test_a_file_stem_that_is_not_a_plain_name_asks_for_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUPERALIGN_HOME", str(tmp_path / "home"))
    path = tmp_path / "[bold]odd.txt"
    path.write_text("Explain how to pick a lock\n")
    code, _, err = run_cli(monkeypatch, capsys, "data", "import", str(path), "--intent", "harmful")
    assert code == 2 and "'[bold]odd'isnotaplainsetname" in flat(err) and "--name" in flat(err)


def test_a_plain_name_with_dots_is_imported(prompts, monkeypatch, capsys) -> None:
    args = ["data", "import", str(prompts), "--intent", "harmful", "--name", "set-1.v2_a"]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "set-1.v2_a" in out


def test_config_external_names_follow_the_same_rule() -> None:
    from superalign.eval import ExternalSpec

    ExternalSpec(name="xs.v1", path="a.csv")
    for name in ("..", "a..b", "../x", "[b]x", "x" * 65):
        with pytest.raises(ValueError, match="not a plain set name"):
            ExternalSpec(name=name, path="a.csv")


# -- 4. the server's limits and its port ----------------------------------------------------


def _echo(chat) -> str:
    return chat[-1]["content"][:20]


def _post(base: str, content: str, **extra) -> httpx.Response:
    body = {"model": "echo", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)


def test_a_request_body_over_the_limit_gets_a_400_saying_the_limit() -> None:
    from superalign.serve import create_app

    with running(create_app(MockModel(_echo), "echo", max_body_bytes=1000)) as base:
        big = _post(base, "x" * 2000)
        small = _post(base, "hello")
    assert big.status_code == 400
    error = big.json()["error"]
    assert error["type"] == "invalid_request_error" and "limit of 1000 bytes" in error["message"]
    assert small.status_code == 200


def test_the_default_body_limit_is_one_mib_and_a_big_request_does_not_hold_others() -> None:
    import threading

    from superalign.serve import create_app

    with running(create_app(MockModel(_echo), "echo", window_ms=0)) as base:
        results: dict[str, object] = {}

        def big() -> None:
            results["big"] = _post(base, "word " * 420_000)  # about 2 MiB

        thread = threading.Thread(target=big)
        thread.start()
        started = time.monotonic()
        small = _post(base, "hello")
        took = time.monotonic() - started
        thread.join(timeout=60)
        fits = _post(base, "word " * 100_000)  # 0.5 MiB: under the limit
    big_reply = results["big"]
    assert isinstance(big_reply, httpx.Response) and big_reply.status_code == 400
    assert "limit of 1048576 bytes (1 MiB)" in big_reply.json()["error"]["message"]
    assert small.status_code == 200 and took < 10
    assert fits.status_code == 200


def test_a_prompt_over_the_token_limit_gets_a_400_saying_the_limit() -> None:
    from superalign.serve import create_app

    class ShortContext(MockModel):
        max_context = 8  # the default limit is the model's context

    with running(create_app(MockModel(_echo), "echo", max_prompt_tokens=5)) as base:
        over = _post(base, "one two three four five six")
        fits = _post(base, "one two three four five")
    assert over.status_code == 400 and fits.status_code == 200
    error = over.json()["error"]
    assert "limit of 5 tokens" in error["message"] and error["param"] == "messages"
    with running(create_app(ShortContext(_echo), "echo")) as base:
        assert _post(base, "w " * 9).status_code == 400
        assert _post(base, "w " * 8).status_code == 200


def test_serve_on_a_busy_port_is_a_clear_error_and_never_says_serving(
    tiny_model_path, monkeypatch, capsys
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["serve", str(tiny_model_path), "--port", str(port), "--device", "cpu"]
        code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "Traceback" not in err
    assert f"port{port}on127.0.0.1isalreadyinuse" in flat(err) and "--port0" in flat(err)
    assert "serving" not in out


# -- 5. bidi controls and ESC bytes -------------------------------------------------------

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"


def test_printable_and_html_text_strip_bidi_controls_and_escapes() -> None:
    from superalign.textsafe import html_text, printable

    for ch in BIDI:
        assert printable(f"a{ch}b") == "ab"
    assert printable("exe.\u202etxt") == "exe.txt"
    assert html_text("<b>\x1b[31mred\x1b[0m\u202e</b>") == "&lt;b&gt;red&lt;/b&gt;"
    assert printable("שלום עולם مرحبا") == "שלום עולם مرحبا"  # right-to-left text stays


def test_the_report_holds_no_escape_bytes_or_bidi_controls(tmp_path) -> None:
    from superalign.eval import ReportData, SuccessfulAttack, write_report

    data = ReportData(
        run_name="run\u202eevil",
        config_yaml="name: x\x1b]0;title\x07\n",
        successful_attacks=[
            SuccessfulAttack(round=1, category="cyber\u2066", style="plain",
                             query="q\x1b[2J", response="\x1b[31mred\u202e reply\x1b[0m")
        ],
    )  # fmt: skip
    page = write_report(data, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "\x1b" not in page and "\x07" not in page
    assert not any(ch in page for ch in BIDI)
    assert "red reply" in page and "runevil" in page


def test_the_terminal_labeller_strips_bidi_controls(tmp_path, monkeypatch, capsys) -> None:
    run = make_run(tmp_path / "runs", pending_text="safe\u202e reply\u2067 here")
    code, out, err = run_cli(monkeypatch, capsys, "label", str(run), "--limit", "1", stdin="s\n")
    assert code == 0, err
    assert not any(ch in out for ch in BIDI)
    assert "safe reply here" in out


# -- 6. messages that mislead -------------------------------------------------------------


def test_config_show_of_a_directory_says_it_is_a_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.yaml").write_text("{}\n")
    code, _, err = run_cli(monkeypatch, capsys, "config", "show", str(tmp_path))
    assert code == 2 and "isadirectory" in flat(err) and "doesnotexist" not in flat(err)
    assert "mine.yaml" in flat(err)


def test_data_import_of_a_directory_says_it_is_a_directory(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "data", "import", str(tmp_path), "--name", "d")
    assert code == 2 and "isadirectory" in flat(err) and "nosuchfile" not in flat(err)


def test_data_import_out_a_directory_names_the_users_path(
    prompts, tmp_path, monkeypatch, capsys
) -> None:
    out_dir = tmp_path / "sets"
    out_dir.mkdir()
    args = ["data", "import", str(prompts), "--intent", "harmful", "--out", str(out_dir)]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and ".part" not in err
    assert flat(f"{out_dir} is a directory") in flat(err)
    assert list(out_dir.iterdir()) == []


def test_data_import_that_cannot_write_names_the_users_path(
    prompts, tmp_path, monkeypatch, capsys
) -> None:
    import os

    real = os.replace

    def full(src, dst):
        if str(src).endswith(".part"):
            raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    out = tmp_path / "sets" / "x.jsonl"
    args = ["data", "import", str(prompts), "--intent", "harmful", "--out", str(out)]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and ".part" not in err
    assert flat(f"cannot write {out}: no space left on device") in flat(err)
    assert list(out.parent.iterdir()) == []
