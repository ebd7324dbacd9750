"""Worked solutions of notebook 07, DPO from scratch.

- ``sequence_logps``: ``log pi(y|x) = sum_t log pi(y_t | x, y_<t)`` over the response tokens.
- ``dpo_loss``: ``-log sigmoid(beta * h)`` per pair, and the implicit rewards.
- ``dpo_loop``: the training loop, step for step what ``dpolab.dpo.train_dpo`` computes on one
  process without accumulation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dpolab.dpo import DPOConfig, global_batch
from dpolab.optim import adamw_with_schedule
from dpolab.pairs import collate_pairs

IGNORE = -100


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row sum of response-token log-probs: logits ``(N, T, V)``, labels ``(N, T)`` with
    -100 on prompt and padding; returns ``(N,)``.

    The logits at position ``t`` predict the token at ``t + 1``: drop the last logit and the
    first label. Log-softmax in fp32 (bf16 rounds away DPO's small differences); -100 is not
    a token id, so gather at a valid index and let the mask zero it."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE
    logprobs = torch.log_softmax(logits, dim=-1)
    picked = logprobs.gather(2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def dpo_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and the chosen and rejected implicit rewards, all ``(B,)``.

    ``r = beta * (log pi - log pi_ref)``; loss ``-log sigmoid(r_w - r_l)``, computed with
    ``logsigmoid`` (``log(sigmoid(x))`` underflows to ``-inf`` for very negative ``x``). The
    rewards are detached: they are metrics, not part of the graph."""
    chosen_rewards = beta * (logps_chosen - ref_chosen)
    rejected_rewards = beta * (logps_rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor],
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected sequence log-probs of a ``collate_pairs`` batch, one forward pass."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   use_cache=False).logits
    return sequence_logps(logits, batch["labels"]).chunk(2)


def dpo_loop(policy: torch.nn.Module, reference: torch.nn.Module, examples: list[dict],
             cfg: DPOConfig, pad_id: int) -> list[dict[str, float]]:
    """DPO-train ``policy`` in place for ``cfg.steps`` steps; one row of TRL-named metrics
    per step. Batches, schedule, clipping and metrics as in ``dpolab.dpo.train_dpo``."""
    optimizer, scheduler = adamw_with_schedule(policy.parameters(), cfg.lr, cfg.steps,
                                               cfg.warmup_steps, cfg.weight_decay, fused=True)
    history = []
    policy.train()
    for step in range(cfg.steps):
        idx = global_batch(len(examples), step, cfg.batch_size, cfg.seed, cfg.shuffle)
        batch = collate_pairs([examples[i] for i in idx], pad_id)
        logps_chosen, logps_rejected = forward(policy, batch)
        with torch.no_grad():
            ref_chosen, ref_rejected = forward(reference, batch)
        chosen_rewards = cfg.beta * (logps_chosen - ref_chosen)
        rejected_rewards = cfg.beta * (logps_rejected - ref_rejected)
        losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
        losses.mean().backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm or math.inf)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            rc, rr, n = chosen_rewards, rejected_rewards, len(idx)
            history.append({
                "loss": losses.sum().item() / n,
                "rewards/chosen": rc.sum().item() / n, "rewards/rejected": rr.sum().item() / n,
                "rewards/accuracies": (rc > rr).sum().item() / n,
                "rewards/margins": (rc - rr).sum().item() / n,
                "logps/chosen": logps_chosen.sum().item() / n,
                "logps/rejected": logps_rejected.sum().item() / n})
    policy.eval()
    return history
