"""critic-eval: measure critics and their ensemble against labelled data."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError, StoreError
from ..types import Judged, Tier

COLUMNS = (
    "accuracy",
    "harmful_accuracy",
    "refusal_detection",
    "precision",
    "recall",
    "f1",
    "kappa",
    "ece",
    "abstain_rate",
)
HEADERS = ("accuracy", "harmful acc", "refusal det", "precision", "recall", "f1", "kappa", "ece",
           "abstain")  # fmt: skip


def critic_eval(
    critics: str = typer.Option(
        "refusal,query_risk,verifier,learned", "--critics", help="comma-separated critic names"
    ),
    config: str | None = typer.Option(
        None,
        "--config",
        help="measure a run config's training critics, with their arguments, constitution "
        "and label model (e.g. configs/default.yaml) instead of --critics",
    ),
    data: str | None = typer.Option(
        None, "--data", help="JSONL of query, response, label[, intent, answer, split]"
    ),
    output: str | None = typer.Option(None, "--output", help="write the rows as JSON here"),
    split: str = typer.Option("test", "--split", help="split evaluated"),
    calibrate: str = typer.Option(
        "calibration",
        "--calibrate",
        help="comma-separated splits that calibrate the label model ('rest': every other "
        "split). Keep it apart from what a learned critic was trained on (train)",
    ),
    model: str = typer.Option(
        "smollm2-135m", "--model", help="judge model: alias, path, openai:M@URL or mock"
    ),
    constitution: str = typer.Option("default", "--constitution", help="name or YAML path"),
    locale: str | None = typer.Option(None, "--locale", help="locale norms to add"),
) -> None:
    """Accuracy, F1, kappa, ECE and abstain rate of each critic and of the ensemble."""
    from .. import registry
    from ..models import load_model
    from ._calibration import load_labelled
    from ._constitution import load_constitution
    from ._evaluate import evaluate_critics

    rows = load_labelled(data)
    test = [r for r in rows if r.split == split]
    wanted = {c.strip() for c in calibrate.split(",") if c.strip()}
    calibration = [r for r in rows if r.split != split and ("rest" in wanted or r.split in wanted)]
    if not calibration and data:  # e.g. the hand-labelled slice: calibrate on the shipped set
        calibration = [r for r in load_labelled() if "rest" in wanted or r.split in wanted]
    if not test:
        raise ConfigError(f"no rows with split {split!r} in the data; pick another --split")
    label_model = None
    if config is not None:
        from ..config import load_config
        from ._label_model import DawidSkene

        section = load_config(config).critic
        specs = [(s.name, dict(s.args)) for s in section.critics]
        constitution, locale = section.constitution, section.locale
        label_model = DawidSkene(method=section.label_model)
    else:
        specs = [(n.strip(), {}) for n in critics.split(",") if n.strip()]
    names = [name for name, _ in specs]
    where = "--config's critic.critics" if config is not None else "--critics"
    const = load_constitution(constitution, locale)
    lm = load_model(model) if registry.needs_model("critic", names, where) else None
    # Explanations are not scored here; generating them would only cost time.
    quiet = {"judge": {"explain": False}, "self_critique": {"explain": False}}
    built = [
        registry.create("critic", n, {**a, **quiet.get(n, {})}, model=lm, constitution=const)
        for n, a in specs
    ]
    results = evaluate_critics(built, calibration, test, label_model)
    _print(results, len(calibration), len(test))
    if output:
        Path(output).write_text(json.dumps(results, indent=2))


def _print(results: list[dict], n_cal: int, n_test: int) -> None:
    table = Table("critic", *HEADERS, title=f"critics on {n_test} test rows ({n_cal} calibrate)")
    for r in results:
        table.add_row(r["name"], *("-" if r[c] is None else f"{r[c]:.3f}" for c in COLUMNS))
    console = Console(width=None if Console().is_terminal else 140)
    console.print(table)
    ens = next((r for r in results if r["name"] == "ensemble"), None)
    if ens is None or not ens.get("fitted_accuracies"):
        return
    fitted = Table(
        "critic",
        "fitted accuracy",
        "sensitivity",
        "specificity",
        "held-out acc, lambda=1",
        title=f"label model ({ens['label_model']}) fitted on the {n_cal} calibration rows",
    )
    heldout = ens.get("heldout_accuracy") or {}
    for name, acc in ens["fitted_accuracies"].items():
        alone = heldout.get(name, {}).get("1")
        fitted.add_row(
            name,
            f"{acc:.3f}",
            f"{ens['fitted_sensitivity'][name]:.3f}",
            f"{ens['fitted_specificity'][name]:.3f}",
            "-" if alone is None else f"{alone:.3f}",
        )
    console.print(fitted)
    critic = ens.get("shrink_critic")
    toward = f"toward {critic}" if critic else "(ensemble kept as fitted)"
    console.print(
        f"shrinkage: lambda={ens.get('shrink_lambda', 0.0):g} {toward}; "
        f"P(acceptable) prior {ens['prior_acceptable']:.3f}",
        markup=False,
    )


def run_judged(run_dir: Path) -> list[Judged]:
    """A run directory's judged training-tier pairs, read through its store (read-only)."""
    from ..loop import DB_FILE, Store

    db = run_dir / DB_FILE
    if not db.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {DB_FILE})")
    try:
        with Store(db, write=False) as store:
            return store.judged(tier=Tier.train.value)
    except StoreError as e:
        raise ConfigError(f"{db} could not be read: {e}") from e


def critic_train(
    output: str = typer.Option(..., "--output", help="directory the artifact is written to"),
    data: list[str] = typer.Option(
        [], "--data", help="labelled JSONL (query, response, label, intent[, answer]); repeat"
    ),
    splits: str = typer.Option(
        "train",
        "--splits",
        help="comma-separated splits of the shipped data ('' for none); SPLIT+long adds that "
        "split's long, fluent rows (labelled_long.jsonl)",
    ),
    runs: list[str] = typer.Option([], "--run", help="a run directory whose labels add; repeat"),
    features: str = typer.Option("ngram", "--features", help="ngram (default), lm or both"),
    loss: str = typer.Option("gce", "--loss", help="gce (noise-robust) or ce"),
    epochs: int = typer.Option(60, "--epochs", min=1),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a learned critic from labelled JSONL, the shipped splits and runs' labels."""
    from ._learned import train_critic
    from ._train import training_rows

    if features not in ("ngram", "lm", "both"):
        raise ConfigError(f"--features {features!r}: use ngram, lm or both")
    if loss not in ("gce", "ce"):
        raise ConfigError(f"--loss {loss!r}: use gce or ce")
    wanted = [s.strip() for s in splits.split(",") if s.strip()]
    judged = [(Path(run).name, run_judged(Path(run))) for run in runs]
    rows, prov = training_rows(wanted, data, judged)
    if not rows:
        raise ConfigError("nothing to train on: give --splits, --data or --run")
    console = Console(stderr=True)
    console.print(f"training a learned critic ({features}, {loss}) on {len(rows)} rows ...")
    path = train_critic(rows, prov, Path(output), features, loss, epochs=epochs, seed=seed)  # type: ignore[arg-type]
    console.print(f"wrote {path}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("critic-eval")(critic_eval)
    critic_app = typer.Typer(help="Learned critics: train one from labels.")
    critic_app.command("train")(critic_train)
    app.add_typer(critic_app, name="critic")
