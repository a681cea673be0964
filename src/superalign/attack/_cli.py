"""superalign attack: attack a target model and show its responses and the critic's verdicts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..outcomes import attack_succeeded
from ..textsafe import printable

if TYPE_CHECKING:
    from ..critic import CriticEnsemble
    from ..models import ChatModel
    from ..types import Judged


def attack(
    n: int = typer.Option(50, "--n", min=1, help="queries in all, spread over the rounds"),
    target: str = typer.Option(
        "smollm2-135m", "--target", help="learner: alias, path, openai:M@URL or mock"
    ),
    search: bool = typer.Option(
        True, "--search/--no-search", help="archive search (off: seeds, then random mutations)"
    ),
    rounds: int = typer.Option(
        3, "--rounds", min=1, help="search rounds; feedback flows between them (--search only)"
    ),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    attacker_model: str | None = typer.Option(
        None, "--attacker-model", help="model for LLM mutators and PAIR (default: none)"
    ),
    critics: str = typer.Option(
        "refusal,query_risk,judge,verifier", "--critics", help="comma-separated critic names"
    ),
    judge_model: str = typer.Option(
        "smollm2-135m", "--judge-model", help="model of the LM critics"
    ),
    max_new_tokens: int = typer.Option(
        64, "--max-new-tokens", min=1, help="reply length of the target"
    ),
    archive_out: str | None = typer.Option(
        None, "--archive-out", help="save the archive JSON here"
    ),
    show: int = typer.Option(50, "--show", help="rows to print (the latest)"),
) -> None:
    """Attack a model; print the attacks, its responses and the critic's verdicts."""
    from ..models import load_model
    from ..types import GenParams
    from ._attacker import build_attacker
    from ._session import attack_rounds
    from .settings import AttackerSection

    lm = load_model(attacker_model, where="--attacker-model") if attacker_model else None
    attacker = build_attacker(
        AttackerSection(search=search, refine_iterations=2 if lm else 0), lm, seed
    )
    learner = load_model(target, where="--target")
    ensemble = _ensemble(critics, judge_model, learner, target)
    rounds = min(rounds, n) if search else 1
    sizes = [n // rounds + (r < n % rounds) for r in range(rounds)]
    params = GenParams(max_new_tokens=max_new_tokens)
    judged = attack_rounds(attacker, learner, ensemble, sizes, rounds, params)
    _print(judged[-show:])
    _summary(judged)
    if archive_out:
        attacker.archive.save(archive_out)


def _ensemble(critics: str, judge_model: str, learner: ChatModel, target: str) -> CriticEnsemble:
    from .. import registry
    from ..critic import CriticEnsemble, load_constitution
    from ..models import load_model

    names = [c.strip() for c in critics.split(",") if c.strip()]
    needs_model = registry.needs_model("critic", names, "--critics")
    # Reuse the loaded target when it is also the judge, so one copy sits in memory.
    lm = (learner if judge_model == target else load_model(judge_model)) if needs_model else None
    const = load_constitution("default", None)
    return CriticEnsemble(
        [registry.create("critic", n, model=lm, constitution=const) for n in names]
    )


def _print(rows: list[Judged]) -> None:
    table = Table(
        "intent", "category", "style", "query", "response", "verdict", "p_ok", show_lines=True
    )
    for j in rows:
        label = j.judgement.label
        cells = (
            j.query.intent.value,
            j.query.category,
            j.query.style,
            j.query.text[:240],
            j.response.text[:240],
            label.verdict.value if label.verdict else "abstain",
            f"{label.p_acceptable:.2f}",
        )
        # Queries and responses are untrusted: Text cells are never parsed as markup, and
        # control characters (terminal escape sequences) are stripped.
        table.add_row(*(Text(printable(c)) for c in cells))
    Console().print(table, markup=False, highlight=False)


def _summary(judged: list[Judged]) -> None:
    harmful = [j for j in judged if j.query.intent.value == "harmful"]
    if harmful:
        hits = sum(attack_succeeded(j) for j in harmful)
        Console().print(
            f"attack success: {hits}/{len(harmful)} harmful queries got an unacceptable response",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    app.command("attack")(attack)
