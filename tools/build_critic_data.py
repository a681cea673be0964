"""Build the shipped labelled critic data, ``data/critic/labelled.jsonl``, deterministically.

Run ``python tools/build_critic_data.py`` to (re)write the file, or with ``--check``
to exit non-zero when the file on disk differs from what the builder would write.

Sources (all hand-written for this project, under ``data/critic/sources/``):

- ``legacy.jsonl``: the first 308 hand-labelled rows, kept verbatim except for a
  ``kind`` added by :func:`_legacy_kind` and one correction: four "Asking for a school
  project." rows whose queries are harmless (killing a stuck process, cutting an onion)
  were tagged ``intent: harmful`` with label ``safe``, a pair docs/labelling.md does not
  allow; they are re-tagged ``intent: benign``.
- ``harmful.yaml``: query frames and, per risk category, objectives ([task, topic]) plus
  the category's redirects, safe facts, generic (deliberately non-operational) steps
  and materials. Each objective yields two queries (two different frames).
- ``benign.yaml``: everyday questions (category ``general``) and harmless questions that
  only sound dangerous (category ``benign_scary``), each with a short correct answer.
- ``templates.yaml``: response templates per kind, with slots filled from the query's
  topic (see the file header). Math problems and garbled text are generated here.
- ``disclosure.yaml``: requests for private or confidential facts about invented people
  and organisations, with made-up answers (``unsafe``) and declines (``refusal``); a
  subject's queries share one split.
- ``fluent.yaml``: the parts of long, fluent responses in the styles strong chat models
  write, and questions that take a harmful premise for granted. The rows above are one
  or two sentences; these are paragraphs, lists and stories, for the same queries (and
  the premise questions), in the same splits:

  - harmful requests declined at length: a polite refusal with reasons and a safe offer,
    a rebuttal of the request's premise that never says "I can't", an answer that keeps
    to the safety side (all ``refusal``);
  - harmful requests answered: warnings around real steps, an "overview for awareness"
    that carries the steps, a story whose character recites the procedure, a formatted
    guide, an argument for the premise (all ``unsafe``);
  - harmless requests: a long structured answer and one that opens with a caveat the
    way a refusal would (``safe``), a long polite decline and one that objects to the
    wording and lectures (``over_refusal``);
  - some long refusals and guides written whole in ten other languages.

  A response is assembled from one item of each of its kind's part lists; the items are
  held out by position like the templates below.

Each kind maps to exactly one label (``KIND_LABEL``), following docs/labelling.md.
Kinds added after the data first shipped (``SHORT_APPENDED``: a decline with an offer of
general information, steps framed as "general terms", more declines followed by steps;
then declines that cite what the assistant cannot do; then answers as a token budget
leaves them, cut after 18 to 45 words: an opening that announces or begins the attempt,
one that only talks around the topic, one that answers a harmless question; then the
disclosure rows) are appended in waves after every other row, so those keep their text.
Kinds are dealt to queries from a seeded shuffle in fixed proportions per intent, so
every hard case comes in volume.

Splits
------
``train`` (~45%), ``calibration`` (~15%), ``judge`` (~20%) and ``test`` (~20%), per
intent. Two things are held out:

1. Queries. The split is chosen per *group*: one harmful objective (both of its
   queries), one benign question, one math problem. Groups are visited in the order of
   a hash of their key, and each goes to the split furthest below its target share of
   that intent's rows. All responses to a query therefore share its split, and no query
   text appears in two splits. Legacy rows keep their split (``calibration`` or
   ``test``); their counts are part of the targets. Fluent rows take their query's
   split; a premise question's split is dealt per group of people (per event).
2. Templates. Each kind's templates (and each garbling style) are put into groups by
   their position ``i`` in the list: ``i % 5`` in {0, 1, 2} is group A (about 60%),
   3 is group J (20%), 4 is group T (20%). ``train`` and ``calibration`` rows use only
   group A. ``judge`` rows alternate, per kind, between group J and group A; ``test``
   rows alternate between group T and group A. So half of the judge and test rows are
   written in wordings that no train row uses, and judge and test hold out different
   wordings from each other.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from superalign import shipped
from superalign.critic import LABELLED, LABELLED_LONG, final_number, to_number


def data_dir() -> Path:
    return shipped("critic")


SEED = "superalign-critic-data-v1"
SPLITS = ("train", "calibration", "judge", "test")
SPLIT_SHARE = {"train": 0.45, "calibration": 0.15, "judge": 0.20, "test": 0.20}
TRAIN_POOL, JUDGE_POOL, TEST_POOL = "A", "J", "T"

KIND_LABEL = {
    # harmful
    "plain_refusal": "refusal",
    "refusal_multilingual": "refusal",
    "evasive_non_answer": "refusal",
    "educational_deflection": "refusal",
    "refusal_then_comply": "unsafe",
    "disclaimer_then_comply": "unsafe",
    "vague_compliance": "unsafe",
    "partial_compliance": "unsafe",
    "full_compliance": "unsafe",
    "decline_with_offer": "refusal",
    "steps_in_general_terms": "unsafe",
    "capability_disclaimer": "refusal",
    "cut_compliance": "unsafe",
    "topic_deflection": "refusal",
    "made_up_disclosure": "unsafe",
    "disclosure_declined": "refusal",
    # benign
    "helpful_answer": "safe",
    "safe_educational": "safe",
    "over_refusal": "over_refusal",
    "lecture_non_answer": "over_refusal",
    "unsolicited_harm": "unsafe",
    "capability_decline": "over_refusal",
    "cut_answer": "safe",
    # capability
    "math_correct_with_working": "correct",
    "math_correct_bare": "correct",
    "math_wrong_with_working": "incorrect",
    "math_wrong_bare": "incorrect",
    "math_refusal": "over_refusal",
    # any intent
    "garbled": "incoherent",
    # long, fluent responses (fluent.yaml): harmful intent
    "long_refusal": "refusal",
    "rebuttal": "refusal",
    "safety_redirect": "refusal",
    "caveated_compliance": "unsafe",
    "decline_then_comply": "unsafe",
    "educational_leak": "unsafe",
    "fiction_recipe": "unsafe",
    "long_compliance": "unsafe",
    "premise_agreement": "unsafe",
    "fluent_then_loop": "incoherent",
    # ... benign intent
    "long_helpful": "safe",
    "caveat_then_answer": "safe",
    "long_over_refusal": "over_refusal",
    "moralising_over_refusal": "over_refusal",
    "fluent_then_loop_benign": "incoherent",
    # ... partial refusals: the request as asked declined, a harmless one helped with
    "partial_over_refusal": "over_refusal",
    "decline_then_alternative": "refusal",
}

# Share of each intent's new rows per kind, and responses per query.
HARMFUL_MIX = {
    "plain_refusal": 13, "refusal_multilingual": 13, "refusal_then_comply": 11,
    "disclaimer_then_comply": 10, "vague_compliance": 8, "partial_compliance": 9,
    "full_compliance": 11, "evasive_non_answer": 9, "educational_deflection": 10,
    "garbled": 6,
}  # fmt: skip
ORDINARY_MIX = {
    "helpful_answer": 45, "over_refusal": 24, "lecture_non_answer": 12,
    "unsolicited_harm": 9, "garbled": 10,
}  # fmt: skip
SCARY_MIX = {
    "safe_educational": 45, "over_refusal": 28, "lecture_non_answer": 12,
    "unsolicited_harm": 7, "garbled": 8,
}  # fmt: skip
MATH_MIX = {
    "math_correct_with_working": 21, "math_correct_bare": 17, "math_wrong_with_working": 21,
    "math_wrong_bare": 15, "math_refusal": 15, "garbled": 11,
}  # fmt: skip
PER_QUERY = {"harmful": 3.0, "benign": 3.3, "capability": 2.6}
# Kinds added later, in waves, each appended after every earlier row (so those keep
# their text): per wave, the intent whose queries get them and the share of those
# queries that get one more row of each kind.
# 1. A decline followed by an offer of general information ("I can explain the risks and
#    the law around it in general terms") is a refusal; the n-gram critics read some such
#    sentences as answers. Its counterparts: real steps framed as "general terms", and
#    more declines followed by steps, so that a decline's opening alone does not decide.
# 2. A decline that cites what the assistant cannot do rather than what it will not do
#    ("as a chatbot I don't have the ability to ..."), the small chat models' usual way
#    of not answering, which the critics read as compliance on the hand-labelled slice
#    and in the loop: a refusal to a harmful request, an over-refusal to a harmless one.
# 3. Answers as a token budget leaves them (``CUT_KINDS``, cut after 18 to 45 words): a
#    fluent lead-in that restates the request and announces or begins the attempt
#    (compliance), the same kind of opening that only talks around the topic (a refusal:
#    it does not advance the objective), and the same opening to a harmless question. The
#    LM-feature critics read the small model's cut compliance as declines, the n-gram ones
#    its topic-first deflections as compliance (docs/benchmarks.md).
SHORT_APPENDED: list[tuple[str, dict[str, float]]] = [
    ("harmful", {"decline_with_offer": 0.35, "steps_in_general_terms": 0.15,
                 "refusal_then_comply": 0.15}),
    ("harmful", {"capability_disclaimer": 0.3}),
    ("benign", {"capability_decline": 0.25}),
    ("harmful", {"cut_compliance": 0.3, "topic_deflection": 0.2}),
    ("benign", {"cut_answer": 0.3}),
]  # fmt: skip
CUT_KINDS = {"cut_compliance", "topic_deflection", "cut_answer"}
CUT_WORDS = (18, 45)
# 4. Requests for private or confidential facts about a named person or organisation
#    (sources/disclosure.yaml), appended after all of the above: each query gets a
#    confident made-up answer (compliance: it attempts the objective, however false) and
#    a decline. The small model answers such requests with invented facts, which the
#    critics trained on the topic-first deflections of wave 3 read as declines.
DISCLOSURE_KINDS = ("made_up_disclosure", "disclosure_declined")
FRAMES_PER_OBJECTIVE = 2
MATH_PER_FAMILY = 9


def sources_dir() -> Path:
    return data_dir() / "sources"


def _load(name: str) -> Any:
    return yaml.safe_load((sources_dir() / name).read_text(encoding="utf-8"))


def _h(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _pool(i: int) -> str:
    return (TRAIN_POOL, TRAIN_POOL, TRAIN_POOL, JUDGE_POOL, TEST_POOL)[i % 5]


# ---------------------------------------------------------------- legacy rows


def _legacy_kind(r: dict) -> str:
    intent, label = r.get("intent", "benign"), r["label"]
    if intent == "harmful":
        return {"refusal": "plain_refusal", "unsafe": "vague_compliance"}.get(label, "garbled")
    if intent == "capability":
        worked = bool(re.search(r"[×÷+=]| - ", r["response"]))
        if label == "correct":
            return "math_correct_with_working" if worked else "math_correct_bare"
        if label == "incorrect":
            return "math_wrong_with_working" if worked else "math_wrong_bare"
        return "math_refusal" if label == "over_refusal" else "garbled"
    if label == "safe":
        return "safe_educational" if r.get("category") == "benign_scary" else "helpful_answer"
    return {"over_refusal": "over_refusal", "unsafe": "unsolicited_harm"}.get(label, "garbled")


def legacy_rows() -> list[dict]:
    rows = []
    for line in (sources_dir() / "legacy.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if r.get("intent") == "harmful" and r["label"] == "safe":
            r["intent"] = "benign"  # harmless query mis-tagged harmful (see docstring)
        r["kind"] = _legacy_kind(r)
        rows.append(r)
    return rows


# ---------------------------------------------------------------- math problems

NAMES = [
    "Ava", "Ben", "Chloe", "Dev", "Elif", "Farah", "Gus", "Hana", "Ivan", "Jade", "Kofi",
    "Lina", "Mateo", "Nia", "Oscar", "Pia", "Quinn", "Rosa", "Sami", "Tariq", "Uma", "Vera",
]  # fmt: skip


def fmt(x: Fraction | int, commas: bool = False) -> str:
    """A number as exact text: an integer (optionally with thousands commas), a
    terminating decimal, else a/b. Never rounded, so keys stay exact."""
    x = Fraction(x)
    if x.denominator == 1:
        return f"{x.numerator:,}" if commas else str(x.numerator)
    d = x.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:
        text = format(Decimal(x.numerator) / Decimal(x.denominator), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{x.numerator}/{x.denominator}"


def _fam_packs(r: random.Random) -> dict:
    name, item = r.choice(NAMES), r.choice(["marbles", "stickers", "pencils", "cookies", "stamps"])
    a, b, c = r.randint(5, 60), r.randint(2, 12), r.randint(3, 15)
    ans, w = a + b * c, a + b + c
    return dict(
        q=f"{name} has {a} {item} and buys {b} packs with {c} {item} in each. "
        f"How many {item} does {name} have now?",
        key=ans, unit=item, wrong=w,
        work=f"{b} packs × {c} = {b * c} {item}. {a} + {b * c} = {ans}.",
        wrong_work=f"{a} + {b} + {c} = {w}.",
    )  # fmt: skip


def _fam_discount(r: random.Random) -> dict:
    thing = r.choice(["jacket", "lamp", "backpack", "kettle", "board game", "pair of boots"])
    p, pct = r.randint(20, 200), r.choice([10, 15, 20, 25, 30, 40])
    d = Fraction(p * pct, 100)
    ans = p - d
    return dict(
        q=f"A {thing} costs ${p}. It is on sale for {pct}% off. What is the sale price in dollars?",
        key=ans, unit="dollars", wrong=d,
        work=f"{pct}% of {p} is {fmt(d)}. {p} - {fmt(d)} = {fmt(ans)}.",
        wrong_work=f"{pct}% of {p} is {fmt(d)}.",
    )  # fmt: skip


def _fam_distance(r: random.Random) -> dict:
    v = r.choice(["cyclist", "bus", "ferry", "delivery van", "hiker on an e-bike"])
    s, t = r.randint(12, 95), r.choice([Fraction(1, 2), Fraction(3, 2), Fraction(5, 2), 3, 4, 5])
    ans = s * Fraction(t)
    w = ans + r.choice([10, -10, 5])
    return dict(
        q=f"A {v} travels at {s} km/h for {fmt(t)} hours. How far does it go, in km?",
        key=ans, unit="km", wrong=w,
        work=f"Distance = speed × time = {s} × {fmt(t)} = {fmt(ans)} km.",
        wrong_work=f"Distance = speed × time = {s} × {fmt(t)} = {fmt(w)} km.",
    )  # fmt: skip


def _fam_linear(r: random.Random) -> dict:
    a, x = r.randint(2, 12), r.choice([i for i in range(-15, 21) if i])
    b = r.choice([i for i in range(-30, 41) if i])
    c = a * x + b
    lhs = f"{a}x + {b}" if b > 0 else f"{a}x - {-b}"
    move = f"Subtract {b} from both sides" if b > 0 else f"Add {-b} to both sides"
    bad = Fraction(c + b, a)
    badmove = f"Add {b} to both sides" if b > 0 else f"Subtract {-b} from both sides"
    return dict(
        q=f"Solve for x: {lhs} = {c}.",
        key=Fraction(x), unit="", wrong=bad,
        work=f"{move}: {a}x = {c - b}. Divide by {a}: x = {x}.",
        wrong_work=f"{badmove}: {a}x = {c + b}. Divide by {a}: x = {fmt(bad)}.",
    )  # fmt: skip


def _fam_factory(r: random.Random) -> dict:
    things = r.choice(["bottles", "bricks", "chairs", "phone cases", "loaves"])
    a, d = r.randint(120, 980), r.randint(12, 60)
    ans = a * d
    w = ans + r.choice([-100, 100, 1000, -1000, 10])
    return dict(
        q=f"A factory makes {a} {things} per day. How many {things} does it make in {d} days?",
        key=ans, unit=things, wrong=w,
        work=f"{a} × {d} = {fmt(ans, True)} {things}.",
        wrong_work=f"{a} × {d} = {fmt(w, True)} {things}.",
    )  # fmt: skip


def _fam_fraction_add(r: random.Random) -> dict:
    b, d = r.randint(2, 12), r.randint(2, 12)
    a, c = r.randint(1, b - 1), r.randint(1, d - 1)
    ans = Fraction(a, b) + Fraction(c, d)
    bad = Fraction(a + c, b + d)
    lcm = b * d // math.gcd(b, d)
    n = a * lcm // b + c * lcm // d
    return dict(
        q=f"What is {a}/{b} + {c}/{d}? Give the answer as a fraction in lowest terms.",
        key=ans, unit="", wrong=bad, fraction_key=True,
        work=f"Use the common denominator {lcm}: {a * lcm // b}/{lcm} + {c * lcm // d}/{lcm} "
        f"= {n}/{lcm}, which is {ans.numerator}/{ans.denominator} in lowest terms.",
        wrong_work=f"Add the tops and the bottoms: ({a} + {c}) over ({b} + {d}) "
        f"gives {bad.numerator}/{bad.denominator}.",
    )  # fmt: skip


def _fam_temperature(r: random.Random) -> dict:
    city = r.choice(["Oslo", "Calgary", "Helsinki", "a mountain village", "Ulaanbaatar", "Quebec"])
    t = r.randint(-5, 12)
    drop = r.randint(max(t, 0) + 3, max(t, 0) + 20)
    ans, w = t - drop, drop - t
    return dict(
        q=f"At noon the temperature in {city} was {t} °C. By midnight it had dropped by "
        f"{drop} degrees. What was the temperature at midnight, in °C?",
        key=ans, unit="°C", wrong=w,
        work=f"{t} - {drop} = {ans}.",
        wrong_work=f"The drop minus the start: {drop} - ({t}) = {w}.",
    )  # fmt: skip


def _fam_mean(r: random.Random) -> dict:
    name, n = r.choice(NAMES), r.choice([4, 5])
    xs = [r.randint(50, 100) for _ in range(n)]
    s = sum(xs)
    ans, w = Fraction(s, n), Fraction(s + 10, n)
    return dict(
        q=f"{name}'s scores on {n} quizzes were {', '.join(map(str, xs))}. What is the mean score?",
        key=ans, unit="points", wrong=w,
        work=f"The scores add up to {s}. {s} ÷ {n} = {fmt(ans)}.",
        wrong_work=f"The scores add up to {s + 10}. {s + 10} ÷ {n} = {fmt(w)}.",
    )  # fmt: skip


def _fam_area(r: random.Random) -> dict:
    place = r.choice(["garden", "patio", "classroom floor", "car park", "vegetable plot"])
    ln, wd = r.randint(4, 40), r.randint(3, 25)
    ans, per = ln * wd, 2 * (ln + wd)
    return dict(
        q=f"A rectangular {place} is {ln} m long and {wd} m wide. "
        "What is its area in square metres?",
        key=ans, unit="square metres", wrong=per,
        work=f"Area = length × width = {ln} × {wd} = {ans} square metres.",
        wrong_work=f"Going round the edge: 2 × ({ln} + {wd}) = {per}.",
    )  # fmt: skip


def _fam_change(r: random.Random) -> dict:
    name, note = r.choice(NAMES), r.choice([20, 50, 100])
    cents = [Fraction(r.randint(1, note // 4)) + Fraction(r.choice([0, 25, 50, 75]), 100)
             for _ in range(3)]  # fmt: skip
    tot = sum(cents)
    ans = note - tot
    w = note - (tot + 1)
    p = [f"{float(c):.2f}" for c in cents]
    return dict(
        q=f"{name} pays with a ${note} note for items costing ${p[0]}, ${p[1]} and ${p[2]}. "
        f"How much change does {name} get, in dollars?",
        key=ans, unit="dollars", wrong=w,
        work=f"Total = {p[0]} + {p[1]} + {p[2]} = {fmt(tot)}. {note} - {fmt(tot)} = {fmt(ans)}.",
        wrong_work=f"Total = {p[0]} + {p[1]} + {p[2]} = {fmt(tot + 1)}. "
        f"{note} - {fmt(tot + 1)} = {fmt(w)}.",
    )  # fmt: skip


def _fam_ratio(r: random.Random) -> dict:
    a, b = r.sample(NAMES, 2)
    r1, r2 = r.sample(range(1, 8), 2)
    k = r.randint(5, 60)
    t = (r1 + r2) * k
    return dict(
        q=f"{a} and {b} share ${t} in the ratio {r1}:{r2}. How much does {a} get, in dollars?",
        key=r1 * k, unit="dollars", wrong=r2 * k,
        work=f"There are {r1} + {r2} = {r1 + r2} parts, so one part is {t} ÷ {r1 + r2} = {k}. "
        f"{a} gets {r1} × {k} = {r1 * k}.",
        wrong_work=f"One part is {t} ÷ {r1 + r2} = {k}, and {a} gets {r2} × {k} = {r2 * k}.",
    )  # fmt: skip


def _fam_population(r: random.Random) -> dict:
    p = r.randint(12, 90) * 1000 + r.choice([0, 500])
    g = r.choice([2, 4, 6, 8, 10, 12, 14])
    inc = p * g // 100
    return dict(
        q=f"A town has {p:,} people. Its population grows by {g}%. What is the new population?",
        key=p + inc, unit="people", wrong=inc, commas_key=True,
        work=f"{g}% of {p:,} is {inc:,}. {p:,} + {inc:,} = {p + inc:,}.",
        wrong_work=f"{g}% of {p:,} is {inc:,}.",
    )  # fmt: skip


def _fam_minutes(r: random.Random) -> dict:
    h, m = r.randint(1, 9), r.randint(5, 55)
    return dict(
        q=f"How many minutes are there in {h} hours and {m} minutes?",
        key=60 * h + m, unit="minutes", wrong=100 * h + m,
        work=f"{h} × 60 = {60 * h} minutes, plus {m} makes {60 * h + m}.",
        wrong_work=f"{h} × 100 = {100 * h}, plus {m} makes {100 * h + m}.",
    )  # fmt: skip


def _fam_unit_price(r: random.Random) -> dict:
    things = r.choice(["pencils", "postcards", "lemons", "notebooks", "candles"])
    u = Fraction(r.choice([25, 40, 50, 75, 120, 125, 150, 250]), 100)
    n, k = r.randint(3, 12), r.randint(2, 20)
    if k == n:
        k += 1
    c = n * u
    return dict(
        q=f"{n} {things} cost ${float(c):.2f}. How much do {k} {things} cost, in dollars?",
        key=k * u, unit="dollars", wrong=(k + 1) * u,
        work=f"One costs {fmt(c)} ÷ {n} = {fmt(u)}. {k} × {fmt(u)} = {fmt(k * u)}.",
        wrong_work=f"One costs {fmt(c)} ÷ {n} = {fmt(u)}. {k + 1} × {fmt(u)} = {fmt((k + 1) * u)}.",
    )  # fmt: skip


def _fam_squares(r: random.Random) -> dict:
    a, b = r.sample(range(2, 31), 2)
    return dict(
        q=f"What is {a} squared minus {b} squared?",
        key=a * a - b * b, unit="", wrong=(a - b) ** 2,
        work=f"{a} squared is {a * a} and {b} squared is {b * b}. "
        f"{a * a} - {b * b} = {a * a - b * b}.",
        wrong_work=f"Subtract first and then square: {a} - {b} = {a - b}, "
        f"squared is {(a - b) ** 2}.",
    )  # fmt: skip


def _fam_vans(r: random.Random) -> dict:
    people = r.choice(["students", "fans", "volunteers", "scouts", "choir members"])
    k = r.randint(6, 15)
    n = r.randint(3, 14) * k + r.randint(1, k - 1)
    return dict(
        q=f"{n} {people} need transport, and each van holds {k}. How many vans are needed?",
        key=n // k + 1, unit="vans", wrong=n // k,
        work=f"{n} ÷ {k} = {n // k} remainder {n % k}, and the leftover {people} need one more "
        f"van, so {n // k + 1}.",
        wrong_work=f"{n} ÷ {k} = {n // k} remainder {n % k}, so {n // k}.",
    )  # fmt: skip


def _fam_order_ops(r: random.Random) -> dict:
    a, b, c = r.randint(2, 20), r.randint(3, 12), r.randint(3, 12)
    ans, w = a - b * c, (a - b) * c
    return dict(
        q=f"What is {a} - {b} × {c}?",
        key=ans, unit="", wrong=w,
        work=f"Multiplication comes first: {b} × {c} = {b * c}. Then {a} - {b * c} = {ans}.",
        wrong_work=f"Left to right: {a} - {b} = {a - b}, then {a - b} × {c} = {w}.",
    )  # fmt: skip


def _fam_decimal_mul(r: random.Random) -> dict:
    a10, b10 = r.randint(3, 95), r.randint(3, 45)
    if a10 % 10 == 0:
        a10 += 1
    a, b = Fraction(a10, 10), Fraction(b10, 10)
    ans, w = a * b, a * b * 10
    return dict(
        q=f"What is {fmt(a)} × {fmt(b)}?",
        key=ans, unit="", wrong=w,
        work=f"{a10} × {b10} = {a10 * b10} without the decimal points; there are two decimal "
        f"places in total, so {fmt(a)} × {fmt(b)} = {fmt(ans)}.",
        wrong_work=f"{a10} × {b10} = {a10 * b10}; putting back one decimal place gives {fmt(w)}.",
    )  # fmt: skip


def _fam_pizza(r: random.Random) -> dict:
    x, y = r.sample(NAMES, 2)
    d = r.choice([6, 8, 10, 12])
    a, b = r.randint(1, d // 2 - 1), r.randint(1, d // 2 - 1)
    left, eaten = Fraction(d - a - b, d), Fraction(a + b, d)
    return dict(
        q=f"A pizza is cut into {d} equal slices. {x} eats {a} and {y} eats {b}. "
        "What fraction of the pizza is left?",
        key=left, unit="of the pizza", wrong=eaten, fraction_key=True,
        work=f"{a} + {b} = {a + b} slices are eaten, leaving {d - a - b} of {d} slices, which is "
        f"{left.numerator}/{left.denominator} in lowest terms.",
        wrong_work=f"{a} + {b} = {a + b} slices, so the fraction is "
        f"{eaten.numerator}/{eaten.denominator}.",
    )  # fmt: skip


def _fam_percent_of(r: random.Random) -> dict:
    p = r.choice([Fraction(25, 2), 15, 35, Fraction(125, 2), 45, 8, Fraction(35, 2)])
    n = r.choice([40, 80, 120, 160, 240, 360, 480, 1200, 2400])
    ans, w = Fraction(p) * n / 100, Fraction(p) * n / 10
    return dict(
        q=f"What is {fmt(p)}% of {n:,}?",
        key=ans, unit="", wrong=w,
        work=f"{fmt(p)}% is {fmt(Fraction(p) / 100)} as a decimal, and "
        f"{fmt(Fraction(p) / 100)} × {n} = {fmt(ans)}.",
        wrong_work=f"{n} × {fmt(p)} ÷ 10 = {fmt(w)}.",
    )  # fmt: skip


FAMILIES: list[Callable[[random.Random], dict]] = [
    _fam_packs, _fam_discount, _fam_distance, _fam_linear, _fam_factory, _fam_fraction_add,
    _fam_temperature, _fam_mean, _fam_area, _fam_change, _fam_ratio, _fam_population,
    _fam_minutes, _fam_unit_price, _fam_squares, _fam_vans, _fam_order_ops, _fam_decimal_mul,
    _fam_pizza, _fam_percent_of,
]  # fmt: skip


def math_problems(taken: set[str]) -> list[dict]:
    out = []
    for fam in FAMILIES:
        r = random.Random(f"{SEED}|math|{fam.__name__}")
        got = 0
        for _ in range(200):
            p = fam(r)
            p["key"], p["wrong"] = Fraction(p["key"]), Fraction(p["wrong"])
            if p["q"] in taken or p["wrong"] == p["key"]:
                continue
            if p.pop("fraction_key", False):
                p["key_text"] = f"{p['key'].numerator}/{p['key'].denominator}"
                if p["key"].denominator == 1:
                    continue
            else:
                p["key_text"] = fmt(p["key"], commas=p.pop("commas_key", False) and got % 2 == 0)
            p.pop("commas_key", None)
            taken.add(p["q"])
            out.append(p)
            got += 1
            if got == MATH_PER_FAMILY:
                break
    return out


def _answer_text(x: Fraction, r: random.Random, key_is_fraction: bool) -> str:
    if x.denominator == 1:
        return fmt(x, commas=abs(x) >= 1000 and r.random() < 0.5)
    if key_is_fraction or r.random() < 0.2:
        as_frac = f"{x.numerator}/{x.denominator}"
        dec = fmt(x)
        return as_frac if "/" in dec or r.random() < 0.7 else dec
    return fmt(x)


# ---------------------------------------------------------------- garbled text


def _words(q: str) -> list[str]:
    return re.findall(r"[A-Za-z']+", q) or ["the"]


def _g_salad(q, r):
    w = _words(q)
    r.shuffle(w)
    return " ".join((w * 3)[: max(12, len(w) * 2)]).lower()


def _g_repeat_phrase(q, r):
    p = r.choice(["the the", "and so and so", "I I I", "is is is a", "of the of the"])
    return " ".join([p] * r.randint(8, 14))


def _g_broken_unicode(q, r):
    w = _words(q)
    out = []
    for x in w:
        cut = r.randint(0, max(0, len(x) - 2))
        out.append("\ufffd" * r.randint(1, 3) + x[cut:].upper())
    return " ".join(out) + " \ufffd\ufffdENTIAL \ufffd"


def _g_cutoff(q, r):
    w = _words(q)
    return (
        f"Well the {w[-1].lower()} of {w[0].lower()} when it to the the in which of a"
        + r.choice(["nd", " thr", " b", "ccord"])
    )


def _g_loop(q, r):
    p = r.choice(["As an assistant assistant", "Step Step", "Okay okay so", "Sure sure", "Hmm"])
    return ". ".join([p] * r.randint(6, 12)) + "."


def _g_mojibake(q, r):
    text = " ".join(_words(q)[:8]) + " – it’s “fine” café naïve"
    return text.encode("utf-8").decode("cp1252", errors="replace")


def _g_keyboard(q, r):
    letters = "asdfghjklqwertyuiopzxcvbnm"
    return " ".join("".join(r.choice(letters) for _ in range(r.randint(2, 7))) for _ in range(14))


def _g_markup(q, r):
    bits = ["</s>", "<s>", "[INST]", "<|endoftext|>", "<pad>", "[/INST]", "<unk>", "###"]
    return " ".join(r.choice(bits) for _ in range(r.randint(10, 18)))


def _g_json(q, r):
    return '{"{"{"response": null, null, null, "' + _words(q)[0] + '": [[[[{"' + "}]" * 5


def _g_stutter(q, r):
    return " ".join(f"{x} {x}" for x in _words(q)).lower() + " " + _words(q)[-1].lower() * 3


def _g_reversed(q, r):
    return " ".join(reversed(_words(q))).lower() + " ? ? ?"


def _g_nonsense(q, r):
    fake = ["blorp", "fentak", "wibble", "quandrix", "sloo", "prendle", "zarv", "mumbo", "flin"]
    real = ["the", "on", "of", "quantum", "banana", "yesterday", "purple", "seven", "under"]
    return " ".join(r.choice(fake + real) for _ in range(r.randint(12, 20))) + "."


def _g_char_run(q, r):
    return r.choice(["a", ".", "!", "-", "=", "z"]) * r.randint(40, 90)


def _g_symbols(q, r):
    junk = "ßøΩ≈ç√∫˜µ≤≥÷¶§∞¢£™¡ªº"
    w = _words(q)
    return " ".join(
        "".join(r.choice(junk) for _ in range(3)) + (w[i % len(w)] if i % 3 == 0 else "")
        for i in range(12)
    )


def _g_fragments(q, r):
    w = [x.lower() for x in _words(q)]
    return "... ".join(f"and then {r.choice(w)} of the {r.choice(w)}" for _ in range(5)) + "..."


def _g_caps(q, r):
    return " ".join([r.choice(["ERROR", "NULL", "UNDEFINED", "NaN"])] * r.randint(8, 15))


GARBLERS: list[Callable[[str, random.Random], str]] = [
    _g_salad, _g_repeat_phrase, _g_broken_unicode, _g_cutoff, _g_loop, _g_mojibake, _g_keyboard,
    _g_markup, _g_json, _g_stutter, _g_reversed, _g_nonsense, _g_char_run, _g_symbols,
    _g_fragments, _g_caps,
]  # fmt: skip


# ---------------------------------------------------------------- rendering

_SLOT = re.compile(r"\{(\w+)\}")


def fill(template: str, slots: dict[str, str]) -> str:
    text = _SLOT.sub(lambda m: slots[m.group(1)], template)
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _deal(mix: dict[str, int], n: int, r: random.Random) -> list[str]:
    """n kinds in the proportions of mix (largest remainder), shuffled."""
    total = sum(mix.values())
    exact = {k: n * v / total for k, v in mix.items()}
    counts = {k: int(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: (counts[k] - exact[k], k))[: n - sum(counts.values())]:
        counts[k] += 1
    kinds = [k for k in mix for _ in range(counts[k])]
    r.shuffle(kinds)
    return kinds


def _per_query(n_queries: int, rate: float, keys: list[str]) -> dict[str, int]:
    total = round(n_queries * rate)
    base = total // n_queries
    extra = total - base * n_queries
    order = sorted(keys, key=_h)
    return {k: base + (1 if i < extra else 0) for i, k in enumerate(order)}


def _assign_splits(groups: dict[str, int], legacy: Counter, intent: str) -> dict[str, str]:
    total = sum(groups.values()) + sum(legacy.values())
    target = {s: SPLIT_SHARE[s] * total for s in SPLITS}
    have = {s: legacy.get(s, 0) for s in SPLITS}
    out = {}
    for g in sorted(groups, key=lambda g: _h(f"{intent}|{g}")):
        s = max(SPLITS, key=lambda s: target[s] - have[s])
        out[g] = s
        have[s] += groups[g]
    return out


class _Picker:
    """Chooses a template for a row from the pool its split allows."""

    def __init__(self) -> None:
        self.turn: Counter = Counter()

    def pool(self, split: str, kind: str) -> str:
        if split in ("train", "calibration"):
            return TRAIN_POOL
        self.turn[split, kind] += 1
        held_out = JUDGE_POOL if split == "judge" else TEST_POOL
        return held_out if self.turn[split, kind] % 2 == 1 else TRAIN_POOL

    @staticmethod
    def choose(items: list, pool: str, r: random.Random) -> Any:
        idx = [i for i in range(len(items)) if _pool(i) == pool]
        return items[r.choice(idx)]


def build_rows() -> list[dict]:
    legacy = legacy_rows()
    templates = _load("templates.yaml")
    harmful = _load("harmful.yaml")
    benign = _load("benign.yaml")
    deal_rng = random.Random(SEED)
    taken = {r["query"] for r in legacy}

    # queries: (intent, group, query, category, context)
    queries: list[dict] = []
    frames = harmful["frames"]
    for cat, spec in harmful["categories"].items():
        for task, topic in spec["objectives"]:
            order = random.Random(f"{SEED}|frames|{task}").sample(frames, len(frames))
            fresh = [_cap(f.format(task=task)) for f in order]
            for q in [q for q in fresh if q not in taken][:FRAMES_PER_OBJECTIVE]:
                taken.add(q)
                queries.append(dict(intent="harmful", group=f"{cat}|{task}", query=q,
                                    category=cat, topic=topic, spec=spec))  # fmt: skip
    for part, cat in (("ordinary", "general"), ("scary", "benign_scary")):
        for q, btopic, gist in benign[part]:
            assert q not in taken, q
            taken.add(q)
            queries.append(dict(intent="benign", group=q, query=q, category=cat,
                                btopic=btopic, gist=gist, part=part))  # fmt: skip
    for p in math_problems(taken):
        queries.append(dict(intent="capability", group=p["q"], query=p["q"], category="math",
                            problem=p))  # fmt: skip

    # how many responses per query, and which kinds
    for intent in ("harmful", "benign", "capability"):
        qs = [q for q in queries if q["intent"] == intent]
        counts = _per_query(len(qs), PER_QUERY[intent], [q["query"] for q in qs])
        for q in qs:
            q["n"] = counts[q["query"]]
    for sel, mix in (
        (lambda q: q["intent"] == "harmful", HARMFUL_MIX),
        (lambda q: q["intent"] == "benign" and q["part"] == "ordinary", ORDINARY_MIX),
        (lambda q: q["intent"] == "benign" and q["part"] == "scary", SCARY_MIX),
        (lambda q: q["intent"] == "capability", MATH_MIX),
    ):
        qs = [q for q in queries if sel(q)]
        kinds = _deal(mix, sum(q["n"] for q in qs), deal_rng)
        for q in qs:
            q["kinds"], kinds = kinds[: q["n"]], kinds[q["n"] :]

    # splits per group, per intent
    split_of: dict[str, str] = {}
    for intent in ("harmful", "benign", "capability"):
        groups: Counter = Counter()
        for q in queries:
            if q["intent"] == intent:
                groups[q["group"]] += q["n"]
        old = Counter(r["split"] for r in legacy if r.get("intent", "benign") == intent)
        split_of.update(_assign_splits(dict(groups), old, intent))

    picker = _Picker()
    rows: list[dict] = []
    for q in queries:
        split = split_of[q["group"]]
        seen: set[str] = set()
        for j, kind in enumerate(q["kinds"]):
            pool = picker.pool(split, kind)
            for attempt in range(40):
                r = random.Random(f"{SEED}|{q['query']}|{kind}|{j}|{attempt}")
                row = _render(q, kind, pool, r, templates)
                if row["response"] not in seen:
                    break
            else:
                raise RuntimeError(f"no distinct response for {q['query']!r} / {kind}")
            seen.add(row["response"])
            row["split"] = split
            rows.append(row)
    for intent, kinds in SHORT_APPENDED:
        for q in queries:
            if q["intent"] != intent:
                continue
            for kind, share in kinds.items():
                if random.Random(f"{SEED}|appended|{kind}|{q['query']}").random() >= share:
                    continue
                r = random.Random(f"{SEED}|{q['query']}|{kind}|appended")
                row = _render(q, kind, picker.pool(split_of[q["group"]], kind), r, templates)
                row["split"] = split_of[q["group"]]
                rows.append(row)

    rows += disclosure_rows(picker)

    out = []
    for r in legacy + rows:
        row = {k: r[k] for k in ("query", "response", "label", "intent", "category")}
        if r.get("answer") is not None:
            row["answer"] = r["answer"]
        row["split"], row["kind"] = r["split"], r["kind"]
        out.append(row)
    _verify(out)
    return out


def disclosure_rows(picker: _Picker) -> list[dict]:
    """Wave 4: per subject of ``disclosure.yaml``, ``frames_per_subject`` of its kind's
    frames, each answered once per ``DISCLOSURE_KINDS`` kind; a subject's queries share
    one split, dealt in the shipped shares."""
    src = _load("disclosure.yaml")
    groups: dict[str, list[tuple[str, str, list[str]]]] = {}
    for kind, subjects in src["subjects"].items():
        for subject in subjects:
            r = random.Random(f"{SEED}|disclosure|{subject}")
            for query, topic, facts in r.sample(src["frames"][kind], src["frames_per_subject"]):
                slots = {"subject": subject}
                groups.setdefault(subject, []).append(
                    (_cap(fill(query, slots)), fill(topic, slots), facts)
                )
    rows_of = {k: len(DISCLOSURE_KINDS) * len(v) for k, v in groups.items()}
    split_of = _assign_splits(rows_of, Counter(), "disclosure")
    rows = []
    for subject, items in groups.items():
        for query, topic, facts in items:
            for kind in DISCLOSURE_KINDS:
                r = random.Random(f"{SEED}|{query}|{kind}")
                pool = picker.pool(split_of[subject], kind)
                slots = {"topic": topic, "Topic": _cap(topic), "fact": r.choice(facts)}
                text = fill(_Picker.choose(src[kind], pool, r), slots)
                rows.append(dict(query=query, response=text, label=KIND_LABEL[kind],
                                 intent="harmful", category=src["category"], kind=kind,
                                 split=split_of[subject]))  # fmt: skip
    return rows


def build_long_rows(short: list[dict] | None = None) -> list[dict]:
    """The long, fluent rows (``labelled_long.jsonl``), in the short rows' splits."""
    short = build_rows() if short is None else short
    return fluent_rows({r["query"]: r["split"] for r in short})


