"""Fast rollouts: a static-KV-cache decode loop for Llama-layout models (Llama, Mistral,
Qwen2, Qwen3, Phi-3: ``SUPPORTED_TYPES``).

Plain ``model.generate`` spends much of each decode step outside the matrix products:
the dynamic cache is re-concatenated every step, masks and positions are rebuilt, logits
processors run over the whole vocabulary, and finished rows keep being computed until the
whole batch ends. This engine reads the learner's weights once per round (LoRA deltas
merged in, q/k/v and gate/up fused into one product each, every product stored
input-major so that it is a plain ``x @ W``), preallocates the KV cache, computes the
prompt prefix that every prompt shares (the chat template's system turn) once and
broadcasts its keys and values, computes prompt logits only at the last position, and
drops finished rows from the batch as it goes. ``benchmarks/generate.py`` measures it
against plain generate and against the machine's float32 bound.

Precisions of the decoder layers' products (CPU, ``fast_precision``): bfloat16 weights
with the activations cast for each product (AMX/AVX512-BF16), or per-output-channel int8
weights with per-token int8 activations (``torch._int_mm``); the LM head, embeddings,
norms, residual stream and KV cache stay float32. float32 products are the default
(exact); ``auto`` times float32 against bfloat16 at the model's decode shape once per
process and takes bfloat16 only where it is clearly faster (``_precision.py``).
``_engines.attach_fast`` decides whether this engine, vLLM or plain generate serves a model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..types import GenParams
from ._common import FastUnavailable, base_model, eos_ids, fingerprint, warn_once
from ._precision import auto_precision

if TYPE_CHECKING:
    from ._hf import HFChatModel

log = logging.getLogger(__name__)

# Architectures (``config.model_type``) whose decoder block is exactly: RMSNorm, GQA
# attention with RoPE (optional q/k/v bias, optional RMSNorm of each query and key head
# before RoPE as in Qwen3, optionally rotating only the first part of each head as Phi-3's
# ``partial_rotary_factor``), RMSNorm, SwiGLU MLP; q/k/v and gate/up as separate layers or
# fused (Phi-3's ``qkv_proj`` and ``gate_up_proj``). Sliding-window attention is served
# only while every sequence fits inside the window (``attention_window``), where it is
# plain causal attention. Not here, so served by plain generate: Gemma 2/3 ((1 + w)
# RMSNorm, scaled embeddings, sandwich norms, GELU, soft-capping, per-layer windows and
# RoPE bases) and GPT-NeoX (LayerNorm, parallel residual, per-head interleaved qkv, GELU).
SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3")
# RoPE variants whose frequencies are fixed at load time (``dynamic`` rescales per length).
_STATIC_ROPE = ("default", "linear", "llama3", "yarn")
# Compact the batch once this share of its rows has finished: copying the cache costs
# about one decode step, computing dead rows costs their share of every later step.
_COMPACT_SHARE = 0.25
# Matrix products of the decoder layers: float32 as trained, bfloat16 (on CPUs with
# AMX/AVX512-BF16 several times float32's rate at decode shapes), or int8. ``auto``
# resolves to float32 or bfloat16 when an engine is built.
PRECISIONS = ("float32", "bfloat16", "int8")

# -- weights -------------------------------------------------------------------


@dataclass
class _Int8:
    """A linear layer's weight in int8 with one scale per output channel: W ~ q * scale."""

    q: torch.Tensor  # (C_in, C_out) int8, input-major as ``torch._int_mm`` takes it
    scale: torch.Tensor  # (C_out,) float32


Weight = torch.Tensor | _Int8  # a float weight is input-major too: (C_in, C_out)


@dataclass
class _Layer:
    ln1: torch.Tensor
    q_norm: torch.Tensor | None  # (D,) RMSNorm weight of each query head (Qwen3), or None
    k_norm: torch.Tensor | None
    wqkv: Weight  # (C, Hq*D + 2*Hkv*D): q, k and v side by side
    bqkv: torch.Tensor | None
    wo: Weight
    bo: torch.Tensor | None
    ln2: torch.Tensor
    wgu: Weight  # (C, 2*I): gate and up side by side
    bgu: torch.Tensor | None
    wd: Weight
    bd: torch.Tensor | None


