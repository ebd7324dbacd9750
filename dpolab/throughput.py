"""Throughput and model FLOPs utilisation (MFU), and how long a run will take.

Training a decoder of ``N`` parameters costs about ``6N`` FLOPs per token: ``2N`` forward,
``4N`` backward (Kaplan et al. 2020, "Scaling Laws for Neural Language Models"; the
attention scores add a little more, ignored here as in PaLM's MFU, Chowdhery et al.
2022). MFU is the share of the GPU's peak that ``6N x tokens/s`` reaches.

The DPO step does a little more or less than ``6N`` per token, and the time estimate
counts it: a per-step reference forward (``2N``), gradient checkpointing (one more
forward, ``2N``) and, with LoRA, a backward pass that computes input gradients only
(``2N`` instead of ``4N``); precomputed reference log-probs cost one ``2N`` pass first.

Peak dense tensor-core throughput (no sparsity) from NVIDIA's data sheets, and memory
bandwidth, which bounds token-by-token generation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .memory import Plan

# name fragment (as in torch.cuda.get_device_name): (TFLOPS by dtype, memory GB/s).
# More specific fragments first ("H100 PCIe" before "H100", "L40S" before "L4").
GPUS: dict[str, tuple[dict[str, float], float]] = {
    "T4": ({"fp16": 65.0, "fp32": 8.1}, 320.0),
    "L40S": ({"bf16": 362.0, "fp16": 362.0, "fp32": 91.6}, 864.0),
    "L4": ({"bf16": 121.0, "fp16": 121.0, "fp32": 30.3}, 300.0),
    "A100": ({"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}, 1555.0),
    "H100 PCIe": ({"bf16": 756.0, "fp16": 756.0, "fp32": 51.0}, 2000.0),
    "H100": ({"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}, 3350.0),
    "H200": ({"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}, 4800.0),
}
ASSUMED_MFU = 0.2  # for time estimates: small models in eager PyTorch reach 15-40%
DECODE_STEP_FLOOR_S = 0.02  # a generate() step of a ~30-layer model: kernel launches


def gpu_entry(name: str) -> tuple[str, dict[str, float], float] | None:
    """``(fragment, peak TFLOPS by dtype, GB/s)`` for a device name, or None if unknown."""
    for fragment, (peaks, bandwidth) in GPUS.items():
        if fragment in name:
            return fragment, peaks, bandwidth
    return None


def peak_flops(name: str, dtype: str) -> float | None:
    """Peak FLOP/s of GPU ``name`` in ``dtype`` (``"bf16"``, ``"fp16"``, ``"fp32"``), or None."""
    entry = gpu_entry(name)
    if entry is None or dtype not in entry[1]:
        return None
    return entry[1][dtype] * 1e12


def mfu(n_params: int, tokens_per_s: float, peak: float | None) -> float | None:
    """``6 N tokens/s / peak``: model FLOPs utilisation (None without a known peak)."""
    return None if not peak else 6 * n_params * tokens_per_s / peak


def flops_per_token(plan: Plan, n_params: int) -> float:
    """Training FLOPs per token position of one DPO step of ``plan`` (module docstring)."""
    backward = 2 if plan.lora_r is not None else 4
    extra = 2 * plan.checkpointing + 2 * (plan.reference in ("model", "adapters"))
    return (2 + backward + extra) * n_params


@dataclass(frozen=True)
class TimeEstimate:
    """Seconds for a run's parts, at ``ASSUMED_MFU`` of the GPU's peak."""

    train: float
    precompute: float
    generate: float
    inputs: dict

    @property
    def total(self) -> float:
        return self.train + self.precompute + self.generate

    def __str__(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.inputs.items())
        return (f"training {self.train / 60:.1f} min + reference precompute "
                f"{self.precompute / 60:.1f} min + generation {self.generate / 60:.1f} min = "
                f"{self.total / 60:.1f} min\n(inputs: {shown})")


def estimate_time(plan: Plan, n_params: int, steps: int, pairs_per_step: int,
                  eval_prompts: int, max_new_tokens: int, evaluations: int, gpu: str,
                  dtype: str, mfu_assumed: float = ASSUMED_MFU,
                  eval_batch: int = 64, samples: int = 0) -> TimeEstimate:
    """How long ``steps`` optimizer steps of ``plan`` take on ``gpu`` (a name in ``GPUS``),
    with ``evaluations`` rounds of sampling ``max_new_tokens`` on ``eval_prompts`` prompts
    and ``samples`` more responses sampled (the model's side of its training pairs).

    Token positions are ``2 x pairs x seq_len`` (padded rows cost compute too), so this
    errs high when pairs are shorter than the longest. Generation is bound by reading the
    16-bit weights once per decoding step, or by kernel launches, whichever is slower."""
    entry = gpu_entry(gpu)
    peak = peak_flops(gpu, dtype)
    if entry is None or peak is None:
        raise ValueError(f"no peak {dtype} throughput known for {gpu!r}: known GPUs are "
                         f"{', '.join(GPUS)}")
    tokens = steps * pairs_per_step * 2 * plan.seq_len
    rate = peak * mfu_assumed
    train = tokens * flops_per_token(plan, n_params) / rate
    precompute = tokens * 2 * n_params / rate if plan.reference == "precomputed" else 0.0
    step_s = max(2 * n_params / (entry[2] * 1e9), DECODE_STEP_FLOOR_S)
    batches = evaluations * math.ceil(eval_prompts / eval_batch) + math.ceil(samples / eval_batch)
    generate = batches * max_new_tokens * step_s
    inputs = {"gpu": entry[0], "dtype": dtype, "peak TFLOPS": entry[1][dtype],
              "assumed MFU": mfu_assumed, "params": n_params, "steps": steps,
              "pairs/step": pairs_per_step, "seq_len": plan.seq_len,
              "FLOPs/token": f"{flops_per_token(plan, n_params) / n_params:.0f}N"}
    return TimeEstimate(train, precompute, generate, inputs)


def device_name(device: torch.device | str) -> str:
    """What the device calls itself: the GPU's name, or ``"cpu"``."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
