"""Loading models and tokenizers, and the tiny Llama the course ships.

The bundled model is an ordinary ``transformers`` checkpoint under ``data/``: it loads
with the same ``from_pretrained`` call as a hub model, from safetensors, without remote
code. ``load`` takes a local folder or a hub id alike.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .env import bundled_model_dir

BASE = "tiny-llama"  # pretrained on world documents
SFT = "tiny-llama-sft"  # after supervised fine-tuning on demonstrations


def bundled(name: str = BASE) -> Path:
    """Path of a model shipped under ``data/`` (``BASE`` or ``SFT``)."""
    return bundled_model_dir().parent / name


def tiny_llama_config(tokenizer: PreTrainedTokenizerBase, d_model: int = 128, n_layers: int = 4,
                      n_heads: int = 4, d_ff: int = 384, max_len: int = 256) -> LlamaConfig:
    """A Llama-architecture config of about a million parameters."""
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=d_ff,
        num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
        max_position_embeddings=max_len, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def new_tiny_llama(tokenizer: PreTrainedTokenizerBase, **sizes) -> LlamaForCausalLM:
    return LlamaForCausalLM(tiny_llama_config(tokenizer, **sizes))


def load(name_or_path: str | Path = BASE, dtype: torch.dtype = torch.float32,
         device: str | torch.device = "cpu",
         ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a bundled name (``BASE``/``SFT``), a folder or a hub id.

    Safetensors only and no remote code, whatever the source."""
    if str(name_or_path) in (BASE, SFT):
        name_or_path = bundled(str(name_or_path))
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, dtype=dtype, use_safetensors=True, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def n_params(model: torch.nn.Module) -> int:
    """Parameter count (``parameters()`` yields a tied embedding once)."""
    return sum(p.numel() for p in model.parameters())
