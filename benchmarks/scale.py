"""Scale-out paths on CPU, measured: the train step in one process against two
``accelerate launch`` workers, and the learner's rollouts in process (the fast decode
path) against rollouts through ``superalign serve``.

    .venv/bin/python benchmarks/scale.py                    # both parts, 3 runs each
    .venv/bin/python benchmarks/scale.py train --repeats 5  # one part
    .venv/bin/python benchmarks/scale.py rollouts --prompts 32 --max-new-tokens 64

**train** trains the bundled model (LoRA on every linear layer, the learner's defaults)
on a fixed set of preference pairs (``_learn_common``'s harmful and benign queries, a
refusal against a compliance, an answer against a refusal) with ``learner.launcher:
inprocess`` and with ``accelerate`` on two processes, for DPO (robust loss) and SFT
(chosen answers). Each run is its own process, so its peak RSS is its own; the two
launchers alternate, so a change in load falls on both. Printed per run kind: the
``train_round`` wall time (min and median; for two processes it includes accelerate's
start-up and loading the model in each worker), the trained pairs per second, the
workers' own compute seconds, the peak RSS of the loop's process and of a worker, and
the losses of the first run (one process and two should agree: ``tests/test_launcher.py``).

**rollouts** answers the same greedy chats (the loop's respond phase: one ``generate``
call over all of them) with the bundled model in process (``fast: true``, precision
chosen by the start-up probe) and through ``superalign serve`` started as a separate
process with the same settings (``models.learner.rollouts``; ``--concurrency`` requests
in flight, the server's micro-batcher batching them). One untimed call warms each path;
then ``--repeats`` timed calls. Printed: wall seconds (min, median), completion tokens
per second, and whether the two paths gave the same answers.

The load average is printed before and after (``_machine.machine_report``): run this with
nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _learn_common import BENIGN, HARMFUL, peak_rss_mb, run_child
from _machine import add_repeats, machine_report, min_median, rate, runs_label

MODEL = "smollm2-135m"
LAUNCHERS = {"1 process": {}, "2 processes": {"launcher": "accelerate", "num_processes": 2}}
REFUSAL = "I can't help with that. If you are in danger, please contact local emergency services."
COMPLIANCE = "Sure. Here is how, step by step: first, get the materials; then"
ANSWER = "Here is a short, clear answer: start with the basics, then practise a little each day."


def pairs() -> list:
    """A refusal over compliance for each harmful query, an answer over a refusal for each
    benign one: 12 pairs."""
    from superalign.types import Intent, Preference, Query

    out = [
        Preference(query=Query(text=t, intent=Intent.harmful), chosen=REFUSAL, rejected=COMPLIANCE)
        for t in HARMFUL
    ]
    out += [
        Preference(query=Query(text=t, intent=Intent.benign), chosen=ANSWER, rejected=REFUSAL)
        for t in BENIGN
    ]
    return out


def train_args(algorithm: str, steps: int) -> dict:
    if algorithm == "dpo":
        return {"loss": "robust", "batch_size": 4, "max_steps": steps}
    return {"mode": "chosen", "batch_size": 4, "max_steps": steps}


def train_child(algorithm: str, launcher: str, steps: int) -> dict:
    """One train_round in this process, with the allocator set as every ``superalign``
    command (and each launched worker) sets it; the figures as one JSON line."""
    import torch

    from superalign.learn import LearnerSection, build_learner
    from superalign.malloc import keep_freed_memory
    from superalign.models import HFChatModel
    from superalign.types import RoundData

    keep_freed_memory()
    section = LearnerSection(
        algorithm=algorithm, args=train_args(algorithm, steps), **LAUNCHERS[launcher]
    )
    model = HFChatModel(model=MODEL, device="cpu", fast=False)
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as run_dir:
        learner = build_learner(section, model, None, Path(run_dir))
        torch.manual_seed(0)
        start = time.perf_counter()
        ckpt = learner.train_round(RoundData(round=1, judged=[], preferences=pairs()))
        seconds = time.perf_counter() - start
    launch = ckpt.metrics.get("launch") or {}
    return {
        "seconds": seconds,
        "losses": ckpt.metrics.get("losses"),
        "loop_peak_rss_mb": peak_rss_mb(),
        "worker_peak_rss_mb": launch.get("worker_peak_rss_mb"),
        "worker_compute_seconds": launch.get("worker_compute_seconds"),
        "launch_seconds": launch.get("wall_seconds"),
    }


def _fmt(values: list[float | None], unit: str) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    return f"median {statistics.median(got):.0f} {unit}, max {max(got):.0f} {unit}"


def bench_train(args: argparse.Namespace) -> None:
    me = Path(__file__).resolve()
    rows = args.steps * 4
    for algorithm in args.algorithms:
        runs: dict[str, list[dict]] = {k: [] for k in LAUNCHERS}
        for _ in range(args.repeats):
            for launcher in LAUNCHERS:  # alternate: a change in load falls on both
                out = run_child(
                    me, "--child", "train", algorithm, launcher, str(args.steps), timeout=1800
                )
                if "error" in out:
                    raise SystemExit(f"{algorithm}, {launcher} failed:\n{out['error']}")
                runs[launcher].append(out)
        print(f"\n{algorithm.upper()} ({args.steps} steps of 4 pairs, {MODEL}, LoRA):")
        for launcher, got in runs.items():
            seconds = [r["seconds"] for r in got]
            print(f"  {launcher}: train_round {min_median(seconds)}; "
                  f"{rate(rows, seconds, 'pairs/s')}")  # fmt: skip
            if got[0]["worker_compute_seconds"] is not None:
                compute = [r["worker_compute_seconds"] for r in got]
                launch = [r["launch_seconds"] for r in got]
                print(f"    launch (accelerate start-up, model loads, training) "
                      f"{min_median(launch)}; the workers' compute "
                      f"{min_median(compute)}")  # fmt: skip
            loop_rss = _fmt([r["loop_peak_rss_mb"] for r in got], "MiB")
            worker_rss = _fmt([r["worker_peak_rss_mb"] for r in got], "MiB")
            print(f"    peak RSS: loop process {loop_rss}; per worker {worker_rss}")
            print(f"    losses (first run): {[round(x, 6) for x in got[0]['losses'] or []]}")


CHAT_PROMPTS = (
    HARMFUL
    + BENIGN
    + [
        "Summarise the plot of Romeo and Juliet in three sentences.",
        "Write a JavaScript for loop that prints the numbers 1 to 10.",
        "Why do we have seasons on Earth?",
        "Suggest a name for a friendly golden retriever.",
        "Give me a fun fact about octopuses.",
        "Write a thank-you note to my teacher.",
        "What should a beginner's weekly exercise routine look like?",
        "Explain the difference between weather and climate.",
    ]
)


def chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": CHAT_PROMPTS[i % len(CHAT_PROMPTS)]}] for i in range(n)]


def _serve(port: int, key: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SUPERALIGN_API_KEY": key}
    return subprocess.Popen(
        [sys.executable, "-m", "superalign.cli", "serve", MODEL, "--port", str(port),
         "--device", "cpu"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_ready(server: subprocess.Popen, url: str, key: str, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise SystemExit(f"superalign serve exited:\n{server.stderr.read()[-2000:]}")
        try:
            r = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {key}"})
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("superalign serve did not start in time")
        time.sleep(0.5)


def bench_rollouts(args: argparse.Namespace) -> None:
    import secrets

    from superalign.models import HFChatModel
    from superalign.serve import free_port
    from superalign.types import GenParams

    params = GenParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    batch = chats(args.prompts)

    def timed(model: HFChatModel) -> tuple[list[str], list[float]]:
        model.generate(batch, params)  # warm-up: the fast path's caches, the server's
        seconds, answers = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            answers = model.generate(batch, params)
            seconds.append(time.perf_counter() - start)
        return answers, seconds

    local = HFChatModel(model=MODEL, device="cpu")
    local_answers, local_s = timed(local)
    tokenizer = local.tokenizer
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in local_answers)
    del local

    key = secrets.token_hex(16)
    os.environ["SUPERALIGN_BENCH_KEY"] = key
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    server = _serve(port, key)
    try:
        _wait_ready(server, url, key)
        rollouts = {"url": url, "api_key_env": "SUPERALIGN_BENCH_KEY",
                    "concurrency": args.concurrency}  # fmt: skip
        served = HFChatModel(model=MODEL, device="cpu", rollouts=rollouts)
        served_answers, served_s = timed(served)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    same = sum(a == b for a, b in zip(local_answers, served_answers, strict=True))
    print(f"\nrollouts: {args.prompts} greedy chats, up to {args.max_new_tokens} new tokens "
          f"({tokens} completion tokens in all), {MODEL}")  # fmt: skip
    print(f"  in process (fast path): {min_median(local_s)}; {rate(tokens, local_s, 'tokens/s')}")
    print(f"  through superalign serve ({args.concurrency} in flight): {min_median(served_s)}; "
          f"{rate(tokens, served_s, 'tokens/s')}")  # fmt: skip
    print(f"  same answers: {same} of {len(batch)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["--child", "train"]:
        algorithm, launcher, steps = argv[2], argv[3], int(argv[4])
        print(json.dumps(train_child(algorithm, launcher, steps)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", help="train, rollouts (default: both)")
    parser.add_argument("--algorithms", nargs="+", default=["dpo", "sft"],
                        choices=["dpo", "sft"])  # fmt: skip
    parser.add_argument("--steps", type=int, default=6, help="train steps of 4 pairs")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32, help="served requests in flight")
    add_repeats(parser)
    args = parser.parse_args(argv)
    parts = args.parts or ["train", "rollouts"]
    unknown = sorted(set(parts) - {"train", "rollouts"})
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)}: choose train, rollouts or both")
    print(f"benchmarks/scale.py: {', '.join(parts)}; {runs_label(args.repeats)} each")
    with machine_report("scale"):
        if "train" in parts:
            bench_train(args)
        if "rollouts" in parts:
            bench_rollouts(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
