"""The learning algorithms compared inside the loop, at an equal compute budget.

For each seed, one run goes through round 0 (evaluation of the untouched model) and
round 1's attack, respond, critique and oversee phases. That run is then copied once
per algorithm, and each copy finishes round 1 (aggregate, train, evaluate) with its own
learner section: the same queries, answers, critiques and human labels for everyone,
and the same training budget (``learner.time_budget``: seconds of process CPU time over
the thread count, which is wall time on an idle machine and stays fair when other jobs
share the cores). Everything is scored by the evaluation judge, which training never sees.

    python benchmarks/algorithms.py --seeds 0 1 --budget 90          # all algorithms
    python benchmarks/algorithms.py --seeds 0 --only rdpo-refusals sft --budget 60

Prints one row per algorithm and seed, then the mean over seeds; rates carry Wilson 95%
intervals (pooled over seeds in the summary). Runs live under --out (default runs/algos)
and are resumed where they stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import yaml

from superalign.eval import wilson_interval
from superalign.loop import resume, start

ROOT = Path(__file__).resolve().parents[1]
BIG = 1000  # epochs or steps: the budget stops training, not the schedule

# learner sections; every one gets learner.time_budget and learner.seed on top
DPO = {"algorithm": "dpo", "learning_rate": 5.0e-4}
ALGORITHMS: dict[str, dict[str, Any]] = {
    "rdpo-revisions": {
        **DPO,
        "args": {"loss": "robust", "beta": 0.1, "sft_weight": 1.0, "epochs": BIG},
        "pairs": {"revisions": True},
    },
    "rdpo-refusals": {
        **DPO,
        "args": {"loss": "robust", "beta": 0.1, "sft_weight": 1.0, "epochs": BIG},
        "pairs": {"revisions": False},
    },
    "ipo-refusals": {
        **DPO,
        "args": {"loss": "ipo", "beta": 0.1, "sft_weight": 1.0, "epochs": BIG},
        "pairs": {"revisions": False},
    },
    "cdpo-refusals": {
        **DPO,
        "args": {"loss": "cdpo", "beta": 0.1, "confidence": "smoothing", "epochs": BIG},
        "pairs": {"revisions": False},
    },
    "sft-rehearse": {  # the default's recipe (configs/default.yaml)
        "algorithm": "sft",
        "learning_rate": 5.0e-4,
        "args": {"mode": "chosen", "epochs": BIG, "batch_size": 8, "rehearse": 0.5},
        "pairs": {"revisions": False},
    },
    "sft-chosen": {
        "algorithm": "sft",
        "learning_rate": 5.0e-4,
        "args": {"mode": "chosen", "epochs": BIG, "batch_size": 8},
        "pairs": {"revisions": False},
    },
    "sft": {
        "algorithm": "sft",
        "learning_rate": 5.0e-4,
        "args": {"mode": "revision", "candidates": 2, "max_new_tokens": 64, "epochs": BIG},
    },
    "grpo": {
        "algorithm": "grpo",
        "learning_rate": 5.0e-4,
        "args": {
            "steps": BIG,
            "prompts_per_step": 4,
            "num_generations": 4,
            "max_completion_length": 48,
        },
    },
    "rloo": {
        "algorithm": "rloo",
        "learning_rate": 5.0e-4,
        "args": {
            "steps": BIG,
            "prompts_per_step": 4,
            "num_generations": 4,
            "max_completion_length": 48,
        },
    },
    "ppo": {
        "algorithm": "ppo",
        "learning_rate": 5.0e-4,
        "args": {
            "steps": BIG,
            "prompts_per_step": 8,
            "minibatch_size": 8,
            "max_completion_length": 48,
        },
    },
}

SHOWN = [  # (tier, metric, label)
    ("frozen", "attack_success_rate", "ASR frozen"),
    ("external", "attack_success_rate", "ASR external"),
    ("frozen", "benign_refusal_rate", "benign refusal"),
    ("frozen", "benign_refusal/scary_but_safe", "hard-benign refusal"),
    ("frozen", "math_accuracy", "math"),
    ("frozen", "garbled_rate", "garbled"),
]


def base_run(seed: int, args: argparse.Namespace) -> Path:
    """Round 0 and round 1 up to the oversee phase, shared by every algorithm."""
    name = f"base-s{seed}"
    path = args.out / name
    overrides = [
        "loop.rounds=1",
        f"loop.queries_per_round={args.queries}",
        f"loop.seed={seed}",
        f"learner.seed={seed}",
        f"eval.frozen_limit={args.frozen_limit}",
        *args.set,
    ]
    if (path / "superalign.db").exists():
        loop = resume(path)
    else:
        loop = start(args.config, overrides, name, runs_dir=args.out)
    try:
        loop.run(until=(1, "oversee"))
    finally:
        loop.close()
    return path


def branch(base: Path, algo: str, seed: int, args: argparse.Namespace) -> Path:
    """A copy of the base run that finishes round 1 with ``algo``'s learner."""
    path = args.out / f"{algo}-s{seed}"
    if not (path / "superalign.db").exists():
        if path.exists():
            shutil.rmtree(path)
        shutil.copytree(base, path)
        config = yaml.safe_load((path / "config.yaml").read_text())
        learner = {**config["learner"], **json.loads(json.dumps(ALGORITHMS[algo]))}
        learner["args"] = ALGORITHMS[algo].get("args", {})
        learner["time_budget"] = args.budget
        learner["seed"] = seed
        config["learner"] = learner
        config["name"] = path.name
        (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    loop = resume(path, force=True)
    try:
        loop.run()
    finally:
        loop.close()
    return path


def results(path: Path) -> dict[str, Any]:
    from superalign.loop._store import Store

    store = Store(path / "superalign.db", write=False)
    try:
        out: dict[str, Any] = {}
        for m in store.metrics():
            out[(m["round"], m["tier"], m["name"])] = m
        phases = {(r, p): s for r, p, s in store.finished_phases()}
        training = store.training()
    finally:
        store.close()
    return {"metrics": out, "phases": phases, "training": training}


def _rate(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "—"
    lo, hi = m.get("lo"), m.get("hi")
    ci = f" [{lo:.0%}, {hi:.0%}]" if lo is not None and hi is not None else ""
    return f"{m['value']:.1%}{ci}"


def table(rows: list[tuple[str, int, dict[str, Any]]]) -> str:
    head = ["algorithm", "seed", *[label for _, _, label in SHOWN], "train s", "agg s", "steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for algo, seed, res in rows:
        rnd = 0 if algo == "untouched" else 1
        cells = [_rate(res["metrics"].get((rnd, tier, name))) for tier, name, _ in SHOWN]
        train = next((t for t in res["training"] if t.get("round") == 1), {})
        steps = train.get("metrics", {}).get("steps", "—")
        lines.append(
            "| "
            + " | ".join(
                [
                    algo,
                    str(seed),
                    *cells,
                    f"{res['phases'].get((1, 'train'), 0) or 0:.0f}" if rnd else "—",
                    f"{res['phases'].get((1, 'aggregate'), 0) or 0:.0f}" if rnd else "—",
                    str(steps) if rnd else "—",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def pooled(rows: list[tuple[str, int, dict[str, Any]]]) -> str:
    """Per algorithm, each rate pooled over seeds (successes and n summed), Wilson 95%."""
    head = ["algorithm", "seeds", *[label for _, _, label in SHOWN]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for algo in dict.fromkeys(a for a, _, _ in rows):
        mine = [r for a, _, r in rows if a == algo]
        rnd = 0 if algo == "untouched" else 1
        cells = []
        for tier, name, _ in SHOWN:
            ms = [r["metrics"].get((rnd, tier, name)) for r in mine]
            ms = [m for m in ms if m and m.get("value") is not None and m.get("n")]
            if not ms:
                cells.append("—")
                continue
            n = sum(int(m["n"]) for m in ms)
            k = round(sum(m["value"] * m["n"] for m in ms))
            ci = wilson_interval(k, n)
            cells.append(f"{k / n:.1%} [{ci.lo:.0%}, {ci.hi:.0%}]")
        lines.append("| " + " | ".join([algo, str(len(mine)), *cells]) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--only", nargs="+", choices=sorted(ALGORITHMS), default=None)
    ap.add_argument("--budget", type=float, default=90.0, help="training seconds per round")
    ap.add_argument("--queries", type=int, default=64, help="loop.queries_per_round")
    ap.add_argument("--frozen-limit", type=int, default=20, help="eval.frozen_limit")
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--set", nargs="*", default=[], help="more config overrides, a.b=c")
    ap.add_argument("--out", type=Path, default=Path("runs/algos"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}", flush=True)
    algos = args.only or list(ALGORITHMS)
    rows: list[tuple[str, int, dict[str, Any]]] = []
    started = time.time()
    for seed in args.seeds:
        base = base_run(seed, args)
        rows.append(("untouched", seed, results(base)))
        for algo in algos:
            t0 = time.time()
            path = branch(base, algo, seed, args)
            rows.append((algo, seed, results(path)))
            print(f"[{algo} seed {seed}: {time.time() - t0:.0f} s]", flush=True)
            print(table(rows), flush=True)
    print(f"\nload average after: {os.getloadavg()}; {time.time() - started:.0f} s in all")
    print(table(rows))
    print("\nPooled over seeds:")
    print(pooled(rows))


if __name__ == "__main__":
    main()
