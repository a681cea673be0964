"""Oversight commands: ``superalign w2s`` and ``superalign oversight-eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError

TASKS = ("critic", "loop")


def w2s(
    task: str = typer.Option(
        "critic",
        "--task",
        help="critic (students of weak labels) or loop (the learner trained from weak, "
        "weak + expert budget, and gold labels; needs --config)",
    ),
    weak: str | None = typer.Option(
        None,
        "--weak",
        help="critic task: few (default; a learned critic on --weak-labels gold rows) or a "
        "critic name; loop task: rules (default; the rule critics) or config (its critics)",
    ),
    config: str | None = typer.Option(None, "--config", "-c", help="loop task: run config"),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="loop task: rounds per arm"),
    queries: int | None = typer.Option(
        None, "--queries", min=1, help="loop task: queries per round"
    ),
    weak_labels: int = typer.Option(30, "--weak-labels", min=1, help="gold rows for --weak few"),
    features: str = typer.Option("ngram", "--features", help="student features: ngram, lm, both"),
    aux_weight: float = typer.Option(0.5, "--aux-weight", min=0.0, max=1.0),
    keep: float = typer.Option(0.5, "--keep", help="share of weak labels the filter keeps"),
    pool_limit: int | None = typer.Option(None, "--pool-limit", min=2, help="sample the pool"),
    test_limit: int | None = typer.Option(None, "--test-limit", min=2, help="sample the test"),
    epochs: int = typer.Option(60, "--epochs", min=1),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=100),
    seed: int = typer.Option(0, "--seed"),
    data: str | None = typer.Option(None, "--data", help="labelled JSONL (default: shipped)"),
    cache: str | None = typer.Option(None, "--cache", help=".npz file keeping LM features"),
    model: str | None = typer.Option(None, "--model", help="model of an LM weak supervisor"),
    output: str | None = typer.Option(None, "--output", help="write the result as JSON here"),
) -> None:
    """Weak-to-strong: on the critic task (weak, students, ceiling) or the loop (weak,
    oversight and gold arms); PGR with intervals."""
    from ..models import load_model
    from ._w2s import W2SSettings, run_w2s

    if task not in TASKS:
        raise ConfigError(f"--task {task!r}: valid tasks are {', '.join(TASKS)}")
    if task == "loop":
        if config is None:
            raise ConfigError("--task loop needs --config CONFIG (e.g. configs/w2s-loop.yaml)")
        _w2s_loop(config, weak or "rules", rounds, queries, bootstrap, seed, output)
        return
    settings = W2SSettings(
        weak=weak or "few",
        weak_labels=weak_labels,
        features=features,
        aux_weight=aux_weight,
        keep=keep,
        epochs=epochs,
        bootstrap=bootstrap,
        seed=seed,
        pool_limit=pool_limit,
        test_limit=test_limit,
        data=data,
        cache=cache,
    )
    result = run_w2s(settings, load_model(model) if model else None)
    table = Table("", "accuracy [95%]", "trained on", "PGR [95%]", "note",
                  title=f"weak-to-strong, critic task: pool {result.pool}, weak labels "
                  f"{result.weak_label_accuracy:.1%} right")  # fmt: skip
    for e in result.entries:
        pgr = e.pgr.format(percent=False, n=False) if e.pgr else ""
        table.add_row(e.name, e.accuracy.format(), str(e.trained_on or ""), pgr, e.note)
    Console(width=160).print(table)
    if output:
        Path(output).write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")


def _w2s_loop(
    config: str,
    weak: str,
    rounds: int | None,
    queries: int | None,
    bootstrap: int,
    seed: int,
    output: str | None,
) -> None:
    from ._w2s_loop import LoopW2SSettings, run_w2s_loop

    settings = LoopW2SSettings(config, weak, rounds, queries, bootstrap, seed)
    result = run_w2s_loop(settings)
    table = Table("metric", "n", "base", "weak", "oversight", "gold", "PGR weak [95%]",
                  "PGR oversight [95%]",
                  title=f"weak-to-strong, loop task: weak = {weak}; PGR = (arm - base) / "
                  "(gold - base), gain oriented so that better is positive")  # fmt: skip
    for m in result.metrics:
        table.add_row(
            m.label, str(m.n),
            f"{m.base['gold']:.1%}" if result.shared_base
            else " / ".join(f"{m.base[a]:.1%}" for a in ("weak", "oversight", "gold")),
            *(f"{m.trained[a]:.1%}" for a in ("weak", "oversight", "gold")),
            m.pgr["weak"].format(percent=False, digits=2, n=False),
            m.pgr["oversight"].format(percent=False, digits=2, n=False),
        )  # fmt: skip
    console = Console(width=180)
    console.print(table)
    for a in result.arms.values():
        console.print(
            f"{a.name}: critics {', '.join(a.critics)}; expert labels {a.expert_labels} of "
            f"{a.train_pairs} training pairs (budget {a.human_budget} a round); rounds 1.."
            f"{a.last_round} took {a.seconds:.0f} s; {a.run_dir}",
            markup=False,
            highlight=False,
        )
    console.print(f"round 0 (shared): {result.round0_seconds:.0f} s", markup=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    if output:
        Path(output).write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")


def oversight_eval(
    critics: str = typer.Option(
        "rules,decompose",
        "--critics",
        help="comma-separated; the first is the baseline. "
        "'direct' is the judge model alone with the debate judge's prompt",
    ),
    split: str = typer.Option("test", "--split"),
    limit: int = typer.Option(0, "--limit", min=0, help="a seeded sample of this many rows"),
    take: int = typer.Option(
        0, "--take", min=0, help="measure only the first N rows of the sample (0: all)"
    ),
    against: str | None = typer.Option(
        None,
        "--against",
        help="an earlier --output of this command on the same --split/--limit/--seed: "
        "its critics are compared with these on the rows both measured",
    ),
    data: str | None = typer.Option(None, "--data", help="labelled JSONL (default: shipped)"),
    model: str = typer.Option("smollm2-135m", "--model", help="judge model of LM critics"),
    debaters: str | None = typer.Option(None, "--debaters", help="arguer model (default: --model)"),
    turns: int = typer.Option(1, "--turns", min=1, max=6),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", min=8),
    seed: int = typer.Option(0, "--seed"),
    steps: bool = typer.Option(False, "--steps", help="also report the math step checker"),
    show: int = typer.Option(1, "--show", min=0, help="stored records printed per critic"),
    output: str | None = typer.Option(None, "--output", help="write the results as JSON here"),
) -> None:
    """Accuracy of oversight critics (decompose, debate, consultancy...) on labelled rows."""
    from .. import registry
    from ..critic import load_constitution, load_labelled
    from ..models import load_model
    from ._debate import ArguedJudge, ProtocolSettings
    from ._measure import measure, sample_rows, step_report

    rows = sample_rows(load_labelled(data, split), limit, seed)
    if not rows:
        raise ConfigError(f"no rows with split {split!r}; pick another --split")
    rows = rows[:take] if take else rows
    earlier = _earlier(against, split, len(rows)) if against else []
    names = [n.strip() for n in critics.split(",") if n.strip()]
    lm_names = [n for n in names if n != "direct"]
    needs = "direct" in names or registry.needs_model("critic", lm_names, "--critics")
    lm = load_model(model) if needs else None
    protocol = {"turns": turns, "max_new_tokens": max_new_tokens, "seed": seed}
    if debaters:
        protocol["debaters"] = debaters
    args: dict[str, Any] = {"debate": protocol, "consultancy": protocol}
    args["judge"] = {"explain": False}
    const = load_constitution("default")
    built: dict[str, Any] = {}
    for n in names:
        if n == "direct":
            built[n] = ArguedJudge("direct", lm, None, ProtocolSettings(seed=seed))  # type: ignore[arg-type]
        else:
            built[n] = registry.create("critic", n, args.get(n), model=lm, constitution=const)

    gold = [{"query": r.query[:80], "label": r.label.value, "kind": r.kind} for r in rows]

    def save(results: list[dict[str, Any]]) -> None:
        if output:
            report = {"rows": len(rows), "split": split, "gold": gold, "critics": results}
            Path(output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    results = measure(built, rows, on_result=save)
    _print(results, len(rows), split, show)
    if earlier:
        _compare(earlier, results, rows)
    report: dict[str, Any] = {"rows": len(rows), "split": split, "critics": results}
    if steps:
        report["steps"] = step_report(rows)
        Console().print(f"math step checker (no answer key): {report['steps']}", markup=False)
    if output:
        Path(output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _earlier(path: str, split: str, n: int) -> list[dict[str, Any]]:
    """The critics of an earlier run on the same sample (at least ``n`` rows)."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--against {path}: cannot read it ({e})") from e
    if report.get("split") != split or report.get("rows", 0) < n:
        raise ConfigError(
            f"--against {path}: it measured {report.get('rows')} rows of split "
            f"{report.get('split')!r}; this run needs at least {n} rows of {split!r} from the "
            "same --limit and --seed"
        )
    return list(report["critics"])


