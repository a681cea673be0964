"""The run store: atomic phases, one writer at a time, round-tripped records."""

from __future__ import annotations

import subprocess
import sys

import pytest

from superalign.errors import StoreError
from superalign.loop import Store
from superalign.types import Critique, HumanLabel, Intent, Label, Query, Response, Verdict


def _query(text: str = "how do I pick a lock?") -> Query:
    return Query(text=text, intent=Intent.harmful, category="weapons", round=1)


def test_phase_commits_rows_and_marker_together(tmp_path) -> None:
    with Store(tmp_path / "s.db") as store:
        q = _query()
        with store.phase(1, "attack"):
            store.add_queries([q], producer="test")
        assert store.done(1, "attack")
        assert [x.id for x in store.queries(round=1)] == [q.id]


def test_failed_phase_leaves_nothing(tmp_path) -> None:
    with Store(tmp_path / "s.db") as store:
        with pytest.raises(RuntimeError), store.phase(1, "attack"):
            store.add_queries([_query()], producer="test")
            raise RuntimeError("killed mid-phase")
        assert not store.done(1, "attack")
        assert store.queries() == []


def test_phase_cannot_be_marked_twice(tmp_path) -> None:
    import sqlite3

    with Store(tmp_path / "s.db") as store:
        with store.phase(1, "respond"):
            pass
        with pytest.raises(sqlite3.IntegrityError), store.phase(1, "respond"):
            pass


def test_second_writer_gets_clear_error(tmp_path) -> None:
    path = tmp_path / "run" / "superalign.db"
    with Store(path):
        code = (
            "import sys\nfrom superalign.loop import Store\n"
            f"try:\n    Store({str(path)!r})\nexcept Exception as e:\n"
            "    print(type(e).__name__, e); sys.exit(3)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert "StoreError" in proc.stdout and "another process" in proc.stdout
    # once the first writer closes, a new one may open it
    Store(path).close()


def test_in_process_second_writer_also_refused(tmp_path) -> None:
    with Store(tmp_path / "s.db"), pytest.raises(StoreError, match="another process"):
        Store(tmp_path / "s.db")


def test_reader_does_not_need_the_lock(tmp_path) -> None:
    path = tmp_path / "s.db"
    with Store(path) as writer:
        with writer.phase(1, "attack"):
            writer.add_queries([_query()], producer="t")
        reader = Store(path, write=False)
        assert len(reader.queries()) == 1
        reader.close()
    with pytest.raises(StoreError, match="no run store"):
        Store(tmp_path / "missing.db", write=False)


def test_judged_view_joins_query_response_critiques_label(tmp_path) -> None:
    with Store(tmp_path / "s.db") as store:
        q = _query()
        r = Response(query_id=q.id, text="Sure, first...", round=1)
        c = Critique(critic="refusal", verdict=Verdict.unsafe, confidence=0.8)
        with store.phase(1, "all"):
            store.add_queries([q], "t")
            store.add_responses([r], "train")
            store.add_critiques(r.id, [c])
            store.add_labels(
                [Label(response_id=r.id, verdict=Verdict.unsafe, p_acceptable=0.1, confidence=0.8)],
                "t",
            )
            store.add_human_label(HumanLabel(response_id=r.id, verdict=Verdict.unsafe))
        (j,) = store.judged(1, "train")
        assert j.query == q and j.response == r
        assert j.judgement.critiques == [c]
        assert j.judgement.label.p_acceptable == 0.1
        assert store.human_labels() == {r.id: Verdict.unsafe}
        assert store.counts()["critiques"] == 1


def test_metrics_deleted_by_pattern_and_the_backup_is_the_whole_run(tmp_path) -> None:
    store = Store(tmp_path / "superalign.db")
    with store.transaction():
        store.add_metrics(0, "frozen", {"critic_reward/harmful": 0.5, "attack_success_rate": 0.9})
        store.add_metrics(1, "frozen", {"critic_reward/harmful": 0.7})
    with store.transaction():
        store.delete_metrics(0, "critic_reward/%")
    store.checkpoint()
    kept = [(m["round"], m["name"]) for m in store.metrics()]
    assert kept == [(0, "attack_success_rate"), (1, "critic_reward/harmful")]
    store.backup_to(tmp_path / "copy.db")
    store.close()
    copy = Store(tmp_path / "copy.db", write=False)
    assert [(m["round"], m["name"]) for m in copy.metrics()] == kept
    copy.close()
