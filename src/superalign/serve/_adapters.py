"""LoRA adapters loaded into a served model at run time, as vLLM's dynamic LoRA endpoints
offer them (``POST /v1/load_lora_adapter``, ``POST /v1/unload_lora_adapter``).

The served model stays one network: each adapter is a peft adapter of it (peft's
multi-adapter ``load_adapter``), and a batch is generated with exactly one of them active
(``using``), or with none (the base model: the adapters disabled; a served round
checkpoint keeps its own adapter). What a request may load is checked before the model
is touched: a directory holding a peft LoRA adapter (``adapter_config.json`` and
``adapter_model.safetensors``: no pickle is ever read) whose every tensor fits a layer
of this model, under a new plain name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import HFChatModel

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}")
MAX_ADAPTERS = 16
_OWN = "default"  # peft's name for the adapter of a served round checkpoint
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.(lora_A|lora_B)(?:\.[^.]+)?\.weight$")


class AdapterError(Exception):
    """A load or unload request cannot be honoured; ``status`` and ``param`` say how."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


@dataclass(frozen=True)
class Adapter:
    name: str
    path: str
    created: int


def check_name(name: Any, served_name: str) -> str:
    """``name`` when it can name an adapter; an AdapterError saying the rule if not."""
    if not isinstance(name, str) or not name:
        raise AdapterError("'lora_name' must be a non-empty string", "lora_name")
    if not NAME.fullmatch(name):
        raise AdapterError(
            f"'lora_name' {name[:80]!r} is not a plain name: use 1 to 200 letters, digits and "
            "._:@/+- starting with a letter or digit",
            "lora_name",
        )
    if name == served_name:
        raise AdapterError(
            f"'lora_name' {name!r} is the base model's own name; pick another", "lora_name"
        )
    return name


def check_path(path: Any) -> Path:
    """The adapter directory ``path`` names: an AdapterError (404 when nothing is there,
    400 when it is not a peft LoRA adapter in safetensors) otherwise."""
    if not isinstance(path, str) or not path:
        raise AdapterError("'lora_path' must be a non-empty string", "lora_path")
    where = Path(path).expanduser()
    if not where.exists():
        raise AdapterError(f"'lora_path' {path!r}: no such directory", "lora_path", 404)
    if not where.is_dir():
        raise AdapterError(
            f"'lora_path' {path!r} is a file; give the directory peft's save_pretrained "
            "wrote (adapter_config.json, adapter_model.safetensors)",
            "lora_path",
        )
    config = where / "adapter_config.json"
    weights = where / "adapter_model.safetensors"
    if not config.is_file() or not weights.is_file():
        raise AdapterError(
            f"'lora_path' {path!r} is not a peft adapter: it needs adapter_config.json and "
            "adapter_model.safetensors, as peft's save_pretrained writes them (a round "
            "checkpoint runs/NAME/checkpoints/round-N holds both)",
            "lora_path",
        )
    try:
        kind = json.loads(config.read_text(encoding="utf-8")).get("peft_type")
    except (OSError, ValueError, AttributeError) as e:
        raise AdapterError(
            f"'lora_path' {path!r}: adapter_config.json is not a JSON object ({e})", "lora_path"
        ) from e
    if kind != "LORA":
        raise AdapterError(
            f"'lora_path' {path!r} holds a {kind!r} adapter; this server loads LoRA adapters",
            "lora_path",
        )
    return where


def check_fits(model: Any, weights: Path) -> None:
    """An AdapterError unless every LoRA tensor in ``weights`` (a safetensors file) belongs
    to a linear layer of ``model`` with matching sizes: an adapter trained on another base
    model is refused before anything is loaded."""
    from safetensors import safe_open

    from ..models import base_network

    layers = dict(base_network(model).named_modules())
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise AdapterError(
            f"'lora_path': {weights} is not a readable safetensors file ({e})", "lora_path"
        ) from e
    for key, shape in shapes.items():
        m = _LORA_KEY.match(key)
        if m is None:
            continue  # not a LoRA matrix (an embedding delta, a saved module): peft checks it
        layer = layers.get(m[1])
        base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
        size_in = getattr(base, "in_features", None)
        size_out = getattr(base, "out_features", None)
        if size_in is None or size_out is None or len(shape) != 2:
            raise AdapterError(
                f"the adapter at 'lora_path' is not for this base model: it adapts "
                f"{m[1]!r}, which this model has no linear layer for",
                "lora_path",
            )
        fits = shape[1] == size_in if m[2] == "lora_A" else shape[0] == size_out
        if not fits:
            raise AdapterError(
                f"the adapter at 'lora_path' is not for this base model: {m[1]!r} is "
                f"{size_in}->{size_out} here, its {m[2]} is {shape[0]}x{shape[1]}",
                "lora_path",
            )


