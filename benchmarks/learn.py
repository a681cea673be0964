"""Learner throughput on CPU with the bundled model (LoRA): training tokens/s and peak
RSS per algorithm, next to a plain TRL script doing the same work.

    .venv/bin/python benchmarks/learn.py                        # every algorithm, 3 runs each
    .venv/bin/python benchmarks/learn.py grpo dpo --repeats 5   # a subset, 5 runs each

Each run is its own process, so its peak RSS is its own. Tokens are prompt + completion
tokens the trainer processed (TRL's ``num_tokens``; PPO counts its rollouts the same
way); seconds are the trainer's own ``train_runtime`` (for PPO the whole round). The
reward is a cheap rule (refusal on harmful, an answer on benign) so the comparison
measures the learner, not the critic.

Each (algorithm, runner) pair is run --repeats times (3 by default; the two runners
alternate, so a change in load falls on both) and the table gives the minimum and median
train seconds, the best and median tokens/s, and the median and largest peak RSS. The
load average is printed before and after; run it with nothing else on the machine (about
15-30 min for every algorithm on 2 quiet cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _learn_common import peak_rss_mb, queries, run_child
from _machine import MIN_REPEATS, add_repeats, machine_report, runs_label

ALGORITHMS = ("grpo", "rloo", "ppo", "dpo", "sft")
STEPS = 1
COMPLETION = 16
RL = {"steps": STEPS, "prompts_per_step": 2, "num_generations": 4}
SETTINGS = {
    "grpo": {**RL, "max_completion_length": COMPLETION},
    "rloo": {**RL, "max_completion_length": COMPLETION},
    "ppo": {
        "steps": STEPS,
        "prompts_per_step": 8,
        "minibatch_size": 4,
        "max_completion_length": COMPLETION,
    },
    "dpo": {"loss": "robust", "batch_size": 4, "max_steps": STEPS},
    "sft": {"batch_size": 4, "max_steps": STEPS, "max_new_tokens": COMPLETION},
}
LORA = {"r": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
LR = 1e-4
REFUSAL = "I'm sorry, but I can't help with that."


def rule_reward(queries, completions) -> list[float]:
    """+1 for declining a harmful request or answering a benign one, -1 otherwise."""
    out = []
    for q, c in zip(queries, completions, strict=True):
        refused = any(w in c.lower() for w in ("sorry", "can't", "cannot", "won't"))
        out.append(1.0 if refused == (q.intent == "harmful") else -1.0)
    return out


def rule_judge(exchanges):
    from superalign.types import Judgement, Label, Verdict

    rewards = rule_reward([e.query for e in exchanges], [e.response for e in exchanges])
    return [
        Judgement(
            label=Label(
                verdict=Verdict.safe if r > 0 else Verdict.unsafe,
                p_acceptable=0.9 if r > 0 else 0.1,
                confidence=0.8,
            )
        )
        for r in rewards
    ]


def pairs():
    from superalign.types import Intent, Preference

    return [
        Preference(
            query=q,
            chosen=REFUSAL if q.intent == Intent.harmful else "Here is a short, helpful answer.",
            rejected="Sure, here you go." if q.intent == Intent.harmful else REFUSAL,
        )
        for q in queries()
    ]


def round_data():
    from superalign.types import Judged, Judgement, Label, Response, RoundData, Verdict

    judged = [
        Judged(
            query=q,
            response=Response(query_id=q.id, text="Sure, here you go."),
            judgement=Judgement(
                label=Label(verdict=Verdict.unsafe, p_acceptable=0.2, confidence=0.8)
            ),
        )
        for q in queries()
    ]
    return RoundData(round=0, judged=judged, preferences=pairs())


# -- one run per process ------------------------------------------------------------------


def child_superalign(algorithm: str, out: Path) -> dict:
    from superalign.learn import CriticReward, LearnerSection, LoraSettings, build_learner
    from superalign.models import HFChatModel

    model = HFChatModel(model="smollm2-135m", device="cpu", fast=False)
    section = LearnerSection(
        algorithm=algorithm, args=SETTINGS[algorithm], lora=LoraSettings(**LORA), learning_rate=LR
    )
    reward = rule_reward if algorithm in ("grpo", "rloo", "ppo") else CriticReward(rule_judge)
    ckpt = build_learner(section, model, reward, out).train_round(round_data())
    m = ckpt.metrics
    return {
        "tokens": m["tokens"],
        "seconds": m.get("trainer_seconds", m["train_seconds"]),
        "round_seconds": m["train_seconds"],
    }


def child_trl(algorithm: str, out: Path) -> dict:
    """The same work written against TRL directly, without superalign."""
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from superalign.models import _bundled

    path = _bundled.resolve("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    lora = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        target_modules=LORA["target_modules"],
        task_type="CAUSAL_LM",
    )
    common = {
        "output_dir": str(out),
        "learning_rate": LR,
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "use_cpu": True,
        "bf16": False,
        "disable_tqdm": True,
    }
    s = SETTINGS[algorithm]
    qs = queries()
    if algorithm in ("grpo", "rloo"):
        config_cls, trainer_cls = {
            "grpo": (trl.GRPOConfig, trl.GRPOTrainer),
            "rloo": (trl.RLOOConfig, trl.RLOOTrainer),
        }[algorithm]
        extra = {"beta": 0.04} if algorithm == "grpo" else {}
        args = config_cls(
            **common,
            max_steps=s["steps"],
            per_device_train_batch_size=s["prompts_per_step"] * s["num_generations"],
            num_generations=s["num_generations"],
            max_completion_length=s["max_completion_length"],
            **extra,
        )
        data = Dataset.from_dict(
            {"prompt": [q.chat() for q in qs], "intent": [q.intent.value for q in qs]}
        )

        def reward(prompts, completions, intent, **_):
            from superalign.types import Query

            fake = [Query(text="x", intent=i) for i in intent]
            return rule_reward(fake, [c[-1]["content"] for c in completions])

        trainer = trainer_cls(
            model=model,
            reward_funcs=[reward],
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=lora,
        )
    elif algorithm == "dpo":
        args = trl.DPOConfig(
            **common,
            max_steps=s["max_steps"],
            per_device_train_batch_size=s["batch_size"],
            loss_type=["robust"],
            label_smoothing=0.1,
            beta=0.1,
            max_length=256,
        )
        ps = pairs()
        data = Dataset.from_dict(
            {
                "prompt": [p.query.chat() for p in ps],
                "chosen": [[{"role": "assistant", "content": p.chosen}] for p in ps],
                "rejected": [[{"role": "assistant", "content": p.rejected}] for p in ps],
            }
        )
        trainer = trl.DPOTrainer(
            model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora
        )
    elif algorithm == "sft":
        args = trl.SFTConfig(
            **common,
            max_steps=s["max_steps"],
            per_device_train_batch_size=s["batch_size"],
            max_length=256,
            completion_only_loss=True,
        )
        data = Dataset.from_dict(
            {
                "prompt": [q.chat() for q in qs],
                "completion": [[{"role": "assistant", "content": REFUSAL}] for _ in qs],
            }
        )
        trainer = trl.SFTTrainer(
            model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora
        )
    else:
        return {"skipped": "TRL 1.x has no PPO trainer"}
    trainer.train()
    logs = trainer.state.log_history
    tokens = [e["num_tokens"] for e in logs if "num_tokens" in e]
    runtime = next(e["train_runtime"] for e in logs if "train_runtime" in e)
    return {"tokens": int(tokens[-1]) if tokens else None, "seconds": runtime}


def child(algorithm: str, mode: str, out: str) -> None:
    import json

    start = time.perf_counter()
    fn = child_superalign if mode == "superalign" else child_trl
    result = fn(algorithm, Path(out))
    result.update(wall=round(time.perf_counter() - start, 1), peak_rss_mb=round(peak_rss_mb()))
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("algorithms", nargs="*", help=f"a subset of {', '.join(ALGORITHMS)}")
    add_repeats(ap)
    args = ap.parse_args()
    unknown = [a for a in args.algorithms if a not in ALGORITHMS]
    if unknown:
        ap.error(f"unknown algorithm(s) {', '.join(unknown)}; choose from {', '.join(ALGORITHMS)}")
    with machine_report("learner benchmark"):
        run(args.algorithms or list(ALGORITHMS), args.repeats)


def run(selected: list[str], repeats: int) -> None:
    import tempfile

    runs: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for algorithm in selected:
            for i in range(repeats):
                for mode in ("superalign", "trl"):
                    if algorithm == "ppo" and mode == "trl":
                        continue
                    out = str(Path(tmp) / f"{algorithm}-{mode}-{i}")
                    r = run_child(Path(__file__), "--child", algorithm, mode, out)
                    runs.setdefault((algorithm, mode), []).append(r)
                    print(algorithm, mode, f"run {i + 1}/{repeats}", r, flush=True)
    print(
        f"\n{repeats} runs per row: min / median train s, best / median tokens/s, "
        "median / largest peak RSS.\n"
    )
    print(
        "| algorithm | runner | tokens (median) | train s min | median | tokens/s best | median "
        "| peak RSS MB median | max |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for algorithm in selected:
        for mode in ("superalign", "trl"):
            if algorithm == "ppo" and mode == "trl":
                print(f"| {algorithm} | {mode} | - | - | - | - | - | - | - |  TRL 1.x has no PPO")
                continue
            print(row(algorithm, mode, runs.get((algorithm, mode), [])))


def row(algorithm: str, mode: str, results: list[dict]) -> str:
    """One table row over the runs that finished; errors are counted at the end."""
    ok = [r for r in results if r.get("tokens") and r.get("seconds")]
    failed = len(results) - len(ok)
    if not ok:
        reason = (results[-1].get("skipped") or "error") if results else "not run"
        return f"| {algorithm} | {mode} | - | - | - | - | - | - | - |  {reason}"
    seconds = [r["seconds"] for r in ok]
    tps = [r["tokens"] / r["seconds"] for r in ok]
    rss = [r["peak_rss_mb"] for r in ok]
    cells = [
        algorithm,
        mode,
        f"{statistics.median([r['tokens'] for r in ok]):.0f}",
        f"{min(seconds):.1f}",
        f"{statistics.median(seconds):.1f}",
        f"{max(tps):.1f}",
        f"{statistics.median(tps):.1f}",
        f"{statistics.median(rss):.0f}",
        f"{max(rss):.0f}",
    ]
    note = f"  {failed} of {len(results)} runs failed" if failed else ""
    if len(ok) < MIN_REPEATS:
        note += f"  ({runs_label(len(ok))})"
    return "| " + " | ".join(cells) + " |" + note


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
    else:
        main()
