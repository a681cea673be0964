"""A blind hand comparison of helpfulness, beside the helpfulness judge's verdicts.

    python benchmarks/helpfulness_blind.py export runs/demo --round 2 --out runs/blind
    # read runs/blind/blind.md, write one line per pair into a file: "<id> A", "<id> B"
    # or "<id> tie" (which answer is more helpful to the person who asked)
    python benchmarks/helpfulness_blind.py score runs/blind --labels LABELS.txt

``export`` takes the benign evaluation prompts (frozen and external tiers) that both
round 0 (the untouched model) and ``--round`` answered, draws ``--n`` of them (seeded),
and writes each pair with the two answers in a seeded random order as A and B, so the
reader cannot tell which model wrote which. Which is which, and what the judge said, go
to ``key.json`` beside it: do not open it before the labels are written. ``score`` reads
the labels and prints the hand win rate of the later round (ties half, Wilson 95%), the
judge's win rate on the same pairs, and where the two agree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from superalign.eval import compare, wilson_interval
from superalign.loop import Store
from superalign.types import Intent

TIERS = ("eval-frozen", "eval-external")


def export(run: Path, round_: int, out: Path, n: int, seed: int) -> None:
    """Write blind.md (prompts and the two answers as A/B) and key.json."""
    with Store(run / "superalign.db", write=False) as store:
        pairs = []
        for tier in TIERS:
            base = {j.query.hash: j for j in store.judged(round=0, tier=tier)}
            for j in store.judged(round=round_, tier=tier):
                if j.query.intent == Intent.benign and j.query.hash in base:
                    pairs.append((tier, base[j.query.hash], j))
    rng = random.Random(seed)
    rng.shuffle(pairs)
    pairs = pairs[:n]
    out.mkdir(parents=True, exist_ok=True)
    lines, key = ["# Which answer is more helpful? (A, B or tie)", ""], {}
    for i, (tier, old, new) in enumerate(pairs, 1):
        new_is_a = rng.random() < 0.5
        a, b = (new, old) if new_is_a else (old, new)
        lines += [
            f"## {i}",
            "",
            f"**Prompt:** {old.query.text}",
            "",
            f"**A:** {a.response.text}",
            "",
            f"**B:** {b.response.text}",
            "",
        ]
        key[str(i)] = {
            "tier": tier,
            "set": str(new.query.meta.get("set", "frozen")),
            "later_is": "A" if new_is_a else "B",
            "judge": compare(new, old),  # 1: the later round wins, 0: the untouched model
            "query": old.query.text,
        }
    (out / "blind.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "key.json").write_text(json.dumps(key, indent=1), encoding="utf-8")
    print(f"{len(pairs)} pairs -> {out / 'blind.md'} (key: {out / 'key.json'})")


def _later_score(choice: str, later_is: str) -> float:
    if choice == "tie":
        return 0.5
    return 1.0 if choice == later_is else 0.0


def score(folder: Path, labels: Path) -> None:
    """The hand and judge win rates of the later round, and their agreement."""
    key = json.loads((folder / "key.json").read_text(encoding="utf-8"))
    hand: dict[str, float] = {}
    for line in labels.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pair, choice = line.split()[:2]
        if pair not in key or choice not in ("A", "B", "tie"):
            raise SystemExit(f"bad label line {line!r}: write '<id> A', '<id> B' or '<id> tie'")
        hand[pair] = _later_score(choice, key[pair]["later_is"])
    if not hand:
        raise SystemExit(f"{labels} has no labels")
    judge = {k: key[k]["judge"] for k in hand}

    def show(name: str, scores: list[float]) -> None:
        m = wilson_interval(sum(scores), len(scores))
        wins, ties = scores.count(1.0), scores.count(0.5)
        losses = len(scores) - wins - ties
        print(f"{name}: win rate {m.format()}; later better {wins}, tie {ties}, worse {losses}")

    show("hand (blind)", list(hand.values()))
    show("judge", list(judge.values()))
    same = sum(hand[k] == judge[k] for k in hand)
    print(f"judge agrees with the hand label on {same} of {len(hand)} pairs")
    for s in sorted({v["set"] for v in key.values()}):
        ids = [k for k in hand if key[k]["set"] == s]
        if ids:
            h = sum(hand[k] for k in ids) / len(ids)
            j = sum(judge[k] for k in ids) / len(ids)
            print(f"  {s}: {len(ids)} pairs, hand {h:.0%}, judge {j:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("run", type=Path)
    e.add_argument("--round", type=int, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--n", type=int, default=40)
    e.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score")
    s.add_argument("folder", type=Path)
    s.add_argument("--labels", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "export":
        export(args.run, args.round, args.out, args.n, args.seed)
    else:
        score(args.folder, args.labels)


if __name__ == "__main__":
    main()
