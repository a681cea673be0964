"""Minimal human oversight: spend a small label budget where the critics disagree.

Label sources (``loop.labels`` in the config):

- ``gold``: a simulated expert for experiments: true labels from a JSONL file written
  with the data, or the verdicts of an expert critic that is none of the training
  critics (by default the learned critic trained on the shipped calibration split; a
  served stronger model through the LM judge), with an optional error rate. It never
  asks the critics it is meant to check, so critic-expert agreement means something.
  Real experts replace it in production.
- ``import``: labels from a JSONL file (``response_id`` + ``label``, or ``query`` +
  ``response`` + ``label``).
- ``cli`` (or ``web``, the same source): the loop records the items as pending;
  ``superalign label runs/NAME`` shows them in the terminal and appends the answers to
  ``labels-inbox.jsonl``, ``superalign label runs/NAME --web`` serves a labelling page
  that appends them to the run database's ``annotations`` table (``_inbox.py``). The
  loop reads both at each oversee phase (waiting up to ``wait_seconds`` if configured),
  pending pairs of earlier rounds included, and combines several annotators' answers
  with the label model.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..config import GoldSettings
from ..errors import ConfigError
from ..registry import register
from ..types import HumanLabel, Judged, Verdict, content_hash

INBOX = "labels-inbox.jsonl"
log = logging.getLogger(__name__)


def select_for_review(judged: Sequence[Judged], budget: int, labelled: set[str]) -> list[Judged]:
    """The ``budget`` exchanges most worth a human label.

    Priority is the larger of the critics' disagreement and the label model's
    uncertainty (1 - confidence); exchanges a human already labelled are skipped. Ties
    keep the order of ``judged`` (the store's insertion order): ids are random, so a
    tie-break on them would pick different pairs in two runs of the same config.
    """
    candidates = [j for j in judged if j.response.id not in labelled]
    candidates.sort(key=lambda j: -priority(j))  # stable
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


class GoldExpert:
    """A simulated expert for experiments: true labels from a file written with the data,
    or the verdicts of a separate expert critic; never the training critics' rule."""

    name = "gold"

    def __init__(self, settings: GoldSettings) -> None:
        if settings.file is None and settings.critic is None:
            raise ConfigError(
                "loop.labels.args: the gold expert needs `file` (true labels written with "
                "the data) or `critic` (an expert critic apart from the training critics)"
            )
        self.settings = settings
        self._rng = random.Random(settings.seed)
        self._file: LabelFile | None = None
        if settings.file:
            path = Path(settings.file)
            if not path.is_file():
                raise ConfigError(f"loop.labels.args.file: {path} does not exist")
            self._file = _read_labels(path, "gold")
        self._judge = None
        if settings.critic is not None:
            from ..critic import build_judge
            from ..models import load_model

            model = load_model(settings.model) if settings.model else None
            self._judge = build_judge(settings.critic, model=model)

    def label(self, items: Sequence[Judged], run_dir: Path) -> list[HumanLabel]:
        from ..types import Exchange

        known = {h.response_id: h for h in _match(items, self._file)} if self._file else {}
        rest = [j for j in items if j.response.id not in known]
        verdicts = {h.response_id: h.verdict for h in known.values()}
        if rest and self._judge is not None:
            exchanges = [Exchange(query=j.query, response=j.response.text) for j in rest]
            for j, judgement in zip(rest, self._judge(exchanges), strict=True):
                if judgement.label.verdict is not None:  # an abstaining expert gives no label
                    verdicts[j.response.id] = judgement.label.verdict
        out = []
        for j in items:
            verdict = verdicts.get(j.response.id)
            if verdict is None:
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
    """Simulated expert: true labels from a file, or a separate expert critic."""
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
        labels = _read_labels(self.path, "import")
        return _match(items, labels, self.path)


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
        """Answers for ``items``, and for pairs still pending from earlier rounds (answered
        after their round's oversee phase: they are kept, not dropped)."""
        deadline = time.monotonic() + self.settings.wait_seconds
        wanted = {j.response.id for j in items}
        while True:
            found = self._answers(items, run_dir)
            if set(found) >= wanted or time.monotonic() >= deadline:
                return list(found.values())
            time.sleep(self.settings.poll_seconds)

    def _answers(self, items: Sequence[Judged], run_dir: Path) -> dict[str, HumanLabel]:
        """The terminal inbox (JSONL) and the web inbox (the run's annotations table),
        every annotator's answers combined by the label model (``_inbox.consensus``)."""
        from ._inbox import Annotation, LabelInbox, consensus

        inbox, db = run_dir / INBOX, run_dir / "superalign.db"
        labels = _read_labels(inbox, "cli", conflicts="last") if inbox.is_file() else None
        by_text = {h.response_id: h for h in _match(items, labels)} if labels else {}
        answers = [
            Annotation(kind="point", item=rid, answer=h.verdict.value, created=0.0,
                       annotator=h.annotator or "cli", source="cli")
            for rid, h in (labels.by_id.items() if labels else [])
        ]  # fmt: skip
        pending: set[str] = set()
        critiques = {}
        if db.is_file():
            with LabelInbox(db) as box:
                answers += box.annotations("point")
                pending = box.pending_ids()
                critiques = box.critiques(a.item for a in answers)
        wanted = {j.response.id for j in items} | pending
        found = {rid: h for rid, h in consensus(answers, critiques).labels.items() if rid in wanted}
        return {**by_text, **found}


@register("label_source", "cli", settings=CliSettings)
def cli_source(settings: CliSettings) -> CliSource:
    """Labels typed by a person with `superalign label runs/NAME` (terminal or --web)."""
    return CliSource(settings)


@register("label_source", "web", settings=CliSettings)
def web_source(settings: CliSettings) -> CliSource:
    """Labels given on the web page of `superalign label runs/NAME --web` (same as cli)."""
    return CliSource(settings)


# -- helpers ---------------------------------------------------------------------------


def _json_row(line: str, path: Path, n: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{n} is not valid JSON ({e.msg})") from e
    if not isinstance(row, dict):
        raise ConfigError(f"{path}:{n} must be a JSON object, not {type(row).__name__}")
    return row


def _text_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from e
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror or e})") from e


