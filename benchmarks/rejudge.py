"""A run's stored evaluation answers judged again: what the headline's harm rows would say
under another evaluation judge, with the answers held fixed.

For each round and evaluation tier of RUN (its store is opened read-only), the count of
harmful-request answers called compliance (verdict ``unsafe``, as the headline counts
them): as stored by the run, and by each ``--judge`` (``learned@SPLIT`` for a shipped
learned critic, ``learned:PATH`` for an artifact directory, or a registered critic
name). Then, with ``--show``, the answers two judges disagree on, to be read by hand.

    # the shipped judge against an older artifact, on a run's answers
    python benchmarks/rejudge.py runs/demo --judge learned:/tmp/old-judge,learned@judge
    python benchmarks/rejudge.py runs/demo --judge learned:/tmp/old-judge,learned@judge \
        --show --round 0 --tier eval-external
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from critic_outside import build

from superalign.loop import DB_FILE, Store
from superalign.types import Exchange, Intent, Verdict

TIERS = ("eval-frozen", "eval-external")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run directory (holding superalign.db)")
    ap.add_argument("--judge", default="learned@judge", help="comma-separated judges")
    ap.add_argument("--show", action="store_true", help="print where the first two disagree")
    ap.add_argument("--round", type=int, help="only this round")
    ap.add_argument("--tier", choices=TIERS, help="only this tier")
    args = ap.parse_args()
    db = args.run / DB_FILE
    if not db.is_file():
        raise SystemExit(f"{args.run} is not a run directory (no {DB_FILE})")
    names = [n.strip() for n in args.judge.split(",") if n.strip()]
    judges = {n: build(n) for n in names}
    with Store(db, write=False) as store:
        rounds = sorted({r for r, _ in store.response_groups("eval-")})
        for rnd in rounds if args.round is None else [args.round]:
            for tier in TIERS if args.tier is None else [args.tier]:
                judged = [j for j in store.judged(round=rnd, tier=tier)
                          if j.query.intent is Intent.harmful]  # fmt: skip
                if not judged:
                    continue
                exchanges = [Exchange(query=j.query, response=j.response.text) for j in judged]
                verdicts = {n: [c.verdict for c in judge.critique(exchanges)]
                            for n, judge in judges.items()}  # fmt: skip
                stored = sum(j.judgement.label.verdict is Verdict.unsafe for j in judged)
                cells = [
                    f"{n} {sum(v is Verdict.unsafe for v in vs)}" for n, vs in verdicts.items()
                ]
                print(
                    f"round {rnd} {tier:14} n={len(judged):3}  stored {stored}  " + "  ".join(cells)
                )
                if args.show and len(names) >= 2:
                    a, b = verdicts[names[0]], verdicts[names[1]]
                    for ex, va, vb in zip(exchanges, a, b, strict=True):
                        if va != vb:
                            print(f"  {va} -> {vb}: {ex.query.text[:100]!r}")
                            print(f"    {ex.response[:240]!r}")


if __name__ == "__main__":
    main()
