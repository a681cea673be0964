"""Build the run report (report.html) and the exported training data from the store."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..textsafe import redact
from ..types import Intent, Tier, Verdict
from ._store import Store

REPORT_FILE = "report.html"


def report_data(store: Store, run_dir: Path):  # -> eval.ReportData
    from ..eval import Metric, ReportData, RoundMetrics, SuccessfulAttack

    tiers: dict[int, dict[str, dict[str, Metric]]] = defaultdict(lambda: defaultdict(dict))
    for m in store.metrics():
        fields = {k: m[k] for k in ("value", "lo", "hi", "n") if m[k] is not None}
        tiers[m["round"]][m["tier"]][m["name"]] = Metric(**fields)
    rounds = [RoundMetrics(round=r, tiers=dict(t)) for r, t in sorted(tiers.items())]

    attacks = [
        SuccessfulAttack(
            round=j.query.round,
            category=j.query.category,
            style=j.query.style,
            query=j.query.text,
            response=j.response.text,
        )
        for j in store.judged(tier=Tier.train.value)
        if j.query.intent == Intent.harmful and j.judgement.label.verdict == Verdict.unsafe
    ]
    before_after = _before_after(store)
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
    config = redact(config)  # credentials in endpoint URLs never reach the report
    return ReportData(
        run_name=run_dir.name,
        config_yaml=config,
        rounds=rounds,
        successful_attacks=attacks[-40:],
        before_after=before_after,
    )


def _before_after(store: Store, limit: int = 24) -> list:
    """The same frozen query answered by the untouched model and the last checkpoint."""
    from ..eval import BeforeAfter

    tier = f"eval-{Tier.frozen.value}"
    rounds = sorted({r.round for r in store.responses(tier=tier)})
    if len(rounds) < 2:
        return []
    first = {j.query.id: j for j in store.judged(rounds[0], tier)}
    last = {j.query.id: j for j in store.judged(rounds[-1], tier)}
    pairs = []
    for qid, before in first.items():
        after = last.get(qid)
        if after is None:
            continue
        changed = before.judgement.label.verdict != after.judgement.label.verdict
        pairs.append((not changed, before.query.intent != Intent.harmful, before, after))
    pairs.sort(key=lambda p: (p[0], p[1]))  # changed verdicts first, harmful first
    return [
        BeforeAfter(
            query=b.query.text,
            before=b.response.text,
            after=a.response.text,
            before_verdict=b.judgement.label.verdict,
            after_verdict=a.judgement.label.verdict,
        )
        for _, _, b, a in pairs[:limit]
    ]


def write_report(store: Store, run_dir: Path) -> Path:
    from ..eval import write_report as write_html

    return write_html(report_data(store, run_dir), run_dir / REPORT_FILE)


def headline(store: Store, run_dir: Path) -> str:
    from ..eval import headline_table

    return headline_table(report_data(store, run_dir).rounds)


def export(store: Store, out_dir: Path, fmt: str) -> list[Path]:
    """Write preference pairs and SFT rows (HF `datasets` format) as JSONL or Parquet."""
    from datasets import Dataset

    prefs = [
        {
            "prompt": p.query.chat(),
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
            "confidence": p.confidence,
            "source": p.source,
        }
        for p in store.preferences()
    ]
    sft = [
        {
            "messages": [*j.query.chat(), {"role": "assistant", "content": j.response.text}],
            "p_acceptable": j.judgement.label.p_acceptable,
            "round": j.query.round,
        }
        for j in store.judged(tier=Tier.train.value)
        if j.judgement.label.p_acceptable >= 0.5
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in (("preferences", prefs), ("sft", sft)):
        if not rows:
            continue
        ds = Dataset.from_list(rows)
        if fmt == "jsonl":
            path = out_dir / f"{name}.jsonl"
            ds.to_json(str(path), lines=True)
        else:
            path = out_dir / f"{name}.parquet"
            ds.to_parquet(str(path))
        written.append(path)
    return written
