"""PPO with a value head, GAE, the clipped surrogate objective and a KL penalty to
the round-0 model, written out in one file (TRL 1.x removed its PPO trainer).

Schulman et al. 2017, https://arxiv.org/abs/1707.06347; the RLHF form (per-token KL
penalty, reward on the last token) follows Ouyang et al. 2022 and Huang et al.,
"The N+ implementation details of RLHF with PPO" (2024).

One round = ``steps`` iterations of: sample completions for a batch of prompts,
score them with the critic reward, then ``update_epochs`` passes of minibatch PPO.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..models import HFChatModel
from ..registry import register
from ..types import GenParams, Query, RoundData
from ._base import BaseLearner, mix_batches, training_queries
from ._reward import CriticReward
from .settings import LearnerSection

VALUE_HEAD_FILE = "value_head.pt"


class PPOSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(4, ge=1, description="rollout + update iterations per round")
    prompts_per_step: int = Field(4, ge=1, description="prompts sampled per rollout")
    max_completion_length: int = Field(48, ge=1, description="new tokens per completion")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of rollouts")
    update_epochs: int = Field(2, ge=1, description="passes over each rollout")
    minibatch_size: int = Field(4, ge=1)
    clip_coef: float = Field(0.2, gt=0, description="clip range of the policy ratio")
    clip_value: float = Field(0.2, gt=0, description="clip range of the value update")
    vf_coef: float = Field(0.1, ge=0, description="weight of the value loss")
    kl_coef: float = Field(0.05, ge=0, description="per-token KL penalty to the round-0 model")
    gamma: float = Field(1.0, ge=0, le=1, description="discount")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    max_grad_norm: float = Field(1.0, gt=0)


class PPOLearner(BaseLearner):
    """PPO with a scalar value head on the policy's last hidden state."""

    algorithm = "ppo"
    needs_reward = True
    settings: PPOSettings

    def __init__(self, settings: PPOSettings, **kwargs: Any) -> None:
        import torch

        super().__init__(settings, **kwargs)
        self._torch = torch
        hidden = self.chat_model.model.config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1).to(self.chat_model.device)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        saved = Path(self.chat_model.adapter or "") / VALUE_HEAD_FILE
        if self.chat_model.adapter and saved.is_file():
            self.value_head.load_state_dict(torch.load(saved, map_location=self.chat_model.device))
        self.optimizer = None

    # -- the round ---------------------------------------------------------------------

    def _train(self, data: RoundData) -> dict[str, Any]:
        s = self.settings
        queries = mix_batches(
            training_queries(data),
            self.section.benign_ratio,
            s.prompts_per_step,
            self.rng(data.round),
        )
        self.optimizer = self.optimizer or self._make_optimizer()
        history: list[dict[str, float]] = []
        tokens = 0
        for step in range(s.steps):
            start = (step * s.prompts_per_step) % len(queries)
            batch = queries[start : start + s.prompts_per_step]
            rollout = self.rollout(batch)
            tokens += int(rollout["attention_mask"].sum())
            stats = self.update(rollout)
            stats["reward"] = float(rollout["scores"].mean())
            history.append(stats)
            if self.budget is not None and self.budget.exhausted():
                break
        return {
            "steps": len(history),
            "loss": history[-1]["loss"],
            "losses": [h["loss"] for h in history],
            "rewards": [h["reward"] for h in history],
            "reward_first": history[0]["reward"],
            "reward_last": history[-1]["reward"],
            "approx_kl": history[-1]["approx_kl"],
            "tokens": tokens,
        }

    def _make_optimizer(self) -> Any:
        params = [p for p in self.chat_model.model.parameters() if p.requires_grad]
        params += list(self.value_head.parameters())
        return self._torch.optim.AdamW(params, lr=self.section.learning_rate)

    def _save_extra(self, path: Path) -> None:
        self._torch.save(self.value_head.state_dict(), path / VALUE_HEAD_FILE)

    # -- rollout ------------------------------------------------------------------------

    def rollout(self, queries: list[Query]) -> dict[str, Any]:
        """Sample completions, score them, and compute old log-probs, values, advantages."""
        torch = self._torch
        s = self.settings
        m = self.chat_model
        prompts = m.encode_prompts([q.chat() for q in queries], s.max_completion_length)
        prompt_ids, prompt_mask = m.pad_left(prompts)
        params = GenParams(max_new_tokens=s.max_completion_length, temperature=s.temperature)
        m.model.eval()
        completions = m.generate_ids(prompts, params)  # cut at EOS, EOS excluded
        width = max(1, max(len(c) for c in completions))
        eos = m.tokenizer.eos_token_id
        # The EOS that ended a completion is an action too: keep it inside the mask.
        response = torch.full((len(completions), width + 1), m.tokenizer.pad_token_id)
        response_mask = torch.zeros_like(response)
        for i, c in enumerate(completions):
            row = c + ([eos] if len(c) < s.max_completion_length else [])
            response[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            response_mask[i, : len(row)] = 1
        response, response_mask = response.to(m.device), response_mask.to(m.device)
        texts = m.tokenizer.batch_decode(completions, skip_special_tokens=True)
        scores = torch.tensor(self.reward(queries, [t.strip() for t in texts]), device=m.device)

        input_ids = torch.cat([prompt_ids, response], dim=1)
        attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
        with torch.no_grad():
            logprobs, values = self.forward(input_ids, attention_mask, response.shape[1])
            with self.reference():
                ref_logprobs, _ = self.forward(
                    input_ids, attention_mask, response.shape[1], model=self.reference_model()
                )
        mask = response_mask.float()
        rewards = self.token_rewards(scores, logprobs, ref_logprobs, mask)
        advantages, returns = self.gae(rewards, values, mask)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mask": mask,
            "logprobs": logprobs,
            "values": values,
            "advantages": advantages,
            "returns": returns,
            "scores": scores,
        }

    def forward(
        self, input_ids: Any, attention_mask: Any, n_response: int, model: Any = None
    ) -> tuple[Any, Any]:
        """Log-probs of the response tokens and the values before each: both (B, T)."""
        torch = self._torch
        model = model if model is not None else self.chat_model.model
        # Left padding: positions count real tokens only, as generate() counted them.
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            logits_to_keep=n_response + 1,
        )
        logits = out.logits[:, :-1].float() / self.settings.temperature  # (B, T, V)
        targets = input_ids[:, -n_response:]
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        hidden = out.hidden_states[-1][:, -n_response - 1 : -1].float()  # (B, T, H)
        values = self.value_head(hidden).squeeze(-1)  # (B, T)
        return logprobs, values

    def token_rewards(self, scores: Any, logprobs: Any, ref_logprobs: Any, mask: Any) -> Any:
        """r_t = -kl_coef * (log pi - log pi_ref), plus the critic score on the last token."""
        rewards = -self.settings.kl_coef * (logprobs - ref_logprobs) * mask
        last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # (B,)
        rewards[self._torch.arange(len(scores)), last] += scores
        return rewards

    def gae(self, rewards: Any, values: Any, mask: Any) -> tuple[Any, Any]:
        """Generalised advantage estimation (Schulman et al. 2016), eq. 11-16."""
        torch = self._torch
        s = self.settings
        values = values * mask
        advantages = torch.zeros_like(rewards)
        last_gae = torch.zeros(rewards.shape[0], device=rewards.device)
        for t in reversed(range(rewards.shape[1])):
            next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else 0.0
            delta = rewards[:, t] + s.gamma * next_value - values[:, t]
            last_gae = (delta + s.gamma * s.lam * last_gae) * mask[:, t]
            advantages[:, t] = last_gae
        returns = advantages + values
        return _whiten(advantages, mask), returns

    # -- update -------------------------------------------------------------------------

    def update(self, rollout: dict[str, Any]) -> dict[str, float]:
        torch = self._torch
        s = self.settings
        model = self.chat_model.model
        model.train()
        n = rollout["input_ids"].shape[0]
        n_response = rollout["mask"].shape[1]
        stats: dict[str, list[float]] = {"loss": [], "approx_kl": [], "clipfrac": []}
        for _ in range(s.update_epochs):
            for idx in torch.randperm(n).split(s.minibatch_size):
                mb = {k: v[idx] for k, v in rollout.items()}
                new_logprobs, new_values = self.forward(
                    mb["input_ids"], mb["attention_mask"], n_response
                )
                loss, approx_kl, clipfrac = self.loss(mb, new_logprobs, new_values)
                self.optimizer.zero_grad()
                loss.backward()
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
                self.optimizer.step()
                stats["loss"].append(float(loss.detach()))
                stats["approx_kl"].append(approx_kl)
                stats["clipfrac"].append(clipfrac)
        model.eval()
        return {k: sum(v) / len(v) for k, v in stats.items()}

    def loss(self, mb: dict[str, Any], logprobs: Any, values: Any) -> tuple[Any, float, float]:
        """Clipped surrogate policy loss plus clipped value loss, masked token means."""
        torch = self._torch
        s = self.settings
        mask = mb["mask"]
        log_ratio = (logprobs - mb["logprobs"]) * mask
        ratio = log_ratio.exp()
        advantages = mb["advantages"]
        pg_losses = -advantages * ratio
        pg_losses_clipped = -advantages * ratio.clamp(1 - s.clip_coef, 1 + s.clip_coef)
        pg_loss = _masked_mean(torch.max(pg_losses, pg_losses_clipped), mask)

        values_clipped = mb["values"] + (values - mb["values"]).clamp(-s.clip_value, s.clip_value)
        vf_losses = torch.max((values - mb["returns"]) ** 2, (values_clipped - mb["returns"]) ** 2)
        vf_loss = 0.5 * _masked_mean(vf_losses, mask)

        with torch.no_grad():
            approx_kl = float(_masked_mean((ratio - 1) - log_ratio, mask))  # k3 estimator
            clipfrac = float(_masked_mean(((ratio - 1).abs() > s.clip_coef).float(), mask))
        return pg_loss + s.vf_coef * vf_loss, approx_kl, clipfrac


def _masked_mean(x: Any, mask: Any) -> Any:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _whiten(x: Any, mask: Any) -> Any:
    mean = _masked_mean(x, mask)
    var = _masked_mean((x - mean) ** 2, mask)
    return (x - mean) * (var + 1e-8).rsqrt() * mask


@register("algorithm", "ppo", settings=PPOSettings)
def ppo(
    settings: PPOSettings,
    *,
    model: HFChatModel,
    section: LearnerSection,
    reward: CriticReward | None,
    run_dir: Path,
) -> PPOLearner:
    """PPO with a value head, GAE and a KL penalty (this project's own trainer), LoRA."""
    return PPOLearner(settings, model=model, section=section, reward=reward, run_dir=run_dir)
