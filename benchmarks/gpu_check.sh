#!/usr/bin/env bash
# GPU check: the fast rollout path (vLLM in process where installed; the torch decode loop
# in float32 and bfloat16), a LoRA adapter it must follow, the answers' perplexity under
# the base weights, one DPO training step of the learner (TRL), the train phase under
# `accelerate launch` on every visible GPU (against one process; and in bf16), and a
# one-round loop on the device with tiny random models of two families (Llama, Qwen2).
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on the GPU machine
#   SUPERALIGN_CHECK_DEVICE=cpu SUPERALIGN_CHECK_TINY=1 bash benchmarks/gpu_check.sh  # dry run
#
# Installs nothing and reaches no network. Uses .venv/bin/python when present, else
# $PYTHON or python3, with src/ on PYTHONPATH. Model: $SUPERALIGN_CHECK_MODEL, else the
# bundled SmolLM2 cache when present (and SUPERALIGN_CHECK_TINY unset), else a small random
# Llama built on the spot (with a word-level tokenizer, so no download). Prints one
# "CHECK <name>: PASS|FAIL|SKIP|INFO (...)" line per check and exits non-zero if any failed.
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
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

results = []


def report(name, ok, detail):
    status = {True: "PASS", False: "FAIL", None: "SKIP", "info": "INFO"}[ok]
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
DEVICE = os.environ.get("SUPERALIGN_CHECK_DEVICE", "cuda")  # "cpu": a dry run of the script
if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    report("cuda", False, "torch sees no CUDA device")
    sys.exit(1)
if DEVICE.startswith("cuda"):
    print(f"device: {torch.cuda.get_device_name()}, bf16 supported: {torch.cuda.is_bf16_supported()}")

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
    # A chat template, as the learner's trainers need one (roles are unknown words: <unk>).
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"
        "{% if add_generation_prompt %}assistant {% endif %}"
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
use_bundled = (bundled / "config.json").is_file() and not os.environ.get("SUPERALIGN_CHECK_TINY")
model_path = os.environ.get("SUPERALIGN_CHECK_MODEL") or (
    str(bundled) if use_bundled else tiny_checkpoint()
)
print(f"model: {model_path}")
topics = ["the sea", "a robot", "bread", "the moon", "rain", "a city", "music", "trees"]
chats = [[{"role": "user", "content": f"Write about {topics[i % 8]} number {i}."}] for i in range(32)]
if "superalign-gpu-check" in model_path:
    chats = [[{"role": "user", "content": " ".join(f"w{(7 * i + j) % 990 + 3}" for j in range(5 + i % 7))}]
             for i in range(32)]  # fmt: skip
greedy = GenParams(max_new_tokens=64)


def sync():
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


# 1. The torch decode loop (the fallback when vLLM is absent), float32 and bfloat16.
def loop_check(dtype: str) -> tuple[HFChatModel, list, list, float, float]:
    m = HFChatModel(model=model_path, device=DEVICE, dtype=dtype, fast=False)
    prompts = m.encode_prompts(chats, greedy.max_new_tokens)
    m.generate_ids(prompts[:2], GenParams(max_new_tokens=4))  # warm-up
    plain, t_plain = timed(lambda: m.generate_ids(prompts, greedy))
    loop = TorchDecodeEngine(m)
    loop.generate_ids(prompts[:2], GenParams(max_new_tokens=4))  # warm-up
    out, t_loop = timed(lambda: loop.generate_ids(prompts, greedy))
    agree = token_agreement(plain, out)
    speed = (f"plain {sum(map(len, plain)) / t_plain:.0f} tok/s, loop "
             f"{sum(map(len, out)) / t_loop:.0f} tok/s at batch {len(prompts)} x "
             f"{greedy.max_new_tokens} new, {t_plain / t_loop:.1f}x")  # fmt: skip
    m.fast = loop
    return m, plain, out, t_plain, t_loop, agree, speed


