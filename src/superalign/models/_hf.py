"""transformers backend: local checkpoints, bundled aliases, hub ids, peft adapters."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ModelError
from ..registry import register
from ..timing import charge, charged
from ..types import Chat, GenParams
from . import _bundled
from ._base import apply_stop
from ._common import base_model, cut_at_eos, eos_ids
from ._served import RolloutSettings

log = logging.getLogger(__name__)


class HFSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(_bundled.DEFAULT_MODEL, description="bundled alias, local path or hub id")
    adapter: str | None = Field(None, description="peft adapter directory applied on top")
    device: str = Field("auto", description="'auto' (GPU when present), 'cpu', 'cuda', ...")
    dtype: str = Field("auto", description="'auto' (float32 on CPU, bfloat16 on GPU) or a name")
    batch_size: int = Field(32, ge=1, description="chats per forward batch")
    max_context: int | None = Field(None, ge=16, description="override the model's context")
    fast: bool = Field(True, description="use the fast generation path where available")
    fast_precision: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        "float32",
        description="matrix products of the fast CPU path's decoder layers: float32 (exact; "
        "the default, so a model's answers do not depend on the CPU), auto (bfloat16 where "
        "a timed probe at load finds it >= 1.2x float32, else float32; float32 off the "
        "CPU; configs/default.yaml), or bfloat16 / int8 (faster where the CPU supports "
        "them, approximate: docs/benchmarks.md)",
    )
    train_precision: Literal["auto", "float32", "bfloat16"] = Field(
        "float32",
        description="training on the CPU (TRL's trainers): float32 (the default), bfloat16 "
        "autocast, or auto (bfloat16 autocast where a timed probe at a training shape finds "
        "bfloat16 products >= 1.2x float32, else float32; configs/default.yaml). Off the "
        "CPU the model's own dtype rules and this is ignored",
    )
    trainable: bool = Field(False, description="load a checkpoint's adapter for further training")
    chat_template: str | None = Field(
        None,
        description="chat template for a tokenizer without one (or to replace its own): a "
        "Jinja template file, or the template text itself",
    )
    rollouts: RolloutSettings | None = Field(
        None,
        description="generate through an OpenAI-compatible server holding the same base "
        "model (superalign serve, vLLM with runtime LoRA): {url, api_key_env, model, "
        "concurrency, ...}; training and scoring stay in process, and each round's LoRA "
        "adapter is loaded on the server (docs/scale.md)",
    )


def resolve_path(model: str) -> str:
    """A bundled alias becomes its cached checkpoint; anything else is returned as is."""
    if model in _bundled.BUNDLED:
        return str(_bundled.resolve(model))
    return model


def _adapter_base(adapter_dir: Path) -> str | None:
    """The base model a checkpoint's adapter was trained on, from its metadata."""
    meta = adapter_dir / "superalign_checkpoint.json"
    if meta.is_file():
        base = json.loads(meta.read_text()).get("base_model")
        if base:
            return base
    cfg = adapter_dir / "adapter_config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("base_model_name_or_path")
    return None