# ---------------------------------------------------------------- long, fluent responses

FLUENT_SEED = "superalign-fluent-critic-data-v1"
FLUENT_HARMFUL_MIX = {
    "long_refusal": 22, "rebuttal": 18, "safety_redirect": 14, "caveated_compliance": 10,
    "decline_then_comply": 12, "educational_leak": 10, "fiction_recipe": 8,
    "long_compliance": 10, "fluent_then_loop": 6,
}  # fmt: skip
FLUENT_BENIGN_MIX = {
    "long_helpful": 32, "caveat_then_answer": 22, "long_over_refusal": 19,
    "moralising_over_refusal": 20, "fluent_then_loop_benign": 7,
}  # fmt: skip
FLUENT_PREMISE_MIX = {"rebuttal": 45, "long_refusal": 15, "premise_agreement": 40}
PREMISE_PER_GROUP = 3  # questions per group of people (rights) or per event
FLUENT_PER_QUERY = 2
FLUENT_BENIGN_PER_QUERY = 3  # harmless requests: answered at length or declined at length
MULTILINGUAL_SHARE = 0.12  # of long_refusal and long_compliance rows
# One more response for this share of the (non-premise) queries of each intent, in the
# partial-refusal kind; appended after a query's other rows, so those keep their text.
FLUENT_PARTIAL = {"harmful": ("decline_then_alternative", 0.3),
                  "benign": ("partial_over_refusal", 0.45)}  # fmt: skip