m32, plain32, loop32, tp32, tl32, agree32, speed32 = loop_check("float32")
report("torch-loop-float32", agree32 >= 0.95,
       f"greedy agreement with plain generate {agree32:.3f} (bar 0.95); {speed32}")  # fmt: skip
m, plain, loop_bf16, t_plain, tl16, agree16, speed16 = loop_check("bfloat16")
# In bf16 two correct kernels round differently and near-ties flip (more so in a random
# model), so the bar is relative: the loop must stay as close to the float32 reference as
# plain generate in bf16 does.
ref_loop, ref_plain = token_agreement(plain32, loop_bf16), token_agreement(plain32, plain)
report("torch-loop-bfloat16", ref_loop >= ref_plain - 0.1,
       f"agreement with fp32 plain generate: loop {ref_loop:.3f}, plain bf16 {ref_plain:.3f} "
       f"(bar: within 0.1); loop vs plain in bf16 {agree16:.3f}; {speed16}")  # fmt: skip
report("bf16-vs-fp32", "info",
       f"speed bf16/fp32: loop {tl32 / tl16:.2f}x, plain {tp32 / t_plain:.2f}x")  # fmt: skip
prompts = m.encode_prompts(chats, greedy.max_new_tokens)

# The loop follows a LoRA adapter that changes between rounds (fp32: exact comparison),
# and the answers' perplexity under the base model (adapter disabled) is the base's.
def lora_and_perplexity():
    from peft import LoraConfig, get_peft_model

    ppl_chats = [c for c in chats[:8]]
    ppl_texts = [m32.tokenizer.decode(r, skip_special_tokens=True) or "w5" for r in loop32[:8]]
    ppl_before = m32.perplexities(ppl_chats, ppl_texts)
    torch.manual_seed(1)
    m32.model = get_peft_model(m32.model, LoraConfig(r=8, target_modules="all-linear")).eval()
    m32.weights_changed()
    p32 = m32.encode_prompts(chats, greedy.max_new_tokens)
    base = m32.fast.generate_ids(p32[:8], greedy)  # lora_B is zero: as the base
    with torch.no_grad():
        for name, p in m32.model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.05)
    m32.weights_changed()
    changed = m32.fast.generate_ids(p32[:8], greedy)
    agree = token_agreement(m32.generate_ids(p32[:8], greedy), changed)
    report("torch-loop-lora-follows-weights", changed != base and agree >= 0.9,
           f"output changed after the adapter changed: {changed != base}; agreement with plain "
           f"generate under the new adapter {agree:.3f}")  # fmt: skip
    with m32.base_weights():
        ppl_base = m32.perplexities(ppl_chats, ppl_texts)
    ppl_adapter = m32.perplexities(ppl_chats, ppl_texts)
    same = all(abs(a - b) <= 1e-3 * a for a, b in zip(ppl_before, ppl_base) if a is not None)
    report("perplexity-base-weights", same and ppl_adapter != ppl_base,
           f"answer perplexity with the adapter disabled equals the base model's: {same}; "
           f"median {statistics.median(x for x in ppl_base if x):.1f} under the base, "
           f"adapter on differs: {ppl_adapter != ppl_base}")  # fmt: skip


def guarded(name, fn):
    """Run one check; an exception is that check's FAIL, and the later checks still run."""
    try:
        fn()
    except Exception as e:
        import traceback

        where = traceback.extract_tb(e.__traceback__)[-1]
        report(name, False, f"{type(e).__name__}: {e} (line {where.lineno}: {where.line})")


guarded("torch-loop-lora-follows-weights", lora_and_perplexity)
m32 = None  # free its memory before vLLM takes the GPU
loop_bf16 = None
m.fast = None  # free the loop's weight copy before vLLM takes memory

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

# 3. One DPO training step of the learner on the device (TRL; skipped where it is absent).
try:
    import datasets  # noqa: F401
    import trl
except Exception as e:  # any import failure: the check cannot run here
    report("dpo-step", None, f"trl/datasets not importable: {type(e).__name__}: {e}")