def _compare(earlier: list[dict[str, Any]], results: list[dict[str, Any]], rows: list[Any]) -> None:
    """Each earlier critic's accuracy on these rows and each new critic's paired
    difference to it (the sample is seeded: the earlier run's first rows are these)."""
    import numpy as np

    from ..eval import wilson_interval
    from ..types import Verdict
    from ._measure import paired_difference

    def hits(critiques: list[dict[str, Any]]) -> np.ndarray:
        return np.array(
            [
                c["verdict"] is not None and Verdict(c["verdict"]).acceptable == r.label.acceptable
                for c, r in zip(critiques[: len(rows)], rows, strict=True)
            ],
            dtype=float,
        )

    console = Console(width=140)
    for old in earlier:
        base = hits(old["critiques"])
        acc = wilson_interval(int(base.sum()), len(base)).format()
        line = f"earlier {old['name']}: {acc}"
        for new in results:
            d, lo, hi = paired_difference(base, hits(new["critiques"]))
            line += f"; {new['name']} vs it {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        console.print(line, markup=False, highlight=False)


def _interval(m: dict[str, Any]) -> str:
    return f"{m['value']:.1%} [{m['lo']:.1%}, {m['hi']:.1%}]"


def _print(results: list[dict[str, Any]], n: int, split: str, show: int) -> None:
    intents = sorted({k for r in results for k in r["by_intent"]})
    table = Table("critic", "accuracy [95%]", *intents, "abstain", "vs first [95%]", "seconds",
                  title=f"oversight critics on {n} {split} rows")  # fmt: skip
    for r in results:
        d = r.get("difference")
        diff = f"{d['value']:+.1%} [{d['lo']:+.1%}, {d['hi']:+.1%}]" if d else "-"
        cells = [_interval(r["by_intent"][i]) if i in r["by_intent"] else "-" for i in intents]
        table.add_row(r["name"], _interval(r["accuracy"]), *cells, f"{r['abstain_rate']:.1%}",
                      diff, f"{r['seconds']:.1f}")  # fmt: skip
    console = Console(width=180)
    console.print(table)
    for r in results:
        for c in r["critiques"][:show]:
            text = c["explanation"] or c.get("abstain_reason") or ""
            console.print(f"[{r['name']}] {text[:600]}", markup=False, highlight=False)


