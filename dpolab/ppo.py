"""PPO for language models (step 4 of RLHF), written from the published details.

Sources: Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences";
Stiennon et al. 2020; Ouyang et al. 2022; and Huang et al. 2022/2024, "The N
Implementation Details of RLHF with PPO". Each detail is a small function or a line below:

1. **Rollouts**: the policy samples a response to each prompt at temperature 1
   (``evaluate.sample``). The log-probs are then *recomputed* with a forward pass, the
   same way the update will compute them, rather than taken from ``generate``.
2. **Reward at the end**: the reward model scores the whole response once; that scalar
   lands on the response's last token. Scores are normalised with the mean and std of
   the reference policy's rewards (so the KL coefficient means the same for any reward
   model). A response cut at the token limit (no eos) gets ``no_eos_reward`` instead.
   ``reward="gold"`` uses the gold judge as the reward: the RL run an ideal labeler would allow.
3. **Per-token KL penalty**: every response token gets ``-kl_coef * (log pi - log pi_ref)``
   against the frozen reference (the SFT model). ``target_kl`` makes the coefficient
   adaptive (Ziegler et al. 2019): it grows when KL overshoots the target, shrinks below.
4. **Value model and GAE**: a separate value model, initialised from the reward model
   (Stiennon et al. 2020), predicts the return at every token; advantages by generalised
   advantage estimation (Schulman et al. 2016) with ``gamma`` and ``lam``;
   returns = advantages + values.
5. **Advantage whitening** over the rollout batch (mean 0, std 1, response tokens only).
6. **Clipped surrogate** ``max(-A * ratio, -A * clip(ratio, 1-eps, 1+eps))`` and **clipped
   value loss** ``0.5 * max((V - R)^2, (V_clip - R)^2)`` (Schulman et al. 2017).
7. **Several epochs** over each rollout batch, in shuffled minibatches.

Four models are in memory: the policy (trained), the reference (frozen), the reward
model (frozen) and the value model (trained); each is a full copy of the tiny Llama.

Runs through Hugging Face Accelerate (``Accelerator.prepare``, ``backward``,
``clip_grad_norm_``), which on one process changes nothing; this trainer is written and
tested for one process.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import evaluate, guards, judge, world
from .dpo import disable_dropout
from .env import seed_everything
from .optim import adamw_with_schedule
from .progress import tqdm
from .world import AXES, Prompt

REWARDS = ("learned", "gold")


@dataclass
class PPOConfig:
    updates: int = 30  # rollout-then-optimise iterations
    rollout_size: int = 64  # prompts sampled per update
    minibatch_size: int = 16
    ppo_epochs: int = 4  # passes over each rollout batch
    lr: float = 1e-4
    max_grad_norm: float = 1.0
    kl_coef: float = 0.15  # initial coefficient of the per-token KL penalty
    target_kl: float | None = None  # nats per response; None: a fixed kl_coef
    kl_horizon: int = 10_000  # adaptive controller's horizon, in samples (Ziegler et al.)
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2  # policy ratio clip
    cliprange_value: float = 0.2  # value clip, in normalised reward units
    vf_coef: float = 0.1
    whiten_advantages: bool = True
    reward: str = "learned"  # "learned" | "gold"
    normalize_reward: bool = True  # with the reference's reward mean and std
    no_eos_reward: float | None = -1.0  # the score of a response cut at the limit
    max_new_tokens: int = 48
    families: tuple[str, ...] = world.ALIGNMENT_FAMILIES
    eval_every: int = 0  # updates between held-out evaluations (0: before and after only)
    seed: int = 0

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        if self.rollout_size % self.minibatch_size:
            raise ValueError(f"rollout_size ({self.rollout_size}) must be a multiple of "
                             f"minibatch_size ({self.minibatch_size})")


# --- tensors of a rollout -------------------------------------------------------------------
# A rollout batch is laid out as [left-padded prompt | right-padded response], so every
# response starts at the same column P and all per-token tensors are (B, R): position t
# is the t-th response token, the action taken in the state "prompt + response[:t]".

def layout(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
           ) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``position_ids`` of (B, P + R), the response
    tokens ``response`` (B, R), their ``mask`` and the prompt width ``P``. Masks come from
    lengths, never from comparing with the pad id (a policy may sample that token)."""
    P, R = max(map(len, prompt_ids)), max(map(len, response_ids))
    B = len(prompt_ids)
    input_ids = torch.full((B, P + R), pad_id)
    attention = torch.zeros((B, P + R), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        input_ids[i, P - len(p):P + len(r)] = torch.tensor(p + r)
        attention[i, P - len(p):P + len(r)] = 1
    position_ids = (attention.cumsum(1) - 1).clamp(min=0)  # as generate() numbered them
    return {"input_ids": input_ids, "attention_mask": attention, "position_ids": position_ids,
            "response": input_ids[:, P:], "mask": attention[:, P:].float(), "P": P}


def generations_batch(gens: list[evaluate.Generation], tokenizer: PreTrainedTokenizerBase,
                      device: torch.device | str = "cpu") -> dict:
    """``layout`` of sampled generations, on ``device``."""
    batch = layout([g.prompt_ids for g in gens], [g.response_ids for g in gens],
                   tokenizer.pad_token_id)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _inputs(batch: dict) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}