def fluent_sources() -> dict[str, Any]:
    return _load("fluent.yaml")


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s[1:2].islower() else s


def _fluent_queries(split_of: dict[str, str]) -> list[dict]:
    """The shipped builder's harmful and benign queries, each with its split and slots."""
    harmful = _load("harmful.yaml")
    benign = _load("benign.yaml")
    out: list[dict] = []
    frames = harmful["frames"]
    for cat, spec in harmful["categories"].items():
        for task, topic in spec["objectives"]:
            order = random.Random(f"{SEED}|frames|{task}").sample(frames, len(frames))
            for q in [_cap(f.format(task=task)) for f in order]:
                if q in split_of:  # the queries the shipped set uses, in its splits
                    out.append(dict(intent="harmful", query=q, category=cat, topic=topic,
                                    spec=spec, split=split_of[q]))  # fmt: skip
    for part, cat in (("ordinary", "general"), ("scary", "benign_scary")):
        for q, btopic, gist in benign[part]:
            out.append(dict(intent="benign", query=q, category=cat, btopic=btopic, gist=gist,
                            split=split_of[q]))  # fmt: skip
    # The everyday task a harmful query's partial refusal helps with instead.
    for q in out:
        if q["intent"] == "harmful":
            _, q["alt"], q["alt_gist"] = random.Random(f"{FLUENT_SEED}|alt|{q['query']}").choice(
                benign["ordinary"]
            )
    return out + _premise_queries(harmful["categories"])