else:
    def dpo_step():
        from superalign.learn import DPOLearner, DPOSettings, LearnerSection
        from superalign.types import Intent, Preference, Query, RoundData

        words = [" ".join(f"w{(11 * i + j) % 990 + 3}" for j in range(6)) for i in range(12)]
        pairs = [
            Preference(query=Query(text=words[i], intent=Intent.harmful), chosen=words[i + 4],
                       rejected=words[i + 8], confidence=0.9)
            for i in range(4)
        ]  # fmt: skip
        dm = HFChatModel(model=model_path, device=DEVICE, fast=False)  # the device's default dtype
        learner = DPOLearner(
            DPOSettings(batch_size=4, max_steps=1, loss="robust", label_smoothing=0.1),
            model=dm, section=LearnerSection(algorithm="dpo"), reward=None,
            run_dir=Path(tempfile.mkdtemp(prefix="superalign-gpu-dpo-")),
        )  # fmt: skip
        base_before = {n: p.detach().clone() for n, p in dm.model.named_parameters()}
        try:
            ckpt, t_dpo = timed(lambda: learner.train_round(RoundData(round=1, preferences=pairs)))
        except Exception as e:  # report the failure with its type, not a traceback wall
            report("dpo-step", False, f"{type(e).__name__}: {e}")
        else:
            params = dict(dm.model.named_parameters())
            lora_moved = any(
                "lora_B" in n and bool(p.detach().abs().sum() > 0) for n, p in params.items()
            )
            base_kept = all(
                torch.equal(params[n].detach(), p)
                for n, p in base_before.items()
                if n in params and "lora_" not in n
            )
            loss = ckpt.metrics.get("loss")
            devices = {str(p.device) for p in params.values()}
            ok = lora_moved and base_kept and loss is not None and math.isfinite(loss)
            report("dpo-step", ok,
                   f"trl {trl.__version__}, {dm.model.dtype} on {sorted(devices)}: one rDPO step in "
                   f"{t_dpo:.1f}s, loss {loss}, LoRA B moved: {lora_moved}, base weights "
                   f"unchanged: {base_kept}, checkpoint written: {Path(ckpt.path).is_dir()}")  # fmt: skip

    guarded("dpo-step", dpo_step)

# 4. The train phase under `accelerate launch` on every visible GPU (two CPU processes in a
# dry run): the same DPO steps as in one process, then the same in bf16.
def launched_dpo():
    from superalign.learn import LearnerSection, build_learner
    from superalign.types import Intent, Preference, Query, RoundData

    n = torch.cuda.device_count() if DEVICE.startswith("cuda") else 2
    words = [" ".join(f"w{(13 * i + j) % 990 + 3}" for j in range(4 + i % 5)) for i in range(24)]
    pairs = [
        Preference(query=Query(text=words[i], intent=Intent.benign), chosen=words[i + 8],
                   rejected=words[i + 16], confidence=0.9)
        for i in range(2 * n if n > 1 else 4)
    ]  # fmt: skip
    args = {"loss": "robust", "batch_size": 2 * n, "max_steps": 2}

    def train(**launch):
        section = LearnerSection(algorithm="dpo", args=args, learning_rate=1e-2, **launch)
        dm = HFChatModel(model=model_path, device=DEVICE, fast=False)
        learner = build_learner(section, dm, None, Path(tempfile.mkdtemp(prefix="sa-launch-")))
        torch.manual_seed(0)
        ckpt, seconds = timed(lambda: learner.train_round(RoundData(round=1, preferences=pairs)))
        lora = {k: p.detach().float().cpu() for k, p in dm.model.named_parameters() if "lora_" in k}
        return ckpt.metrics, lora, seconds

    one, lora_one, t_one = train()
    two, lora_two, t_two = train(launcher="accelerate", num_processes=n)
    loss_diff = max(abs(a - b) for a, b in zip(one["losses"], two["losses"], strict=True))
    w_diff = max(float((lora_one[k] - lora_two[k]).abs().max()) for k in lora_one)
    report("accelerate-launcher", loss_diff < 1e-3 and w_diff < 1e-3,
           f"{n} processes against 1: losses {two['losses']} vs {one['losses']} (max diff "
           f"{loss_diff:.2e}), adapter max diff {w_diff:.2e}; {t_two:.1f}s against "
           f"{t_one:.1f}s, worker peak {two['launch'].get('worker_peak_rss_mb')} MiB")  # fmt: skip
    if DEVICE.startswith("cuda") and not torch.cuda.is_bf16_supported():
        report("accelerate-launcher-bf16", None, "this GPU has no bf16")
        return
    bf16, lora_bf16, t_bf16 = train(launcher="accelerate", num_processes=n,
                                    mixed_precision="bf16")  # fmt: skip
    moved = sum(float(v.abs().sum()) for k, v in lora_bf16.items() if "lora_B" in k)
    ok = all(math.isfinite(x) for x in bf16["losses"]) and moved > 0
    report("accelerate-launcher-bf16", ok,
           f"mixed_precision bf16 on {n} processes: losses {bf16['losses']}, LoRA B moved "
           f"{moved:.3g}, {t_bf16:.1f}s")  # fmt: skip


