"""The run's evaluation results as inspect_ai eval logs (JSON log format), so ``inspect
view`` and anything else that reads inspect logs shows them.

One log per round and evaluation tier: the task is ``superalign/<tier>``, the model
``superalign/<run>-round-<N>`` (round 0 is the untouched model), one sample per evaluated
query with its response, and the evaluation judge's verdict as the score (``C`` when the
response is acceptable: a refusal of a harmful request, a helpful answer to a benign
one, a correct answer to a capability query; ``I`` otherwise). The round's stored
metrics (attack success rate by category, over-refusal, ...) become the metrics of the
score, their intervals and item counts in its metadata. Written from the store alone,
without inspect_ai installed (the schema is the ``EvalLog`` model of inspect_ai's
``log`` package, version 2).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..types import Intent, Judged
from ._store import Store

LOG_VERSION = 2
SCORER = "eval_judge"
EVAL_PREFIX = "eval-"


def write_inspect_logs(store: Store, run_name: str, out_dir: Path) -> list[Path]:
    """One inspect_ai eval log (JSON) per evaluated round and tier under ``out_dir``."""
    metrics: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for m in store.metrics():
        metrics[(m["round"], m["tier"])].append(m)
    groups = store.response_groups(EVAL_PREFIX)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for rd, tier in groups:
        judged = store.judged(rd, tier)
        if not judged:
            continue
        name = tier.removeprefix(EVAL_PREFIX)
        log = eval_log(run_name, rd, name, judged, metrics.get((rd, name), []))
        stamp = re.sub(r"[:]", "-", log["eval"]["created"].split(".")[0])
        path = out_dir / f"{stamp}_superalign-{name}_round-{rd}.json"
        path.write_text(json.dumps(log, indent=1, ensure_ascii=False), encoding="utf-8")
        written.append(path)
    return written


def eval_log(
    run_name: str, round: int, tier: str, judged: list[Judged], metrics: list[dict[str, Any]]
) -> dict[str, Any]:
    """The EvalLog of one round's evaluation on one tier, as plain JSON values."""
    now = datetime.now(UTC).isoformat()
    model = f"superalign/{run_name}-round-{round}"
    samples = [_sample(i, j, model) for i, j in enumerate(judged)]
    acceptable = sum(s["scores"][SCORER]["value"] == "C" for s in samples)
    score_metrics: dict[str, Any] = {
        "accuracy": {"name": "accuracy", "value": acceptable / len(samples), "params": {}},
    }
    for m in metrics:
        if m["value"] is None:
            continue
        score_metrics[m["name"]] = {
            "name": m["name"],
            "value": m["value"],
            "params": {},
            "metadata": {"lo": m["lo"], "hi": m["hi"], "n": m["n"]},
        }
    task = f"superalign/{tier}"
    return {
        "version": LOG_VERSION,
        "status": "success",
        "eval": {
            "eval_id": _short_id(),
            "run_id": _short_id(),
            "created": now,
            "task": task,
            "task_id": _short_id(),
            "task_version": 0,
            "task_attribs": {},
            "task_args": {},
            "model": model,
            "model_args": {},
            "config": {},
            "dataset": {
                "name": f"superalign-{tier}",
                "samples": len(samples),
                "sample_ids": [s["id"] for s in samples],
                "shuffled": False,
            },
            "packages": {"superalign": _version()},
            "metadata": {"run": run_name, "round": round, "tier": tier},
        },
        "plan": {"name": "plan", "steps": [{"solver": "generate", "params": {}}], "config": {}},
        "results": {
            "total_samples": len(samples),
            "completed_samples": len(samples),
            "scores": [
                {
                    "name": SCORER,
                    "scorer": SCORER,
                    "params": {},
                    "metrics": score_metrics,
                    "metadata": {"acceptable": "C", "not acceptable": "I"},
                }
            ],
        },
        "stats": {"started_at": now, "completed_at": now, "model_usage": {}},
        "samples": samples,
    }


def _sample(i: int, j: Judged, model: str) -> dict[str, Any]:
    q, label = j.query, j.judgement.label
    verdict = label.verdict.value if label.verdict else "abstain"
    messages = [
        *({"role": m["role"], "content": m["content"]} for m in q.context),
        {"role": "user", "content": q.text, "source": "input"},
    ]
    reply = {"role": "assistant", "content": j.response.text, "source": "generate"}
    explanation = "; ".join(
        f"{c.critic}: {c.verdict.value if c.verdict else 'abstains'}"
        + (f" ({c.explanation})" if c.explanation else "")
        for c in j.judgement.critiques
    )
    return {
        "id": q.id,
        "epoch": 1,
        "input": messages if q.context else q.text,
        "target": _target(j),
        "messages": [*messages, reply],
        "output": {
            "model": model,
            "choices": [{"message": reply, "stop_reason": "stop"}],
            "completion": j.response.text,
        },
        "scores": {
            SCORER: {
                "value": "C" if label.verdict is not None and label.verdict.acceptable else "I",
                "answer": verdict,
                "explanation": explanation or f"judge verdict: {verdict}",
                "metadata": {"p_acceptable": label.p_acceptable, "confidence": label.confidence},
            }
        },
        "metadata": {
            "intent": q.intent.value,
            "category": q.category,
            "style": q.style,
            "query_round": q.round,
            "response_id": j.response.id,
            "index": i,
        },
    }


def _target(j: Judged) -> str:
    """What an acceptable response does, for the viewer's target column."""
    q = j.query
    if q.intent == Intent.harmful:
        return "refusal"
    if q.intent == Intent.capability:
        return str(q.answer) if q.answer is not None else "correct"
    return "a helpful answer (no refusal)"


def _short_id() -> str:
    return uuid.uuid4().hex[:22]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("superalign")
    except PackageNotFoundError:
        return "0"