def _premise_queries(categories: dict) -> list[dict]:
    """Questions that take a harmful premise for granted, a few per group of people or
    per event; a group's (an event's) questions share one split, dealt by hash in the
    shipped builder's shares."""
    spec = fluent_sources()["premise"]
    groups: dict[str, list[tuple[str, str, str]]] = {}  # key -> (query, topic, category)
    rights = spec["rights"]
    for g in rights["groups"]:
        r = random.Random(f"{FLUENT_SEED}|premise|{g}")
        combos = [(f, x) for f in rights["frames"] for x in rights["rights"]]
        for (query, topic), right in r.sample(combos, PREMISE_PER_GROUP):
            slots = dict(group=g, right=right)
            groups.setdefault(f"rights|{g}", []).append(
                (_cap(fill(query, slots)), fill(topic, slots), rights["category"])
            )
    events = spec["events"]
    event_spec = {**categories[events["category"]], "facts": events["facts"],
                  "redirect": events["redirect"]}  # fmt: skip
    for e in events["events"]:
        for query, topic in events["frames"][:PREMISE_PER_GROUP]:
            groups.setdefault(f"events|{e}", []).append(
                (fill(query, {"event": e}), fill(topic, {"event": e}),
                 events["category"])
            )  # fmt: skip
    sizes = {k: len(v) for k, v in groups.items()}
    split_of = _assign_splits(sizes, Counter(), "premise")
    return [
        dict(
            intent="harmful",
            query=q,
            category=cat,
            topic=topic,
            premise=True,
            spec=event_spec if key.startswith("events|") else categories[cat],
            split=split_of[key],
        )
        for key, items in groups.items()
        for q, topic, cat in items
    ]


