"""The reward model: a scalar score per response, learned from preference pairs.

Step 3 of RLHF (Ouyang et al. 2022). The reward model is the SFT model with its language-
model head replaced by a linear head that reads the last hidden state of the sequence and
outputs one number, ``r(x, y)`` (``AutoModelForSequenceClassification`` with
``num_labels=1``: it reads the rightmost non-pad token, here the response's eos). It
saves and loads with ``save_pretrained``/``from_pretrained`` like any checkpoint.

It is trained with the Bradley–Terry model of preferences (Bradley & Terry 1952;
Christiano et al. 2017; Stiennon et al. 2020):

    P(y_w ≻ y_l | x) = sigmoid(r(x, y_w) - r(x, y_l))
    loss = -log sigmoid(r(x, y_w) - r(x, y_l))

Only differences of rewards between responses to the same prompt are learned: adding a
constant per prompt changes nothing, so the offset of ``r`` means nothing on its own (PPO
normalises it away). The scale does: doubling every reward changes the loss, and the
trained differences are log-odds of the labels.

The world lets us grade the reward model twice on held-out pairs: against the annotators'
noisy labels (what it was trained to predict) and against the gold judge (what we
actually want). Where it disagrees with the gold judge is where PPO will push the policy
the wrong way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from . import chat, guards, judge, model, pairs
from .env import seed_everything
from .optim import adamw_with_schedule
from .progress import tqdm

BUNDLED = "tiny-llama-rm"  # the reward model shipped under data/ (scripts/make_reward_model.py)


def from_sft(path: str | Path = model.SFT, seed: int = 0,
             ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A reward model initialised from a causal LM checkpoint (the SFT model by default):
    same trunk, a new scalar head drawn with std ``1/sqrt(d_model + 1)`` (the reward head
    of Ziegler et al. 2019's code, per Huang et al. 2024). The checkpoint has no head, so
    ``transformers`` would report it missing; that is expected and silenced here."""
    if str(path) in (model.BASE, model.SFT):
        path = model.bundled(str(path))
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        rm = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, use_safetensors=True, trust_remote_code=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    rm.config.pad_token_id = tokenizer.pad_token_id
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        d = rm.score.weight.shape[1]
        rm.score.weight.copy_(torch.randn(rm.score.weight.shape, generator=gen) / math.sqrt(d + 1))
    return rm, tokenizer


def load(path: str | Path = BUNDLED) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A trained reward model saved with ``save`` (default: the bundled one)."""
    if str(path) == BUNDLED:
        path = model.bundled(BUNDLED)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    rm = AutoModelForSequenceClassification.from_pretrained(
        path, use_safetensors=True, trust_remote_code=False)
    return rm, tokenizer


def save(rm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> None:
    rm.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


# --- the Bradley–Terry model ---------------------------------------------------------

def preference_probability(r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry: the probability that ``a`` is preferred to ``b``."""
    return torch.sigmoid(r_a - r_b)


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log sigmoid(r_chosen - r_rejected)``: the negative log-likelihood of the
    labels under Bradley–Terry."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def pair_rewards(rm: PreTrainedModel, batch: dict[str, torch.Tensor],
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected) of a ``pairs.collate_pairs`` batch, in one forward pass."""
    r = rm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    half = r.shape[0] // 2
    return r[:half], r[half:]


@torch.no_grad()
def rewards(rm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
            responses: list[str], batch_size: int = 64) -> torch.Tensor:
    """``r(x, y)`` of each (prompt, response)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    device = next(rm.parameters()).device
    was_training = rm.training
    rm.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        rows = [(chat.prompt_ids(tokenizer, p), chat.response_ids(tokenizer, r))
                for p, r in zip(prompts[i:i + batch_size], responses[i:i + batch_size],
                                strict=True)]
        b = chat.batch(rows, tokenizer.pad_token_id)
        out.append(rm(input_ids=b["input_ids"].to(device),
                      attention_mask=b["attention_mask"].to(device)).logits[:, 0].cpu())
    rm.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


# --- training ------------------------------------------------------------------------

@dataclass
class RMConfig:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0


@dataclass
class RMHistory:
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)  # share of the batch ranked right
    seconds: float = 0.0


def _check_rows(rows: list[dict]) -> None:
    for i, r in enumerate(rows):
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(r.get(key), str):
                raise ValueError(f"row {i}: field {key!r} must be a string, "
                                 f"got {type(r.get(key)).__name__}")


