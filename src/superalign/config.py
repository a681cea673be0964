"""Run configuration: YAML plus dotted overrides, validated once at start-up.

Each section's model lives beside the role it configures (``critic/settings.py``,
``learn/settings.py`` ...); the loop's section lives here, because ``loop`` imports
this module and not the reverse. Component names are checked against the registry and
component arguments against each component's settings model, so a typo fails before
any model loads, with the key path and the valid values in the message.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import to_jsonable_python

from . import registry
from .attack.settings import AttackerSection
from .critic.settings import CriticSection
from .errors import ConfigError
from .eval.settings import EvalSection
from .learn.settings import LearnerSection
from .models import DEFAULT_MODEL, ModelSpec, validate_spec
from .settings import ComponentSpec

MAX_ROUNDS = 10_000
MAX_QUERIES_PER_ROUND = 1_000_000
# A run name is one directory under runs/: letters, digits, '.', '_', '-', not dots only.
RUN_NAME = re.compile(r"(?!\.+$)[A-Za-z0-9._-]{1,100}")


def validate_run_name(name: str, where: str = "name") -> str:
    """``name`` if it is one safe path component (the run directory is runs/<name>)."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: {name!r} is not a valid run name; use one directory name of letters, "
            "digits, '.', '_' or '-' (no '/', not '.' or '..', at most 100 characters)"
        )
    return name


