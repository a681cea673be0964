"""Minimal human oversight: spend a small label budget where the critics disagree.

Label sources (``loop.labels`` in the config):

- ``gold``: a simulated expert for experiments. It knows each query's true intent
  (from the attacker's provenance, or from a gold JSONL file keyed by query text)
  and labels the response with the refusal detector and the math verifier, with an
  optional error rate. Real experts replace it in production.
- ``import``: labels from a JSONL file (``response_id`` + ``label``, or ``query`` +
  ``response`` + ``label``).
- ``cli``: the loop records the items as pending; ``superalign label runs/NAME``
  shows them in the terminal and appends the answers to ``labels-inbox.jsonl``, which
  the loop reads (waiting up to ``wait_seconds`` if configured).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError
from ..registry import register
from ..types import HumanLabel, Intent, Judged, Verdict, content_hash

INBOX = "labels-inbox.jsonl"


def select_for_review(judged: Sequence[Judged], budget: int, labelled: set[str]) -> list[Judged]:
    """The ``budget`` exchanges most worth a human label.

    Priority is the larger of the critics' disagreement and the label model's
    uncertainty (1 - confidence); exchanges a human already labelled are skipped.
    """
    candidates = [j for j in judged if j.response.id not in labelled]
    candidates.sort(key=lambda j: (-priority(j), j.response.id))
    return candidates[:budget]


def priority(j: Judged) -> float:
    label = j.judgement.label
    return max(label.disagreement, 1.0 - label.confidence)


class LabelSource(Protocol):
    name: str

    def label(self, items: Sequence[Judged], run_dir: Path) -> list[HumanLabel]:
        """Labels for as many of ``items`` as this source can give now."""
        ...


# -- gold: a simulated expert ----------------------------------------------------------


class GoldSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str | None = Field(None, description="JSONL of {query, intent} overriding provenance")
    error_rate: float = Field(0.0, ge=0, le=0.5, description="simulated expert mistakes")
    seed: int = 0


class GoldExpert:
    name = "gold"

    def __init__(self, settings: GoldSettings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.seed)
        self._intents: dict[str, Intent] = {}
        if settings.file:
            path = Path(settings.file)
            if not path.is_file():
                raise ConfigError(f"loop.labels.args.file: {path} does not exist")
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if line.strip():
                    row = _json_row(line, path, n)
                    self._intents[content_hash(row["query"])] = Intent(row["intent"])
        from ..eval import rule_judge

        self._judge = rule_judge()

    def label(self, items: Sequence[Judged], run_dir: Path) -> list[HumanLabel]:
        from ..types import Exchange

        exchanges = [
            Exchange(
                query=j.query.model_copy(
                    update={"intent": self._intents.get(j.query.hash, j.query.intent)}
                ),
                response=j.response.text,
            )
            for j in items
        ]
        out = []
        for j, judgement in zip(items, self._judge(exchanges), strict=True):
            verdict = judgement.label.verdict
            if verdict is None:  # no rule applies: the expert declines to label
                continue
            if self._rng.random() < self.settings.error_rate:
                verdict = _flip(verdict)
            out.append(HumanLabel(response_id=j.response.id, verdict=verdict, source="gold"))
        return out


def _flip(v: Verdict) -> Verdict:
    return {
        Verdict.safe: Verdict.over_refusal,
        Verdict.over_refusal: Verdict.safe,
        Verdict.unsafe: Verdict.refusal,
        Verdict.refusal: Verdict.unsafe,
        Verdict.correct: Verdict.incorrect,
        Verdict.incorrect: Verdict.correct,
        Verdict.incoherent: Verdict.safe,
    }[v]


@register("label_source", "gold", settings=GoldSettings)
def gold_source(settings: GoldSettings) -> GoldExpert:
    """Simulated expert from query provenance (or a gold file), for experiments."""
    return GoldExpert(settings)


# -- import: a JSONL file --------------------------------------------------------------


class ImportSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="JSONL with response_id+label, or query+response+label")


class ImportSource:
    name = "import"

    def __init__(self, settings: ImportSettings) -> None:
        self.path = Path(settings.file)

    def label(self, items: Sequence[Judged], run_dir: Path) -> list[HumanLabel]:
        if not self.path.is_file():
            raise ConfigError(f"loop.labels.args.file: {self.path} does not exist")
        by_id, by_text = _read_labels(self.path, "import")
        return _match(items, by_id, by_text)


@register("label_source", "import", settings=ImportSettings)
def import_source(settings: ImportSettings) -> ImportSource:
    """Human labels from a JSONL file."""
    return ImportSource(settings)


# -- cli: answers from `superalign label` -------------------------------------------------


class CliSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait_seconds: float = Field(0.0, ge=0, description="how long the loop waits for answers")
    poll_seconds: float = Field(2.0, gt=0)


class CliSource:
    name = "cli"

    def __init__(self, settings: CliSettings) -> None:
        self.settings = settings

    def label(self, items: Sequence[Judged], run_dir: Path) -> list[HumanLabel]:
        inbox = run_dir / INBOX
        deadline = time.monotonic() + self.settings.wait_seconds
        wanted = {j.response.id for j in items}
        while True:
            by_id, by_text = _read_labels(inbox, "cli") if inbox.is_file() else ({}, {})
            found = _match(items, by_id, by_text)
            if {h.response_id for h in found} >= wanted or time.monotonic() >= deadline:
                return found
            time.sleep(self.settings.poll_seconds)


@register("label_source", "cli", settings=CliSettings)
def cli_source(settings: CliSettings) -> CliSource:
    """Labels typed by a person with `superalign label runs/NAME`."""
    return CliSource(settings)


# -- helpers ---------------------------------------------------------------------------


def _json_row(line: str, path: Path, n: int) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{n} is not valid JSON ({e.msg})") from e


def _read_labels(
    path: Path, source: str
) -> tuple[dict[str, HumanLabel], dict[tuple[str, str], HumanLabel]]:
    by_id: dict[str, HumanLabel] = {}
    by_text: dict[tuple[str, str], HumanLabel] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = _json_row(line, path, n)
        try:
            verdict = Verdict(row["label"])
        except (KeyError, ValueError) as e:
            valid = ", ".join(v.value for v in Verdict)
            raise ConfigError(f"{path}:{n}: 'label' must be one of {valid}") from e
        label = HumanLabel(
            response_id=row.get("response_id", ""),
            verdict=verdict,
            source=source,
            annotator=row.get("annotator", ""),
        )
        if label.response_id:
            by_id[label.response_id] = label
        elif "query" in row and "response" in row:
            by_text[(content_hash(row["query"]), row["response"].strip())] = label
        else:
            raise ConfigError(f"{path}:{n}: needs response_id, or query and response")
    return by_id, by_text


def _match(
    items: Sequence[Judged],
    by_id: dict[str, HumanLabel],
    by_text: dict[tuple[str, str], HumanLabel],
) -> list[HumanLabel]:
    out = []
    for j in items:
        hit = by_id.get(j.response.id) or by_text.get((j.query.hash, j.response.text.strip()))
        if hit is not None:
            out.append(hit.model_copy(update={"response_id": j.response.id}))
    return out