def rrm(
    rounds: int = typer.Option(5, "--rounds", min=2),
    budget: int = typer.Option(20, "--budget", min=1, help="expert labels per round"),
    target: float = typer.Option(0.9, "--target", help="test accuracy to reach"),
    modes: str = typer.Option(
        "choose,choose+confident,choose+all",
        "--modes",
        help="assisted conditions: choose, choose+confident, choose+all",
    ),
    audit: int = typer.Option(5, "--audit", min=0, help="choose+confident: random audit labels"),
    min_confidence: float = typer.Option(0.8, "--min-confidence", help="choose+confident"),
    min_precision: float = typer.Option(0.9, "--min-precision", help="choose+confident"),
    epochs: int = typer.Option(60, "--epochs", min=1),
    seed: int = typer.Option(0, "--seed"),
    data: str | None = typer.Option(None, "--data", help="labelled JSONL (default: shipped)"),
    output: str | None = typer.Option(None, "--output", help="write the result as JSON here"),
) -> None:
    """Assisted labelling: the round-N critic picks what the expert labels in round N+1."""
    from ._rrm import RRMSettings, run_rrm

    names = tuple(m.strip() for m in modes.split(",") if m.strip())
    settings = RRMSettings(
        rounds, budget, epochs, seed, data, modes=names, audit=audit,
        min_confidence=min_confidence, min_precision=min_precision,
    )  # fmt: skip
    result = run_rrm(settings)
    table = Table("round", "expert labels", "unassisted [95%]", *names,
                  title=f"assisted labelling, {budget} expert labels a round "
                  "(in brackets: the critic's own labels added that round)")  # fmt: skip
    for r in result.rounds:
        cells = [f"{r.assisted[m].format()} (+{r.auto_labels.get(m, 0)})" for m in names]
        table.add_row(str(r.round), str(r.labels), r.unassisted.format(), *cells)
    console = Console(width=180)
    console.print(table)
    for mode in (None, *names):
        n = result.labels_to_reach(target, mode)
        reached = "not reached" if n is None else f"{n} labels"
        console.print(f"{mode or 'unassisted'}: {reached} to {target:.0%}")
    if output:
        Path(output).write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")


def register(app: typer.Typer) -> None:
    app.command("w2s")(w2s)
    app.command("rrm")(rrm)
    app.command("oversight-eval")(oversight_eval)
