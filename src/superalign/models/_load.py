"""Build a ChatModel from a spec: a config mapping or a one-line reference."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from .. import registry
from ._base import ChatModel


class ModelSpec(BaseModel):
    """``backend`` picks the backend; every other key is that backend's setting."""

    model_config = ConfigDict(extra="allow")

    backend: str = "hf"

    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def parse_model_ref(ref: str) -> ModelSpec:
    """Read a one-line model reference, as the CLI takes it.

    - ``smollm2-135m``, ``./checkpoints/round-2``, ``org/model``: the hf backend
    - ``hf:PATH``: the hf backend, explicitly
    - ``openai:MODEL@http://host:port/v1``: an OpenAI-compatible endpoint
    - ``mock`` or ``mock:REPLY``: the scripted mock
    """
    backend, _, rest = ref.partition(":")
    if backend == "openai" and rest:
        name, _, base = rest.partition("@")
        return ModelSpec(backend="openai", model=name, **({"base_url": base} if base else {}))
    if backend == "mock":
        return ModelSpec(backend="mock", **({"default": rest} if rest else {}))
    if backend == "hf" and rest:
        return ModelSpec(backend="hf", model=rest)
    return ModelSpec(backend="hf", model=ref)


def validate_spec(spec: ModelSpec | dict | str, where: str = "model") -> ModelSpec:
    """Check the backend name and its settings now, naming the key path on error."""
    if isinstance(spec, str):
        spec = parse_model_ref(spec)
    elif isinstance(spec, dict):
        spec = ModelSpec(**spec)
    registry.get("backend", spec.backend, where=f"{where}.backend")
    registry.settings_for("backend", spec.backend, spec.settings(), where)
    return spec


def load_model(spec: ModelSpec | dict | str, where: str = "model") -> ChatModel:
    """Instantiate the model a spec describes."""
    spec = validate_spec(spec, where)
    return registry.create("backend", spec.backend, spec.settings())
