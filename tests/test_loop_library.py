"""The loop draws the seed-library queries a learner rehearses (``learner.args.library``):
from the attacker's seeds, as many as asked, half harmful, nothing held out for
evaluation or already among the round's queries, the same ones when the round resumes."""

from __future__ import annotations

import time

from _hardening import make_run
from superalign.attack import load_seeds
from superalign.eval import frozen_hashes, held_out_hashes
from superalign.loop import resume
from superalign.types import Checkpoint, Intent, Response, Tier


def test_train_hands_the_learner_library_queries_kept_apart(tmp_path) -> None:
    run = make_run(tmp_path / "runs", "lib")
    loop = resume(run)
    harmful_seeds = [q for q in load_seeds() if q.intent == Intent.harmful]
    taken = [q.model_copy(update={"round": 1, "tier": Tier.train}) for q in harmful_seeds]
    with loop.store.phase(1, "attack"):  # every harmful seed but a few is the round's own
        loop.store.add_queries(taken[:-4], producer="test")
        loop.store.add_responses(
            [Response(query_id=q.id, text="...", model="m", round=1) for q in taken[:-4]],
            "train",
        )
    seen = []

    class Learner:
        run_id = None
        library = 12

        def train_round(self, data):
            seen.append(data.library)
            path = loop.run_dir / "checkpoints" / f"round-{data.round}"
            path.mkdir(parents=True, exist_ok=True)
            return Checkpoint(path=str(path), round=data.round, algorithm="fake", base_model="m")

    loop.__dict__["learner"] = Learner()
    loop.__dict__["constitution"] = ""
    loop._fit_labels = lambda r: None
    loop.train(1, time.time())
    (library,) = seen
    assert len(library) == 12
    harmful = [q for q in library if q.intent == Intent.harmful]
    assert len(harmful) == 6 and all(q.intent == Intent.benign for q in library[6:])
    # the only harmful seeds left are the 4 the round does not train on (less any held
    # out); mutations fill the rest
    round_hashes = {q.hash for q in taken[:-4]}
    drawn = {q.hash for q in harmful if q.source == "seed"}
    assert drawn and drawn <= {q.hash for q in taken[-4:]}
    assert len(harmful) - len(drawn) >= 2
    assert not round_hashes & {q.hash for q in library}
    assert not (frozen_hashes() | held_out_hashes()) & {q.hash for q in library}
    assert all(q.round == 1 and q.tier == Tier.train for q in library)
    # a resumed round rehearses the same queries
    assert [q.hash for q in loop._library(1)] == [q.hash for q in library]
    loop.learner.library = 0
    assert loop._library(1) == []  # the default: none
    loop.close()