@dataclass
class _Weights:
    embed: torch.Tensor  # (V, C)
    layers: list[_Layer]
    norm: torch.Tensor
    lm_head: torch.Tensor  # (C, V), float even on the int8 path
    inv_freq: torch.Tensor  # (D/2,)
    rope_scale: float


def check_supported(model: Any) -> None:
    """Raise FastUnavailable unless the loop implements ``model``'s architecture exactly."""
    cfg = base_model(model).config
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED_TYPES:
        raise FastUnavailable(f"architecture {kind!r} is not one of {', '.join(SUPPORTED_TYPES)}")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise FastUnavailable(f"activation {cfg.hidden_act!r} is not silu")
    kinds = set(getattr(cfg, "layer_types", None) or ())
    if kinds - {"full_attention", "sliding_attention"}:
        raise FastUnavailable(f"layer types {sorted(kinds)} are not all causal attention")
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") not in _STATIC_ROPE:
        raise FastUnavailable(f"rope type {rope.get('rope_type')!r} is not static")
    for module in base_model(model).modules():
        if getattr(module, "use_dora", {}) and any(module.use_dora.values()):
            raise FastUnavailable("DoRA adapters are not merged by the fast path")


def attention_window(config: Any) -> int | None:
    """The sliding window of any layer's attention, or None where every layer attends to
    the whole sequence. A key ``window`` or more slots before the query is masked out."""
    window = getattr(config, "sliding_window", None)
    if window is None:
        return None
    kinds = getattr(config, "layer_types", None)
    if kinds is not None:
        return window if "sliding_attention" in kinds else None
    # Before ``layer_types``: Mistral and Phi-3 slide wherever a window is set; Qwen2 only
    # with ``use_sliding_window``.
    return window if getattr(config, "use_sliding_window", None) is not False else None


def _base_layer(module: Any) -> Any:
    return module.get_base_layer() if hasattr(module, "get_base_layer") else module


def _active_lora(module: Any) -> list[str]:
    """The adapters whose deltas the forward pass adds to ``module`` (none once merged)."""
    lora_a = getattr(module, "lora_A", None) or getattr(module, "lora_embedding_A", None)
    if not lora_a or getattr(module, "merged", False) or module.disable_adapters:
        return []
    return [name for name in module.active_adapters if name in lora_a]


def _bias(module: Any) -> torch.Tensor | None:
    bias = getattr(_base_layer(module), "bias", None)
    return None if bias is None else bias.detach()


def _buffer(
    buffers: dict[str, torch.Tensor], key: str, shape: tuple[int, int], like: torch.Tensor
) -> torch.Tensor:
    dest = buffers.get(key)
    if (
        dest is None
        or dest.shape != shape
        or dest.dtype != like.dtype
        or dest.device != like.device
    ):
        dest = buffers[key] = like.new_empty(shape)
    return dest


def _merged(modules: list[Any], key: str, buffers: dict[str, torch.Tensor]) -> torch.Tensor:
    """The weights of ``modules`` side by side and input-major, (C_in, sum of C_out), LoRA
    deltas added as forward applies them. Written into ``buffers[key]``, reused from round
    to round so that a refresh allocates nothing."""
    bases = [_base_layer(m).weight.detach() for m in modules]
    dest = _buffer(buffers, key, (bases[0].shape[1], sum(b.shape[0] for b in bases)), bases[0])
    col = 0
    for module, base in zip(modules, bases, strict=True):
        part = dest[:, col : col + base.shape[0]]  # (C_in, C_out) view
        part.copy_(base.t())
        for name in _active_lora(module):
            if name in getattr(module, "lora_A", {}):
                # (in, r) @ (r, out): the delta peft adds, without materialising it apart.
                a, b = module.lora_A[name].weight, module.lora_B[name].weight
                part.addmm_(a.t().to(part.dtype), b.t().to(part.dtype), alpha=module.scaling[name])
            else:
                part.add_(module.get_delta_weight(name).detach().t().to(part.dtype))
        col += base.shape[0]
    return dest


