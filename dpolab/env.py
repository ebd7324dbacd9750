"""Environment detection: where the course runs and what the device supports."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import sys
from pathlib import Path

import numpy as np
import torch


def in_colab() -> bool:
    """Whether this runs in a Google Colab kernel."""
    return "google.colab" in sys.modules


def device() -> torch.device:
    """The best available device: cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def supported_dtypes(dev: torch.device | str | None = None) -> list[str]:
    """Floating-point dtypes worth training in on ``dev``. On CUDA, bf16 only where the GPU
    computes it natively (Ampere and newer): plain ``is_bf16_supported()`` also counts
    emulation, and says yes on a T4."""
    dev = torch.device(dev) if dev is not None else device()
    dtypes = ["float32"]
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            dtypes.append("bfloat16")
        dtypes.append("float16")
    elif dev.type == "cpu":
        dtypes.append("bfloat16")
    elif dev.type == "mps":
        dtypes.append("float16")
    return dtypes


_PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "peft", "trl",
             "ipywidgets", "numpy")


def versions() -> dict[str, str]:
    """Versions of Python and the libraries the course stands on ("not installed" if absent)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def widgets_ok() -> tuple[bool, str]:
    """Whether ipywidgets can draw the course's sliders (7.7 or newer)."""
    try:
        import ipywidgets
    except ImportError:
        return False, "ipywidgets is not installed: pip install 'ipywidgets>=7.7,<9'"
    major, minor = (int(x) for x in ipywidgets.__version__.split(".")[:2])
    if (major, minor) < (7, 7):
        return False, f"ipywidgets {ipywidgets.__version__} is too old: need >=7.7"
    return True, f"ipywidgets {ipywidgets.__version__}"


def data_dir() -> Path:
    """The repository's ``data/`` folder (override with ``DPOLAB_DATA``)."""
    override = os.environ.get("DPOLAB_DATA")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "data"


def bundled_model_dir() -> Path:
    """The tiny Llama the course ships, ``data/tiny-llama``."""
    return data_dir() / "tiny-llama"


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def doctor() -> str:
    """A short report: device, dtypes, versions, widgets, the bundled model."""
    dev = device()
    ok, widget_msg = widgets_ok()
    model_dir = bundled_model_dir()
    lines = [f"device: {dev}" + (f" ({torch.cuda.get_device_name()})" if dev.type == "cuda"
                                 else ""),
             f"dtypes: {', '.join(supported_dtypes(dev))}",
             f"colab: {in_colab()}",
             f"widgets: {'ok' if ok else 'NOT OK'} ({widget_msg})",
             f"bundled model: {os.path.relpath(model_dir)} "
             f"({'found' if (model_dir / 'config.json').exists() else 'missing'})"]
    lines += [f"{k}: {v}" for k, v in versions().items()]
    return "\n".join(lines)
