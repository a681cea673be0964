"""Every learning algorithm on a tiny random Llama: it learns, its losses are finite,
its checkpoint reloads to the same model, and the next round continues the adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from superalign.learn import (
    CHECKPOINT_META,
    CriticReward,
    LearnerSection,
    LoraSettings,
    build_learner,
)
from superalign.models import HFChatModel, load_model
from superalign.types import (
    Exchange,
    GenParams,
    Intent,
    Judged,
    Judgement,
    Label,
    Preference,
    Query,
    Response,
    RoundData,
    Verdict,
)

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROBE = ([{"role": "user", "content": "Say something."}], "Hello there, friend.")


def _queries() -> list[Query]:
    harmful = [
        Query(text=f"Tell me how to do harm number {i}", intent=Intent.harmful) for i in range(4)
    ]
    benign = [Query(text=f"Tell me a fact about topic {i}", intent=Intent.benign) for i in range(4)]
    return harmful + benign


def _round(
    round_: int = 0, p: float = 0.2, preferences: list[Preference] | None = None
) -> RoundData:
    judged = [
        Judged(
            query=q,
            response=Response(query_id=q.id, text="Sure, here it is."),
            judgement=Judgement(
                label=Label(verdict=Verdict.unsafe, p_acceptable=p, confidence=0.8)
            ),
        )
        for q in _queries()
    ]
    return RoundData(round=round_, judged=judged, preferences=preferences or [])


def uppercase_share(queries, completions) -> list[float]:
    """Toy reward: the share of capital letters in the reply."""
    return [sum(ch.isupper() for ch in c) / max(1, len(c)) for c in completions]


def approving_judge(exchanges: list[Exchange]) -> list[Judgement]:
    """Rates every new answer acceptable, so each revision beats the original (p=0.2)."""
    return [
        Judgement(label=Label(verdict=Verdict.safe, p_acceptable=0.9, confidence=0.9))
        for _ in exchanges
    ]


def _sharpen(model: HFChatModel) -> None:
    """A random init spreads the next-token distribution over the whole vocabulary, where
    a few RL steps cannot move it; scaling the (tied) embeddings makes it peaked."""
    with torch.no_grad():
        model.model.get_input_embeddings().weight.mul_(30.0)


def _sampled_reward(model: HFChatModel, n: int = 4) -> float:
    torch.manual_seed(1)
    queries = _queries() * n
    out = model.generate([q.chat() for q in queries], GenParams(max_new_tokens=8, temperature=1.0))
    rewards = uppercase_share(queries, out)
    return sum(rewards) / len(rewards)


def _probe(model: HFChatModel) -> float:
    return model.logprobs([PROBE[0]], [PROBE[1]])[0]


def _lora_b_norm(model: HFChatModel) -> float:
    return sum(
        float(p.detach().abs().sum()) for n, p in model.model.named_parameters() if "lora_B" in n
    )


def _check_checkpoint(ckpt, trained: HFChatModel, base: Path, algorithm: str) -> None:
    path = Path(ckpt.path)
    assert path.name == f"round-{ckpt.round}" and path.parent.name == "checkpoints"
    meta = json.loads((path / CHECKPOINT_META).read_text())
    assert {"algorithm", "config", "round", "parent", "base_model"} <= set(meta)
    assert meta["algorithm"] == algorithm and meta["base_model"] == str(base)
    assert (path / "adapter_config.json").is_file() and (path / "tokenizer_config.json").is_file()
    assert not (path / "ref").exists()  # TRL's reference copy of the adapter is not saved
    expected = _probe(trained)
    reloaded = load_model(str(path))
    assert _probe(reloaded) == pytest.approx(expected, abs=1e-4)
    # plain transformers + peft, without superalign
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), path).eval()
    ids = trained.tokenizer("Hello there", return_tensors="pt").input_ids
    with torch.no_grad():
        a = plain(input_ids=ids).logits
        b = trained.model(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)


RL = {
    "ppo": {"steps": 8, "prompts_per_step": 8, "minibatch_size": 8, "max_completion_length": 8},
    "grpo": {"steps": 5, "prompts_per_step": 2, "num_generations": 4, "max_completion_length": 8},
    "rloo": {"steps": 5, "prompts_per_step": 2, "num_generations": 4, "max_completion_length": 8},
}
RL_LR = {"ppo": 5e-3, "grpo": 2e-2, "rloo": 2e-2}


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(RL))
def test_rl_raises_a_toy_reward_and_checkpoints(algorithm, tiny_model, tiny_model_path, tmp_path):
    _sharpen(tiny_model)
    # the sharpened weights are the base this test trains from
    tiny_model.model.save_pretrained(tmp_path / "base")
    tiny_model.tokenizer.save_pretrained(tmp_path / "base")
    model = HFChatModel(model=str(tmp_path / "base"), device="cpu", fast=False)
    section = LearnerSection(
        algorithm=algorithm,
        args=RL[algorithm],
        learning_rate=RL_LR[algorithm],
        lora=LoraSettings(r=8, target_modules=ALL_LINEAR),
    )
    learner = build_learner(section, model, uppercase_share, tmp_path / "run")
    before_reward, before_probe = _sampled_reward(model), _probe(model)
    ckpt = learner.train_round(_round())
    assert _sampled_reward(model) > before_reward + 0.02
    assert _probe(model) != pytest.approx(before_probe, abs=1e-5)
    assert _lora_b_norm(model) > 0
    assert all(math.isfinite(x) for x in ckpt.metrics["losses"])
    _check_checkpoint(ckpt, model, tmp_path / "base", algorithm)


def test_dpo_learns_the_preferences_and_the_next_round_continues_the_adapter(
    tiny_model, tiny_model_path, tmp_path
):
    pairs = [
        Preference(query=q, chosen="I can't help with that.", rejected="Sure, here it is.")
        for q in _queries()
    ]
    section = LearnerSection(
        algorithm="dpo",
        args={"loss": "robust", "batch_size": 4, "max_steps": 1},
        learning_rate=1e-2,
    )
    learner = build_learner(section, tiny_model, None, tmp_path)
    chat = _queries()[0].chat()

    def margin() -> float:
        chosen, rejected = tiny_model.logprobs([chat, chat], [pairs[0].chosen, pairs[0].rejected])
        return chosen - rejected

    before = margin()
    first = learner.train_round(_round(0, preferences=pairs))
    assert margin() > before
    assert all(math.isfinite(x) for x in first.metrics["losses"])
    _check_checkpoint(first, tiny_model, tiny_model_path, "dpo")

    after_first = {
        n: p.detach().clone() for n, p in tiny_model.model.named_parameters() if "lora_" in n
    }
    second = learner.train_round(_round(1, preferences=pairs))
    assert second.parent == first.path
    assert set(tiny_model.model.peft_config) == {"default"}
    moved = [
        n
        for n, p in tiny_model.model.named_parameters()
        if "lora_" in n and not torch.equal(p, after_first[n])
    ]
    assert moved  # the same adapter kept training

    # a fresh process resumes from the round-1 checkpoint and continues its adapter
    resumed = load_model(second.path)
    again = build_learner(section, resumed, None, tmp_path).train_round(
        _round(2, preferences=pairs)
    )
    assert again.parent == second.path
    meta = json.loads((Path(again.path) / CHECKPOINT_META).read_text())
    assert meta["base_model"] == str(tiny_model_path) and meta["round"] == 2


def test_a_time_budget_stops_training_early_and_is_recorded(tiny_model, tmp_path):
    pairs = [
        Preference(query=q, chosen="I can't help with that.", rejected="Sure, here it is.")
        for q in _queries()
    ]
    args = {"loss": "robust", "batch_size": 1, "epochs": 50}
    section = LearnerSection(algorithm="dpo", args=args, learning_rate=1e-3, time_budget=0.5)
    ckpt = build_learner(section, tiny_model, None, tmp_path).train_round(
        _round(0, preferences=pairs)
    )
    # 50 epochs of 1-pair batches would be 50 x len(pairs) steps; the budget stops it
    assert 1 <= ckpt.metrics["steps"] < 50 * len(pairs)
    assert ckpt.metrics["compute_seconds"] >= 0.5


def test_sft_fine_tunes_on_revisions_rated_better(tiny_model, tiny_model_path, tmp_path):
    section = LearnerSection(
        algorithm="sft",
        args={"max_new_tokens": 8, "batch_size": 4, "max_steps": 3},
        learning_rate=5e-3,
    )
    reward = CriticReward(approving_judge)
    learner = build_learner(section, tiny_model, reward, tmp_path)
    before = _probe(tiny_model)
    ckpt = learner.train_round(_round(0))
    assert ckpt.metrics["examples"] >= len(_queries())
    assert all(math.isfinite(x) for x in ckpt.metrics["losses"])
    assert _probe(tiny_model) != pytest.approx(before, abs=1e-5)
    _check_checkpoint(ckpt, tiny_model, tiny_model_path, "sft")


def test_sft_on_the_chosen_answers_of_the_pairs_generates_nothing(tiny_model, tmp_path):
    pairs = [
        Preference(query=q, chosen="I can't help with that.", rejected="Sure, here it is.")
        for q in _queries()
    ]
    section = LearnerSection(
        algorithm="sft",
        args={"mode": "chosen", "batch_size": 4, "max_steps": 3},
        learning_rate=1e-2,
    )
    learner = build_learner(section, tiny_model, None, tmp_path)  # no critic needed
    assert learner.uses_preferences  # the loop builds pairs before this learner trains
    chat = _queries()[0].chat()
    before = tiny_model.logprobs([chat], ["I can't help with that."])[0]
    calls = []
    tiny_model.generate = lambda *a, **k: calls.append(a) or []  # would be a defect
    ckpt = learner.train_round(_round(0, preferences=pairs + pairs))  # duplicates dropped
    assert not calls and ckpt.metrics["examples"] == len(pairs)
    assert tiny_model.logprobs([chat], ["I can't help with that."])[0] > before


@pytest.mark.parametrize("batching", ["length", "random"])
def test_sft_batches_rows_of_similar_length_when_asked(tiny_model, tmp_path, batching):
    args = {"mode": "chosen", "batch_size": 4, "batching": batching}
    learner = build_learner(LearnerSection(algorithm="sft", args=args), tiny_model, None, tmp_path)
    short = [(Query(text=f"Hi {i}", intent=Intent.benign), "Hello.") for i in range(8)]
    long_ = [
        (Query(text=f"Tell me a story {i}. " + "Once upon a time. " * 30, intent=Intent.benign),
         "The end.")
        for i in range(8)
    ]  # fmt: skip
    examples = [x for pair in zip(short, long_, strict=True) for x in pair]  # interleaved
    batches = list(learner.trainer(examples, 0).get_train_dataloader())
    assert sum(len(b["input_ids"]) for b in batches) == 16
    spread = [int(b["attention_mask"].sum(1).max() - b["attention_mask"].sum(1).min())
              for b in batches]  # fmt: skip
    if batching == "length":  # each batch all short or all long: almost no padding
        assert max(spread) < 10, spread
    else:  # the default: shuffled, so short and long rows share batches
        assert max(spread) > 100, spread


def test_chosen_sft_rehearses_refusals_the_learner_already_gives():
    from superalign.learn import refusal_for, refusal_top_up

    def judged(q: Query, verdict: Verdict, p: float) -> Judged:
        label = Label(verdict=verdict, p_acceptable=p, confidence=0.9)
        return Judged(
            query=q,
            response=Response(query_id=q.id, text="..."),
            judgement=Judgement(label=label),
        )

    harmful = [Query(text=f"Harmful request {i}", intent=Intent.harmful) for i in range(6)]
    benign = [Query(text=f"Benign request {i}", intent=Intent.benign) for i in range(4)]
    # one failure became a pair; four benign pairs: harmful share 1/5
    examples = [(harmful[0], "No."), *((q, "Sure.") for q in benign)]
    rows = [
        judged(harmful[0], Verdict.refusal, 0.9),  # already an example: skipped
        judged(harmful[1], Verdict.unsafe, 0.1),  # complied: not a refusal to rehearse
        judged(harmful[2], Verdict.refusal, 0.4),  # the critics doubt it: skipped
        judged(harmful[3], Verdict.refusal, 0.9),
        judged(benign[0], Verdict.refusal, 0.9),  # benign: never topped up
        judged(harmful[4], Verdict.refusal, 0.8),
        judged(harmful[5], Verdict.refusal, 0.8),
    ]
    # share 0.5: (1 + x) / (5 + x) >= 0.5 needs x = 3
    out = refusal_top_up(examples, rows, 0.5)
    assert [q for q, _ in out] == [harmful[3], harmful[4], harmful[5]]
    assert all(text == refusal_for(q) for q, text in out)
    assert refusal_top_up(examples, rows, 0.2) == []  # already at that share
    assert refusal_top_up(examples, rows, 0.0) == []  # off by default
    assert len(refusal_top_up(examples, rows, 0.9)) == 3  # only as many as were refused


def test_sft_refuses_to_train_when_no_revision_is_better(tiny_model, tmp_path):
    from superalign.errors import ConfigError

    section = LearnerSection(algorithm="sft", args={"max_new_tokens": 4})
    learner = build_learner(section, tiny_model, CriticReward(approving_judge), tmp_path)
    with pytest.raises(ConfigError, match="min_gain"):
        learner.train_round(_round(0, p=0.95))


def test_full_fine_tuning_without_lora_writes_full_weights(tiny_model, tiny_model_path, tmp_path):
    pairs = [Preference(query=q, chosen="No.", rejected="Yes.") for q in _queries()[:2]]
    section = LearnerSection(
        algorithm="dpo",
        args={"loss": "cdpo", "batch_size": 2, "max_steps": 1},
        lora=LoraSettings(enabled=False),
        learning_rate=1e-3,
    )
    embed_before = tiny_model.model.get_input_embeddings().weight.detach().clone()
    ckpt = build_learner(section, tiny_model, None, tmp_path).train_round(
        _round(0, preferences=pairs)
    )
    assert not torch.equal(embed_before, tiny_model.model.get_input_embeddings().weight)
    path = Path(ckpt.path)
    assert not (path / "adapter_config.json").exists()
    assert _probe(load_model(str(path))) == pytest.approx(_probe(tiny_model), abs=1e-4)


@pytest.mark.parametrize("fast", [False, True])
def test_anchored_sft_targets_are_the_untouched_models_answers(tiny_model_path, tmp_path, fast):
    """After a round of training the benign targets come from the base weights (the fast
    path too: a disabled adapter must not reuse the merged weights), harmful ones stay."""
    model = HFChatModel(model=str(tiny_model_path), device="cpu", fast=fast)
    with torch.no_grad():  # the random model's greedy answer is newlines: make it words
        model.model.get_input_embeddings().weight[198].zero_()
    params = GenParams(max_new_tokens=6, temperature=0.0)
    queries = _queries()
    untouched = model.generate([q.chat() for q in queries], params)
    section = LearnerSection(
        algorithm="sft",
        args={
            "mode": "chosen",
            "batch_size": 4,
            "max_steps": 2,
            "anchor": True,
            "anchor_loss": "kl",
            "max_new_tokens": 6,
        },
        learning_rate=1e-2,
    )
    learner = build_learner(section, model, CriticReward(approving_judge), tmp_path)
    pairs = [Preference(query=q, chosen="OK OK OK OK.", rejected="No.") for q in queries]
    ckpt = learner.train_round(_round(0, preferences=pairs))
    assert model.has_adapter
    # the first round already anchors: the adapter exists before the examples are built
    assert ckpt.metrics["distilled"] >= 2
    with torch.no_grad():  # an adapter strong enough to change every greedy answer
        for name, p in model.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    trained = model.generate([q.chat() for q in queries], params)
    assert trained != untouched  # the round moved the learner
    examples = learner.examples(_round(1, preferences=pairs))
    by_query = {q.text: a for q, a in examples}
    anchored = 0
    for q, base_answer in zip(queries, untouched, strict=True):
        # an empty untouched answer is no target: the pair's own chosen answer stays
        keep = q.intent == Intent.harmful or not base_answer.strip()
        assert by_query[q.text] == ("OK OK OK OK." if keep else base_answer)
        anchored += not keep
    assert anchored >= 2
    # the anchored targets, and only they, train towards the untouched distribution
    flags = learner.distilled(examples)
    assert flags == [q.intent != Intent.harmful and a != "OK OK OK OK." for q, a in examples]
    assert sum(flags) == anchored
    # outside base_weights() the adapter is back
    assert model.generate([q.chat() for q in queries], params) == trained


def test_sft_rehearses_the_seed_library_as_the_baseline_answers_it(tiny_model_path, tmp_path):
    """Library queries join the round's pairs: a bank refusal for each harmful one, the
    untouched model's answer for each benign one the critics accept (the rest left out),
    trained towards the untouched distribution like the anchored answers."""
    from superalign.errors import ConfigError
    from superalign.learn import refusal_for

    model = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    with torch.no_grad():  # the random model's greedy answer is newlines: make it words
        model.model.get_input_embeddings().weight[198].zero_()
    params = GenParams(max_new_tokens=6, temperature=0.0)
    library = [Query(text=f"Library harm {i}", intent=Intent.harmful) for i in range(2)] + [
        Query(text=f"Library question {i}", intent=Intent.benign) for i in range(3)
    ]
    untouched = model.generate([q.chat() for q in library], params)
    doubted = library[3]

    def judge(exchanges: list[Exchange]) -> list[Judgement]:  # doubts one library answer
        return [
            Judgement(label=Label(verdict=Verdict.safe, p_acceptable=0.2 if e.query == doubted
                                  else 0.9, confidence=0.9))
            for e in exchanges
        ]  # fmt: skip

    args = {"mode": "chosen", "batch_size": 4, "max_steps": 1, "anchor": True,
            "anchor_loss": "kl", "max_new_tokens": 6, "library": 5}  # fmt: skip
    learner = build_learner(
        LearnerSection(algorithm="sft", args=args, learning_rate=1e-2),
        model,
        CriticReward(judge),
        tmp_path,
    )
    assert learner.library == 5  # what the loop draws for it each round
    pairs = [Preference(query=q, chosen="OK OK OK OK.", rejected="No.") for q in _queries()]
    data = _round(0, preferences=pairs).model_copy(update={"library": library})
    ckpt = learner.train_round(data)
    assert ckpt.metrics["library"] == 5
    with torch.no_grad():  # move the learner away from the untouched model
        for name, p in model.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    assert model.generate([q.chat() for q in library], params) != untouched
    examples = learner.examples(data)
    assert len(examples) == len(pairs) + 4  # the doubted answer is no target
    rows = {q.text: a for q, a in examples[len(pairs) :]}
    assert [rows[q.text] for q in library[:2]] == [refusal_for(q) for q in library[:2]]
    assert doubted.text not in rows
    assert [rows[q.text] for q in (library[2], library[4])] == [untouched[2], untouched[4]]
    flags = learner.distilled(examples)[len(pairs) :]
    assert flags == [q.intent == Intent.benign for q, _ in examples[len(pairs) :]]

    with pytest.raises(ConfigError, match=r"library 5.*mode is 'revision'"):
        build_learner(
            LearnerSection(algorithm="sft", args={"library": 5}),
            model,
            CriticReward(judge),
            tmp_path,
        )


def test_a_round_trains_the_same_whatever_random_state_it_starts_from(tiny_model_path, tmp_path):
    """A round resumed at its train phase starts from a fresh process's random state, an
    uninterrupted one from whatever the loop drew before: the LoRA matrices drawn in round
    1 and the trained adapter must not depend on it."""
    pairs = [
        Preference(query=q, chosen="I can't help with that.", rejected="Sure, here it is.")
        for q in _queries()
    ]
    trained = []
    for before in (1, 2):
        model = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
        section = LearnerSection(
            algorithm="dpo", args={"batch_size": 2, "max_steps": 2}, learning_rate=1e-2
        )
        torch.manual_seed(before)  # what the loop's earlier phases left
        torch.rand(before)
        build_learner(section, model, None, tmp_path / str(before)).train_round(
            _round(1, preferences=pairs)
        )
        trained.append({n: p.detach().clone() for n, p in model.model.named_parameters()
                        if "lora_" in n})  # fmt: skip
    one, two = trained
    assert one.keys() == two.keys() and one
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_a_cut_answer_is_trained_without_the_end_of_turn_after_it(tiny_model):
    from superalign.learn._trainers import chat_rows, tokenized_rows

    chat = [{"role": "user", "content": "How do I keep rice from sticking?"}]
    ended, cut = "Rinse it first.", "Rinse it first, then use a"
    rows = chat_rows([(chat, ended), (chat, cut)])
    assert rows["ended"] == [True, False]
    tok = tiny_model.tokenizer
    out = tokenized_rows(tok, rows)
    for ids, mask, answer, tail in zip(
        out["input_ids"], out["completion_mask"], (ended, cut), ("<|im_end|>\n", ""),
        strict=True,
    ):  # fmt: skip
        # the same tokens TRL's own chat-template tokenisation gives
        assert ids == list(tok.apply_chat_template(
            [*chat, {"role": "assistant", "content": answer}], tokenize=True, return_dict=True
        )["input_ids"])  # fmt: skip
        trained = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
        assert trained == answer + tail
        assert mask[0] == 0  # the prompt is never a target


def test_sft_on_a_cut_answer_does_not_teach_the_learner_to_stop_there(tiny_model_path, tmp_path):
    """Trained on answers ended at the token budget mid-sentence, the learner learns
    their words; trained on the same words as a finished answer, it learns to stop."""
    from superalign.learn._trainers import chat_rows, fit, sft_trainer, trainable

    chat = [{"role": "user", "content": "Describe a good morning routine."}]
    cut = "Wake up early, drink a glass of water, stretch for five minutes and then"
    eos = {}
    for name, ended in (("cut", False), ("ended", True)):
        model = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
        rows = chat_rows([(chat, cut)] * 8)
        rows["ended"] = [ended] * 8
        start = model.logprobs([chat], [cut])[0]
        before = model.logprobs([chat], [cut + "<|im_end|>"])[0] - start
        with trainable(model, LoraSettings(enabled=False)):
            fit(sft_trainer(model, rows, run_dir=tmp_path, name=name, learning_rate=1e-2,
                            seed=0, batch_size=8, max_length=128, max_steps=20), None)  # fmt: skip
        words = model.logprobs([chat], [cut])[0]
        eos[name] = model.logprobs([chat], [cut + "<|im_end|>"])[0] - words
        assert words > start + 50, (name, start, words)  # both learned the words
        eos[name] -= before
    # measured: the end-of-turn's log-probability +10.3 after the ended answers, -2.4
    # after the cut ones
    assert eos["ended"] > 5 and eos["cut"] < 1, eos


def test_sft_projects_only_the_completion_through_the_head_with_trls_loss(
    tiny_model_path, tmp_path
):
    """The SFT trainer's loss runs the LM head on the labelled positions only, and is
    TRL's own loss, gradient and metrics on the same batch (prompts, padding and all)."""
    from torch.overrides import TorchFunctionMode
    from trl import SFTTrainer

    from superalign.learn._trainers import chat_rows, sft_trainer, trainable

    chats = [
        [{"role": "user", "content": "How do I keep rice from sticking?"}],
        [{"role": "user", "content": "Name three birds that cannot fly, and say why."}],
    ]
    rows = chat_rows(
        [(chats[0], "Rinse it first."), (chats[1], "Emus, kiwis and ostriches: heavy bodies.")]
    )
    model = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    vocab = model.model.get_output_embeddings().weight.shape

    head_rows: list[int] = []

    class HeadRows(TorchFunctionMode):
        """Records the row count of every product with the LM head's weight."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.nn.functional.linear and args[1].shape == vocab:
                head_rows.append(args[0].shape[0])
            return func(*args, **(kwargs or {}))

    def loss_grads_metrics(compute_loss, batch):
        model.model.zero_grad()
        loss = compute_loss(model.model, dict(batch))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.model.named_parameters()
                 if p.grad is not None}  # fmt: skip
        metrics = {k: ours._metrics["train"][k][-1] for k in ("entropy", "mean_token_accuracy")}
        return loss.item(), grads, metrics

    with trainable(model, LoraSettings(r=4)):
        ours = sft_trainer(model, rows, run_dir=tmp_path, name="ours", learning_rate=1e-3,
                           seed=0, batch_size=2, max_length=128, max_steps=1)  # fmt: skip
        assert isinstance(ours, SFTTrainer) and type(ours) is not SFTTrainer
        batch = ours._prepare_inputs(next(iter(ours.get_train_dataloader())))
        labelled = int((batch["labels"][:, 1:] != -100).sum())
        assert 0 < labelled < batch["labels"][:, 1:].numel() // 2  # prompts are most of it
        model.model.train()
        with HeadRows():
            mine = loss_grads_metrics(ours.compute_loss, batch)
        theirs = loss_grads_metrics(
            lambda m, inputs: SFTTrainer.compute_loss(ours, m, inputs), batch
        )
    # the forward's one kept logit per row, then the completion tokens and nothing else
    assert head_rows == [batch["input_ids"].shape[0], labelled]
    assert mine[0] == pytest.approx(theirs[0], rel=1e-5)
    assert mine[1].keys() == theirs[1].keys() and mine[1]
    for name in mine[1]:
        torch.testing.assert_close(mine[1][name], theirs[1][name], rtol=1e-4, atol=1e-6)
    assert mine[2] == pytest.approx(theirs[2], rel=1e-4)


def test_sft_completion_head_trains_in_the_accelerators_mixed_precision(tiny_model_path, tmp_path):
    """Accelerate puts its autocast on the forward of the model it prepared; called on a
    model not (yet) prepared, the loss enters it itself: with bfloat16 training the
    decoder's products run in it either way."""
    from superalign.learn._trainers import chat_rows, sft_trainer, trainable

    chat = [{"role": "user", "content": "How do I keep rice from sticking?"}]
    rows = chat_rows([(chat, "Rinse it first."), (chat, "Use more water.")])
    model = HFChatModel(
        model=str(tiny_model_path), device="cpu", fast=False, train_precision="bfloat16"
    )
    seen = []
    with trainable(model, LoraSettings(r=4)):
        trainer = sft_trainer(model, rows, run_dir=tmp_path, name="bf16", learning_rate=1e-3,
                              seed=0, batch_size=2, max_length=64, max_steps=1)  # fmt: skip
        assert trainer.args.bf16
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        layer = model.model.get_base_model().model.layers[0].mlp.down_proj
        hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        model.model.train()
        loss = trainer.compute_loss(model.model, batch)  # no autocast around the call
        hook.remove()
    assert seen == [torch.bfloat16]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_distilled_rows_train_towards_the_untouched_models_distribution(tiny_model_path, tmp_path):
    """A row flagged ``distill`` costs KL(untouched || learner) at each completion position
    (zero while the adapter is still the identity), a plain row the log-likelihood of its
    tokens; the batch's loss is their sum over the completion tokens."""
    from superalign.learn._trainers import chat_rows, sft_trainer, trainable

    chats = [
        [{"role": "user", "content": "How do I keep rice from sticking?"}],
        [{"role": "user", "content": "Name three birds that cannot fly, and say why."}],
    ]
    answers = ["Rinse it first.", "Emus, kiwis and ostriches: heavy bodies."]
    model = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    with trainable(model, LoraSettings(r=4)):
        trainer = sft_trainer(model, chat_rows(list(zip(chats, answers, strict=True)),
                                               distill=[True, False]),
                              run_dir=tmp_path, name="kl", learning_rate=1e-3, seed=0,
                              batch_size=2, max_length=128, max_steps=1)  # fmt: skip
        trainer.args.shuffle_dataset = False
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        assert batch["distill"].dtype == torch.bool and int(batch["distill"].sum()) == 1
        flagged = int(batch["distill"].nonzero()[0, 0])
        net = model.model
        net.train()

        def by_hand(hard: int = 0) -> float:
            with torch.no_grad():
                ids, labels = batch["input_ids"], batch["labels"]
                mask = batch["attention_mask"]
                logp = net(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
                with net.disable_adapter():
                    ref = net(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
            total, count = 0.0, 0
            for row in range(ids.shape[0]):
                seen = 0
                for t in range(ids.shape[1] - 1):
                    target = int(labels[row, t + 1])
                    if target == -100:
                        continue
                    count += 1
                    seen += 1
                    if row == flagged and seen > hard:
                        p = ref[row, t].exp()
                        total += float((p * (ref[row, t] - logp[row, t])).sum())
                    else:
                        total -= float(logp[row, t, target])
            return total / count

        def kl_only() -> float:
            only = {k: v.clone() for k, v in batch.items()}
            only["labels"][1 - flagged] = -100
            return trainer.compute_loss(net, only).item()

        forwards = []
        hook = net.get_base_model().register_forward_hook(lambda *_: forwards.append(1))
        # the adapter starts as the identity: the flagged row costs nothing yet
        assert kl_only() == pytest.approx(0.0, abs=1e-6)
        # the untouched model ran once for the flagged row; later calls read its states
        assert len(forwards) == 2 and len(trainer._untouched_hidden) == 1
        kl_only()
        assert len(forwards) == 3
        hook.remove()
        assert trainer.compute_loss(net, dict(batch)).item() == pytest.approx(by_hand(), rel=1e-4)
        with torch.no_grad():  # move the learner away from the untouched model
            for name, p in net.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
        assert kl_only() > 1e-3
        loss = trainer.compute_loss(net, dict(batch))
        assert loss.item() == pytest.approx(by_hand(), rel=1e-4)
        # the first `distill_after` tokens of a distilled row are trained on their tokens
        trainer.distill_after = 3
        assert trainer.compute_loss(net, dict(batch)).item() == pytest.approx(by_hand(3), rel=1e-4)
        assert by_hand(3) != pytest.approx(by_hand(), rel=1e-3)
        trainer.distill_after = 0
        assert len(trainer._untouched_hidden) == 1
        # the flagged row alone (no padding from the other row) reads the same states
        alone = {k: v[flagged : flagged + 1] for k, v in batch.items()}
        width = int(alone["attention_mask"].sum())
        alone = {k: v[:, :width] if v.dim() == 2 else v for k, v in alone.items()}
        fresh = sft_trainer(model, chat_rows([(chats[flagged], answers[flagged])], distill=[True]),
                            run_dir=tmp_path, name="kl2", learning_rate=1e-3, seed=0,
                            batch_size=1, max_length=128, max_steps=1)  # fmt: skip
        assert trainer.compute_loss(net, dict(alone)).item() == pytest.approx(
            fresh.compute_loss(net, dict(alone)).item(), rel=1e-5
        )
        loss.backward()  # the KL term has a gradient through the adapter
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for n, p in net.named_parameters() if "lora_A" in n)  # fmt: skip


def test_kl_anchoring_without_lora_is_refused_at_build(tiny_model, tmp_path):
    from superalign.errors import ConfigError

    section = LearnerSection(
        algorithm="sft",
        args={"mode": "chosen", "anchor": True, "anchor_loss": "kl"},
        lora=LoraSettings(enabled=False),
    )
    with pytest.raises(ConfigError, match=r"anchor_loss 'kl'.*LoRA"):
        build_learner(section, tiny_model, CriticReward(approving_judge), tmp_path)
