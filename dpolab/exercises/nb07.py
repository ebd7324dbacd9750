"""Checks of notebook 07, DPO from scratch: sequence log-probs, the DPO loss, the loop."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F

from dpolab import model as models
from dpolab import pairs, pipeline
from dpolab.dpo import METRICS, DPOConfig, global_batch
from dpolab.optim import adamw_with_schedule
from dpolab.solutions import nb07 as sol

from . import Exercise, Wrong, close

IGNORE = -100
LN2 = math.log(2)


# --- 1 · sequence log-probs -------------------------------------------------------------------

def _logps_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """bf16 logits (3, 9, 13) and labels: -100 on a prompt of 3-4 tokens and on padding."""
    g = torch.Generator().manual_seed(7)
    logits = (4 * torch.randn(3, 9, 13, generator=g)).to(torch.bfloat16)
    labels = torch.randint(0, 13, (3, 9), generator=g)
    labels[0, :3], labels[1, :4], labels[2, :3] = IGNORE, IGNORE, IGNORE
    labels[1, 7:], labels[2, 6:] = IGNORE, IGNORE
    return logits, labels


def _gathered(scores: torch.Tensor, labels: torch.Tensor, masked: bool = True) -> torch.Tensor:
    picked = scores.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (labels != IGNORE)).sum(-1) if masked else picked.sum(-1)


def _diagnose_logps(fn: Callable) -> None:
    logits, labels = _logps_inputs()
    want = sol.sequence_logps(logits, labels)
    got = fn(logits.clone(), labels.clone())
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"return a tensor of shape (rows,), got {type(got).__name__}")
    if got.shape != want.shape:
        raise Wrong(f"expected one number per row, shape {tuple(want.shape)}, got shape "
                    f"{tuple(got.shape)}: sum over the positions of each row")
    if close(got, want):
        return
    lp = torch.log_softmax(logits.float(), -1)
    n_tokens = (labels[:, 1:] != IGNORE).sum(-1)
    if close(got, _gathered(lp, labels)) or close(got, _gathered(lp[:, 1:], labels[:, :-1])):
        raise Wrong("your log-probs are off by one token: check the shift between logits and "
                    "labels (the logits at t predict the label at t+1)")
    if close(got, _gathered(lp[:, :-1], labels[:, 1:], masked=False)):
        raise Wrong("you summed over prompt tokens (and padding) too: count only the positions "
                    "whose label is not -100")
    if close(got, want / n_tokens):
        raise Wrong("you took the mean over the response tokens: log p(y|x) is their sum")
    if close(got, _gathered(logits[:, :-1].float(), labels[:, 1:]), rtol=1e-2, atol=1e-2):
        raise Wrong("those are raw logits, not log-probs: apply log_softmax over the vocabulary "
                    "before picking the label's entry")
    if close(got, _gathered(lp.exp()[:, :-1], labels[:, 1:]), rtol=1e-2, atol=1e-2):
        raise Wrong("those are probabilities (softmax), not log-probs: use log_softmax")
    if got.dtype != torch.float32 or close(got, want, rtol=2e-2, atol=0.5):
        raise Wrong("close, but not in fp32: upcast the logits (logits.float()) before the "
                    "log-softmax; bf16 rounds away the small differences DPO works with")
    raise Wrong("your sums differ from dpolab.logps.sequence_logps: check the shift, the "
                "log-softmax and the -100 mask")


sequence_logps = Exercise("sequence log-probs", _diagnose_logps, sol.sequence_logps,
                          "correct: the sums over response tokens match, in fp32.")


# --- 2 · the DPO loss -----------------------------------------------------------------------

def _loss_inputs(b: int = 6) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    ref_c, ref_r = -10 + 3 * torch.randn(b, generator=g), -12 + 3 * torch.randn(b, generator=g)
    pol_c, pol_r = ref_c + torch.randn(b, generator=g), ref_r + torch.randn(b, generator=g)
    return pol_c, pol_r, ref_c, ref_r


def _call_loss(fn: Callable, *args: torch.Tensor, beta: float) -> tuple[torch.Tensor, ...]:
    pc, pr = (a.clone().requires_grad_() for a in args[:2])
    out = fn(pc, pr, args[2].clone(), args[3].clone(), beta)
    if not isinstance(out, tuple | list) or len(out) != 3:
        raise Wrong("return three tensors: the per-pair losses, the chosen rewards and the "
                    "rejected rewards")
    losses, rc, rr = out
    b = args[0].shape[0]
    for name, t in (("losses", losses), ("chosen rewards", rc), ("rejected rewards", rr)):
        if not isinstance(t, torch.Tensor) or t.shape != (b,):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise Wrong(f"the {name} should have one entry per pair, shape ({b},), got {shape}"
                        + (": don't average, the trainer takes the mean" if name == "losses"
                           else ""))
    return losses, rc, rr


def _diagnose_loss(fn: Callable) -> None:
    beta = 0.3
    pc, pr, ref_c, ref_r = _loss_inputs()
    # At step 0 the policy is the reference: every reward 0, every loss ln 2.
    losses0, rc0, rr0 = _call_loss(fn, ref_c, ref_r, ref_c, ref_r, beta=beta)
    if not close(losses0, torch.full_like(losses0, LN2)):
        raise Wrong("the loss is not ln 2 at step 0 (policy = reference): is the reference the "
                    "policy's starting point? Subtract the reference log-probs")
    losses, rc, rr = _call_loss(fn, pc, pr, ref_c, ref_r, beta=beta)
    want_l, want_c, want_r = sol.dpo_loss(pc, pr, ref_c, ref_r, beta)
    h = (pc - ref_c) - (pr - ref_r)
    if rc.requires_grad or rr.requires_grad:
        raise Wrong("detach the rewards: they are metrics, and the gradient should flow "
                    "through the loss only")
    if not close(losses, want_l):
        if close(losses, -F.logsigmoid(-beta * h)):
            raise Wrong("the sign is flipped: the loss must fall as the chosen reward rises "
                        "above the rejected one, -log σ(r_w - r_l)")
        if close(losses, -F.logsigmoid(h)):
            raise Wrong("β is missing from the loss: -log σ(β h)")
        if close(losses, -F.logsigmoid(h / beta)) or close(losses, -F.logsigmoid(beta ** 2 * h)):
            raise Wrong("β is applied wrongly: the loss is -log σ(β h), β multiplying the "
                        "log-ratio margin h once")
        raise Wrong("the losses differ from -log σ(β [(log π_w - log π_ref,w) - (log π_l - "
                    "log π_ref,l)]): check each term")
    if not (close(rc, want_c) and close(rr, want_r)):
        if close(rc, want_c / beta) and close(rr, want_r / beta):
            raise Wrong("the rewards need β: r = β (log π - log π_ref)")
        if close(rc, want_r) and close(rr, want_c):
            raise Wrong("chosen and rejected rewards are swapped")
        raise Wrong("the rewards differ from β (log π - log π_ref) of each response")
    # A pair ranked very wrong: log(sigmoid(x)) underflows to -inf in fp32.
    far = _call_loss(fn, ref_c - 400, ref_r + 400, ref_c, ref_r, beta=beta)[0]
    if not torch.isfinite(far).all():
        raise Wrong("your loss is inf on a pair ranked very wrong: log(sigmoid(x)) underflows "
                    "for very negative x; F.logsigmoid computes it stably")


dpo_loss = Exercise("DPO loss", _diagnose_loss, sol.dpo_loss,
                    "correct: ln 2 at the start, the right sign, β, and detached rewards.")


# --- 3 · the training loop ---------------------------------------------------------------------

CHECK = DPOConfig(beta=0.5, lr=3e-4, steps=5, batch_size=4, max_grad_norm=1.0, seed=0)


@lru_cache(maxsize=1)
def _loop_setting() -> tuple[torch.nn.Module, list[dict], int]:
    policy, tok = models.load(models.SFT)
    examples, _ = pairs.encode_pairs(tok, pipeline.world_pairs(24, seed=5))
    return policy.eval().requires_grad_(True), examples, tok.pad_token_id


def _run(loop: Callable) -> list[dict]:
    start, examples, pad_id = _loop_setting()
    policy = copy.deepcopy(start)
    reference = copy.deepcopy(start).eval().requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        return loop(policy, reference, examples, CHECK, pad_id)


def _variant(policy: torch.nn.Module, reference: torch.nn.Module, examples: list[dict],
             cfg: DPOConfig, pad_id: int, zero_grad: bool = True, clip: bool = True,
             schedule: bool = True, frozen_reference: bool = True) -> list[dict[str, float]]:
    """The loop with one of its typical mistakes switched on: the trajectories a wrong loop
    is recognised by."""
    optimizer, scheduler = adamw_with_schedule(policy.parameters(), cfg.lr, cfg.steps,
                                               fused=True)
    rows = []
    for step in range(cfg.steps):
        batch = pairs.collate_pairs([examples[i] for i in global_batch(
            len(examples), step, cfg.batch_size, cfg.seed, cfg.shuffle)], pad_id)
        c, r = sol.forward(policy, batch)
        with torch.no_grad():
            rc, rr = sol.forward(reference if frozen_reference else policy, batch)
        losses = -F.logsigmoid(cfg.beta * ((c - rc) - (r - rr)))
        losses.mean().backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
        optimizer.step()
        if schedule:
            scheduler.step()
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            wc, wr = cfg.beta * (c - rc), cfg.beta * (r - rr)
            rows.append({"loss": losses.mean().item(), "rewards/chosen": wc.mean().item(),
                         "rewards/rejected": wr.mean().item(),
                         "rewards/accuracies": (wc > wr).double().mean().item(),
                         "rewards/margins": (wc - wr).mean().item(),
                         "logps/chosen": c.mean().item(), "logps/rejected": r.mean().item()})
    return rows


@lru_cache(maxsize=1)
def _expected() -> tuple[dict, ...]:
    return tuple(_run(sol.dpo_loop))


@lru_cache(maxsize=4)
def _variant_losses(flag: str) -> torch.Tensor:
    return _column(_run(lambda *args: _variant(*args, **{flag: False})), "loss")


def _column(rows: list[dict], key: str) -> torch.Tensor:
    return torch.tensor([float(r[key]) for r in rows], dtype=torch.float64)


def _diagnose_loop(fn: Callable) -> None:
    got = _run(fn)
    want = _expected()
    if not isinstance(got, list | tuple) or len(got) != len(want) or \
            not all(isinstance(r, dict) for r in got):
        raise Wrong(f"return a list with one dict of metrics per optimizer step ({CHECK.steps} "
                    "here)")
    missing = [m for m in METRICS if m not in got[0]]
    if missing:
        raise Wrong(f"metrics missing, under TRL's names: {', '.join(missing)}")
    col = {m: (_column(got, m), _column(want, m)) for m in METRICS}
    mine, theirs = col["loss"]
    if not close(mine[0], theirs[0]):
        raise Wrong(f"the loss is {mine[0]:.4f}, not ln 2 = {LN2:.4f}, at step 0: is the "
                    "reference the policy's starting point?")
    if close(mine, torch.full_like(mine, LN2)):
        raise Wrong("the loss stays at ln 2: the reference moves with the policy. Score the "
                    "reference log-probs with the frozen `reference`, under torch.no_grad()")
    acc = col["rewards/accuracies"][0]
    if acc[0] == 1.0:
        raise Wrong("rewards/accuracies is 1 at step 0, where every reward is 0: a tie does not "
                    "count, use > rather than >=")
    for m in ("logps/chosen", "logps/rejected"):
        if not close(col[m][0][0], col[m][1][0]):
            raise Wrong(f"{m} differs at step 0: the batch mean of the summed log-probs of the "
                        "policy; are the batches the ones global_batch gives?")
    if not close(mine, theirs, atol=1e-5):
        k = int((~torch.isclose(mine, theirs, rtol=1e-4, atol=1e-5)).nonzero()[0])
        for flag, why in (("zero_grad", "the gradients accumulate from step to step: call "
                           "optimizer.zero_grad() after each step"),
                          ("clip", "the gradient is not clipped: call clip_grad_norm_ with "
                           "cfg.max_grad_norm between backward and step"),
                          ("schedule", "the learning rate never decays: call scheduler.step() "
                           "after optimizer.step()")):
            if close(mine, _variant_losses(flag), atol=1e-5):
                raise Wrong(f"the loss matches at step 0 but not from step {k} on: {why}")
        raise Wrong(f"the loss matches at step 0 but not from step {k} on: check the order "
                    "backward, clip_grad_norm_, optimizer.step, scheduler.step, zero_grad, and "
                    "that the loss is the batch mean")
    for m, what in (("rewards/chosen", "the batch mean of β (log π - log π_ref), chosen"),
                    ("rewards/rejected", "the batch mean of β (log π - log π_ref), rejected"),
                    ("rewards/accuracies", "the share of pairs with r_w > r_l (strictly)"),
                    ("rewards/margins", "the batch mean of r_w - r_l"),
                    ("logps/chosen", "the batch mean of the chosen sequence log-probs"),
                    ("logps/rejected", "the batch mean of the rejected sequence log-probs")):
        if not close(*col[m], atol=1e-5):
            raise Wrong(f"the loss is right but {m} is not: it is {what}, before the step")


dpo_loop = Exercise("DPO training loop", _diagnose_loop, sol.dpo_loop,
                    f"correct: your loop matches the worked solution over {CHECK.steps} steps.")
