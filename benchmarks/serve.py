"""Throughput of `superalign serve` under concurrent clients.

Starts the OpenAI-compatible server in this process on 127.0.0.1 (the bundled model by
default), then, for each client count, runs that many clients that each send
``--requests`` chat completions one after another (greedy, ``--max-tokens`` tokens, a
fixed set of prompts), ``--repeats`` times. Prints requests/s and completion tokens/s
(of the fastest run, i.e. the minimum time, and the median), the mean batch the server
formed, and the machine and its load before and after (``_machine.machine_report``: the
figures mean little on a busy machine).

    python benchmarks/serve.py                      # 1, 8 and 32 clients, 3 repeats
    python benchmarks/serve.py --clients 1 8 --repeats 3 --requests 2 --max-tokens 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import httpx
from _machine import add_repeats, machine_report, runs_label

PROMPTS = [
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "Explain what a vaccine does in two sentences.",
    "Write a haiku about the sea.",
    "What is 12 times 7?",
    "How do I pick a lock?",
    "Name a fruit that is yellow.",
    "Why is the sky blue?",
]


async def _client(http: httpx.AsyncClient, url: str, model: str, k: int, n: int, tokens: int):
    completion = 0
    for i in range(n):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": PROMPTS[(k + i) % len(PROMPTS)]}],
            "max_tokens": tokens,
            "temperature": 0,
        }
        r = await http.post(f"{url}/chat/completions", json=body, timeout=600)
        r.raise_for_status()
        completion += r.json()["usage"]["completion_tokens"]
    return completion


async def _round(url: str, model: str, clients: int, n: int, tokens: int) -> tuple[float, int]:
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(limits=limits) as http:
        start = time.perf_counter()
        done = await asyncio.gather(
            *(_client(http, url, model, k, n, tokens) for k in range(clients))
        )
        return time.perf_counter() - start, sum(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="alias or checkpoint dir")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    add_repeats(parser)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--window-ms", type=float, default=10.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-fast", action="store_true", help="plain generate, no fast engine")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    from superalign.models import load_model
    from superalign.serve import background, create_app, served_name

    spec = {"backend": "hf", "model": args.model, "device": args.device, "fast": not args.no_fast}
    model = load_model(spec)
    name = served_name(args.model)
    app = create_app(model, name, window_ms=args.window_ms, max_batch=max(args.clients))
    stats = app.state.batcher.stats
    print(f"model {args.model} on {args.device}; {args.requests} request(s) per client,")
    print(f"max_tokens {args.max_tokens}, greedy, window {args.window_ms:g} ms;")
    print(f"{runs_label(args.repeats)} per row: the fastest run (best) and the median")
    with machine_report("serve"), background(app) as base:
        url = f"{base}/v1"
        asyncio.run(_round(url, name, 1, 1, args.max_tokens))  # warm-up
        print(f"{'clients':>7}  {'req/s best':>10}  {'req/s med':>9}  {'tok/s best':>10}  "
              f"{'tok/s med':>9}  {'mean batch':>10}", flush=True)  # fmt: skip
        for clients in args.clients:
            rps, tps, batch = [], [], []
            for _ in range(args.repeats):
                calls, chats = stats.calls, stats.chats
                seconds, tokens = asyncio.run(
                    _round(url, name, clients, args.requests, args.max_tokens)
                )
                rps.append(clients * args.requests / seconds)
                tps.append(tokens / seconds)
                batch.append((stats.chats - chats) / max(1, stats.calls - calls))
            print(
                f"{clients:>7}  {max(rps):>10.2f}  {statistics.median(rps):>9.2f}  "
                f"{max(tps):>10.1f}  {statistics.median(tps):>9.1f}  "
                f"{statistics.mean(batch):>10.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
