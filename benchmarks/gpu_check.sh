#!/usr/bin/env bash
# GPU check of the fast rollout path: vLLM in process (and the torch decode loop on CUDA).
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on the GPU machine
#
# Installs nothing and reaches no network. Uses .venv/bin/python when present, else
# $PYTHON or python3, with src/ on PYTHONPATH. Model: $SUPERALIGN_CHECK_MODEL, else the
# bundled SmolLM2 cache when present, else a small random Llama built on the spot (with a
# word-level tokenizer, so no download). Prints one "CHECK <name>: PASS|FAIL|SKIP (...)"
# line per check and exits non-zero if any check failed.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi not found"
echo "python: $PY ($("$PY" --version 2>&1))"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1

"$PY" - <<'EOF'
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

results = []


def report(name, ok, detail):
    status = {True: "PASS", False: "FAIL", None: "SKIP"}[ok]
    results.append(ok)
    print(f"CHECK {name}: {status} ({detail})", flush=True)


for mod in ("torch", "transformers", "peft", "pydantic"):
    if importlib.util.find_spec(mod) is None:
        report("imports", False, f"{mod} is not installed; this script installs nothing")
        sys.exit(1)
import torch

print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
has_vllm = importlib.util.find_spec("vllm") is not None
if has_vllm:
    import vllm

    print(f"vllm {vllm.__version__}")
else:
    print("vllm: not installed (the fast path on GPU is then the torch decode loop)")
if not torch.cuda.is_available():
    report("cuda", False, "torch sees no CUDA device")
    sys.exit(1)

from superalign.models import HFChatModel
from superalign.models._fast import TorchDecodeEngine, token_agreement
from superalign.types import GenParams


def tiny_checkpoint() -> str:
    """A random 4-layer Llama with a word-level tokenizer, saved locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(997)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="</s>",
    )
    cfg = LlamaConfig(
        vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.08)  # varied greedy output, not one repeated token
    path = tempfile.mkdtemp(prefix="superalign-gpu-check-")
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


bundled = Path.home() / ".cache/superalign/models/smollm2-135m"
model_path = os.environ.get("SUPERALIGN_CHECK_MODEL") or (
    str(bundled) if (bundled / "config.json").is_file() else tiny_checkpoint()
)
print(f"model: {model_path}")
topics = ["the sea", "a robot", "bread", "the moon", "rain", "a city", "music", "trees"]
chats = [[{"role": "user", "content": f"Write about {topics[i % 8]} number {i}."}] for i in range(32)]
if "superalign-gpu-check" in model_path:
    chats = [[{"role": "user", "content": " ".join(f"w{(7 * i + j) % 990 + 3}" for j in range(5 + i % 7))}]
             for i in range(32)]  # fmt: skip
greedy = GenParams(max_new_tokens=64)


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


# 1. The torch decode loop on CUDA (the fallback when vLLM is absent).
m = HFChatModel(model=model_path, device="cuda", fast=False)
prompts = m.encode_prompts(chats, greedy.max_new_tokens)
plain, t_plain = timed(lambda: m.generate_ids(prompts, greedy))
loop = TorchDecodeEngine(m)
loop.generate_ids(prompts[:2], GenParams(max_new_tokens=4))  # warm-up
out, t_loop = timed(lambda: loop.generate_ids(prompts, greedy))
agree = token_agreement(plain, out)
n = sum(map(len, plain))
report("torch-loop-agreement", agree >= 0.9,
       f"greedy agreement {agree:.3f} in {m.model.dtype}; plain {n / t_plain:.0f} tok/s, "
       f"loop {sum(map(len, out)) / t_loop:.0f} tok/s at batch 32")  # fmt: skip
loop.weights = None  # free its weight copy before vLLM takes memory

# 2. vLLM in process, with a LoRA adapter that changes between rounds.
if not has_vllm:
    for name in ("vllm-agreement", "vllm-lora-follows-weights", "vllm-speed"):
        report(name, None, "vllm is not installed on this machine")
else:
    from peft import LoraConfig, get_peft_model

    from superalign.models._vllm import VLLMEngine

    try:
        engine = VLLMEngine(m)
    except Exception as e:  # report any start-up failure plainly
        report("vllm-start", False, f"{type(e).__name__}: {e}")
        engine = None
    if engine is not None:
        engine.generate_ids(prompts[:2], GenParams(max_new_tokens=4))  # warm-up
        out, t_vllm = timed(lambda: engine.generate_ids(prompts, greedy))
        agree = token_agreement(plain, out)
        report("vllm-agreement", agree >= 0.8,
               f"greedy agreement with plain generate {agree:.3f} ({m.model.dtype}; kernels "
               "differ, so bf16 ties can flip)")  # fmt: skip
        report("vllm-speed", t_vllm < t_plain,
               f"batch 32 x 64 new: plain {t_plain:.2f}s, vLLM {t_vllm:.2f}s, "
               f"{t_plain / t_vllm:.1f}x")  # fmt: skip
        torch.manual_seed(1)
        m.model = get_peft_model(m.model, LoraConfig(r=8, target_modules="all-linear")).eval()
        m.fast = engine
        m.weights_changed()
        base = engine.generate_ids(prompts[:8], greedy)  # lora_B is zero: as the base
        with torch.no_grad():
            for name, p in m.model.named_parameters():
                if "lora_B" in name:
                    p.add_(torch.randn_like(p) * 0.05)
        m.weights_changed()
        changed = engine.generate_ids(prompts[:8], greedy)
        plain_lora = m.generate_ids(prompts[:8], greedy)
        agree = token_agreement(plain_lora, changed)
        report("vllm-lora-follows-weights", changed != base and agree >= 0.8,
               f"output changed after the adapter changed: {changed != base}; agreement "
               f"with plain generate under the new adapter {agree:.3f}")  # fmt: skip

failed = sum(r is False for r in results)
print(f"{sum(r is True for r in results)} passed, {failed} failed, "
      f"{sum(r is None for r in results)} skipped")  # fmt: skip
sys.exit(1 if failed else 0)
EOF
