"""Does one short round of each algorithm raise the critic's reward on the bundled model?

    .venv/bin/python benchmarks/learn_gain.py            # every algorithm
    .venv/bin/python benchmarks/learn_gain.py dpo sft    # a subset

The critic is the project's real ensemble (superalign.critic) with its rule-based
critics (refusal, query_risk, verifier; no LM judge, to keep it fast on CPU), combined
by its label model. Before/after: the mean CriticReward of the learner's greedy answers
to a small fixed set of harmful and benign prompts (benchmarks/_learn_common.py),
the same prompts it trains on in this round. Each algorithm starts from the bundled
weights.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _learn_common import queries

from superalign.types import Exchange, GenParams, Judged, Response, RoundData

ALGORITHMS = ("grpo", "rloo", "ppo", "dpo", "sft")
ANSWER_TOKENS = 40
SETTINGS = {
    "grpo": {"steps": 6, "prompts_per_step": 2, "num_generations": 4, "max_completion_length": 32},
    "rloo": {"steps": 6, "prompts_per_step": 2, "num_generations": 4, "max_completion_length": 32},
    "ppo": {"steps": 4, "prompts_per_step": 6, "minibatch_size": 6, "max_completion_length": 32},
    "dpo": {"loss": "robust", "batch_size": 4, "epochs": 4},
    "sft": {"batch_size": 4, "epochs": 3, "max_new_tokens": 64, "candidates": 4},
}
LEARNING_RATE = {"grpo": 5e-4, "rloo": 5e-4, "ppo": 5e-4, "dpo": 1e-3, "sft": 1e-3}


def critic():
    from superalign.critic import CriticSection, build_ensemble
    from superalign.settings import ComponentSpec

    section = CriticSection(
        critics=[ComponentSpec(name=n) for n in ("refusal", "query_risk", "verifier")]
    )
    return build_ensemble(section, model=None)


def measure(model, reward) -> tuple[float, RoundData]:
    """Mean reward of greedy answers, and the round data (answers judged) to train on."""
    qs = queries()
    answers = model.generate([q.chat() for q in qs], GenParams(max_new_tokens=ANSWER_TOKENS))
    pairs = zip(qs, answers, strict=True)
    judgements = reward.judge([Exchange(query=q, response=a) for q, a in pairs])
    scores = [reward.score(j) for j in judgements]
    judged = [
        Judged(query=q, response=Response(query_id=q.id, text=a), judgement=j)
        for q, a, j in zip(qs, answers, judgements, strict=True)
    ]
    return sum(scores) / len(scores), RoundData(round=0, judged=judged)


def run(algorithm: str, reward, data: RoundData, run_dir: Path) -> dict:
    from superalign.learn import LearnerSection, build_learner, build_preferences

    model = bundled()
    data = data.model_copy(deep=True)
    if algorithm == "dpo":
        data.preferences = build_preferences(data, model, reward.judge, max_new_tokens=64)
    section = LearnerSection(
        algorithm=algorithm, args=SETTINGS[algorithm], learning_rate=LEARNING_RATE[algorithm]
    )
    start = time.perf_counter()
    build_learner(section, model, reward, run_dir).train_round(data)
    seconds = time.perf_counter() - start
    after, _ = measure(model, reward)
    extra = {"pairs": len(data.preferences)} if algorithm == "dpo" else {}
    return {"after": after, "seconds": seconds, **extra}


def bundled():
    from superalign.models import HFChatModel

    return HFChatModel(model="smollm2-135m", device="cpu", fast=False)


def main(selected: list[str]) -> None:
    from superalign.learn import CriticReward

    reward = CriticReward(critic().judge)
    before, data = measure(bundled(), reward)  # greedy: the same for every algorithm
    print("before", before, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for algorithm in selected:
            result = {"before": before, **run(algorithm, reward, data, Path(tmp) / algorithm)}
            rows.append((algorithm, result))
            print(algorithm, result, flush=True)
    print("\n| algorithm | mean reward before | after | change | round s |")
    print("|---|---:|---:|---:|---:|")
    for algorithm, r in rows:
        change = r["after"] - r["before"]
        print(
            f"| {algorithm} | {r['before']:+.3f} | {r['after']:+.3f} | {change:+.3f} "
            f"| {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main([a for a in sys.argv[1:] if a in ALGORITHMS] or list(ALGORITHMS))
