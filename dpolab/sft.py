"""Supervised fine-tuning: teach the base model the chat format from demonstrations.

One example is a prompt and a demonstrated response. The model sees
``<s><|user|>\\n{prompt}<|end|>\\n<|assistant|>\\n{response}</s>`` and the loss covers the
response and its eos only: the prompt is given, not predicted (its labels are -100).
Padding uses its own token, never eos, and is masked out of the loss; with pad = eos and
pads masked, the model would never be trained to emit eos, and would never stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import chat, guards, world
from .demonstrator import SFT_MIXTURE, Demonstrator, Mixture
from .env import seed_everything
from .guards import InputError
from .optim import adamw_with_schedule
from .progress import tqdm


@dataclass
class SFTConfig:
    n_examples: int = 6000
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0


def demonstrations(n: int, seed: int = 0, mixture: Mixture = SFT_MIXTURE,
                   families: tuple[str, ...] = world.FAMILIES) -> list[tuple[str, str]]:
    """``n`` (prompt, response) pairs on training prompts, written by the demonstrator."""
    demo = Demonstrator(mixture, seed=seed)
    prompts = world.World(seed).prompts(n, "train", families)
    return [(p.text, demo.respond(p)) for p in prompts]


def encode(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str,
           ) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids + eos) of one example."""
    return chat.prompt_ids(tokenizer, prompt), chat.response_ids(tokenizer, response)


@dataclass
class SFTHistory:
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_sft(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
              examples: list[tuple[str, str]], cfg: SFTConfig | None = None,
              callback: Callable[[int, SFTHistory], None] | None = None,
              collate: Callable[[list[tuple[list[int], list[int]]], int], dict] = chat.batch,
              ) -> SFTHistory:
    """Fine-tune ``model`` in place on (prompt, response) pairs; returns the loss history.

    ``callback(step, history)`` runs after every optimizer step (for a live plot).
    ``collate(rows, pad_id)`` builds a batch (default ``chat.batch``); notebook 02 swaps in
    a faulty one to show the pad = eos trap."""
    cfg = cfg or SFTConfig()
    seed_everything(cfg.seed)
    device = next(model.parameters()).device
    if len(examples) < cfg.batch_size:
        raise InputError(f"{len(examples)} examples is fewer than one batch of {cfg.batch_size}")
    encoded = guards.fit_context([encode(tokenizer, p, r) for p, r in examples],
                                 guards.context_length(model), "example")
    steps_per_epoch = len(encoded) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    opt, sched = adamw_with_schedule(model.parameters(), cfg.lr, total, cfg.warmup_steps,
                                     cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = SFTHistory()
    start = time.time()
    model.train()
    bar = tqdm(total=total, desc="SFT")
    for _ in range(cfg.epochs):
        order = torch.randperm(len(encoded), generator=gen).tolist()
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            batch = collate([encoded[i] for i in idx], tokenizer.pad_token_id)
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            loss_value, norm = torch.stack([loss.detach(), grad_norm]).tolist()  # one sync
            guards.check_finite("SFT", len(history.loss) + 1, idx, loss_value, norm, model)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            history.loss.append(loss_value)
            history.lr.append(sched.get_last_lr()[0])
            bar.update()
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if callback is not None:
                callback(len(history.loss), history)
    bar.close()
    history.seconds = time.time() - start
    model.eval()
    return history


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> None:
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
