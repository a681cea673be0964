"""Name -> factory registry for every pluggable component.

Built-ins register themselves with ``@register(kind, name)``; third-party packages
add components through the entry-point group ``superalign.<kind>`` (for example
``superalign.critic``), each entry point naming a factory. A component may declare a
pydantic ``settings`` model: its arguments in a config are validated against it when
the config is loaded, so a typo fails at start-up rather than mid-run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import ConfigError, UnknownComponentError

KINDS = ("backend", "critic", "mutator", "attacker", "algorithm", "label_source")

# Modules whose import registers the built-in components. A module that does not
# exist yet (a role not installed) is skipped.
_BUILTIN_MODULES = (
    "superalign.models",
    "superalign.critic",
    "superalign.attack",
    "superalign.learn",
    "superalign.loop",
    "superalign.oversight",
)


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    settings: type[BaseModel] | None = None
    summary: str = ""
    needs_model: bool = False  # a critic that calls a chat model (judge, pairwise...)
    # What a critic's judgement rests on (critic.signals): a fixed set, or a function of
    # the critic's settings; None: its name and settings, or its model if it needs one.
    signals: frozenset[str] | Callable[[Any], set[str]] | None = None


_REGISTRY: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
_loaded = False


def register(
    kind: str,
    name: str,
    settings: type[BaseModel] | None = None,
    *,
    needs_model: bool = False,
    signals: Iterable[str] | Callable[[Any], set[str]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``factory`` as component ``name`` of ``kind``; ``needs_model``
    says it calls a chat model, so callers load one only when some component does.
    ``signals`` (critics) names what its judgement rests on, for the check that keeps the
    evaluation judge apart from the training critics: the rule families it reads (a rule
    critic must declare them, or the check cannot see two critics share one), or a
    function from its settings spec to them."""
    declared = signals if signals is None or callable(signals) else frozenset(signals)
    if kind not in _REGISTRY:
        raise ValueError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        doc = (factory.__doc__ or "").strip().splitlines()
        summary = doc[0] if doc else ""
        _REGISTRY[kind][name] = Component(
            kind, name, factory, settings, summary, needs_model, declared
        )
        return factory

    return wrap


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
    for kind in KINDS:
        for ep in entry_points(group=f"superalign.{kind}"):
            if ep.name not in _REGISTRY[kind]:
                _REGISTRY[kind][ep.name] = Component(kind, ep.name, ep.load())


def names(kind: str) -> list[str]:
    _load()
    return sorted(_REGISTRY[kind])


def get(kind: str, name: str, where: str = "") -> Component:
    """Look a component up; an unknown name raises and lists the valid ones."""
    _load()
    found = _REGISTRY[kind].get(name)
    if found is None:
        at = f" at {where}" if where else ""
        valid = ", ".join(sorted(_REGISTRY[kind])) or "(none registered)"
        raise UnknownComponentError(f"unknown {kind} {name!r}{at}; valid names: {valid}")
    return found


def needs_model(kind: str, names: Iterable[str], where: str = "") -> bool:
    """Whether any of the named components calls a chat model (declared at registration)."""
    return any([get(kind, name, where).needs_model for name in names])  # checks every name


def format_validation(e: ValidationError, where: str = "") -> str:
    """A pydantic error as one line per field, each named by its key path under ``where``
    (``learner.args.epochs: ...``), with the value that was given."""
    lines = []
    for err in e.errors():
        path = ".".join([*([where] if where else []), *(str(x) for x in err["loc"])])
        lines.append(f"{path}: {err['msg']} (got {err.get('input')!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def settings_for(
    kind: str, name: str, args: dict[str, Any] | None, where: str = ""
) -> BaseModel | None:
    """Component ``name``'s settings built from ``args`` (None for a component without a
    settings class); invalid ones raise ``ConfigError`` naming each key under ``where``."""
    component = get(kind, name)
    if component.settings is None:
        return None
    try:
        return component.settings(**dict(args or {}))
    except ValidationError as e:
        raise ConfigError(format_validation(e, where or f"{kind} {name!r}")) from e


def create(kind: str, name: str, args: dict[str, Any] | None = None, **deps: Any) -> Any:
    """Build component ``name`` with validated ``args`` plus run-time dependencies."""
    settings = settings_for(kind, name, args)
    if settings is not None:
        return get(kind, name).factory(settings, **deps)
    return get(kind, name).factory(**dict(args or {}), **deps)