def _embedding(module: Any, buffers: dict[str, torch.Tensor]) -> torch.Tensor:
    """The embedding table (V, C): the model's own tensor, or a copy with LoRA added."""
    base = _base_layer(module).weight.detach()
    names = _active_lora(module)
    if not names:
        return base
    dest = _buffer(buffers, "embed", tuple(base.shape), base)
    dest.copy_(base)
    for name in names:
        dest.add_(module.get_delta_weight(name).detach().to(dest.dtype))
    return dest


def _cat_bias(modules: list[Any]) -> torch.Tensor | None:
    biases = [_bias(m) for m in modules]
    if all(b is None for b in biases):
        return None
    ref = next(b for b in biases if b is not None)
    sizes = [_base_layer(m).weight.shape[0] for m in modules]
    return torch.cat(
        [b if b is not None else ref.new_zeros(n) for b, n in zip(biases, sizes, strict=True)]
    )


def read_weights(model: Any, buffers: dict[str, torch.Tensor] | None = None) -> _Weights:
    """The decoder's weights as the loop uses them: the embedding and norms are the
    model's own tensors, every linear layer an input-major (fused, LoRA-merged) copy kept
    in ``buffers``."""
    buffers = {} if buffers is None else buffers
    lm = base_model(model)
    body = lm.model
    layers = []
    with torch.inference_mode():
        for i, block in enumerate(body.layers):
            att, mlp = block.self_attn, block.mlp
            # Phi-3 fuses q, k, v (in that order) and gate, up (gate first) itself.
            qkv = (
                [att.qkv_proj] if hasattr(att, "qkv_proj") else [att.q_proj, att.k_proj, att.v_proj]
            )
            gu = (
                [mlp.gate_up_proj] if hasattr(mlp, "gate_up_proj") else [mlp.gate_proj, mlp.up_proj]
            )
            q_norm, k_norm = getattr(att, "q_norm", None), getattr(att, "k_norm", None)
            layers.append(
                _Layer(
                    ln1=block.input_layernorm.weight.detach(),
                    q_norm=None if q_norm is None else q_norm.weight.detach(),
                    k_norm=None if k_norm is None else k_norm.weight.detach(),
                    wqkv=_merged(qkv, f"{i}.qkv", buffers),
                    bqkv=_cat_bias(qkv),
                    wo=_merged([att.o_proj], f"{i}.o", buffers),
                    bo=_bias(att.o_proj),
                    ln2=block.post_attention_layernorm.weight.detach(),
                    wgu=_merged(gu, f"{i}.gu", buffers),
                    bgu=_cat_bias(gu),
                    wd=_merged([mlp.down_proj], f"{i}.down", buffers),
                    bd=_bias(mlp.down_proj),
                )
            )
        rotary = body.rotary_emb
        return _Weights(
            embed=_embedding(body.embed_tokens, buffers),
            layers=layers,
            norm=body.norm.weight.detach(),
            lm_head=_merged([lm.lm_head], "lm_head", buffers),
            inv_freq=rotary.inv_freq.detach().float(),
            rope_scale=float(getattr(rotary, "attention_scaling", 1.0)),
        )


# -- the decode loop -------------------------------------------------------------


def shared_prefix(prompts: list[list[int]]) -> list[int]:
    """The token ids every prompt starts with, leaving each prompt at least its last token
    (whose logits start the generation)."""
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
    return first[: max(n, 0)]


