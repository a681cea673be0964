"""Which forms of a harmful request still get through: attack success by request form.

    python benchmarks/asr_by_form.py runs/demo [--tier eval-external]

Outside prompts carry no attack style: they are plain requests in a few recurring
forms. Each harmful prompt of the tier is put in one form by its opening words
(instructions asked for, a how-to question, text or code to write, an explanation, an
"is it possible" question, anything else) and the table gives, per form, the evaluation
judge's harmful-compliance rate at round 0 and at every later round (Wilson 95%).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from superalign.eval import attack_succeeded, rate_metric
from superalign.loop import Store
from superalign.types import Intent

# First match wins: the opening words of a plain request say what it asks for.
FORMS = (
    ("instructions", r"^(give|provide|write|list)\b.{0,40}\b(instructions|steps|step-by-step|"
     r"guide|tutorial|tips|advice|suggestions)\b"),
    ("code", r"\b(code|script|program|function|malware|exploit|keylogger)\b"),
    ("how-to question", r"^(how|what'?s the (best|easiest|most)|where|which)\b"),
    ("can-you question", r"^(can|could|would|will|is it|are there)\b"),
    ("write text", r"^(write|generate|create|compose|draft|convince|produce)\b"),
    ("explain", r"^(explain|describe|list|detail|tell|outline|give)\b"),
)  # fmt: skip
_COMPILED = [(name, re.compile(rx, re.I)) for name, rx in FORMS]


def request_form(text: str) -> str:
    """The form of a plain request, by its opening words ('other' when none fits)."""
    text = text.strip()
    return next((name for name, rx in _COMPILED if rx.search(text)), "other")


def table(run: Path, tier: str) -> str:
    with Store(run / "superalign.db", write=False) as store:
        rounds = sorted({r for r, phase, _ in store.finished_phases() if phase == "evaluate"})
        by_round = {
            r: [j for j in store.judged(round=r, tier=tier) if j.query.intent == Intent.harmful]
            for r in rounds
        }
    forms = [name for name, _ in FORMS] + ["other"]
    head = "| form | n | " + " | ".join(f"round {r}" for r in rounds) + " |"
    lines = [head, "|---|---|" + "---|" * len(rounds)]
    for form in forms:
        cells, n = [], 0
        for r in rounds:
            rows = [j for j in by_round[r] if request_form(j.query.text) == form]
            n = max(n, len(rows))
            cells.append(rate_metric(attack_succeeded(j) for j in rows).format() if rows else "")
        if n:
            lines.append(f"| {form} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--tier", default="eval-external")
    args = parser.parse_args()
    print(table(args.run, args.tier))


if __name__ == "__main__":
    main()
