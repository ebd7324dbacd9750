"""Which floating-point precision to train in, chosen from the device.

Mixed precision keeps the trained weights, their gradients and AdamW's moments in fp32
and runs the matrix multiplications in a 16-bit type under ``torch.autocast``
(Micikevicius et al. 2018, "Mixed Precision Training"):

- **bf16** where the GPU does it natively (NVIDIA Ampere and newer, compute capability
  8.0+: A100, L4, H100, H200, RTX 30xx/40xx). bf16 has fp32's exponent range, so gradients
  neither overflow nor underflow and no loss scaling is needed.
- **fp16 with loss scaling** on Volta/Turing (7.x: V100, T4, Colab's free GPU). fp16 has
  only 5 exponent bits: small gradients flush to zero, so the loss is multiplied by a
  large factor before ``backward`` and the gradients divided by it before the step
  (``torch.amp.GradScaler``, which also skips steps whose gradients overflowed).
- **fp32** on CPU, on Apple's MPS and on older GPUs: the course's tiny model gains
  nothing from 16-bit arithmetic on a CPU, and fp32 needs no care.

``torch.cuda.is_bf16_supported()`` alone is not the test: by default it also answers yes
where bf16 is only *emulated* (a T4 can create bf16 tensors, slowly), so the choice asks
for native support (``including_emulation=False``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

_NAMES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """How to train on one device: the weights' dtype, the autocast dtype (None: no
    autocast), whether gradients need loss scaling, and why."""

    device: str
    param_dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    needs_scaler: bool
    why: str
    capability: tuple[int, int] | None = None  # CUDA compute capability, when on CUDA

    @property
    def name(self) -> str:
        """``"bf16"``, ``"fp16"`` or ``"fp32"``: the type the matmuls run in."""
        dtype = self.autocast_dtype or self.param_dtype
        return next(k for k, v in _NAMES.items() if v == dtype)

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` to the 16-bit type, or a no-op in fp32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=self.autocast_dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        """A fresh loss scaler when fp16 needs one, else None."""
        return torch.amp.GradScaler(self.device) if self.needs_scaler else None


def _cuda(index: int | None, want: str) -> Precision:
    major, minor = torch.cuda.get_device_capability(index)
    name = f"{torch.cuda.get_device_name(index)} (compute capability {major}.{minor})"
    native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    if want == "auto":
        want = "bf16" if native_bf16 else "fp16" if major >= 7 else "fp32"
    if want == "bf16" and not native_bf16:
        raise ValueError(f"{name} has no native bf16 (it needs compute capability 8.0+): "
                         f"use 'fp16' (with loss scaling) or 'auto'")
    why = {
        "bf16": f"{name} computes in bf16 natively: autocast to bf16 over fp32 weights; "
                f"bf16 has fp32's exponent range, so no loss scaling",
        "fp16": f"{name} has fp16 tensor cores but no native bf16: autocast to fp16 over "
                f"fp32 weights, with loss scaling (GradScaler) so small gradients do not "
                f"flush to zero",
        "fp32": f"{name}: fp32 throughout",
    }[want]
    return Precision("cuda", torch.float32, None if want == "fp32" else _NAMES[want],
                     want == "fp16", why, (major, minor))


def choose(device: str | torch.device | None = None, want: str = "auto") -> Precision:
    """The precision to train in on ``device`` (default: CUDA if available, else CPU).

    ``want="auto"`` picks bf16, fp16 or fp32 as the module docstring says; ``"bf16"``,
    ``"fp16"`` or ``"fp32"`` force one (bf16 only where it is native; 16-bit only on CUDA)."""
    if want not in ("auto", *_NAMES):
        raise ValueError(f"want must be 'auto', 'bf16', 'fp16' or 'fp32', got {want!r}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU")
        return _cuda(device.index, want)
    if want not in ("auto", "fp32"):
        raise ValueError(f"{want} training is only set up for CUDA GPUs here; "
                         f"on {device.type} use 'fp32' or 'auto'")
    return Precision(device.type, torch.float32, None, False,
                     f"{device.type}: fp32 throughout (16-bit arithmetic brings no speed-up "
                     f"here, and fp32 needs no loss scaling)")
