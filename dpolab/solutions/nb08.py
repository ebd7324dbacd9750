"""Notebook 08 (DPO on a GPU): the memory a run pays whatever its batch, and the parameters
LoRA trains."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def static_bytes(n_params: int, linear_params: int, trainable: int, mixed: bool) -> int:
    """Bytes a training step holds whatever the batch size, with AdamW:

    - weights: 4 bytes (fp32) per parameter, the master copy the optimizer updates; under
      mixed precision (``mixed``) autocast also keeps a 16-bit copy (2 bytes) of each of the
      ``linear_params`` parameters that go through a linear layer;
    - gradients: 4 bytes per *trainable* parameter (frozen weights get none);
    - AdamW's two moments, ``m`` and ``v``: 4 + 4 bytes per trainable parameter.

    Full fine-tuning in fp32: 16 bytes per parameter."""
    weights = 4 * n_params + (2 * linear_params if mixed else 0)
    return weights + (4 + 8) * trainable


def lora_trainable(model: torch.nn.Module, r: int,
                   targets: str | Sequence[str] = "all-linear") -> int:
    """Parameters rank-``r`` LoRA trains in ``model``: ``r * (d_in + d_out)`` per adapted
    ``nn.Linear`` (``A`` is ``r x d_in``, ``B`` is ``d_out x r``; no bias), for the linear
    layers whose name ends in one of ``targets`` (e.g. ``("q_proj", "v_proj")``), or every
    linear layer but the output layer for ``"all-linear"`` (as peft does)."""
    head = model.get_output_embeddings()
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        leaf = name.rsplit(".", 1)[-1]
        adapted = module is not head if targets == "all-linear" else leaf in targets
        if adapted:
            total += r * (module.in_features + module.out_features)
    return total