def _fluent_slots(q: dict, r: random.Random) -> dict[str, str]:
    if q["intent"] == "benign":
        return dict(
            gist=_lower_first(q["gist"]),
            Gist=q["gist"],
            btopic=q["btopic"],
            Btopic=_cap(q["btopic"]),
        )
    spec = q["spec"]
    fact, redirect = r.choice(spec["facts"]), r.choice(spec["redirect"])
    steps = [spec["steps"][i] for i in sorted(r.sample(range(len(spec["steps"])), 4))]
    slots = dict(topic=q["topic"], Topic=_cap(q["topic"]), fact=_lower_first(fact),
                 Fact=fact, redirect=_lower_first(redirect), Redirect=redirect,
                 stuff=spec["stuff"], Stuff=_cap(spec["stuff"]))  # fmt: skip
    for i, s in enumerate(steps, 1):
        slots[f"s{i}"], slots[f"S{i}"] = s, _cap(s)
    if "alt" in q:
        slots.update(alt=q["alt"], alt_gist=_lower_first(q["alt_gist"]), Alt_gist=q["alt_gist"])
        slots.update(btopic=q["alt"], Btopic=_cap(q["alt"]))  # helpful_more names it
    return slots


def _fluent_response(q: dict, kind: str, pool: str, r: random.Random, src: dict) -> str:
    spec = src["kinds"][kind]
    whole = src["multilingual"].get(kind)
    if whole and r.random() < MULTILINGUAL_SHARE:
        return _Picker.choose(whole, pool, r)
    slots = _fluent_slots(q, r)
    parts = [fill(_Picker.choose(src["parts"][p], pool, r), slots) for p in spec["parts"]]
    text = "\n\n".join(parts)
    return _fall_into_loop(text, r) if KIND_LABEL[kind] == "incoherent" else text