def train_reward_model(rm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                       rows: list[dict], cfg: RMConfig | None = None,
                       callback: Callable[[int, RMHistory], None] | None = None) -> RMHistory:
    """Train ``rm`` in place with the Bradley–Terry loss on rows {prompt, chosen, rejected}.

    ``callback(step, history)`` runs after every optimizer step (for a live plot)."""
    cfg = cfg or RMConfig()
    _check_rows(rows)
    if len(rows) < cfg.batch_size:
        raise ValueError(f"{len(rows)} pairs is fewer than one batch of {cfg.batch_size}")
    seed_everything(cfg.seed)
    device = next(rm.parameters()).device
    encoded, report = pairs.encode_pairs(tokenizer, rows, max_length=guards.context_length(rm))
    if report.kept < report.pairs or report.chosen_cut or report.rejected_cut:
        print(report)
    if len(encoded) < cfg.batch_size:
        raise ValueError(f"{len(encoded)} pairs fit the model, fewer than one batch of "
                         f"{cfg.batch_size}")
    steps_per_epoch = len(encoded) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    opt, sched = adamw_with_schedule(rm.parameters(), cfg.lr, total, cfg.warmup_steps,
                                     cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = RMHistory()
    start = time.time()
    rm.train()
    bar = tqdm(total=total, desc="reward model")
    for _ in range(cfg.epochs):
        order = torch.randperm(len(encoded), generator=gen).tolist()
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            batch = pairs.collate_pairs([encoded[i] for i in idx], tokenizer.pad_token_id)
            r_chosen, r_rejected = pair_rewards(rm, {k: v.to(device) for k, v in batch.items()})
            loss = bt_loss(r_chosen, r_rejected)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(rm.parameters(), cfg.max_grad_norm)
            loss_value, norm = torch.stack([loss.detach(), grad_norm]).tolist()  # one sync
            guards.check_finite("reward-model", len(history.loss) + 1, idx, loss_value, norm, rm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            history.loss.append(loss_value)
            history.accuracy.append((r_chosen > r_rejected).float().mean().item())
            bar.update()
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if callback is not None:
                callback(len(history.loss), history)
    bar.close()
    history.seconds = time.time() - start
    rm.eval()
    return history


# --- evaluation ----------------------------------------------------------------------

def score_pairs(rm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict],
                ) -> pd.DataFrame:
    """One row per pair: the rewards of chosen and rejected, their gold totals, and the
    probability the reward model gives the annotator's label (``p_model``)."""
    _check_rows(rows)
    prompts = [r["prompt"] for r in rows]
    r_c = rewards(rm, tokenizer, prompts, [r["chosen"] for r in rows])
    r_r = rewards(rm, tokenizer, prompts, [r["rejected"] for r in rows])
    df = pd.DataFrame({
        "prompt": prompts, "chosen": [r["chosen"] for r in rows],
        "rejected": [r["rejected"] for r in rows],
        "r_chosen": r_c.numpy(), "r_rejected": r_r.numpy(),
        "gold_chosen": [judge.score(r["prompt"], r["chosen"]).total for r in rows],
        "gold_rejected": [judge.score(r["prompt"], r["rejected"]).total for r in rows],
        "p_model": preference_probability(r_c, r_r).numpy()})
    if all("family" in r for r in rows):
        df.insert(1, "family", [r["family"] for r in rows])
    if all("p_chosen" in r for r in rows):
        df["p_annotator"] = [r["p_chosen"] for r in rows]  # the labelers' true probability
    return df


def accuracy(scored: pd.DataFrame) -> dict[str, float]:
    """Share of pairs the reward model ranks as the annotators labelled them, and as the
    gold judge ranks them (pairs with equal gold scores left out and counted)."""
    decided = scored[scored.gold_chosen != scored.gold_rejected]
    gold_better_is_chosen = decided.gold_chosen > decided.gold_rejected
    rm_prefers_chosen = decided.r_chosen > decided.r_rejected
    return {"annotators": float((scored.r_chosen > scored.r_rejected).mean()),
            "gold": float((gold_better_is_chosen == rm_prefers_chosen).mean()),
            "pairs": len(scored), "gold_ties": len(scored) - len(decided)}


def calibration(scored: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Predicted vs empirical preference probability, binned.

    Every pair is counted in both orders, (chosen, rejected) with outcome 1 and
    (rejected, chosen) with outcome 0, so each bin holds the pairs the model gave that
    probability and ``empirical`` is how often the annotators agreed. A calibrated model
    lies on the diagonal. ``annotator`` (when the rows carry it) is the labelers' true
    Bradley–Terry probability: the best any reward model could predict."""
    p = pd.concat([scored.p_model, 1 - scored.p_model], ignore_index=True)
    outcome = pd.Series([1.0] * len(scored) + [0.0] * len(scored))
    frame = pd.DataFrame({"predicted": p, "empirical": outcome})
    if "p_annotator" in scored:
        frame["annotator"] = pd.concat([scored.p_annotator, 1 - scored.p_annotator],
                                       ignore_index=True)
    frame["bin"] = pd.cut(frame.predicted, [i / bins for i in range(bins + 1)],
                          include_lowest=True)
    table = frame.groupby("bin", observed=True).mean()
    table["pairs"] = frame.groupby("bin", observed=True).size()
    return table


def most_wrong(scored: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` pairs where the reward model most prefers the response the gold judge
    ranks lower (``p_wrong``: the model's probability for the worse one)."""
    decided = scored[scored.gold_chosen != scored.gold_rejected]
    swap = decided.gold_chosen < decided.gold_rejected
    out = pd.DataFrame({
        "prompt": decided.prompt,
        "better": decided.chosen.where(~swap, decided.rejected),
        "worse": decided.rejected.where(~swap, decided.chosen),
        "gold_better": decided.gold_chosen.where(~swap, decided.gold_rejected),
        "gold_worse": decided.gold_rejected.where(~swap, decided.gold_chosen),
        "p_wrong": decided.p_model.where(swap, 1 - decided.p_model)})
    return out.sort_values("p_wrong", ascending=False).head(n).reset_index(drop=True)
