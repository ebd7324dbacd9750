"""Checks that turn bad input and numerical faults into clear errors.

- ``InputError``: input or an argument that cannot be used (the command line exits 2).
- argparse ``type=`` functions: arguments are refused before any work starts.
- ``local_or_hub``: a hub id while offline fails at once, in one line.
- ``check_finite``: a NaN/inf loss or gradient stops a trainer, naming the step and batch.
- ``context_length`` / ``fit_context``: no sequence longer than the model can read is
  trained on; cut ones are counted.
- ``write_atomic`` / ``load_checkpoint``: checkpoints are whole or absent, a full disk is
  named with its path, and a damaged file is named.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


class InputError(ValueError):
    """Input (a file, an argument, a model id) that cannot be used as given."""


# --- arguments ---------------------------------------------------------------------------

def _argument(parse: Callable[[str], float], ok: Callable[[float], bool], expected: str,
              unparsed: str) -> Callable[[str], float]:
    """An argparse type: ``parse(text)``, refused unless ``ok``, with the expected form named
    (``unparsed`` when the text is not a number at all)."""

    def check(text: str) -> float:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {unparsed}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return check


positive_int = _argument(int, lambda v: v >= 1, "a positive integer", "a positive integer")
natural_int = _argument(int, lambda v: v >= 0, "an integer >= 0", "an integer >= 0")
positive_float = _argument(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0",
                           "a positive number")
nonnegative_float = _argument(float, lambda v: math.isfinite(v) and v >= 0,
                              "a finite number >= 0", "a number >= 0")


def positive(name: str, value: int) -> int:
    """``value`` if it is an integer of at least 1, else an ``InputError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


# --- models from the hub -------------------------------------------------------------------

def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` forbids the network."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def local_or_hub(name_or_path: str | Path) -> str | Path:
    """``name_or_path`` if it is a local folder or a hub id that can be fetched; an
    ``InputError`` in one line for a missing folder, or a hub id not in the cache while
    offline (instead of a minute of retries and a traceback)."""
    path = Path(name_or_path)
    if path.is_dir():
        return name_or_path
    text = str(name_or_path)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise InputError(f"{text}: not a model folder (expected a folder with config.json or "
                         f"tokenizer_config.json)")
    if offline() and not _cached(text):
        raise InputError(f"{text}: not a local folder, and loading it from the Hugging Face "
                         f"hub needs the network (HF_HUB_OFFLINE=1 is set): pass a local folder")
    return name_or_path


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return any(isinstance(try_to_load_from_cache(repo_id, f), str)
                   for f in ("config.json", "tokenizer_config.json"))
    except ValueError:  # not a valid repo id
        return False


# --- training ------------------------------------------------------------------------------

def check_finite(trainer: str, step: int, batch: Sequence[int], loss: float,
                 grad_norm: float | None = None, model: torch.nn.Module | None = None) -> None:
    """A ``FloatingPointError`` naming the trainer, the 1-based step and the batch's rows
    when the loss or the gradient norm is NaN/inf (checked before the optimizer step)."""
    rows = f"{list(batch[:8])}{' ...' if len(batch) > 8 else ''}"
    if not math.isfinite(loss):
        raise FloatingPointError(f"{trainer} loss is {loss} at step {step} (batch rows {rows}): "
                                 f"check those rows, or lower lr")
    if grad_norm is not None and not math.isfinite(grad_norm):
        bad = "?" if model is None else next(
            (n for n, p in model.named_parameters()
             if p.grad is not None and not torch.isfinite(p.grad).all()), "?")
        raise FloatingPointError(f"{trainer} gradient norm is {grad_norm} at step {step} (batch "
                                 f"rows {rows}; first non-finite gradient: {bad}): lower lr")


def context_length(model: torch.nn.Module) -> int | None:
    """The longest sequence ``model`` can read (``config.max_position_embeddings``), or None."""
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


def fit_context(rows: list[tuple[list[int], list[int]]], limit: int | None, what: str,
                ) -> list[tuple[list[int], list[int]]]:
    """(prompt, response) id rows cut to ``limit`` tokens (the response's end goes), with one
    printed count of the cut rows; an ``InputError`` when a prompt alone leaves no room."""
    if limit is None:
        return rows
    out, cut = [], 0
    for i, (p, r) in enumerate(rows):
        if len(p) >= limit:
            raise InputError(f"{what} {i}: the prompt has {len(p)} tokens, the model reads at "
                             f"most {limit} (max_position_embeddings): shorten it")
        if len(p) + len(r) > limit:
            r, cut = r[:limit - len(p)], cut + 1
        out.append((p, r))
    if cut:
        print(f"{cut} of {len(rows)} {what}s cut to the model's context of {limit} tokens "
              f"(their responses lost their end and eos)")
    return out


# --- checkpoints -----------------------------------------------------------------------------

def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` to a temporary file next to ``path``, then rename it over ``path``:
    a crash leaves the previous file intact. On any error the temporary file is removed;
    a full disk is reported with the path, as an ``OSError`` with ``errno.ENOSPC``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if _disk_full(err):
            raise OSError(errno.ENOSPC, f"no space left on the device writing checkpoint {path} "
                                        f"(the previous one, if any, is intact): free space "
                                        f"or write it elsewhere") from err
        raise


def _disk_full(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if "unexpected pos" in str(err) or "No space left" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def remove_stale(path: Path) -> list[Path]:
    """Delete temporary files of ``path`` left by writers that died (``.NAME.tmp-PID`` whose
    process is gone); returns them."""
    stale = [t for t in path.parent.glob(f".{path.name}.tmp-*") if not _alive(t.name)]
    for t in stale:
        t.unlink(missing_ok=True)
    return stale


def _alive(name: str) -> bool:
    pid = name.rsplit("-", 1)[-1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by ``torch.save`` (tensors and plain data only); an
    ``InputError`` naming the file when it is truncated or not a checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError,
            pickle.UnpicklingError) as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"checkpoint {path} is damaged or not a checkpoint ({first}): delete "
                         f"it to start over") from None
    if not isinstance(state, dict):
        raise InputError(f"checkpoint {path} is not a checkpoint (it holds "
                         f"{type(state).__name__}): delete it to start over")
    return state
