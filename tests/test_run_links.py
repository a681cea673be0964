"""Issue 24, defect 4: symbolic links in and around a run directory. The writer lock is
the real database file's, and nothing superalign writes in a run directory (report.html,
a new run under runs/) goes through a link planted there."""

from __future__ import annotations

import pytest

from _hardening import MOCK_MODELS, flat, make_run, run_cli
from superalign.errors import StoreError
from superalign.loop import Store, _paths, start


def test_a_database_reached_through_a_link_shares_the_writer_lock(tmp_path) -> None:
    real = tmp_path / "a" / "superalign.db"
    other = tmp_path / "b"
    other.mkdir()
    (other / "superalign.db").symlink_to(real)
    with Store(real):
        with pytest.raises(StoreError, match="another process"):
            Store(other / "superalign.db")
    with Store(other / "superalign.db"):  # and the other way round
        with pytest.raises(StoreError, match="another process"):
            Store(real)


@pytest.mark.parametrize("dangling", [False, True])
def test_report_is_not_written_through_a_linked_report_file(
    tmp_path, monkeypatch, capsys, dangling
) -> None:
    run = make_run(tmp_path / "runs")
    victim = tmp_path / "victim.txt"
    if not dangling:
        victim.write_text("keep me")
    (run / "report.html").symlink_to(victim)
    code, _, err = run_cli(monkeypatch, capsys, "report", str(run))
    assert code == 2 and "symboliclink" in flat(err) and "Traceback" not in err
    if dangling:
        assert not victim.exists()
    else:
        assert victim.read_text() == "keep me"
    assert (run / "report.html").is_symlink()
    elsewhere = tmp_path / "out" / "report.html"  # --output elsewhere is written as given
    code, _, err = run_cli(monkeypatch, capsys, "report", str(run), "--output", str(elsewhere))
    assert code == 0, err
    assert elsewhere.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_report_in_the_run_directory_is_still_written(tmp_path, monkeypatch, capsys) -> None:
    run = make_run(tmp_path / "runs")
    for _ in range(2):  # created, then replaced in place
        code, _, err = run_cli(monkeypatch, capsys, "report", str(run))
        assert code == 0, err
        assert (run / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_a_link_put_in_place_after_the_check_is_not_followed(tmp_path, monkeypatch) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "report.html").symlink_to(victim)
    monkeypatch.setattr(_paths, "refuse_link", lambda *a, **k: None)  # lost the race
    with pytest.raises(StoreError, match="symbolic link"):
        _paths.write_text_unlinked(tmp_path / "report.html", "<html>", "the report")
    assert victim.read_text() == "keep me"


def test_a_new_run_is_not_written_through_a_linked_run_directory(
    tmp_path, monkeypatch, capsys
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StoreError, match="symbolic link"):
        start(None, list(MOCK_MODELS), "evil", runs)
    assert list(outside.iterdir()) == []
    sets = [x for m in MOCK_MODELS for x in ("--set", m)]
    code, _, err = run_cli(
        monkeypatch, capsys, "run", "--name", "evil", "--runs-dir", str(runs), *sets
    )
    assert code == 2 and "symboliclink" in flat(err) and "pickanother--name" in flat(err)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("name", ["superalign.db", "config.yaml"])
def test_a_new_run_does_not_write_through_a_file_linked_in_its_directory(tmp_path, name) -> None:
    runs = tmp_path / "runs"
    (runs / "r").mkdir(parents=True)
    target = tmp_path / "elsewhere"
    (runs / "r" / name).symlink_to(target)  # dangling: start would create the target
    with pytest.raises(StoreError, match="symbolic link"):
        start(None, list(MOCK_MODELS), "r", runs)
    assert not target.exists()