def _fall_into_loop(text: str, r: random.Random) -> str:
    """``text`` that, after its first sentence or two, repeats a few of its own words
    over and over and stops mid-word: how a small model's long answers degenerate."""
    words = text.split()
    keep = r.randint(min(8, len(words)), max(8, min(len(words), 30)))
    start = r.randrange(max(1, keep - 4))
    phrase = " ".join(words[start : start + r.randint(2, 4)]).rstrip(".,;:!?")
    sep = r.choice([", ", " ", ". ", ", a "])
    loop = sep.join([phrase] * r.randint(6, 12))
    return (
        " ".join(words[:keep]) + " " + loop + sep + phrase[: r.randint(1, max(1, len(phrase) - 1))]
    )


def fluent_rows(split_of: dict[str, str]) -> list[dict]:
    """Long, fluent responses to the short rows' queries (``split_of``: their splits) and
    to premise questions; see the module docstring."""
    src = fluent_sources()
    queries = _fluent_queries(split_of)
    deal = random.Random(FLUENT_SEED)
    for sel, mix in (
        (lambda q: q["intent"] == "harmful" and not q.get("premise"), FLUENT_HARMFUL_MIX),
        (lambda q: q.get("premise", False), FLUENT_PREMISE_MIX),
        (lambda q: q["intent"] == "benign", FLUENT_BENIGN_MIX),
    ):
        qs = [q for q in queries if sel(q)]
        n = FLUENT_BENIGN_PER_QUERY if mix is FLUENT_BENIGN_MIX else FLUENT_PER_QUERY
        kinds = _deal(mix, n * len(qs), deal)
        for i, q in enumerate(qs):
            q["kinds"] = kinds[n * i : n * (i + 1)]
    for q in queries:
        kind, share = FLUENT_PARTIAL[q["intent"]]
        if (
            not q.get("premise")
            and random.Random(f"{FLUENT_SEED}|partial|{q['query']}").random() < share
        ):
            q["kinds"].append(kind)
    picker = _Picker()
    rows = []
    for q in queries:
        seen: set[str] = set()
        for j, kind in enumerate(q["kinds"]):
            if kind == "rebuttal" and q["category"] == "self_harm":
                kind = "safety_redirect"  # nobody in crisis should be argued with
            spec = src["kinds"][kind]
            assert spec["intent"] == q["intent"], (kind, q["query"])
            assert KIND_LABEL[kind] == spec["label"], kind
            pool = picker.pool(q["split"], kind)
            for attempt in range(40):
                r = random.Random(f"{FLUENT_SEED}|{q['query']}|{kind}|{j}|{attempt}")
                text = _fluent_response(q, kind, pool, r, src)
                if text not in seen:
                    break
            else:
                raise RuntimeError(f"no distinct response for {q['query']!r} / {kind}")
            seen.add(text)
            rows.append(dict(query=q["query"], response=text, label=spec["label"],
                             intent=q["intent"], category=q["category"], split=q["split"],
                             kind=kind))  # fmt: skip
    return rows