class AdapterSet:
    """The adapters loaded into ``owner`` at run time, and the one a batch uses.

    Every method that touches the network runs on the batcher's worker thread
    (``Batcher.call``, ``Batcher(using=...)``), never beside a generation."""

    def __init__(self, owner: HFChatModel, served_name: str, limit: int = MAX_ADAPTERS) -> None:
        self.owner = owner
        self.served_name = served_name
        self.limit = limit
        self.loaded: dict[str, Adapter] = {}
        # A served round checkpoint carries its own adapter: the served name means it.
        self._own = _OWN if owner.has_adapter else None
        self._active: str | None = self._own

    def check_new(self, name: Any, path: Any) -> tuple[str, Path]:
        """The name and directory of a load request, checked without the model."""
        name = check_name(name, self.served_name)
        if name in self.loaded or (name == _OWN and self._own):
            raise AdapterError(
                f"an adapter named {name!r} is already loaded; unload it first "
                "(POST /v1/unload_lora_adapter) or pick another name",
                "lora_name",
            )
        if len(self.loaded) >= self.limit:
            raise AdapterError(
                f"this server holds at most {self.limit} adapters and all are loaded; "
                "unload one first (POST /v1/unload_lora_adapter)",
                "lora_name",
            )
        return name, check_path(path)

    def load(self, name: str, path: Path, created: int) -> Adapter:
        """Load the adapter at ``path`` as ``name`` (checked by ``check_new``)."""
        from peft import PeftModel

        name, path = self.check_new(name, str(path))  # again: another load may have won
        check_fits(self.owner.model, path / "adapter_model.safetensors")
        model = self.owner.model
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(str(path), adapter_name=name)
            else:
                self.owner.model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
        except Exception as e:  # peft raises many types; the model is put back as it was
            self._forget(name)
            raise AdapterError(
                f"the adapter at 'lora_path' could not be loaded into this base model: "
                f"{type(e).__name__}: {str(e)[:300]}",
                "lora_path",
            ) from e
        self.owner.model.eval()
        self._select(self._active)  # loading may have made the new adapter active
        adapter = Adapter(name=name, path=str(path.resolve()), created=created)
        self.loaded[name] = adapter
        return adapter

    def unload(self, name: Any) -> Adapter:
        """Remove adapter ``name``; an AdapterError (404) when none is loaded under it."""
        if not isinstance(name, str) or not name:
            raise AdapterError("'lora_name' must be a non-empty string", "lora_name")
        adapter = self.loaded.get(name)
        if adapter is None:
            listed = ", ".join(sorted(self.loaded)) or "none"
            raise AdapterError(
                f"no adapter named {name[:80]!r} is loaded (loaded: {listed})", "lora_name", 404
            )
        del self.loaded[name]
        self._forget(name)
        return adapter

    def _forget(self, name: str) -> None:
        """Take adapter ``name`` out of the network, unwrapping it when none is left."""
        from peft import PeftModel

        model = self.owner.model
        if not isinstance(model, PeftModel) or name not in model.peft_config:
            return
        if self._own is None and set(model.peft_config) == {name}:
            self.owner.model = model.unload().eval()  # the plain base model again
        else:
            if model.active_adapter == name:  # peft would pick another one, with a warning
                model.set_adapter(next(n for n in model.peft_config if n != name))
            model.delete_adapter(name)
        if self._active == name:
            self._active = self._own
        self._select(self._active)
        self.owner.weights_changed()

    def _select(self, name: str | None) -> None:
        """Make adapter ``name`` (None: the served model's own, if any) the active one."""
        model = self.owner.model
        target = name if name is not None else self._own
        if target is not None and getattr(model, "active_adapter", None) != target:
            model.set_adapter(target)
            self.owner.weights_changed()
        self._active = name

    @contextmanager
    def using(self, name: str | None) -> Iterator[None]:
        """Within the block the model generates with adapter ``name``; None: the base model
        (loaded adapters off; a served checkpoint's own adapter on)."""
        if name is not None and name not in self.loaded:
            raise AdapterError(
                f"adapter {name!r} was unloaded before this request ran", "model", 404
            )
        self._select(name)
        if name is None and self._own is None and self.owner.has_adapter:
            with self.owner.base_weights():
                yield
            return
        yield
