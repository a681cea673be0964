"""Issue 12, defects 1 and 3: a resumed run loads only its own checkpoints, and resume
refuses an empty, foreign or changed run instead of silently starting over."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import yaml

from _hardening import flat, make_run, run_cli
from superalign.errors import StoreError
from superalign.learn import CHECKPOINT_META
from superalign.loop import Store, resume
from superalign.types import Checkpoint

# -- defect 1: checkpoints are the run's own ------------------------------------------


def _fake_checkpoint(run, round_: int, run_id: str | None) -> None:
    path = run / "checkpoints" / f"round-{round_}"
    path.mkdir(parents=True)
    (path / CHECKPOINT_META).write_text(json.dumps({"round": round_, "run_id": run_id}))


def _add_training(run, round_: int, path: str) -> None:
    store = Store(run / "superalign.db")
    with store.phase(round_, "train"):
        store.add_training(round_, "dpo", {"path": path, "round": round_, "algorithm": "dpo"})
    store.close()


def _run_id(run) -> str:
    store = Store(run / "superalign.db", write=False)
    try:
        return store.meta("run_id")
    finally:
        store.close()


def test_train_stores_the_checkpoint_relative_to_the_run_with_its_identity(tmp_path) -> None:
    run = make_run(tmp_path / "runs", "k1")
    loop = resume(run)

    class FakeLearner:
        run_id = None
        library = 0  # no seed-library queries to draw

        def train_round(self, data):
            path = loop.run_dir / "checkpoints" / f"round-{data.round}"
            path.mkdir(parents=True)
            meta = {"round": data.round, "run_id": self.run_id}
            (path / CHECKPOINT_META).write_text(json.dumps(meta))
            return Checkpoint(path=str(path), round=data.round, algorithm="fake", base_model="m")

    loop.__dict__["learner"] = FakeLearner()
    loop.__dict__["constitution"] = ""
    loop._fit_labels = lambda r: None
    loop.train(1, time.time())
    (record,) = loop.store.training()
    assert record["path"] == "checkpoints/round-1"
    meta = json.loads((run / "checkpoints" / "round-1" / CHECKPOINT_META).read_text())
    assert meta["run_id"] == loop.store.meta("run_id") and meta["run_id"]
    loop.close()


def test_write_checkpoint_records_run_id_and_round(tmp_path) -> None:
    from superalign.learn._base import write_checkpoint

    class Saves:
        def save_pretrained(self, path) -> None:
            pass

    class Model:
        model = Saves()
        tokenizer = Saves()

    write_checkpoint(
        Model(), tmp_path / "c", round=3, run_id="abc", algorithm="dpo", config={},
        parent=None, base_model="m", metrics={},
    )  # fmt: skip
    meta = json.loads((tmp_path / "c" / CHECKPOINT_META).read_text())
    assert (meta["run_id"], meta["round"]) == ("abc", 3)


def test_moved_run_loads_its_own_checkpoint_not_the_cwd_one(tmp_path, monkeypatch) -> None:
    """A legacy row (cwd-relative `runs/k1/checkpoints/round-1`) resolves inside the
    moved run, even when another run sits at that relative path."""
    run = make_run(tmp_path / "a" / "runs", "k1")
    _fake_checkpoint(run, 1, _run_id(run))
    _add_training(run, 1, "runs/k1/checkpoints/round-1")
    moved = tmp_path / "b" / "moved"
    shutil.copytree(run, moved)
    (moved / "superalign.lock").unlink(missing_ok=True)
    monkeypatch.chdir(tmp_path / "a")  # where runs/k1 (the original) still exists
    loop = resume(moved)
    assert loop._last_checkpoint() == str(moved / "checkpoints" / "round-1")
    loop.close()


def test_checkpoint_of_another_run_is_refused(tmp_path) -> None:
    run = make_run(tmp_path / "runs", "k1")
    _fake_checkpoint(run, 1, "someone-else")
    _add_training(run, 1, "checkpoints/round-1")
    loop = resume(run)
    with pytest.raises(StoreError, match=r"expected run \w+ round 1, found run someone-else"):
        loop._last_checkpoint()
    loop.close()


def test_checkpoint_of_another_round_or_missing_is_refused(tmp_path) -> None:
    run = make_run(tmp_path / "runs", "k1")
    _fake_checkpoint(run, 2, _run_id(run))
    shutil.move(run / "checkpoints" / "round-2", run / "checkpoints" / "round-1")
    _add_training(run, 1, "checkpoints/round-1")
    loop = resume(run)
    with pytest.raises(StoreError, match=r"round 1, found run \w+ round 2"):
        loop._last_checkpoint()
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(StoreError, match="missing"):
        loop._last_checkpoint()
    loop.close()


# -- defect 3: resume requires a real run, uses its stored config ----------------------


def _db_bytes(run) -> bytes:
    return (run / "superalign.db").read_bytes()


def test_resume_of_an_empty_database_is_refused_and_changes_nothing(
    tmp_path, monkeypatch, capsys
) -> None:
    run = make_run(tmp_path / "runs")
    (run / "superalign.db").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        (run / f"superalign.db{suffix}").unlink(missing_ok=True)
    code, _, err = run_cli(monkeypatch, capsys, "run", "--resume", str(run))
    assert code == 2 and "cannotresume" in flat(err) and "emptyfile" in flat(err)
    assert _db_bytes(run) == b""


def test_resume_of_a_foreign_database_is_refused(tmp_path) -> None:
    import sqlite3

    run = make_run(tmp_path / "runs")
    for name in ("superalign.db", "superalign.db-wal", "superalign.db-shm"):
        (run / name).unlink(missing_ok=True)
    db = sqlite3.connect(run / "superalign.db")
    db.execute("CREATE TABLE songs (title TEXT)")
    db.commit()
    db.close()
    before = _db_bytes(run)
    with pytest.raises(StoreError, match="not a superalign run database"):
        resume(run)
    assert _db_bytes(run) == before


def test_resume_requires_config_snapshot_and_phases(tmp_path) -> None:
    run = make_run(tmp_path / "runs")
    store = Store(run / "superalign.db")
    store.db.execute("DELETE FROM meta WHERE key = 'config'")
    store.db.execute("DELETE FROM phases")
    store.close()
    (run / "checkpoints" / "round-1").mkdir(parents=True)
    with pytest.raises(StoreError, match=r"config snapshot.*finished phases.*round-1"):
        resume(run)


def test_run_killed_before_any_phase_finished_resumes(tmp_path) -> None:
    run = make_run(tmp_path / "runs")
    store = Store(run / "superalign.db")
    store.db.execute("DELETE FROM phases")
    store.close()
    resume(run).close()  # nothing was done yet, nothing can be lost


def test_resume_uses_the_stored_config_and_refuses_a_changed_file(tmp_path) -> None:
    run = make_run(tmp_path / "runs")
    data = yaml.safe_load((run / "config.yaml").read_text())
    data["loop"]["rounds"] = 9
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(StoreError, match=r"differs.*loop\.rounds.*--force"):
        resume(run)
    (run / "config.yaml").unlink()
    loop = resume(run)  # no file: the snapshot in the database is the configuration
    assert loop.config.loop.rounds == 2
    loop.close()
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    loop = resume(run, force=True)
    assert loop.config.loop.rounds == 9
    assert json.loads(loop.store.meta("config"))["loop"]["rounds"] == 9
    loop.close()


def test_run_force_flag_reaches_resume(tmp_path, monkeypatch, capsys) -> None:
    run = make_run(tmp_path / "runs")
    data = yaml.safe_load((run / "config.yaml").read_text())
    data["loop"]["rounds"] = 9
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    code, _, err = run_cli(monkeypatch, capsys, "run", "--resume", str(run))
    assert code == 2 and "--force" in err
