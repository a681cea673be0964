"""Expand ``seed_slots.yaml`` and the ethics templates into ``seeds.jsonl``, the slots'
sensitive topics into ``sensitive_seeds.jsonl``, and the benign topics in the harmful
seeds' phrasings into ``matched_seeds.jsonl``.

Run once after editing the slots: ``python tools/build_seeds.py``. The
output is committed, so loading seeds never depends on this script's randomness.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from superalign import shipped
from superalign.attack import EthicsGenerator, load_seeds
from superalign.types import content_hash


def load_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load(shipped("attack", name).read_text(encoding="utf-8"))


HARMFUL_PER_TOPIC = ("direct", "question", "pretext")
# One more seed per harmful topic in each plain style, phrased from `plain_extra`: unwrapped
# requests are the form a floor of every round's attacks keeps (attacker.plain_per_category).
PLAIN_EXTRA = ("direct", "question")
BENIGN_STYLES = {"sounds_dangerous": ("direct", "question"), "everyday": ("question",)}
ETHICS_SEEDS = 30
# Benign questions on the harmful categories' subjects (`sensitive_topics`), in both plain
# styles: a second library a config adds with `attacker.seeds`.
SENSITIVE_STYLES = ("direct", "question")
# Benign topics asked in the harmful seeds' phrasings (`matched_seeds.jsonl`): this many
# phrasings a topic, every phrasing about equally often.
MATCHED_PER_TOPIC = 4
# The template family (families.yaml) of each phrasing style; all open to training.
FAMILY = {
    "direct": "plain_request",
    "question": "plain_question",
    "pretext": "pretext_reason",
    "dilemma": "dilemma",
}


def _capitalised(text: str) -> str:
    return text[0].upper() + text[1:]


def build(rng: random.Random) -> list[dict]:
    slots = load_yaml("seed_slots.yaml")
    items: list[dict] = []
    seen: set[str] = set()

    def add(
        make: Callable[[], str], intent: str, category: str, style: str, **extra: object
    ) -> None:
        # Redraw a phrasing that repeats an earlier item, so every seed is distinct.
        for _ in range(20):
            text = _capitalised(make())
            if content_hash(text) not in seen:
                seen.add(content_hash(text))
                items.append(_item(text, intent, category, style, **extra))
                return

    def fill(intent: str, styles: Callable[[str], Sequence[str]], phrasing: str) -> None:
        """One seed per topic of ``intent`` and style, in a phrasing of that style."""
        for category, topics in slots[intent].items():
            for vp in topics:
                for style in styles(category):
                    phrasings = slots[phrasing][style]
                    add(
                        lambda p=phrasings, vp=vp: rng.choice(p).format(vp=vp),
                        intent,
                        category,
                        style,
                    )

    fill("harmful", lambda _: HARMFUL_PER_TOPIC, "phrasings")
    fill("benign", lambda category: BENIGN_STYLES[category], "benign_phrasings")
    ethics = EthicsGenerator(rng)
    for i in range(ETHICS_SEEDS):
        level = 1 + i % 3
        add(
            lambda d=level: ethics.generate(d).text, "benign", "ethics", "dilemma", difficulty=level
        )
    # Last, so every item above keeps the text it had before these were added.
    fill("harmful", lambda _: PLAIN_EXTRA, "plain_extra")
    # Last again: the bare imperative of each topic that asks for a text or a thing made.
    starts = tuple(slots["imperative_starts"])
    for category, topics in slots["harmful"].items():
        for vp in topics:
            if vp.startswith(starts):
                add(lambda vp=vp: f"{vp}.", "harmful", category, "direct")
    return items


def build_sensitive(rng: random.Random) -> list[dict]:
    """``sensitive_seeds.jsonl``: each sensitive topic asked in both plain styles."""
    slots = load_yaml("seed_slots.yaml")
    phrasings = slots["sensitive_phrasings"]
    return [
        _item(
            _capitalised(rng.choice(phrasings[style]).format(vp=vp)),
            "benign",
            "sensitive_topic",
            style,
        )
        for topics in slots["sensitive_topics"].values()
        for vp in topics
        for style in SENSITIVE_STYLES
    ]


def build_matched(rng: random.Random) -> list[dict]:
    """``matched_seeds.jsonl``: each benign topic (``benign``) in ``MATCHED_PER_TOPIC`` of
    the phrasings the harmful seeds use (``phrasings`` and ``plain_extra``), none already a
    seed of ``seeds.jsonl``. In the main library only harmful requests come in most of
    those phrasings, so the phrasing alone tells a harmful request from a benign one there."""
    slots = load_yaml("seed_slots.yaml")
    forms = sorted(
        {
            (style, text)
            for table in ("phrasings", "plain_extra")
            for style, texts in slots[table].items()
            for text in texts
        }
    )
    rng.shuffle(forms)
    seeded = {q.hash for q in load_seeds("seeds.jsonl")}
    topics = [(c, vp) for c, vps in slots["benign"].items() for vp in vps]
    items = []
    for i, (category, vp) in enumerate(topics):
        for j in range(MATCHED_PER_TOPIC):
            style, form = forms[(i * MATCHED_PER_TOPIC + j) % len(forms)]
            text = _capitalised(form.format(vp=vp))
            if content_hash(text) not in seeded:
                seeded.add(content_hash(text))
                items.append(_item(text, "benign", category, style))
    return items


def _item(text: str, intent: str, category: str, style: str, **extra: object) -> dict:
    return {
        "text": text,
        "intent": intent,
        "category": category,
        "style": style,
        "family": FAMILY[style],
        "source": "seed",
        **extra,
    }


def main() -> None:
    # In order: the matched library leaves out what the written seeds.jsonl already seeds.
    for name, make in (
        ("seeds.jsonl", lambda: build(random.Random(20241215))),
        ("sensitive_seeds.jsonl", lambda: build_sensitive(random.Random(20261207))),
        ("matched_seeds.jsonl", lambda: build_matched(random.Random(20261208))),
    ):
        items = make()
        out = shipped("attack", name)
        out.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
        print(f"wrote {len(items)} seeds to {out}")


if __name__ == "__main__":
    main()