class HFChatModel:
    """A transformers causal LM behind the ChatModel protocol.

    Prompts are rendered with the tokenizer's chat template and left-padded for
    batched generation; prompts longer than the context minus the generation budget
    are cut from the left (the latest turns are kept) with a warning.
    """

    def __init__(self, settings: HFSettings | None = None, **kwargs: Any) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings = settings or HFSettings(**kwargs)
        s = self.settings
        model_path = s.model
        adapter = s.adapter
        if adapter is None and (Path(model_path) / "adapter_config.json").is_file():
            adapter = model_path
            model_path = _adapter_base(Path(model_path)) or _bundled.DEFAULT_MODEL
        self.name = s.model
        path = resolve_path(model_path)
        self.device = _pick_device(s.device)
        dtype = _pick_dtype(s.dtype, self.device)
        local_only = os.environ.get("HF_HUB_OFFLINE", "1") == "1"
        tokenizer_in_adapter = bool(adapter and _has_tokenizer(adapter))
        if Path(path).exists():  # a local path: say what it lacks before transformers fails
            check_model_dir(Path(path), needs_tokenizer=not tokenizer_in_adapter)
        try:
            tok_source = adapter if tokenizer_in_adapter else path
            self.tokenizer = AutoTokenizer.from_pretrained(tok_source, local_files_only=local_only)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, local_files_only=local_only
            )
        except (OSError, ValueError) as e:  # missing files, an unknown model type
            raise ModelError(
                f"could not load model {model_path!r}: {e}. Give a bundled alias "
                f"({', '.join(_bundled.BUNDLED)}), a local checkpoint directory, or a hub id "
                "with HF_HUB_OFFLINE=0 where the network allows."
            ) from e
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter, is_trainable=s.trainable)
        self.model = model.to(self.device).eval()
        self.adapter = adapter
        template = _chat_template(self.tokenizer, s, model_path)
        if template is not None:
            self.tokenizer.chat_template = template
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        cfg = self.model.config
        self.max_context = s.max_context or getattr(cfg, "max_position_embeddings", 2048)
        self._torch = torch
        self.fast = None  # set by the fast-rollout engine when available
        self.served = None  # generation through a server (``rollouts``)
        if s.rollouts is not None:
            from ._served import ServedRollouts

            self.served = ServedRollouts(self, s.rollouts)
        elif s.fast:
            from ._engines import attach_fast  # imports torch: only once a model loads

            self.fast = attach_fast(self)

    def weights_changed(self) -> None:
        """Tell the model its weights were updated in place (after a training round),
        so a fast generation engine rebuilds from the new weights (and a rollout server
        gets the new adapter)."""
        if self.fast is not None:
            self.fast.refresh()
        if self.served is not None:
            self.served.refresh()

    # -- prompts ---------------------------------------------------------------

    def render(self, chat: Chat) -> str:
        """The chat as the model sees it (its tokenizer's chat template, checked at load),
        ending with the assistant's turn opener."""
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)

    def encode_prompts(self, chats: Sequence[Chat], room: int) -> list[list[int]]:
        """Token ids per chat, cut from the left to leave ``room`` tokens of context."""
        budget = max(1, self.max_context - room)
        out = []
        for chat in chats:
            ids = self.tokenizer(self.render(chat), add_special_tokens=False).input_ids
            if len(ids) > budget:
                log.warning(
                    "prompt of %d tokens exceeds the context budget of %d; "
                    "keeping its last %d tokens",
                    len(ids), budget, budget,
                )  # fmt: skip
                ids = ids[-budget:]
            out.append(ids)
        return out

    def pad_left(self, batch: list[list[int]]) -> tuple[Any, Any]:
        """Token-id rows as a left-padded (ids, attention mask) pair on the model's device."""
        torch = self._torch
        width = max(len(x) for x in batch)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- ChatModel -------------------------------------------------------------

    def generate(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        if not chats:
            return []
        if self.served is not None:
            return self._generate_served(chats, params)
        prompts = self.encode_prompts(chats, params.max_new_tokens)
        if params.seed is not None:
            self._torch.manual_seed(params.seed)
        with charge("generate"):
            if self.fast is not None:
                token_lists = self.fast.generate_ids(prompts, params)
            else:
                token_lists = self.plain_generate_ids(prompts, params)
        texts = self.tokenizer.batch_decode(token_lists, skip_special_tokens=True)
        return [apply_stop(t, params.stop).strip() for t in texts]

    def _generate_served(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        """Replies from the rollout server; a prompt too long for the context is answered
        here instead (cut from the left, as in-process generation does), where a server
        would refuse it."""
        assert self.served is not None  # only called with rollouts set
        if params.seed is not None:  # the process's random state after it as in process
            self._torch.manual_seed(params.seed)
        budget = max(1, self.max_context - params.max_new_tokens)
        lengths = [
            len(self.tokenizer(self.render(c), add_special_tokens=False).input_ids) for c in chats
        ]
        near = [i for i, n in enumerate(lengths) if n <= budget]
        far = [i for i, n in enumerate(lengths) if n > budget]
        with charge("generate"):
            replies = self.served.generate([chats[i] for i in near], params)
            out = dict(zip(near, replies, strict=True))
            if far:
                prompts = self.encode_prompts([chats[i] for i in far], params.max_new_tokens)
                ids = self.plain_generate_ids(prompts, params)
                texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
                out.update(
                    zip(far, [apply_stop(t, params.stop).strip() for t in texts], strict=True)
                )
        return [out[i] for i in range(len(chats))]

    def plain_generate_ids(self, prompts: list[list[int]], params: GenParams) -> list[list[int]]:
        """New token ids per prompt from plain ``model.generate``, ``batch_size`` prompts of
        similar length at a time (each batch pads little), in the prompts' order."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: dict[int, list[int]] = {}
        bs = self.settings.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            batch = self.generate_ids([prompts[i] for i in idx], params)
            results.update(zip(idx, batch, strict=True))
        return [results[i] for i in range(len(prompts))]

    def generate_ids(self, prompts: list[list[int]], params: GenParams) -> list[list[int]]:
        """Plain ``model.generate`` on one batch of prompt ids; returns new token ids."""
        ids, mask = self.pad_left(prompts)
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens}
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with self._torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )
        new = out[:, ids.shape[1] :].tolist()
        eos = eos_ids(self)
        return [cut_at_eos(row, eos) for row in new]

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """Summed log p(continuation | chat) under the model, one float per pair."""
        return [total for total, _ in self._continuation_logprobs(chats, continuations)]

    def perplexities(
        self, chats: Sequence[Chat], continuations: Sequence[str]
    ) -> list[float | None]:
        """exp(-mean token log p) of each continuation as the reply to its chat; None for an
        empty continuation. One forward pass per batch."""
        return [
            math.exp(-total / n) if n else None
            for total, n in self._continuation_logprobs(chats, continuations)
        ]

    @property
    def has_adapter(self) -> bool:
        """Whether the model is a peft model (its base weights one context away)."""
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    @contextmanager
    def base_weights(self) -> Iterator[None]:
        """Within the block the model computes with its base weights: a peft adapter is
        disabled (no second copy of the model); a model without one is its own base."""
        if not self.has_adapter:
            yield
            return
        with self.model.disable_adapter():
            yield

    @charged("generate")  # model inference: billed with generation
    def _continuation_logprobs(
        self, chats: Sequence[Chat], continuations: Sequence[str]
    ) -> list[tuple[float, int]]:
        """(summed log p, token count) of each continuation as the reply to its chat."""
        torch = self._torch
        if len(chats) != len(continuations):
            raise ValueError("logprobs needs one continuation per chat")
        conts = [self.tokenizer(c, add_special_tokens=False).input_ids for c in continuations]
        prompts = [
            self.encode_prompts([chat], len(c))[0] for chat, c in zip(chats, conts, strict=True)
        ]
        # Batched by total length (each batch pads little), the results put back in order.
        order = sorted(range(len(chats)), key=lambda i: len(prompts[i]) + len(conts[i]))
        out: dict[int, tuple[float, int]] = {}
        bs = self.settings.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            longest = max(len(conts[i]) for i in idx)
            if longest == 0:
                out.update((i, (0.0, 0)) for i in idx)
                continue
            ids, mask = self.pad_left([prompts[i] + conts[i] for i in idx])
            with torch.no_grad():
                # Logits only where a continuation token is predicted: the last
                # ``longest`` positions before the end (the vocabulary product and its
                # softmax are the costly part, the prompt needs neither).
                logits = self._last_logits(ids, mask, longest + 1)[:, :-1]  # (B, longest, V)
                targets = ids[:, -longest:].unsqueeze(-1)
                token_lp = logits.gather(-1, targets).squeeze(-1) - logits.logsumexp(-1)
            for row, i in enumerate(idx):
                # continuation tokens sit at the last len(c) positions of the row
                c = conts[i]
                total = float(token_lp[row, longest - len(c) :].sum()) if c else 0.0
                out[i] = (total, len(c))
        return [out[i] for i in range(len(chats))]

    def _last_logits(self, ids: Any, mask: Any, keep: int) -> Any:
        """float32 logits of the last ``keep`` positions. Where rollouts run in bfloat16
        (``fast_precision`` resolved so: its products measured faster on this CPU), the
        decoder layers run under bfloat16 autocast too and the LM head in float32 on their
        output, so each log-probability keeps float32's resolution over the vocabulary;
        elsewhere the model's own forward in its own dtype."""
        if getattr(self.fast, "precision", None) != "bfloat16":
            out = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=keep)
            return out.logits.float()
        # Only Llama-layout models get a bfloat16 engine (``_fast.SUPPORTED_TYPES``):
        # their logits are the LM head's product, nothing scaled or capped after it.
        net = base_model(self.model)
        with self._torch.autocast("cpu", dtype=self._torch.bfloat16):
            hidden = net.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)
        return net.get_output_embeddings()(hidden.last_hidden_state[:, -keep:].float())