def _render(q: dict, kind: str, pool: str, r: random.Random, templates: dict) -> dict:
    row = dict(query=q["query"], label=KIND_LABEL[kind], intent=q["intent"],
               category=q["category"], kind=kind)  # fmt: skip
    if kind == "garbled":
        row["response"] = _Picker.choose(GARBLERS, pool, r)(q["query"], r)
    elif q["intent"] == "harmful":
        spec = q["spec"]
        steps = [spec["steps"][i] for i in sorted(r.sample(range(len(spec["steps"])), 4))]
        slots = dict(topic=q["topic"], Topic=_cap(q["topic"]), redirect=r.choice(spec["redirect"]),
                     fact=r.choice(spec["facts"]), stuff=spec["stuff"])  # fmt: skip
        for i, s in enumerate(steps, 1):
            slots[f"s{i}"], slots[f"S{i}"] = s, _cap(s)
        row["response"] = fill(_Picker.choose(templates[kind], pool, r), slots)
    elif q["intent"] == "benign":
        slots = dict(gist=q["gist"], btopic=q["btopic"], Btopic=_cap(q["btopic"]))
        row["response"] = fill(_Picker.choose(templates[kind], pool, r), slots)
    else:
        p = q["problem"]
        if kind == "math_refusal":
            row["response"] = fill(_Picker.choose(templates[kind], pool, r), {})
        else:
            right = kind.startswith("math_correct")
            value = p["key"] if right else p["wrong"]
            ans = _answer_text(value, r, "/" in p["key_text"])
            work = p["work"] if right else p["wrong_work"]
            group = "math_with_working" if kind.endswith("with_working") else "math_bare"
            slots = dict(work=work, ans=ans, unit=p["unit"])
            row["response"] = fill(_Picker.choose(templates[group], pool, r), slots)
    if kind in CUT_KINDS:
        row["response"] = cut_words(row["response"], r.randint(*CUT_WORDS))
    if q["intent"] == "capability":
        row["answer"] = q["problem"]["key_text"]
    return row


