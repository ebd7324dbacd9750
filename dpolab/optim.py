"""AdamW with linear warmup and linear decay: the optimizer every trainer here uses."""

from __future__ import annotations

import torch


def adamw_with_schedule(params, lr: float, total_steps: int, warmup_steps: int = 0,
                        weight_decay: float = 0.0, decay_to: float = 0.0,
                        fused: bool | None = None,
                        ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and a schedule: lr rises linearly for ``warmup_steps``, then falls linearly to
    ``decay_to * lr`` at ``total_steps``. ``fused``: one kernel for all parameters (CPU and
    CUDA), the same update computed faster."""
    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr,
                            weight_decay=weight_decay, fused=fused)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        frac = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(decay_to, 1.0 - (1.0 - decay_to) * frac)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