class LoopSection(BaseModel):
    """The loop's own section. It lives here, not in ``superalign.loop``, because the loop
    reads the whole run configuration: ``loop`` imports ``config``, never the reverse."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(
        2, ge=1, le=MAX_ROUNDS, description="rounds of attack, critique, train, evaluate"
    )
    queries_per_round: int = Field(
        64, ge=1, le=MAX_QUERIES_PER_ROUND, description="attacker queries per round"
    )
    max_new_tokens: int = Field(96, ge=1, description="learner reply length")
    human_budget: int = Field(8, ge=0, description="human labels spent per round")
    labels: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(name="gold"),
        description="human label source (default: a simulated expert, the learned critic "
        "trained on the shipped calibration split, apart from training and evaluation)",
    )
    seed: int = 0


class GoldSettings(BaseModel):
    """Settings of the simulated expert (``loop.labels`` named ``gold``). Here, below the
    loop that uses them, because checking a config reads them (``check_judges_apart``)."""

    model_config = ConfigDict(extra="forbid")

    file: str | None = Field(
        None,
        description="JSONL of true labels (response_id + label, or query + response + label), "
        "written with the data; looked up first",
    )
    critic: ComponentSpec | None = Field(
        default_factory=lambda: ComponentSpec(name="learned", args={"split": "calibration"}),
        description="a critic acting as the expert for pairs the file does not cover (default: "
        "the learned critic of the shipped calibration split; or an LM judge on a served "
        "model); never one of the training critics; null: the file only",
    )
    model: str | None = Field(
        None, description="model reference for an expert critic that needs one (openai:M@URL)"
    )
    error_rate: float = Field(0.0, ge=0, le=0.5, description="simulated expert mistakes")
    seed: int = 0


def _default_models() -> dict[str, ModelSpec]:
    return {
        role: ModelSpec(backend="hf", model=DEFAULT_MODEL)
        for role in ("learner", "attacker", "judge")
    }


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("run", description="run name; the run directory is runs/<name>")
    models: dict[str, ModelSpec] = Field(default_factory=_default_models)
    attacker: AttackerSection = Field(default_factory=AttackerSection)
    critic: CriticSection = Field(default_factory=CriticSection)
    learner: LearnerSection = Field(default_factory=LearnerSection)
    loop: LoopSection = Field(default_factory=LoopSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not RUN_NAME.fullmatch(v):
            raise ValueError(
                "not a valid run name; use one directory name of letters, digits, "
                "'.', '_' or '-' (no '/', not '.' or '..', at most 100 characters)"
            )
        return v

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({e})") from e
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
        value = float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string; users mean a number
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                node = node[_index(part, node, where)]
                continue
            if not isinstance(node.get(part, {}), dict | list):
                raise ConfigError(f"override {item!r}: {where} is a value, not a section")
            node = node.setdefault(part, {})
        last = path[-1]
        if isinstance(node, list):
            node[_index(last, node, ".".join(path))] = value
        else:
            node[last] = value
    return data


def _index(part: str, node: list, where: str) -> int:
    try:
        i = int(part)
        node[i]
    except (ValueError, IndexError) as e:
        raise ConfigError(f"{where}: {part!r} is not an index of a list of {len(node)}") from e
    return i


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or the defaults), apply ``key=value`` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if p.is_dir():
            inside = sorted(q.name for q in p.glob("*.y*ml") if q.is_file())[:5]
            hint = f" (it holds {', '.join(inside)})" if inside else ""
            raise ConfigError(
                f"config file {p} is a directory; give a YAML file{hint}, e.g. configs/default.yaml"
            )
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"config file {p} is not UTF-8 text (byte {e.start}); save it as UTF-8"
            ) from e
        except OSError as e:
            raise ConfigError(f"config file {p} cannot be read: {e.strerror or e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections")
    if overrides:
        # Start from the defaults so `--set critic.critics.0.name=x` has a list to index.
        merged = RunConfig().model_dump(mode="json")
        _deep_update(merged, data)
        data = apply_overrides(merged, overrides)
    try:
        config = RunConfig(**data)
    except ValidationError as e:
        raise ConfigError(registry.format_validation(e)) from e
    validate_components(config)
    return config


def _deep_update(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "models":
            _deep_update(base[k], v)
        else:
            base[k] = v


def _check_component(
    kind: str, spec: ComponentSpec, where: str, name_at: str | None = None
) -> None:
    registry.get(kind, spec.name, where=name_at or f"{where}.name")
    registry.settings_for(kind, spec.name, spec.args, f"{where}.args")


def validate_components(config: RunConfig) -> None:
    """Check every component name and its arguments against the registry."""
    for role, spec in config.models.items():
        validate_spec(spec, where=f"models.{role}")
    for section, ref in (
        ("attacker", config.attacker.model),
        ("critic", config.critic.model),
        ("learner", config.learner.model),
    ):
        if ref not in config.models:
            raise ConfigError(
                f"{section}.model: {ref!r} is not a model under `models`; "
                f"defined: {', '.join(config.models) or '(none)'}"
            )
    for i, spec in enumerate(config.critic.critics):
        _check_component("critic", spec, f"critic.critics.{i}")
    for i, name in enumerate(config.attacker.mutators or []):
        registry.get("mutator", name, where=f"attacker.mutators.{i}")
    _check_component(
        "algorithm",
        ComponentSpec(name=config.learner.algorithm, args=config.learner.args),
        "learner",
        name_at="learner.algorithm",
    )
    registry.get("attacker", config.attacker.name, where="attacker.name")
    _check_component("label_source", config.loop.labels, "loop.labels")
    _check_component("critic", config.eval.judge, "eval.judge")
    check_judges_apart(config)


def check_judges_apart(config: RunConfig) -> list[str]:
    """The evaluation judge, the simulated expert and the training critics share no
    signal (superalign.critic.check_apart); with eval.allow_shared_judge the conflicts
    are returned instead of raised."""
    from .critic import check_apart

    expert = None
    if config.loop.labels.name == "gold":
        expert = GoldSettings(**config.loop.labels.args).critic

    def model_id(name: str | None) -> str | None:
        spec = config.models.get(name) if name else None
        return spec.model_dump_json() if spec is not None else name

    expert_model = config.loop.labels.args.get("model")
    return check_apart(
        config.critic.critics,
        config.eval.judge,
        expert,
        allow=config.eval.allow_shared_judge,
        models=(model_id(config.critic.model), model_id(config.eval.judge_model), expert_model),
    )


def explain_fields(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[dict[str, str]]:
    """Every field of ``model``, nested sections included: key path, type, default and
    description (``superalign config show --explain``). A mapping of sections shows its
    key as ``<name>``, a list of sections as ``[i]``."""
    rows: list[dict[str, str]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        if field.is_required():
            shown = "(required)"
        elif isinstance(default, BaseModel):
            shown = ""  # a section: its fields follow
        else:
            shown = json.dumps(to_jsonable_python(default))
        rows.append(
            {
                "key": path,
                "type": _type_name(field.annotation),
                "default": shown,
                "description": field.description or "",
            }
        )
        nested, suffix = _nested_model(field.annotation)
        if nested is not None:
            rows.extend(explain_fields(nested, f"{path}{suffix}."))
    return rows


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The section model inside ``annotation`` (itself, a dict's values or a list's items)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and len(args) == 2:
        inner, _ = _nested_model(args[1])
        return inner, ".<name>"
    if origin is list and args:
        inner, _ = _nested_model(args[0])
        return inner, "[i]"
    return None, ""


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(annotation))  # drop module paths