def _chat_template(tokenizer: Any, settings: HFSettings, model: str) -> str | None:
    """The ``chat_template`` setting's template (read from its file), or None to keep the
    tokenizer's own; a ModelError saying what to do when there is neither."""
    given = settings.chat_template
    if given:
        path = Path(given).expanduser()
        if path.is_file():
            return path.read_text(encoding="utf-8")
        if "{" not in given:  # a template has Jinja tags; this looks like a missing file
            raise ModelError(f"chat_template {given!r}: no such file")
        return given
    own = tokenizer.chat_template
    if isinstance(own, dict):  # several named templates: the default one renders chats
        own = own.get("default")
    if not own:
        raise ModelError(
            f"the tokenizer of model {model!r} has no chat template, so chats cannot be "
            "rendered for it. Use an instruct/chat checkpoint whose tokenizer has one, pass "
            "an adapter or checkpoint directory whose tokenizer has one, or set the model's "
            "chat_template to a Jinja template file (or the template text)."
        )
    return None


def _has_tokenizer(path: str) -> bool:
    return (Path(path) / "tokenizer_config.json").is_file()


# What transformers' save_pretrained writes: one of each group makes a loadable model.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_MODEL_DIR_NEEDS = (
    "A model directory holds config.json, the weights (model.safetensors or "
    "pytorch_model.bin) and the tokenizer (tokenizer.json, tokenizer_config.json), as "
    "transformers' save_pretrained writes them; a round checkpoint "
    "(runs/NAME/checkpoints/round-N) holds a LoRA adapter (adapter_config.json) instead. "
    f"Or give a bundled alias ({', '.join(_bundled.BUNDLED)})."
)


def check_model_dir(path: Path, *, needs_tokenizer: bool = True) -> None:
    """A ModelError naming ``path`` and what it lacks when it is not a loadable model
    directory (a file, an empty folder, /etc); nothing when it is one."""
    if not path.is_dir():
        raise ModelError(
            f"model {str(path)!r} is a file, not a model directory. {_MODEL_DIR_NEEDS}"
        )
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / name).is_file() for name in WEIGHT_FILES) and not any(
        path.glob("*.safetensors")
    ):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if needs_tokenizer and not any((path / name).is_file() for name in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json or tokenizer_config.json)")
    if missing:
        raise ModelError(
            f"model directory {str(path)!r} is not a model checkpoint: it has no "
            f"{', '.join(missing)}. {_MODEL_DIR_NEEDS}"
        )


def _pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return getattr(torch, dtype)
    except AttributeError as e:
        raise ModelError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from e


@register("backend", "hf", settings=HFSettings)
def hf_backend(settings: HFSettings) -> HFChatModel:
    """transformers model: bundled alias, local path or hub id, optional peft adapter."""
    return HFChatModel(settings)