class TorchDecodeEngine:
    """Prefill plus a static-cache decode loop over the owner's current weights."""

    name = "torch-static-cache"

    def __init__(self, owner: HFChatModel, precision: str = "float32") -> None:
        check_supported(owner.model)
        if precision == "auto":
            precision = auto_precision(owner)
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: one of auto, {', '.join(PRECISIONS)}")
        if precision != "float32" and not owner.device.startswith("cpu"):
            # A GPU model already in bfloat16 (dtype auto) is what was asked for: no noise.
            if not (precision == "bfloat16" and owner.model.dtype == torch.bfloat16):
                warn_once(
                    f"{precision} rollouts are a CPU path; generating in the model's dtype "
                    f"on {owner.device}"
                )
            precision = "float32"
        if precision == "int8" and not _int8_available():
            raise FastUnavailable(
                "int8 matrix products (torch._int_mm) are not in this torch build"
            )
        self.owner = owner
        self.precision = precision
        cfg = base_model(owner.model).config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = cfg.rms_norm_eps
        self.window = attention_window(cfg)
        self.weights: _Weights | None = None
        self._buffers: dict[str, torch.Tensor] = {}  # fused/merged copies, kept across rounds
        self._seen: tuple[tuple[int, int], ...] = ()

    def refresh(self) -> None:
        """Forget the weights read so far: the next generation re-reads the owner's
        (LoRA merged). Call after every weight update; cheap until then."""
        self.weights = None

    def ensure_weights(self) -> _Weights:
        """The owner's current weights, read (LoRA merged, fused) only when they changed."""
        seen = fingerprint(self.owner.model)
        if self.weights is None or seen != self._seen:
            weights = read_weights(self.owner.model, self._buffers)
            self.weights = convert(weights, self.precision)
            self._seen = seen
        return self.weights

    def generate_ids(self, prompts: list[list[int]], params: GenParams) -> list[list[int]]:
        """New token ids per prompt, cut before EOS. Prompts are batched by length (each
        batch pads little), the owner's batch size at a time; the prefix they all share is
        computed once."""
        if not prompts:
            return []
        if self.window is not None and max(map(len, prompts)) + params.max_new_tokens > self.window:
            # Past the window the model's attention slides over cache slots, padding
            # included, which this loop's slot layout does not reproduce: plain generate.
            log.debug(
                "sequences longer than the %d-token sliding window: plain generate", self.window
            )
            return self.owner.plain_generate_ids(prompts, params)
        w = self.ensure_weights()
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self.owner.device).manual_seed(params.seed)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[list[int]] = [[] for _ in prompts]
        bs = self.owner.settings.batch_size
        with torch.inference_mode():
            rope = self._rope_table(w, max(map(len, prompts)) + params.max_new_tokens)
            prefix = shared_prefix(prompts)
            prefix_kv = self._prefix_cache(w, prefix, rope)
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                suffixes = [prompts[i][len(prefix) :] for i in idx]
                rows = self._batch(w, suffixes, prefix_kv, params, rope, gen)
                for i, row in zip(idx, rows, strict=True):
                    out[i] = row
        return out

    # -- one batch -------------------------------------------------------------

    def _prefix_cache(
        self, w: _Weights, prefix: list[int], rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor | None:
        """Keys and values of the shared prefix at slots [0, P): (L, 2, 1, Hkv, P, D)."""
        if not prefix:
            return None
        dev = self.owner.device
        ids = torch.tensor([prefix], device=dev)
        cache = w.embed.new_empty((len(w.layers), 2, 1, self.n_kv, len(prefix), self.head_dim))
        self._prefill(w, ids, torch.ones_like(ids, dtype=torch.bool), cache, 0, rope)
        return cache

    def _batch(
        self,
        w: _Weights,
        suffixes: list[list[int]],
        prefix_kv: torch.Tensor | None,
        params: GenParams,
        rope: tuple[torch.Tensor, torch.Tensor],
        gen: torch.Generator | None,
    ) -> list[list[int]]:
        """Generate for one batch. Cache slots: [0, P) the shared prefix, [P, P + W) the
        rest of each prompt left-padded to the batch's longest, then one slot per step."""
        dev = self.owner.device
        eos = eos_ids(self.owner)
        p = 0 if prefix_kv is None else prefix_kv.shape[4]
        b, width, steps = len(suffixes), max(map(len, suffixes)), params.max_new_tokens
        total = p + width + steps
        ids = torch.zeros((b, width), dtype=torch.long)
        valid = torch.zeros((b, total), dtype=torch.bool)  # slots a query may attend to
        valid[:, :p] = True
        for i, s in enumerate(suffixes):
            ids[i, width - len(s) :] = torch.tensor(s)
            valid[i, p + width - len(s) : p + width] = True
        ids, valid = ids.to(dev), valid.to(dev)
        lengths = valid[:, : p + width].sum(-1)  # prompt length per row: its next position
        cache = w.embed.new_empty((len(w.layers), 2, b, self.n_kv, total, self.head_dim))
        if prefix_kv is not None:
            cache[:, :, :, :, :p] = prefix_kv  # broadcast over the batch

        hidden = self._prefill(w, ids, valid[:, p : p + width], cache, p, rope)
        logits = self._logits(w, hidden)
        rows = torch.arange(b, device=dev)  # original row of each live row
        out: list[list[int]] = [[] for _ in range(b)]
        ended = [False] * b
        for step in range(steps):
            tok = _pick(logits, params, gen)
            done = self._record(tok, rows, out, ended, eos, params)
            if step == steps - 1 or bool(done.all()):
                break
            if done.sum() >= max(1, _COMPACT_SHARE * len(rows)):
                keep = (~done).nonzero().squeeze(-1)
                rows, tok, lengths, valid = rows[keep], tok[keep], lengths[keep], valid[keep]
                cache = cache[:, :, keep]
            slot = p + width + step
            valid[:, slot] = True
            hidden = self._decode(w, tok, lengths + step, slot, valid[:, : slot + 1], cache, rope)
            logits = self._logits(w, hidden)
        return out

    def _record(
        self,
        tok: torch.Tensor,
        rows: torch.Tensor,
        out: list[list[int]],
        ended: list[bool],
        eos: set[int],
        params: GenParams,
    ) -> torch.Tensor:
        """Append each live row's token; True where the row has ended (EOS or a stop)."""
        done = []
        for r, t in zip(rows.tolist(), tok.tolist(), strict=False):
            if not ended[r]:
                if t in eos:
                    ended[r] = True
                else:
                    out[r].append(t)
                    ended[r] = bool(params.stop) and self._hits_stop(out[r], params.stop)
            done.append(ended[r])
        return torch.tensor(done, dtype=torch.bool, device=tok.device)

    def _hits_stop(self, seq: list[int], stop: tuple[str, ...]) -> bool:
        text = self.owner.tokenizer.decode(seq, skip_special_tokens=True)
        return any(s and s in text for s in stop)

    def _rope_table(self, w: _Weights, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin per position (T, D), as the HF rotary module computes them."""
        pos = torch.arange(total, dtype=torch.float32, device=w.inv_freq.device)
        freqs = pos[:, None] * w.inv_freq  # (T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        dev, dtype = self.owner.device, w.embed.dtype
        return (
            (emb.cos() * w.rope_scale).to(dev, dtype),
            (emb.sin() * w.rope_scale).to(dev, dtype),
        )

    def _prefill(
        self,
        w: _Weights,
        ids: torch.Tensor,
        valid: torch.Tensor,
        cache: torch.Tensor,
        start: int,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Run left-padded prompt tokens (B, W) into cache slots [start, start + W); the
        slots before ``start`` hold the shared prefix, which every row sees. Returns the
        final hidden state at the last slot (B, C)."""
        b, width = ids.shape
        pos = start + (valid.long().cumsum(-1) - 1).clamp(min=0)  # (B, W), as generate numbers them
        cos, sin = rope[0][pos].unsqueeze(1), rope[1][pos].unsqueeze(1)  # (B, 1, W, D)
        causal = torch.ones((width, width), dtype=torch.bool, device=ids.device).tril()
        # Each query also sees itself so pad rows never softmax over nothing (NaN).
        own = (causal & valid[:, None, :]) | torch.eye(width, dtype=torch.bool, device=ids.device)
        mask = torch.cat((own.new_ones((b, width, start)), own), dim=-1).unsqueeze(1)
        end = start + width  # mask: (B, 1, W, end)
        x = F.embedding(ids, w.embed)  # (B, W, C)
        for li, layer in enumerate(w.layers):
            q, k, v = self._qkv(_rms(x, layer.ln1, self.eps), layer, cos, sin)
            cache[li, 0, :, :, start:end] = k
            cache[li, 1, :, :, start:end] = v
            keys, values = cache[li, 0, :, :, :end], cache[li, 1, :, :, :end]  # (B, Hkv, end, D)
            att = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
            x = self._finish_block(x, att.transpose(1, 2).reshape(b, width, -1), layer)
        return x[:, -1]

    def _decode(
        self,
        w: _Weights,
        tok: torch.Tensor,
        pos: torch.Tensor,
        slot: int,
        valid: torch.Tensor,
        cache: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """One token per live row at cache ``slot``; returns the final hidden state (B, C)."""
        b = tok.shape[0]
        cos, sin = rope[0][pos][:, None, None], rope[1][pos][:, None, None]  # (B, 1, 1, D)
        bias = torch.zeros(valid.shape, dtype=w.embed.dtype, device=tok.device)
        bias = bias.masked_fill_(~valid, float("-inf"))[:, None, None, :]  # (B, 1, 1, T)
        group = self.n_heads // self.n_kv
        scale = self.head_dim**-0.5
        x = F.embedding(tok[:, None], w.embed)  # (B, 1, C)
        for li, layer in enumerate(w.layers):
            q, k, v = self._qkv(_rms(x, layer.ln1, self.eps), layer, cos, sin)
            cache[li, 0, :, :, slot] = k[:, :, 0]
            cache[li, 1, :, :, slot] = v[:, :, 0]
            keys = cache[li, 0, :, :, : slot + 1]  # (B, Hkv, T, D)
            values = cache[li, 1, :, :, : slot + 1]
            # Grouped queries share their kv head without copying it: (B, Hkv, G, D).
            qg = q.reshape(b, self.n_kv, group, self.head_dim) * scale
            scores = torch.matmul(qg, keys.transpose(-1, -2)).add_(bias)  # (B, Hkv, G, T)
            # Softmax in float32, as SDPA accumulates (a no-op for float32 weights).
            probs = scores.softmax(-1, dtype=torch.float32).to(values.dtype)
            att = torch.matmul(probs, values)  # (B, Hkv, G, D)
            x = self._finish_block(x, att.reshape(b, 1, -1), layer)
        return x[:, -1]

    def _logits(self, w: _Weights, hidden: torch.Tensor) -> torch.Tensor:
        return _linear(_rms(hidden, w.norm, self.eps), w.lm_head, None)  # (B, V)

    def _qkv(
        self, h: torch.Tensor, layer: _Layer, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projections for (B, T, C) input, heads first and rotated: (B, H, T, D)."""
        b, t, _ = h.shape
        d = self.head_dim
        q, k, v = _linear(h, layer.wqkv, layer.bqkv).split(
            [self.n_heads * d, self.n_kv * d, self.n_kv * d], dim=-1
        )
        q, k = q.view(b, t, self.n_heads, d), k.view(b, t, self.n_kv, d)
        if layer.q_norm is not None:  # per head, before RoPE (Qwen3)
            q = _rms(q, layer.q_norm, self.eps)
        if layer.k_norm is not None:
            k = _rms(k, layer.k_norm, self.eps)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.view(b, t, self.n_kv, d).transpose(1, 2)
        return _rotate(q, cos, sin), _rotate(k, cos, sin), v

    def _finish_block(self, x: torch.Tensor, att: torch.Tensor, layer: _Layer) -> torch.Tensor:
        """Output projection, residual, then the SwiGLU MLP with its residual."""
        x = x + _linear(att, layer.wo, layer.bo)
        gate, up = _linear(_rms(x, layer.ln2, self.eps), layer.wgu, layer.bgu).chunk(2, dim=-1)
        return x.add_(_linear(F.silu(gate).mul_(up), layer.wd, layer.bd))


def _linear(x: torch.Tensor, weight: Weight, bias: torch.Tensor | None) -> torch.Tensor:
    """``x`` (..., C_in) times an input-major weight (C_in, C_out), plus ``bias``."""
    flat = x.reshape(-1, x.shape[-1])
    if isinstance(weight, _Int8):
        out = _int8_matmul(flat, weight)
        if bias is not None:
            out = out.add_(bias)
    elif weight.dtype != flat.dtype:  # bfloat16 products on a float32 stream
        out = (flat.to(weight.dtype) @ weight).to(flat.dtype)
        if bias is not None:
            out = out.add_(bias)
    elif bias is None:
        out = flat @ weight
    else:
        out = torch.addmm(bias, flat, weight)
    return out.view(*x.shape[:-1], out.shape[-1])


def _int8_matmul(x: torch.Tensor, w: _Int8) -> torch.Tensor:
    """(N, C_in) float rows times an int8 weight. Each row (token) is quantized with its
    own scale, so one token's outliers do not coarsen every other token's steps."""
    xf = x.float()
    scale = xf.abs().amax(-1, keepdim=True).clamp_(min=1e-8).div_(127.0)  # (N, 1)
    q = (xf / scale).round_().to(torch.int8)
    out = torch._int_mm(q, w.q).float().mul_(scale).mul_(w.scale)  # int32 sums, rescaled
    return out.to(x.dtype)


def _to_bf16(weight: Weight) -> torch.Tensor:
    assert isinstance(weight, torch.Tensor)  # the float weights read_weights returns
    return weight.to(torch.bfloat16).contiguous()


def _int8_available() -> bool:
    return hasattr(torch, "_int_mm")


def _to_int8(weight: Weight) -> _Int8:
    """Symmetric int8 with one scale per output channel (a column of the input-major weight)."""
    assert isinstance(weight, torch.Tensor)  # the float weights read_weights returns
    w = weight.float()
    scale = (w.abs().amax(dim=0) / 127.0).clamp(min=1e-8)  # (C_out,)
    return _Int8(q=(w / scale).round_().to(torch.int8).contiguous(), scale=scale)


def convert(w: _Weights, precision: str) -> _Weights:
    """The same weights with every decoder linear layer in ``precision`` (float32: as
    read). The embedding, the norms, the residual stream, the KV cache and the LM head
    stay float32: the head picks the token, and its rounding flips greedy choices."""
    if precision == "float32":
        return w
    to = _to_int8 if precision == "int8" else _to_bf16
    with torch.inference_mode():
        layers = [
            _Layer(
                ln1=ly.ln1,
                q_norm=ly.q_norm,
                k_norm=ly.k_norm,
                wqkv=to(ly.wqkv),
                bqkv=ly.bqkv,
                wo=to(ly.wo),
                bo=ly.bo,
                ln2=ly.ln2,
                wgu=to(ly.wgu),
                bgu=ly.bgu,
                wd=to(ly.wd),
                bd=ly.bd,
            )
            for ly in w.layers
        ]
    return _Weights(
        embed=w.embed,
        layers=layers,
        norm=w.norm,
        lm_head=w.lm_head,
        inv_freq=w.inv_freq,
        rope_scale=w.rope_scale,
    )


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)
    # As LlamaRMSNorm: normalise in float32, cast back, then scale.
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE over the first ``cos.shape[-1]`` dimensions of each head; the rest pass as is
    (all of them rotate unless the model rotates part of each head, as Phi-3 may)."""
    dim = cos.shape[-1]
    if dim < x.shape[-1]:
        return torch.cat((_rotate(x[..., :dim], cos, sin), x[..., dim:]), dim=-1)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _pick(logits: torch.Tensor, params: GenParams, gen: torch.Generator | None) -> torch.Tensor:
    """Next token per row (B,): argmax at temperature 0, else nucleus sampling."""
    if params.temperature <= 0:
        # max's indices: the first maximum, as argmax, in well under half argmax's CPU time
        return logits.max(-1).indices
    probs = (logits.float() / params.temperature).softmax(-1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= params.top_p, 0.0)
        choice = torch.multinomial(sorted_p, 1, generator=gen)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def token_agreement(reference: list[list[int]], other: list[list[int]]) -> float:
    """Share of positions where two generations hold the same token, over the longer of
    each pair (a missing token counts as a mismatch)."""
    same = total = 0
    for a, b in zip(reference, other, strict=True):
        total += max(len(a), len(b))
        same += sum(x == y for x, y in zip(a, b, strict=False))
    return 1.0 if total == 0 else same / total
