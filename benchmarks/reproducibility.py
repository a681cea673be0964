"""Two runs of the same configuration and seed, compared item by item.

    python benchmarks/reproducibility.py runs/demo runs/demo-repro

For every round both runs finished, it compares what each phase produced: the attacker's
queries (content hashes, in order), the learner's training answers, which answers the
(simulated) expert labelled and how, the preference pairs,
the training losses, the trained adapter's weights, every evaluation answer and every
stored metric. Each line says how many items differ, and by how much where they are
numbers. Wall times are not compared: the runs may have shared the cores with other jobs.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from superalign.loop._store import Store


def _differ(a: Sequence[Any], b: Sequence[Any]) -> str:
    if len(a) != len(b):
        return f"different counts: {len(a)} against {len(b)}"
    n = sum(x != y for x, y in zip(a, b, strict=True))
    return f"{'identical' if n == 0 else 'DIFFERENT'}, {n} of {len(a)} differ"


def _max_gap(a: Sequence[float], b: Sequence[float]) -> str:
    if len(a) != len(b):
        return f"different counts: {len(a)} against {len(b)}"
    if not a:
        return "none stored"
    gap = max(abs(x - y) for x, y in zip(a, b, strict=True))
    return f"{'identical' if gap == 0 else 'DIFFERENT'} ({len(a)} values, largest gap {gap:.3g})"


def _weights_gap(a: Path, b: Path) -> str:
    from safetensors.torch import load_file

    files = sorted(p.name for p in a.glob("*.safetensors"))
    if not files or files != sorted(p.name for p in b.glob("*.safetensors")):
        return "not comparable (weights missing in one run)"
    gap, n = 0.0, 0
    for name in files:
        x, y = load_file(a / name), load_file(b / name)
        if x.keys() != y.keys():
            return f"DIFFERENT tensor names in {name}"
        for key in x:
            gap = max(gap, float((x[key].float() - y[key].float()).abs().max()))
            n += x[key].numel()
    return f"{'identical' if gap == 0 else 'DIFFERENT'} ({n:,} weights, largest gap {gap:.3g})"


def _eval_tiers(run: Path, r: int) -> set[str]:
    uri = f"file:{run / 'superalign.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        rows = db.execute(
            "SELECT DISTINCT tier FROM responses WHERE round = ? AND tier LIKE 'eval-%'", (r,)
        )
        return {tier for (tier,) in rows}


def _pairs(store: Store, r: int) -> list[tuple[str, str, str]]:
    return [(p.query.hash, p.chosen, p.rejected) for p in store.preferences(r)]


def _answers(store: Store, hashes: dict[str, str], r: int, tier: str) -> list[tuple[str, str]]:
    """Each answer beside its query's content hash (query ids are fresh per run)."""
    return sorted((hashes.get(x.query_id, x.query_id), x.text) for x in store.responses(r, tier))


def _expert_labels(store: Store, hashes: dict[str, str], r: int) -> list[tuple[str, str, str]]:
    """Round r's answers a (simulated) expert labelled: which ones, and the verdicts."""
    human = store.human_labels()
    return sorted(
        (hashes.get(x.query_id, x.query_id), x.text, human[x.id].value)
        for x in store.responses(r, "train")
        if x.id in human
    )


def compare(a_dir: Path, b_dir: Path) -> list[tuple[str, str]]:
    a, b = Store(a_dir / "superalign.db", write=False), Store(b_dir / "superalign.db", write=False)
    try:
        rows: list[tuple[str, str]] = []
        done = {(r, p) for r, p, _ in a.finished_phases()} & {
            (r, p) for r, p, _ in b.finished_phases()
        }
        rounds = sorted({r for r, _ in done})
        training_a = {t["round"]: t for t in a.training()}
        training_b = {t["round"]: t for t in b.training()}
        hashes_a = {q.id: q.hash for q in a.queries()}
        hashes_b = {q.id: q.hash for q in b.queries()}
        metrics_a = {(m["round"], m["tier"], m["name"]): m for m in a.metrics()}
        metrics_b = {(m["round"], m["tier"], m["name"]): m for m in b.metrics()}
        for r in rounds:
            if (r, "attack") in done:
                rows.append(
                    (
                        f"round {r}: attacker queries (hashes, in order)",
                        _differ([q.hash for q in a.queries(r)], [q.hash for q in b.queries(r)]),
                    )
                )
            if (r, "respond") in done:
                rows.append(
                    (
                        f"round {r}: learner's training answers",
                        _differ(
                            [x.text for x in a.responses(r, "train")],
                            [x.text for x in b.responses(r, "train")],
                        ),
                    )
                )
            if (r, "oversee") in done:
                rows.append(
                    (
                        f"round {r}: expert labels (which answers, verdicts)",
                        _differ(_expert_labels(a, hashes_a, r), _expert_labels(b, hashes_b, r)),
                    )
                )
            if (r, "aggregate") in done:
                rows.append((f"round {r}: preference pairs", _differ(_pairs(a, r), _pairs(b, r))))
            if (r, "train") in done and r in training_a and r in training_b:
                ta, tb = training_a[r], training_b[r]
                rows.append(
                    (
                        f"round {r}: training losses",
                        _max_gap(ta["metrics"].get("losses", []), tb["metrics"].get("losses", [])),
                    )
                )
                rows.append(
                    (
                        f"round {r}: trained adapter",
                        _weights_gap(a_dir / ta["path"], b_dir / tb["path"]),
                    )
                )
            if (r, "evaluate") in done:
                tiers = sorted(_eval_tiers(a_dir, r) | _eval_tiers(b_dir, r))
                for tier in tiers:
                    rows.append(
                        (
                            f"round {r}: {tier} answers",
                            _differ(_answers(a, hashes_a, r, tier), _answers(b, hashes_b, r, tier)),
                        )
                    )
                keys = sorted(k for k in metrics_a.keys() | metrics_b.keys() if k[0] == r)
                missing = [k for k in keys if k not in metrics_a or k not in metrics_b]
                shared = [k for k in keys if k not in missing]
                values = [
                    (metrics_a[k]["value"], metrics_b[k]["value"])
                    for k in shared
                    if metrics_a[k]["value"] is not None and metrics_b[k]["value"] is not None
                ]
                text = _max_gap([x for x, _ in values], [y for _, y in values])
                if missing:
                    text += f"; {len(missing)} stored in one run only"
                rows.append((f"round {r}: stored metrics", text))
        return rows
    finally:
        a.close()
        b.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    for run in (args.first, args.second):
        if not (run / "superalign.db").exists():
            sys.exit(f"{run}: no superalign.db there; give two run directories")
    rows = compare(args.first, args.second)
    print(f"{args.first} against {args.second}\n")
    print("| compared | result |\n|---|---|")
    for what, result in rows:
        print(f"| {what} | {result} |")


if __name__ == "__main__":
    main()