def _str_field(row: dict, key: str, path: Path, n: int) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{path}:{n}: {key!r} must be a string, not {json.dumps(value)}")
    return value


class LabelFile(NamedTuple):
    """Labels read from a JSONL file, with what the reader had to reconcile."""

    by_id: dict[str, HumanLabel]
    by_text: dict[tuple[str, str], HumanLabel]
    duplicates: int  # lines repeating an earlier label exactly
    conflicts: dict[str, list[str]]  # id (or query text) -> the differing labels, in order


def _read_labels(path: Path, source: str, conflicts: str = "error") -> LabelFile:
    """Labels by response id and by (query hash, response text).

    Repeated identical labels are counted; the same id with different labels is an
    error naming the ids (``conflicts="error"``, for imported files) or, for the
    labelling inbox where a person may correct an answer, the last answer wins and
    a warning names them (``conflicts="last"``).
    """
    by_id: dict[str, HumanLabel] = {}
    by_text: dict[tuple[str, str], HumanLabel] = {}
    duplicates = 0
    clashes: dict[str, list[str]] = {}
    valid = ", ".join(v.value for v in Verdict)
    for n, line in enumerate(_text_lines(path), 1):
        if not line.strip():
            continue
        row = _json_row(line, path, n)
        raw = row.get("label")
        try:
            verdict = Verdict(raw)
        except (ValueError, TypeError) as e:
            raise ConfigError(
                f"{path}:{n}: 'label' must be one of {valid}, not {json.dumps(raw)}"
            ) from e
        label = HumanLabel(
            response_id=_str_field(row, "response_id", path, n),
            verdict=verdict,
            source=source,
            annotator=_str_field(row, "annotator", path, n),
        )
        if label.response_id:
            table, key, shown = by_id, label.response_id, label.response_id
        elif row.get("query") is not None and row.get("response") is not None:
            query = _str_field(row, "query", path, n)
            response = _str_field(row, "response", path, n)
            table, key, shown = by_text, (content_hash(query), response.strip()), query[:60]
        else:
            raise ConfigError(f"{path}:{n}: needs response_id, or query and response")
        before = table.get(key)  # type: ignore[call-overload]
        if before is not None:
            if before.verdict == label.verdict:
                duplicates += 1
            else:
                clashes.setdefault(shown, [before.verdict.value]).append(label.verdict.value)
        table[key] = label  # type: ignore[index]
    if clashes:
        names = "; ".join(f"{k}: {' then '.join(v)}" for k, v in list(clashes.items())[:10])
        more = f" (and {len(clashes) - 10} more)" if len(clashes) > 10 else ""
        if conflicts == "error":
            raise ConfigError(
                f"{path}: {len(clashes)} response(s) labelled twice with different labels: "
                f"{names}{more}. Keep one label per response."
            )
        log.warning(
            "%s: %d response(s) labelled twice with different labels, the last answer is used: "
            "%s%s",
            path,
            len(clashes),
            names,
            more,
        )
    if duplicates:
        log.warning("%s: %d repeated identical label line(s) counted once", path, duplicates)
    return LabelFile(by_id, by_text, duplicates, clashes)


def _match(
    items: Sequence[Judged], labels: LabelFile, path: Path | None = None
) -> list[HumanLabel]:
    """The labels for ``items``; labels naming a response id not among them are counted
    and reported (a typo, or a label for another run or round), never silently dropped."""
    out = []
    used: set[str] = set()
    for j in items:
        hit = labels.by_id.get(j.response.id)
        if hit is not None:
            used.add(j.response.id)
        else:
            hit = labels.by_text.get((j.query.hash, j.response.text.strip()))
        if hit is not None:
            out.append(hit.model_copy(update={"response_id": j.response.id}))
    unknown = [rid for rid in labels.by_id if rid not in used]
    if unknown and path is not None:
        log.warning(
            "%s: %d label(s) name response ids not among the %d pairs up for review "
            "(unknown ids, e.g. %s); they were not used",
            path,
            len(unknown),
            len(items),
            ", ".join(unknown[:5]),
        )
    return out
