"""The bundled model fine-tuned end to end (LoRA) as a critic, scored where the heads on
fixed features are (issue: judges that read strong models' answers, item 2).

The same rows as the default training critic (the shipped `train` split, short and long:
`learned@train+long`), the same classes and intent mask as the learned critic's head, and
the same reading of a pair (the query in the chat template, then the answer's first
`--max-response` tokens). What differs from `benchmarks/critic_features.py --features lm`:
the backbone is not frozen. Its first two thirds of layers (the depth the LM features
read) get LoRA adapters on every linear layer and are trained with a linear head over
the mean of the last kept layer's states over the answer and over its first 12 tokens;
the deeper layers and the LM head are dropped. Scored on the labelled completions of
other models given as FILEs (harmful accuracy and refusal detection, per file and
pooled), on the hand-labelled slice of the bundled model's own answers, and on the
shipped `test` split; the cost per pair of training and of scoring is printed (run it
alone for those figures).

    python benchmarks/critic_lora.py /tmp/xstest/*.csv --epochs 1
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from _machine import machine_report
from critic_features import _agreement, report_outside
from rejudge import rejudge

from superalign.critic import LABELLED_LONG, LearnedCritic, load_labelled, shipped_rows
from superalign.critic._data import data_dir
from superalign.critic._learned import BACKBONE, CLASSES, _mask, encode_pairs, target_class
from superalign.eval import load_judge_slice
from superalign.models import resolve_path
from superalign.types import Intent

OPENING = 12  # answer tokens whose mean is the second half of the pooled state


class LoRACritic:
    """The bundled model's first two thirds with LoRA adapters, and a linear head over
    CLASSES; duck-types the ``predict``/``identity`` a LearnedCritic needs."""

    def __init__(self, rank: int, max_query: int, max_response: int, bf16: bool) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_path(BACKBONE)
        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        decoder = lm.model
        depth = len(decoder.layers)
        decoder.layers = decoder.layers[: 2 * depth // 3]
        decoder.config.num_hidden_layers = len(decoder.layers)
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05, target_modules=targets)
        self.decoder = get_peft_model(decoder, cfg)
        hidden = decoder.config.hidden_size
        self.head = torch.nn.Linear(2 * hidden, len(CLASSES))
        torch.nn.init.zeros_(self.head.weight)
        self.bias = torch.nn.Parameter(torch.zeros(len(Intent), len(CLASSES)))
        self.max_query, self.max_response, self.bf16 = max_query, max_response, bf16
        self.rank = rank

    def identity(self) -> dict[str, Any]:
        return {"kind": "lora", "model": BACKBONE, "rank": self.rank,
                "max_response": self.max_response}  # fmt: skip

    def parameters(self) -> list[Any]:
        lora = [p for p in self.decoder.parameters() if p.requires_grad]
        return [*lora, *self.head.parameters(), self.bias]

    def logits(self, pairs: list[tuple[str, str]], intents: list[Intent]) -> Any:
        ids, mask, spans = encode_pairs(self.tok, pairs, self.max_query, self.max_response)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            states = self.decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        states = states.float()
        pooled = torch.stack([
            torch.cat([states[i, a:b].mean(0), states[i, a : min(b, a + OPENING)].mean(0)])
            for i, (a, b) in enumerate(spans)
        ])  # fmt: skip
        which = torch.tensor([list(Intent).index(Intent(x)) for x in intents])
        return (self.head(pooled) + self.bias[which]).masked_fill(~_mask(intents), -1e9)

    def predict(self, pairs, intents, batch_size: int = 16) -> np.ndarray:
        self.decoder.eval()
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        out = np.zeros((len(pairs), len(CLASSES)))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                z = self.logits([pairs[i] for i in idx], [intents[i] for i in idx])
                out[idx] = torch.softmax(z, dim=1).numpy()
        return out

    def fit(self, rows, epochs: int, batch_size: int, lr: float, seed: int) -> float:
        """Train adapters and head on ``rows``; returns seconds per pair and epoch."""
        torch.manual_seed(seed)
        opt = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=0.0)
        # Batches of similar length, visited in a seeded order.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].query) + len(rows[i].response))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        targets = torch.tensor([CLASSES.index(target_class(r.label, r.intent)) for r in rows])
        began = time.perf_counter()
        for epoch in range(epochs):
            random.Random(seed + epoch).shuffle(batches)
            self.decoder.train()
            for step, idx in enumerate(batches):
                z = self.logits([(rows[i].query, rows[i].response) for i in idx],
                                [rows[i].intent for i in idx])  # fmt: skip
                w = torch.tensor([max(0.0, rows[i].weight) for i in idx])
                loss = (torch.nn.functional.cross_entropy(z, targets[idx], reduction="none")
                        * w).sum() / w.sum().clamp_min(1e-6)  # fmt: skip
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step % 20 == 0:
                    print(f"  epoch {epoch + 1} step {step}/{len(batches)} loss {loss.item():.3f} "
                          f"({time.perf_counter() - began:.0f} s)", flush=True)  # fmt: skip
        return (time.perf_counter() - began) / (epochs * len(rows))


def run(args: argparse.Namespace) -> None:
    rows, _ = shipped_rows(args.splits.split(","))
    if args.train_limit:  # a seeded sample: a smoke check of the script, not a figure
        rows = random.Random(args.seed).sample(rows, min(args.train_limit, len(rows)))
    outside = {Path(f).stem: load_labelled(f)[: args.limit] for f in args.files}
    short = [r for r in load_labelled() if r.split == "test"]
    long_ = [r for r in load_labelled(data_dir() / LABELLED_LONG) if r.split == "test"]
    slice_ = load_judge_slice("shipped")
    torch.manual_seed(args.seed)  # the adapters' initialisation
    model = LoRACritic(args.rank, 96, args.max_response, bf16=args.precision == "bf16")
    trainable = sum(p.numel() for p in model.parameters())
    print(f"trained on {len(rows)} rows (shipped splits {args.splits}), {args.epochs} epoch(s), "
          f"LoRA rank {args.rank} on {len(model.decoder.base_model.model.layers)} layers, "
          f"{trainable:,} trainable parameters, {args.precision}")  # fmt: skip
    per_pair = model.fit(rows, args.epochs, args.batch_size, args.lr, args.seed)
    print(f"training: {per_pair * 1000:.0f} ms a pair and epoch")
    critic = LearnedCritic.from_model(model)  # type: ignore[arg-type]
    began = time.perf_counter()
    report_outside(critic, outside)
    if outside:
        per_pair = (time.perf_counter() - began) * 1000 / sum(map(len, outside.values()))
        print(f"  scoring the outside answers: {per_pair:.0f} ms a pair")
    print(f"  slice (bundled model's answers)  {_agreement(critic, slice_)}")
    print(f"  shipped test, short               {_agreement(critic, short)}")
    print(f"  shipped test, long                {_agreement(critic, long_)}")
    if args.run:
        rejudge(Path(args.run), {"lora": critic}, tier="eval-external", hand_file=args.hand)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="labelled completions of other models")
    ap.add_argument("--splits", default="train+long", help="shipped splits to train on")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-response", type=int, default=128, help="answer tokens read")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                    help="autocast of the forward (bf16: a CPU with bfloat16 units)")  # fmt: skip
    ap.add_argument("--limit", type=int, help="the first N rows of each file")
    ap.add_argument("--run", help="also judge a run's stored answers to outside harmful prompts")
    ap.add_argument("--hand", type=Path, help="with --run: hand labels to score against")
    ap.add_argument("--train-limit", type=int, help="a seeded sample of N training rows")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with machine_report("the bundled model fine-tuned (LoRA) as a critic"):
        run(args)


if __name__ == "__main__":
    main()