def policy_logps(policy: torch.nn.Module, batch: dict,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the response tokens (B, R) and the policy's entropy at each
    position (B, R). Logits are upcast to fp32."""
    P = batch["P"]
    logits = policy(**_inputs(batch), use_cache=False).logits[:, P - 1:-1].float()
    logp_all = F.log_softmax(logits, -1)
    logps = logp_all.gather(-1, batch["response"].unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logps, entropy


def token_values(value_model: PreTrainedModel, batch: dict) -> torch.Tensor:
    """V(state) before each response token (B, R): the scalar head read at every position."""
    P = batch["P"]
    hidden = value_model.base_model(**_inputs(batch), use_cache=False).last_hidden_state
    return value_model.score(hidden[:, P - 1:-1]).squeeze(-1).float()


def sequence_scores(reward_model: PreTrainedModel, batch: dict) -> torch.Tensor:
    """r(x, y) (B,): the reward model's head at the last response token."""
    hidden = reward_model.base_model(**_inputs(batch), use_cache=False).last_hidden_state
    last = batch["P"] + batch["mask"].sum(1).long() - 1
    return reward_model.score(hidden[torch.arange(len(last)), last]).squeeze(-1).float()


# --- the math, one function per detail --------------------------------------------------------

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum()


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over the masked entries of the whole batch; 0 where masked."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def per_token_kl(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                 ) -> torch.Tensor:
    """``log pi(y_t) - log pi_ref(y_t)`` per response token: summed over a response it is
    an unbiased sample of KL(pi || pi_ref) for that prompt."""
    return (logps - ref_logps) * mask


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> torch.Tensor:
    """The reward of every response token: ``-kl_coef * kl_t``, plus the sequence score
    on the last token (Ziegler et al. 2019)."""
    rewards = -kl_coef * kl * mask
    last = mask.sum(1).long() - 1
    rewards[torch.arange(len(last)), last] += scores
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), for (B, R) tensors whose
    ``mask`` is 1 on a prefix of each row (the response):

        delta_t = r_t + gamma * V_{t+1} - V_t        (V after the last token is 0)
        A_t     = delta_t + gamma * lam * A_{t+1}

    Returns (advantages, returns = advantages + values), 0 where masked."""
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    R = rewards.shape[1]
    for t in reversed(range(R)):
        next_value = values[:, t + 1] if t + 1 < R else torch.zeros_like(next_adv)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = delta + gamma * lam * next_adv
        advantages[:, t] = next_adv
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, cliprange: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017), as a loss to minimise, and the
    share of tokens where the clip is active."""
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, cliprange_value: float) -> torch.Tensor:
    """``0.5 * max((V - R)^2, (V_clip - R)^2)``: the new values may move at most
    ``cliprange_value`` from the rollout's before the loss stops rewarding the move."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


@dataclass
class KLController:
    """The KL coefficient: fixed, or adapted towards ``target`` nats per response
    (Ziegler et al. 2019): ``coef *= 1 + clip(KL/target - 1, -0.2, 0.2) * n / horizon``."""

    value: float
    target: float | None = None
    horizon: int = 10_000

    def update(self, kl: float, n_samples: int) -> None:
        if self.target is None:
            return
        error = min(max(kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_samples / self.horizon


# --- rollouts ---------------------------------------------------------------------------------

@dataclass
class Rollout:
    """One batch of experience: generations and their per-token tensors, all (B, R)."""

    generations: list[evaluate.Generation]
    batch: dict
    logps: torch.Tensor
    ref_logps: torch.Tensor
    values: torch.Tensor
    learned: torch.Tensor  # the reward model's r(x, y), whatever the reward PPO optimises
    raw_scores: torch.Tensor  # the reward before normalisation (learned or gold)
    scores: torch.Tensor  # the reward that goes on the last token
    kl: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def _gold_scores(gens: list[evaluate.Generation]) -> torch.Tensor:
    return torch.tensor([judge.score(g.prompt, g.response, g.finished).total for g in gens])


def _check_context(batch: dict, limit: int | None, max_new_tokens: int) -> None:
    """An ``InputError`` when prompt + response exceed the model's context: positions past
    it were never trained, and PPO would learn from them silently."""
    width = batch["input_ids"].shape[1]
    if limit is not None and width > limit:
        raise guards.InputError(f"PPO rollouts reach {width} tokens (prompts of up to "
                                f"{batch['P']} + max_new_tokens={max_new_tokens}); the model "
                                f"reads at most {limit} (max_position_embeddings): lower "
                                f"max_new_tokens")


@torch.no_grad()
def rollout(policy: PreTrainedModel, reference: PreTrainedModel, reward_model: PreTrainedModel,
            value_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
            prompts: list[Prompt], cfg: PPOConfig, kl_coef: float,
            reward_stats: tuple[float, float] = (0.0, 1.0), seed: int = 0) -> Rollout:
    """Sample, score, and compute every quantity the PPO update needs (steps 1–5)."""
    device = next(policy.parameters()).device
    gens = evaluate.sample(policy, tokenizer, prompts, cfg.max_new_tokens, temperature=1.0,
                           batch_size=len(prompts), seed=seed)
    batch = generations_batch(gens, tokenizer, device)
    _check_context(batch, guards.context_length(policy), cfg.max_new_tokens)
    logps, _ = policy_logps(policy, batch)
    ref_logps, _ = policy_logps(reference, batch)
    values = token_values(value_model, batch)
    learned = sequence_scores(reward_model, batch)
    raw = learned if cfg.reward == "learned" else _gold_scores(gens).to(device)
    mean, std = reward_stats
    scores = (raw - mean) / std
    if cfg.no_eos_reward is not None:
        finished = torch.tensor([g.finished for g in gens], device=device)
        scores = torch.where(finished, scores, torch.full_like(scores, cfg.no_eos_reward))
    mask = batch["mask"]
    kl = per_token_kl(logps, ref_logps, mask)
    rewards = token_rewards(scores, kl, mask, kl_coef)
    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, mask)
    return Rollout(gens, batch, logps, ref_logps, values * mask, learned, raw, scores, kl,
                   rewards, advantages, returns)


def token_table(ro: Rollout, tokenizer: PreTrainedTokenizerBase, row: int) -> pd.DataFrame:
    """One response of a rollout, token by token: what PPO computes for each action."""
    n = int(ro.batch["mask"][row].sum())
    ids = ro.batch["response"][row, :n].tolist()
    return pd.DataFrame({
        "token": [tokenizer.decode([i]) for i in ids],
        "logp": ro.logps[row, :n].tolist(), "ref_logp": ro.ref_logps[row, :n].tolist(),
        "kl": ro.kl[row, :n].tolist(), "reward": ro.rewards[row, :n].tolist(),
        "value": ro.values[row, :n].tolist(), "advantage": ro.advantages[row, :n].tolist(),
        "return": ro.returns[row, :n].tolist()})


@torch.no_grad()
def reward_statistics(reference: PreTrainedModel, reward_model: PreTrainedModel,
                      tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt],
                      cfg: PPOConfig, seed: int = 0) -> tuple[float, float]:
    """Mean and std of the reward of the reference policy's responses: the offset and scale
    that make the reference's reward mean 0, std 1."""
    gens = evaluate.sample(reference, tokenizer, prompts, cfg.max_new_tokens, temperature=1.0,
                           batch_size=len(prompts), seed=seed)
    if cfg.reward == "gold":
        r = _gold_scores(gens)
    else:
        device = next(reward_model.parameters()).device
        r = sequence_scores(reward_model, generations_batch(gens, tokenizer, device))
    return r.mean().item(), max(r.std().item(), 1e-6)


