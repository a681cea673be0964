"""Build the run report (report.html) and the exported training data from the store."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..textsafe import redact
from ..types import Tier
from ._paths import write_text_unlinked
from ._store import Store

REPORT_FILE = "report.html"


def report_data(store: Store, run_dir: Path):  # -> eval.ReportData
    from ..eval import Metric, ReportData, RoundMetrics, successful_attacks
    from ._inbox import agreement_report

    tiers: dict[int, dict[str, dict[str, Metric]]] = defaultdict(lambda: defaultdict(dict))
    for m in store.metrics():
        fields = {k: m[k] for k in ("value", "lo", "hi", "n") if m[k] is not None}
        tiers[m["round"]][m["tier"]][m["name"]] = Metric(**fields)
    rounds = [RoundMetrics(round=r, tiers=dict(t)) for r, t in sorted(tiers.items())]

    attacks = successful_attacks(store.judged(tier=Tier.train.value), limit=40)
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
    config = redact(config)  # credentials in endpoint URLs never reach the report
    return ReportData(
        run_name=run_dir.name,
        config_yaml=config,
        judge=_judge_name(store),
        rounds=rounds,
        successful_attacks=attacks,
        before_after=_before_after(store),
        timing=phase_times(store),
        annotators=agreement_report(store),
        transcripts=transcripts(store.judged(tier=Tier.train.value)),
        conversations=conversations(store),
    )


def conversations(store: Store, limit: int = 6) -> list:  # -> list[eval.Conversation]
    """The latest round's multi-turn attacks: up to ``limit // 2`` of the evaluation tier,
    then of the attack phase."""
    from ..eval import MULTITURN_TIER, Conversation

    rounds = store.transcript_rounds()
    if not rounds:
        return []
    chosen = [
        (rounds[-1], tier, t)
        for tier in (MULTITURN_TIER, Tier.train.value)
        for t in store.transcripts(round=rounds[-1], tier=tier)[: max(1, limit // 2)]
    ]
    return [
        Conversation(
            round=r,
            tier=tier,
            category=t.objective.category,
            outcome=t.outcome,
            text=t.render()[:4000],
        )
        for r, tier, t in chosen[:limit]
    ]


ARGUED = ("debate", "consultancy")  # critics whose explanation is a transcript


def transcripts(judged: list, limit: int = 4) -> list[tuple[int, str, str, str]]:
    """The last ``limit`` debate / consultancy records among judged pairs (Judged)."""
    out = [
        (j.response.round, c.critic, j.query.text, c.explanation or c.abstain_reason or "")
        for j in judged
        for c in j.judgement.critiques
        if c.critic in ARGUED
    ]
    return [(r, c, q, t[:1500]) for r, c, q, t in out[max(0, len(out) - limit) :]]


def phase_times(store: Store) -> list:  # -> list[eval.PhaseTime]
    """Each finished phase's wall time, split into generation, training and the rest."""
    from ..eval import PhaseTime
    from ._run import PHASES

    order = {phase: i for i, phase in enumerate(PHASES)}
    rows = [
        PhaseTime(round=r, phase=key.removeprefix("time:"), **value)
        for key, r, value in store.states("time:")
    ]
    return sorted(rows, key=lambda t: (t.round, order.get(t.phase, 99)))


def _judge_name(store: Store) -> str:
    """The evaluation judge of the run's stored configuration, as `name` or `name:split`."""
    try:
        judge = json.loads(store.meta("config") or "{}").get("eval", {}).get("judge") or {}
    except json.JSONDecodeError:
        return ""
    args = judge.get("args") or {}
    detail = args.get("split") or args.get("path") or ""
    return judge.get("name", "") + (f":{detail}" if detail else "")


def _before_after(store: Store, limit: int = 24) -> list:
    """The same frozen queries answered by the untouched model and the last checkpoint."""
    from ..eval import before_after

    tier = f"eval-{Tier.frozen.value}"
    rounds = sorted({r.round for r in store.responses(tier=tier)})
    if len(rounds) < 2:
        return []
    return before_after(store.judged(rounds[0], tier), store.judged(rounds[-1], tier), limit)


def write_report(store: Store, run_dir: Path, target: Path | None = None) -> Path:
    """Write the run's HTML report to ``target`` (default ``RUN/report.html``). A file in
    the run directory is never written through a symbolic link (a planted one could point
    anywhere); a ``target`` elsewhere is written as given."""
    from ..eval import build_report
    from ..eval import write_report as write_html

    data = report_data(store, run_dir)
    path = target or run_dir / REPORT_FILE
    if path.parent.resolve() == run_dir.resolve():
        fix = "remove the link, or pass --output to write the report elsewhere"
        return write_text_unlinked(path, build_report(data), "the report", fix)
    return write_html(data, path)


def headline(store: Store, run_dir: Path) -> str:
    from ..eval import headline_table

    data = report_data(store, run_dir)
    return headline_table(data.rounds, judge=data.judge)


def export(store: Store, out_dir: Path, fmt: str) -> list[Path]:
    """Write preference pairs and SFT rows (HF `datasets` format) as JSONL or Parquet: the
    columns the learners train on (``preference_rows``, ``sft_rows``) plus provenance."""
    from datasets import Dataset

    from ..learn import preference_rows, sft_rows
    from ._inbox import human_preferences

    pairs = store.preferences()
    prefs = {**preference_rows(pairs), "source": [p.source for p in pairs]}
    human = human_preferences(store)  # the stored pairs as web annotators judged them
    human_prefs = {**preference_rows(human), "source": [p.source for p in human]}
    kept = [j for j in store.judged(tier=Tier.train.value) if j.judgement.label.p_acceptable >= 0.5]
    sft = {
        **sft_rows([(j.query, j.response.text) for j in kept]),
        "p_acceptable": [j.judgement.label.p_acceptable for j in kept],
        "round": [j.query.round for j in kept],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, n, columns in (
        ("preferences", len(pairs), prefs),
        ("sft", len(kept), sft),
        ("human_preferences", len(human), human_prefs),
    ):
        if not n:
            continue
        ds = Dataset.from_dict(columns)
        if fmt == "jsonl":
            path = out_dir / f"{name}.jsonl"
            ds.to_json(str(path), lines=True)
        else:
            path = out_dir / f"{name}.parquet"
            ds.to_parquet(str(path))
        written.append(path)
    return written