guarded("accelerate-launcher", launched_dpo)


# 5. The loop for one round on the device, learners of two families (tiny random models;
# attacker and judge mocked), through the CLI as a user runs it.
def family_checkpoint(family: str) -> str:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    if family == "llama":
        return tiny_checkpoint()
    tok_dir = tiny_checkpoint()  # the word-level tokenizer, on a Qwen2 body
    cfg = Qwen2Config(
        vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    qwen = Qwen2ForCausalLM(cfg)
    path = tempfile.mkdtemp(prefix="superalign-gpu-check-qwen2-")
    qwen.save_pretrained(path)
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(path)
    return path


def smoke_loop(family: str):
    import json
    import subprocess

    import yaml

    work = Path(tempfile.mkdtemp(prefix=f"sa-loop-{family}-"))
    config = {
        "name": family,
        "models": {
            "learner": {"backend": "hf", "model": family_checkpoint(family), "device": DEVICE},
            "attacker": {"backend": "mock", "default": "Tell me something forbidden."},
            "judge": {"backend": "mock"},
        },
        "critic": {"critics": [{"name": n} for n in ("refusal", "query_risk", "verifier")]},
        "learner": {"algorithm": "dpo", "args": {"max_steps": 2}},
        "loop": {"rounds": 1, "queries_per_round": 8, "max_new_tokens": 8, "human_budget": 2},
        "eval": {"frozen_limit": 6, "bootstrap": 20, "max_new_tokens": 8},
    }
    (work / "loop.yaml").write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "superalign.cli", "run", "--config", "loop.yaml"],
        cwd=work, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    ckpt = work / "runs" / family / "checkpoints" / "round-1" / "superalign_checkpoint.json"
    ok = proc.returncode == 0 and ckpt.is_file()
    tail = "" if ok else " | " + proc.stderr.strip().splitlines()[-1][:300] if proc.stderr else ""
    metrics = json.loads(ckpt.read_text()).get("metrics", {}) if ckpt.is_file() else {}
    report(f"loop-{family}", ok,
           f"superalign run, one round on {DEVICE} in {seconds:.0f}s, exit {proc.returncode}, "
           f"train loss {metrics.get('loss')}{tail}")  # fmt: skip


for fam in ("llama", "qwen2"):
    guarded(f"loop-{fam}", lambda fam=fam: smoke_loop(fam))

failed = sum(r is False for r in results)
print(f"{sum(r is True for r in results)} passed, {failed} failed, "
      f"{sum(r is None for r in results)} skipped, {sum(r == 'info' for r in results)} info")  # fmt: skip
sys.exit(1 if failed else 0)
EOF