# --- the record of a run -----------------------------------------------------------------------

@dataclass
class PPOHistory:
    """Metrics per update (``train``) and per held-out evaluation (``eval``)."""

    train: list[dict[str, float]] = field(default_factory=list)
    eval: list[dict[str, float]] = field(default_factory=list)
    # the first rollouts of every update: (prompt, response, learned reward, gold reward)
    samples: list[list[tuple[str, str, float, float]]] = field(default_factory=list)
    reward_stats: tuple[float, float] = (0.0, 1.0)
    seconds: float = 0.0
    # per evaluation, per held-out prompt: gold total, learned reward and KL (paired intervals)
    eval_scores: list[dict[str, list[float]]] = field(default_factory=list)

    def frame(self, which: str = "train") -> pd.DataFrame:
        return pd.DataFrame(getattr(self, which)).set_index("update")

    def plot(self, title: str = "PPO training") -> plt.Figure:
        """Learned and gold reward, KL, entropy, clip fraction and value loss per update."""
        t = self.frame("train")
        fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
        ax = axes[0, 0]
        ax.plot(t.index, t["reward/learned"], color="C0", label="learned (reward model)")
        ax.set(title="reward of the rollouts", xlabel="update", ylabel="reward model score")
        ax2 = ax.twinx()
        ax2.plot(t.index, t["reward/gold"], color="C3", label="gold")
        ax2.set_ylabel("gold score", color="C3")
        ax.legend(handles=ax.get_lines() + ax2.get_lines(), fontsize=8, loc="lower right")
        panels = [("kl", "KL to the reference", "nats per response"),
                  ("entropy", "policy entropy", "nats per token"),
                  ("clipfrac", "clip fraction", "share of tokens"),
                  ("loss/value", "value loss", "loss")]
        for ax, (col, name, ylabel) in zip(axes.flat[1:], panels, strict=False):
            ax.plot(t.index, t[col])
            ax.set(title=name, xlabel="update", ylabel=ylabel)
        ax = axes[1, 2]
        if self.eval:
            e = self.frame("eval")
            for col in ("total", *AXES):
                if col in e:
                    ax.plot(e.index, e[col], "o-", label=col, lw=2.5 if col == "total" else 1)
            ax.legend(fontsize=8)
        ax.set(title="gold reward, held-out prompts", xlabel="update", ylabel="mean gold score")
        fig.suptitle(title)
        fig.tight_layout()
        return fig


