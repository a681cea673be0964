"""TRL's private API that learn/_trl.py overrides: fails loudly when a TRL upgrade moves it."""

from __future__ import annotations

import importlib
import inspect

import pytest

from superalign.learn import _trl


@pytest.mark.parametrize(("where", "params"), sorted(_trl.PRIVATE_OVERRIDES.items()))
def test_overridden_trl_method_exists_with_expected_signature(
    where: tuple[str, str, str], params: tuple[str, ...]
) -> None:
    module, cls_name, method = where
    cls = getattr(importlib.import_module(module), cls_name)
    assert hasattr(cls, method), f"TRL's {cls_name}.{method} is gone: update learn/_trl.py"
    found = tuple(inspect.signature(getattr(cls, method)).parameters)
    assert found == params, f"TRL's {cls_name}.{method}{found} changed: update learn/_trl.py"


def test_private_attributes_are_still_set_by_trl() -> None:
    from transformers import Trainer
    from trl import DPOTrainer, SFTTrainer

    source = "".join(inspect.getsource(c) for c in (DPOTrainer, SFTTrainer, Trainer))
    for name in _trl.PRIVATE_ATTRIBUTES:
        assert f"self.{name} =" in source, f"TRL no longer sets {name}: update learn/_trl.py"


def test_adapter_overrides_exactly_the_listed_private_methods() -> None:
    trainer = _trl.margin_loss_dpo_trainer()
    assert trainer.__module__ == "superalign.learn._trl"
    own = {n for n in vars(trainer) if n.startswith("_") and not n.startswith("__")}
    listed = {m for (_, c, m) in _trl.PRIVATE_OVERRIDES if c == "DPOTrainer"}
    assert own == listed


def test_dpo_is_the_only_learner_touching_trl_private_methods() -> None:
    from pathlib import Path

    import superalign.learn as learn

    for path in Path(learn.__file__).parent.glob("*.py"):
        if path.name == "_trl.py":
            continue
        text = path.read_text(encoding="utf-8")
        for _, _, method in _trl.PRIVATE_OVERRIDES:
            assert method not in text, f"{path.name} uses TRL's {method}: keep it in _trl.py"


def test_length_grouped_order_pads_little_and_reshuffles_each_pass() -> None:
    import random

    rng = random.Random(0)
    lengths = [rng.choice([20, 60, 120, 300]) + rng.randrange(10) for _ in range(101)]
    order = _trl.LengthGroupedOrder(lengths, batch_size=8, seed=3)

    def padded(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    first, second = order.batches(), order.batches()
    for batches in (first, second):
        assert sorted(i for b in batches for i in b) == list(range(101))  # each once
        assert [len(b) for b in batches].count(8) == 12
    random_batches = [list(range(i, min(i + 8, 101))) for i in range(0, 101, 8)]
    assert padded(first) < 0.8 * padded(random_batches)  # the point of the order
    assert first != second  # a new order on every pass
    again = _trl.LengthGroupedOrder(lengths, batch_size=8, seed=3)
    assert again.batches() == first  # seeded
    assert list(again) == [i for b in second for i in b]  # iterating draws the next pass
    with pytest.raises(ValueError, match="batch_size"):
        _trl.LengthGroupedOrder(lengths, batch_size=0, seed=0)


def test_length_grouped_trainer_overrides_only_the_sampler() -> None:
    from transformers import Trainer

    trainer = _trl.length_grouped(Trainer)
    own = {n for n in vars(trainer) if n.startswith("_") and not n.startswith("__")}
    assert own == {m for (_, c, m) in _trl.PRIVATE_OVERRIDES if c == "Trainer"}
