"""Pretraining the tiny base model on world documents.

Reads top to bottom: make the corpus, train the tokenizer, pack documents into blocks,
train a small Llama with next-token prediction, save it with a model card.
``python scripts/pretrain.py`` rebuilds ``data/tiny-llama`` exactly (fixed seed).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import corpus, world
from .env import seed_everything
from .model import n_params, new_tiny_llama
from .optim import adamw_with_schedule
from .progress import tqdm
from .tokenizer import train_tokenizer


@dataclass
class PretrainConfig:
    seed: int = 0
    n_docs: int = 60_000
    vocab_size: int = 1024
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 384
    block_size: int = 128
    batch_size: int = 32
    steps: int = 2000
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1


def pack(docs: list[str], tokenizer, block_size: int) -> torch.Tensor:
    """Concatenate ``<s> doc`` for every document and cut into full blocks.

    Documents are separated by bos only: the base model never sees eos, so, like a raw
    pretrained model, it does not know how to end an answer. SFT teaches it."""
    ids: list[int] = []
    for ids_doc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids += [tokenizer.bos_token_id, *ids_doc]
    n = len(ids) // block_size
    return torch.tensor(ids[: n * block_size]).view(n, block_size)


def pretrain(cfg: PretrainConfig, out_dir: str | Path) -> dict:
    """Train the base model and save it (safetensors, tokenizer, model card) to ``out_dir``."""
    start = time.time()
    seed_everything(cfg.seed)
    docs = corpus.documents(cfg.n_docs, seed=cfg.seed)
    prompts = [p.text for p in world.World(cfg.seed).prompts(2000, "train", world.FAMILIES)]
    tokenizer = train_tokenizer(docs + prompts, cfg.vocab_size)
    blocks = pack(docs, tokenizer, cfg.block_size)

    model = new_tiny_llama(tokenizer, d_model=cfg.d_model, n_layers=cfg.n_layers,
                           n_heads=cfg.n_heads, d_ff=cfg.d_ff)
    opt, sched = adamw_with_schedule(model.parameters(), cfg.lr, cfg.steps, cfg.warmup_steps,
                                     cfg.weight_decay, decay_to=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    model.train()
    for step in (bar := tqdm(range(cfg.steps), desc="pretrain")):
        batch = blocks[torch.randint(len(blocks), (cfg.batch_size,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")

    stats = {"parameters": n_params(model), "documents": len(docs),
             "tokens": blocks.numel(), "final_loss": sum(losses[-50:]) / 50,
             "seconds": round(time.time() - start, 1), "config": asdict(cfg)}
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "pretrain_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    (out_dir / "README.md").write_text(model_card(stats))
    return stats


def model_card(stats: dict) -> str:
    cfg = stats["config"]
    return f"""# tiny-llama: the course's base model

A Llama-architecture causal LM pretrained from scratch on documents of the dpolab toy
world (facts, arithmetic, how-to pages, letters, film reviews, forum threads).
It knows the world's facts and has seen its flaws; it has never seen the chat format.

| | |
|---|---|
| parameters | {stats['parameters']:,} |
| layers / width / heads / MLP | {cfg['n_layers']} / {cfg['d_model']} / {cfg['n_heads']} \
/ {cfg['d_ff']} |
| tokenizer | byte-level BPE, {cfg['vocab_size']} tokens, pad/bos/eos distinct, chat template |
| corpus | {stats['documents']:,} documents, {stats['tokens']:,} tokens in blocks \
of {cfg['block_size']} |
| training | {cfg['steps']} steps of {cfg['batch_size']} blocks, AdamW lr {cfg['lr']}, \
seed {cfg['seed']} |
| final loss | {stats['final_loss']:.3f} (mean of the last 50 steps) |
| wall time | {stats['seconds']:.0f} s on 2 CPU cores |

Rebuild: `python scripts/pretrain.py` (deterministic for a given machine and seed).

Load: `AutoModelForCausalLM.from_pretrained("data/tiny-llama")`.
"""