def evaluate_policy(policy: PreTrainedModel, reference: PreTrainedModel,
                    reward_model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase,
                    prompts: list[Prompt], max_new_tokens: int = 48, seed: int = 0,
                    ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Held-out gold scores per axis, the sampled KL to the reference (nats per response)
    and the learned reward of the same samples: the means, and the gold total and learned
    reward per prompt."""
    result = evaluate.evaluate(policy, tokenizer, prompts, reference, max_new_tokens, seed)
    row = {**result.scores, "kl": result.kl}
    per_prompt = {"total": result.per_prompt()["total"].tolist()}
    if reward_model is not None:
        device = next(reward_model.parameters()).device
        batch = generations_batch(result.generations, tokenizer, device)
        with torch.no_grad():
            learned = sequence_scores(reward_model, batch)
        row["learned"] = learned.mean().item()
        per_prompt["learned"] = learned.tolist()
    return row, per_prompt


# --- the trainer --------------------------------------------------------------------------------

def _check_finite(name: str, value: torch.Tensor, update: int, epoch: int | None = None,
                  minibatch: list[int] | None = None) -> None:
    """A clear error naming the update, epoch and minibatch when a quantity is NaN/inf."""
    if torch.isfinite(value).all():
        return
    where = f"update {update}" + ("" if epoch is None else
                                  f", PPO epoch {epoch}, minibatch rows {minibatch}")
    raise FloatingPointError(f"PPO {name} is not finite ({value.flatten()[:4].tolist()}) at "
                             f"{where}: lower lr, or check the reward model's scores")


def train_ppo(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
              reward_model: PreTrainedModel, cfg: PPOConfig | None = None,
              reference: PreTrainedModel | None = None,
              value_model: PreTrainedModel | None = None,
              eval_prompts: list[Prompt] | None = None,
              callback: Callable[[int, PPOHistory], None] | None = None) -> PPOHistory:
    """PPO-train ``policy`` in place against ``reward_model`` and return the history.

    ``reference``: the frozen model of the KL penalty (default: a copy of ``policy`` as it
    is now). ``value_model``: default a copy of ``reward_model`` (Stiennon et al. 2020
    initialise the value function from the reward model). ``eval_prompts``: held-out
    prompts scored before training, every ``cfg.eval_every`` updates and at the end.
    ``callback(update, history)`` runs after every update (for a live plot)."""
    cfg = cfg or PPOConfig()
    accelerator = Accelerator()
    seed_everything(cfg.seed)
    device = accelerator.device
    reference = reference if reference is not None else copy.deepcopy(policy)
    value_model = value_model if value_model is not None else copy.deepcopy(reward_model)
    for m in (policy, reference, reward_model, value_model):
        disable_dropout(m)
        m.to(device)
    reference.eval().requires_grad_(False)
    reward_model.eval().requires_grad_(False)

    params = list(policy.parameters()) + list(value_model.parameters())
    optimizer, scheduler = adamw_with_schedule(
        params, cfg.lr, cfg.updates * cfg.ppo_epochs * (cfg.rollout_size // cfg.minibatch_size))
    policy, value_model, optimizer = accelerator.prepare(policy, value_model, optimizer)

    stream = world.World(cfg.seed).iter_prompts("train", cfg.families)
    history = PPOHistory()
    history.reward_stats = reward_statistics(
        reference, reward_model, tokenizer, list(itertools.islice(stream, cfg.rollout_size)),
        cfg, seed=cfg.seed) if cfg.normalize_reward else (0.0, 1.0)
    kl_ctl = KLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
    gen = torch.Generator().manual_seed(cfg.seed)

    def run_eval(update: int) -> None:
        if eval_prompts is not None:
            row, per_prompt = evaluate_policy(accelerator.unwrap_model(policy), reference,
                                              reward_model, tokenizer, eval_prompts,
                                              cfg.max_new_tokens, cfg.seed)
            history.eval.append({"update": update, **row})
            history.eval_scores.append(per_prompt)

    run_eval(0)
    start = time.perf_counter()
    bar = tqdm(total=cfg.updates, desc="PPO")
    for update in range(1, cfg.updates + 1):
        prompts = list(itertools.islice(stream, cfg.rollout_size))
        ro = rollout(accelerator.unwrap_model(policy), reference, reward_model, value_model,
                     tokenizer, prompts, cfg, kl_ctl.value, history.reward_stats,
                     seed=cfg.seed * 100_003 + update)
        _check_finite("reward", ro.scores, update)
        stats = []
        policy.train()
        value_model.train()
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(cfg.rollout_size, generator=gen).tolist()
            for i in range(0, cfg.rollout_size, cfg.minibatch_size):
                mb = order[i:i + cfg.minibatch_size]
                stats.append(_ppo_step(policy, value_model, optimizer, scheduler, accelerator,
                                       ro, mb, cfg, update, epoch))
        policy.eval()
        value_model.eval()

        seq_kl = ro.kl.sum(1).mean().item()
        kl_ctl.update(seq_kl, cfg.rollout_size)
        row = {"update": update, "reward/learned": ro.learned.mean().item(),
               "reward/gold": _gold_scores(ro.generations).mean().item(),
               "kl": seq_kl, "kl_coef": kl_ctl.value,
               "response_length": ro.batch["mask"].sum(1).mean().item(),
               "stop_rate": sum(g.finished for g in ro.generations) / len(ro.generations),
               **{k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}}
        history.train.append(row)
        history.samples.append([(g.prompt, g.response, r, gold) for g, r, gold in zip(
            ro.generations[:8], ro.learned[:8].tolist(),
            _gold_scores(ro.generations[:8]).tolist(), strict=True)])
        bar.update()
        bar.set_postfix(learned=f"{row['reward/learned']:.2f}", gold=f"{row['reward/gold']:.2f}",
                        kl=f"{seq_kl:.2f}", refresh=False)
        if update == cfg.updates or (cfg.eval_every and update % cfg.eval_every == 0):
            run_eval(update)
        history.seconds = time.perf_counter() - start
        if callback is not None:
            callback(update, history)
    bar.close()
    return history


def minibatch(batch: dict, rows: list[int]) -> tuple[dict, int]:
    """The rollout's ``rows``, without the columns that are padding in all of them (the
    rollout is padded to its longest prompt and response), and their response width R."""
    attention = batch["attention_mask"][rows]
    first = int(attention.any(0).nonzero()[0])  # the first column any prompt uses
    R = int(batch["mask"][rows].sum(1).max())
    P = batch["P"]
    out = {k: batch[k][rows, first:P + R] for k in ("input_ids", "attention_mask",
                                                    "position_ids")}
    out.update(response=batch["response"][rows, :R], mask=batch["mask"][rows, :R], P=P - first)
    return out, R


def _ppo_step(policy, value_model, optimizer, scheduler, accelerator: Accelerator, ro: Rollout,
              mb: list[int], cfg: PPOConfig, update: int, epoch: int) -> dict[str, float]:
    """One gradient step on a minibatch of the rollout: clipped policy and value losses."""
    batch, R = minibatch(ro.batch, mb)
    mask = batch["mask"]
    logps, entropy = policy_logps(policy, batch)
    values = token_values(value_model, batch)
    old_logps, old_values = ro.logps[mb, :R], ro.values[mb, :R]
    pg_loss, clipfrac = policy_loss(logps, old_logps, ro.advantages[mb, :R], mask, cfg.cliprange)
    vf_loss = value_loss(values, old_values, ro.returns[mb, :R], mask, cfg.cliprange_value)
    loss = pg_loss + cfg.vf_coef * vf_loss
    _check_finite("loss", loss, update, epoch, mb)
    accelerator.backward(loss)
    grad_norm = accelerator.clip_grad_norm_(
        list(policy.parameters()) + list(value_model.parameters()), cfg.max_grad_norm)
    if accelerator.scaler is None:  # with fp16's loss scaler, an overflow skips the step
        _check_finite("gradient norm", grad_norm, update, epoch, mb)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        approx_kl = 0.5 * masked_mean((logps - old_logps) ** 2, mask)
    return {"loss/policy": pg_loss.item(), "loss/value": vf_loss.item(),
            "entropy": masked_mean(entropy, mask).item(), "clipfrac": clipfrac.item(),
            "approx_kl": approx_kl.item(), "grad_norm": grad_norm.item()}