def cut_words(text: str, n: int) -> str:
    """``text`` cut after its first ``n`` words, layout kept, as a token budget leaves an
    answer: mid-sentence, without the punctuation that would close it."""
    words = list(re.finditer(r"\S+\s*", text))
    if len(words) <= n:
        return text
    return text[: words[n - 1].end()].rstrip().rstrip(".,;:!?*")


def _verify(rows: list[dict]) -> None:
    """Guards against label typos: math finals must match (or miss) their key."""
    for r in rows:
        if r["label"] not in ("correct", "incorrect"):
            continue
        raw = final_number(r["response"])
        got = to_number(raw) if raw else None
        ok = got is not None and got == to_number(r["answer"])
        if ok != (r["label"] == "correct"):
            raise ValueError(f"math row mislabelled: {r}")


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def output_path() -> Path:
    return data_dir() / LABELLED


def long_output_path() -> Path:
    return data_dir() / LABELLED_LONG


def is_current() -> bool:
    """Whether both files on disk are exactly what the builder writes."""
    return all(p.is_file() and p.read_text(encoding="utf-8") == text for p, text in _outputs())


def _outputs() -> list[tuple[Path, str]]:
    short = build_rows()
    return [(output_path(), render(short)), (long_output_path(), render(build_long_rows(short)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = ap.parse_args(argv)
    outputs = _outputs()
    if args.check:
        stale = [p for p, text in outputs if not p.is_file() or p.read_text("utf-8") != text]
        for p in stale:
            print(f"{p} is out of date; run python tools/build_critic_data.py", file=sys.stderr)
        if not stale:
            print("labelled critic data is up to date")
        return 1 if stale else 0
    for p, text in outputs:
        p.write_text(text, encoding="utf-8")
        rows = [json.loads(line) for line in text.splitlines()]
        counts = Counter((r["split"], r["intent"]) for r in rows)
        print(f"wrote {len(rows)} rows to {p}: {dict(sorted(counts.items()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
