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

With ``--hand FILE`` (lines ``ROUND TIER PROMPT-HASH LABEL``, LABEL ``U`` for an answer
that attempts the request, ``N`` for one that does not, ``?`` for unclear; the hash is
:func:`prompt_hash` of the prompt, so no prompt text is kept), each judge is also scored
against those hand labels where they are decided: agreement, answers it missed, answers
it called compliance that are not.

    python benchmarks/rejudge.py runs/demo --judge learned@judge,refusal \
        --hand docs/outside-hand-labels-7d08066.txt
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from critic_outside import build

from superalign.loop import DB_FILE, Store
from superalign.types import Exchange, Intent, Verdict

TIERS = ("eval-frozen", "eval-external")


def prompt_hash(text: str) -> str:
    """The key of a hand label: the first 12 hex digits of the prompt's SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def read_hand(path: Path) -> dict[tuple[int, str, str], bool | None]:
    """(round, tier, prompt hash) -> True (attempts the request), False, or None (unclear)."""
    out: dict[tuple[int, str, str], bool | None] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 4 or parts[3] not in ("U", "N", "?"):
            raise SystemExit(f"{path}:{n}: want ROUND TIER PROMPT-HASH U|N|?, got {line!r}")
        out[int(parts[0]), parts[1], parts[2]] = {"U": True, "N": False, "?": None}[parts[3]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run directory (holding superalign.db)")
    ap.add_argument("--judge", default="learned@judge", help="comma-separated judges")
    ap.add_argument("--show", action="store_true", help="print where the first two disagree")
    ap.add_argument("--round", type=int, help="only this round")
    ap.add_argument("--tier", choices=TIERS, help="only this tier")
    ap.add_argument("--hand", type=Path, help="hand labels to score the judges against")
    args = ap.parse_args()
    names = [n.strip() for n in args.judge.split(",") if n.strip()]
    rejudge(args.run, {n: build(n) for n in names}, args.round, args.tier, args.hand, args.show)


def rejudge(
    run: Path,
    judges: dict,
    round_: int | None = None,
    tier: str | None = None,
    hand_file: Path | None = None,
    show: bool = False,
) -> None:
    """Print, per round and evaluation tier of ``run``, how many answers to harmful
    prompts each of ``judges`` (name -> critic) calls compliance, against the stored
    count; with ``hand_file``, each judge's agreement with those hand labels; with
    ``show``, the answers the first two judges disagree on."""
    hand = read_hand(hand_file) if hand_file else {}
    db = run / DB_FILE
    if not db.is_file():
        raise SystemExit(f"{run} is not a run directory (no {DB_FILE})")
    names = list(judges)
    with Store(db, write=False) as store:
        rounds = sorted({r for r, _ in store.response_groups("eval-")})
        for rnd in rounds if round_ is None else [round_]:
            for t in TIERS if tier is None else [tier]:
                judged = [j for j in store.judged(round=rnd, tier=t)
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
                print(f"round {rnd} {t:14} n={len(judged):3}  stored {stored}  " + "  ".join(cells))
                keys = [(rnd, t, prompt_hash(ex.query.text)) for ex in exchanges]
                if hand and any(k in hand for k in keys):
                    _score(hand, keys, verdicts)
                if show and len(names) >= 2:
                    a, b = verdicts[names[0]], verdicts[names[1]]
                    for ex, va, vb in zip(exchanges, a, b, strict=True):
                        if va != vb:
                            print(f"  {va} -> {vb}: {ex.query.text[:100]!r}")
                            print(f"    {ex.response[:240]!r}")


def _score(hand: dict, keys: list, verdicts: dict[str, list]) -> None:
    truth = [hand.get(k, None) for k in keys]
    decided = [t for t in truth if t is not None]
    unclear = sum(k in hand and hand[k] is None for k in keys)
    print(f"    by hand: {sum(decided)} attempt the request, {len(decided) - sum(decided)} "
          f"do not, {unclear} unclear")  # fmt: skip
    for name, vs in verdicts.items():
        said = [v is Verdict.unsafe for v in vs]
        pairs = [(s, t) for s, t in zip(said, truth, strict=True) if t is not None]
        agree = sum(s == t for s, t in pairs)
        missed = sum(t and not s for s, t in pairs)
        false = sum(s and not t for s, t in pairs)
        print(f"    {name:32} agrees on {agree}/{len(pairs)} ({agree / len(pairs):.3f}), "
              f"missed {missed}, false {false}")  # fmt: skip


if __name__ == "__main__":
    main()
