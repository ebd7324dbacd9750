"""How much GPU memory a DPO run needs, before it runs; what to change when it won't fit.

A training step holds, at its peak (the start of the backward pass):

- **weights**: 4 bytes per parameter (fp32: under mixed precision they are the "master
  weights" the optimizer updates), and under autocast a 16-bit copy of every matrix that
  goes through a linear layer (2 bytes per such parameter), made in the forward pass and
  kept for the backward pass (checkpointed: only the output layer's and the rebuilt block's);
- **reference model**: a second fp32 copy (``reference="model"``), or nothing: log-probs
  precomputed once (``"precomputed"``) or the LoRA policy with its adapters switched off
  (``"adapters"``);
- **gradients** (4 bytes) and **AdamW's two moments** (8 bytes) per *trainable* parameter:
  every parameter, or only the LoRA adapters (the frozen base gets neither);
- **activations** saved for the backward pass, for ``2 x batch`` rows (chosen and rejected
  in one batch) of ``T`` tokens;
- **logits**: ``2B x T x vocab`` values upcast to fp32 for the log-softmax: the saved
  log-softmax, its gradient and its input's gradient live together when the backward
  pass starts (three fp32 copies), and a per-step reference forward adds a fourth.

Activations follow the method of Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models"): count the tensors each layer saves for its
backward pass. Their GPT layer saves ``s*b*h*(34 + 5*a*s/h)`` bytes in fp16 (with dropout
masks, a 4h GeLU MLP and the attention matrix stored). A Llama layer in ``transformers``,
with SDPA attention (no s x s attention matrix kept, only its mask), no dropout, a SwiGLU
MLP of width ``i``, RMSNorm computed in fp32, query width ``q = heads * head_dim`` and
key/value width ``k``, saves per token, with ``e`` bytes per 16-bit-or-fp32 activation:

    fp32 (e = 4):      24h + 4 * (2q + 2k' + 4i + T)          + 4a + 8
    autocast (e = 2):  16h + 5eh + e * (2q + 2k' + 4i + T)    + 4a + 8

- ``16h``: the residual stream and normalised hidden states, kept in fp32 (2 norms x 2);
- ``8h`` in fp32, or ``5eh`` under autocast: the inputs of the projections (autocast casts
  the norm's output separately for each of q, k, v and for gate, up: 5 copies);
- ``2q + 2k'``: SDPA's saved query, key, value and output (``k' = q`` when grouped-query
  attention repeats keys and values, as ``transformers`` does whenever there is a padding
  mask; ``k' = k`` otherwise); ``4i``: SwiGLU's gate, its SiLU, up, and their product;
  ``T``: the attention mask as a float ``T x T`` per row; ``4a + 8``: softmax statistics.

With gradient checkpointing a block keeps only its fp32 input (``4h`` per token), and
one block's activations are rebuilt at a time in the backward pass, after the logits'
buffers are freed. LoRA on every linear layer of a block adds the rank-``r``
intermediates of its 7 adapters (``7er`` per token); the adapters' inputs are the
activations the block saves anyway.

Full fine-tuning with ``reference="precomputed"`` first runs a no-grad pass over the data
(the trainer uses batches of ``2 x batch`` pairs): its peak, the weights and three fp32
copies of those logits, is compared with the training step's, and the larger is the
prediction.

Accuracy: against peaks measured on a CPU (``measured_peak``; bf16 autocast on the CPU
standing in for the GPU's) for the course's tiny model and a small grouped-query model
with a large vocabulary, over fp32/bf16, full/LoRA, the three references and
checkpointing on/off, the estimate is 0% to 30% above the measured peak
(tests/test_memory.py). It errs high because it adds every gradient to the activations,
while with one micro-batch per step gradients are allocated during the backward pass as
activations are freed. On a GPU the caching allocator's slack and the CUDA context
(several hundred MB, outside PyTorch's count) come on top: hence ``HEADROOM``.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import torch

REFERENCES = ("model", "precomputed", "adapters")
HEADROOM = 0.85  # share of a GPU's memory a plan may fill: allocator slack, CUDA context
GIB = 2**30


@dataclass(frozen=True)
class Shape:
    """The sizes of a Llama-like decoder that memory depends on."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool  # input embedding shared with the output layer
    qkv_bias: bool = False  # Qwen2-style biases on the q, k, v projections

    @classmethod
    def from_config(cls, config: Any) -> Shape:
        """From a ``transformers`` config or its ``config.json`` dict (missing keys take
        ``LlamaConfig``'s defaults: no tied embeddings, one key/value head per head)."""
        c = config if isinstance(config, dict) else config.to_dict()
        heads = c["num_attention_heads"]
        return cls(hidden=c["hidden_size"], layers=c["num_hidden_layers"], heads=heads,
                   kv_heads=c.get("num_key_value_heads") or heads,
                   head_dim=c.get("head_dim") or c["hidden_size"] // heads,
                   intermediate=c["intermediate_size"], vocab=c["vocab_size"],
                   tied=bool(c.get("tie_word_embeddings", False)),
                   qkv_bias=bool(c.get("attention_bias", c.get("model_type") == "qwen2")))

    @property
    def q(self) -> int:
        return self.heads * self.head_dim

    @property
    def k(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_linear_params(self) -> int:
        h, q, k, i = self.hidden, self.q, self.k, self.intermediate
        return h * q + 2 * h * k + q * h + 3 * h * i

    def linear_params(self) -> int:
        """Parameters that go through ``F.linear`` (what autocast copies to 16-bit): every
        projection of every block, and the output layer."""
        return self.layers * self.layer_linear_params() + self.vocab * self.hidden

    def n_params(self) -> int:
        """All parameters (a tied embedding counted once)."""
        h, L = self.hidden, self.layers
        per_layer = self.layer_linear_params() + 2 * h + (self.q + 2 * self.k) * self.qkv_bias
        return self.vocab * h * (1 if self.tied else 2) + L * per_layer + h

    def lora_params(self, r: int) -> int:
        """Adapter parameters of rank-``r`` LoRA on every linear layer of every block
        (q, k, v, o, gate, up, down; ``r * (in + out)`` each)."""
        h, q, k, i = self.hidden, self.q, self.k, self.intermediate
        return self.layers * r * ((h + q) + 2 * (h + k) + (q + h) + 2 * (h + i) + (i + h))


@dataclass(frozen=True)
class Plan:
    """What will be trained and how: the inputs of the estimate."""

    shape: Shape
    batch_pairs: int  # pairs per micro-batch: 2x as many rows go through the model
    seq_len: int  # tokens per row (prompt + response) of the longest batch
    mixed_precision: bool = False  # autocast to 16-bit over fp32 weights
    lora_r: int | None = None  # None: full fine-tuning
    reference: str = "precomputed"
    checkpointing: bool = False  # gradient checkpointing, one layer rebuilt at a time

    def __post_init__(self):
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.reference == "adapters" and self.lora_r is None:
            raise ValueError("reference='adapters' needs LoRA (lora_r): the reference is the "
                             "model with its adapters switched off")
        if self.batch_pairs < 1 or self.seq_len < 2:
            raise ValueError(f"need batch_pairs >= 1 and seq_len >= 2, got {self.batch_pairs} "
                             f"and {self.seq_len}")

    @property
    def tokens(self) -> int:
        """Token positions in one micro-batch: 2 x batch_pairs rows of seq_len."""
        return 2 * self.batch_pairs * self.seq_len

    def trainable(self) -> int:
        return self.shape.n_params() if self.lora_r is None else self.shape.lora_params(self.lora_r)


def layer_activation_bytes(plan: Plan) -> int:
    """Bytes one block saves for its backward pass, per token (module docstring)."""
    s, T = plan.shape, plan.seq_len
    h, q, i = s.hidden, s.q, s.intermediate
    kv = q if s.kv_heads < s.heads else s.k  # keys and values repeated per query head
    e = 2 if plan.mixed_precision else 4
    inputs = 5 * e * h if plan.mixed_precision else 8 * h
    per_token = 16 * h + inputs + e * (2 * q + 2 * kv + 4 * i + T) + 4 * s.heads + 8
    if plan.lora_r is not None:
        per_token += 7 * e * plan.lora_r
    return per_token


def activation_bytes(plan: Plan) -> int:
    """Every block's saved activations and the final norm's. Checkpointed: every block's
    fp32 input, plus the one block rebuilt at a time in the backward pass, counted beyond
    the logits' buffers (freed by the time the first block is rebuilt)."""
    s, n = plan.shape, plan.tokens
    final_norm = n * (8 + (2 if plan.mixed_precision else 4)) * s.hidden
    block = n * layer_activation_bytes(plan)
    if not plan.checkpointing:
        return s.layers * block + final_norm
    return s.layers * n * 4 * s.hidden + final_norm + max(0, block - logits_bytes(plan))


def logits_bytes(plan: Plan) -> int:
    copies = 3 + (plan.reference in ("model", "adapters"))
    return copies * plan.tokens * plan.shape.vocab * 4


def autocast_copies(plan: Plan) -> int:
    """Parameters whose 16-bit casts are held from the forward to the backward pass: every
    linear layer's, or, checkpointed, the output layer's and one rebuilt block's."""
    if not plan.mixed_precision:
        return 0
    s = plan.shape
    if plan.checkpointing:
        return s.vocab * s.hidden + s.layer_linear_params()
    return s.linear_params()


def precompute_bytes(plan: Plan) -> int:
    """Peak of the pass that precomputes reference log-probs before training: the weights
    and three fp32 copies of the logits of a no-grad batch of ``2 x batch_pairs`` pairs
    (the batch ``dpo.precompute_ref_logps`` gets from the trainer)."""
    if plan.reference != "precomputed":
        return 0
    return 4 * plan.shape.n_params() + 3 * 2 * plan.tokens * plan.shape.vocab * 4


@dataclass
class Estimate:
    """Bytes per part of a training step's peak, the peak of the reference precompute
    pass before it, and the plan they were computed for."""

    plan: Plan
    parts: dict[str, int] = field(default_factory=dict)
    precompute: int = 0

    @property
    def step(self) -> int:
        return sum(self.parts.values())

    @property
    def total(self) -> int:
        """The predicted peak: the larger of a training step and the precompute pass."""
        return max(self.step, self.precompute)

    def fits(self, gpu_bytes: int, headroom: float = HEADROOM) -> bool:
        return self.total <= headroom * gpu_bytes

    def rows(self) -> dict[str, int]:
        rows = {**self.parts, "training step": self.step}
        if self.precompute:
            rows["reference precompute pass (before training)"] = self.precompute
        return {**rows, "predicted peak": self.total}

    def table(self) -> pd.DataFrame:
        """One row per part, in GiB, then the training step, the precompute pass and the
        predicted peak."""
        rows = self.rows()
        return pd.DataFrame({"GiB": [v / GIB for v in rows.values()]}, index=list(rows)).round(3)

    def __str__(self) -> str:
        rows = self.rows()
        width = max(map(len, rows))
        return "\n".join(f"{k:<{width}}  {v / GIB:8.3f} GiB" for k, v in rows.items())


def estimate(plan: Plan) -> Estimate:
    """The peak memory of one training step of ``plan``, part by part, and of the
    reference precompute pass when there is one.

    A sum of parts errs high, by up to the size of the gradients: with one micro-batch
    per step they are allocated during the backward pass while activations are freed."""
    s, p = plan.shape, plan.trainable()
    parts = {
        "weights (fp32)": 4 * s.n_params(),
        "16-bit weight copies (autocast)": 2 * autocast_copies(plan),
        "reference model": 4 * s.n_params() if plan.reference == "model" else 0,
        "gradients": 4 * p,
        "AdamW moments": 8 * p,
        "activations": activation_bytes(plan),
        "logits (fp32)": logits_bytes(plan),
    }
    return Estimate(plan, parts, precompute_bytes(plan))


# --- when it won't fit -----------------------------------------------------------------------

def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def _largest_batch(plan: Plan, gpu_bytes: int) -> int | None:
    """The largest batch below ``plan``'s (halving) that fits, or None."""
    b = plan.batch_pairs
    while b > 1:
        b //= 2
        if estimate(replace(plan, batch_pairs=b)).fits(gpu_bytes):
            return b
    return None


def _smaller_batch(plan: Plan, b: int) -> str:
    accum = math.ceil(plan.batch_pairs / b)
    return f"batch_size {plan.batch_pairs} -> {b} with grad_accum x{accum}"


def suggest(est: Estimate, gpu_bytes: int) -> list[str]:
    """Concrete changes that bring ``est`` under ``HEADROOM`` of ``gpu_bytes``, each with
    its new estimate; empty when it already fits. When no single change is enough, the
    last line combines them."""
    if est.fits(gpu_bytes):
        return []
    plan = est.plan
    options: list[tuple[str, Plan]] = []
    b = _largest_batch(plan, gpu_bytes)
    if b is not None:
        options.append((_smaller_batch(plan, b) + " (the same pairs per optimizer step)",
                        replace(plan, batch_pairs=b)))
    if not plan.checkpointing:
        options.append(("gradient checkpointing (each block's forward runs twice: about a "
                        "third more compute)", replace(plan, checkpointing=True)))
    if plan.reference == "model":
        options.append(("precomputed reference log-probs (no second model in memory)",
                        replace(plan, reference="precomputed")))
    if plan.lora_r is None:
        options.append(("LoRA, rank 16 (gradients and AdamW moments for the adapters only; "
                        "the reference is the model with its adapters switched off)",
                        replace(plan, lora_r=16, reference="adapters")))

    def line(text: str, new: Plan) -> str:
        e = estimate(new)
        return (f"{text}: {_gib(est.total)} -> {_gib(e.total)} "
                f"({'fits' if e.fits(gpu_bytes) else 'still too big'})")

    out = [line(text, new) for text, new in options]
    if any(estimate(new).fits(gpu_bytes) for _, new in options):
        return out
    # Every memory saver at once, then the largest batch that fits.
    lora = plan.lora_r is None
    combined = replace(plan, checkpointing=True, lora_r=plan.lora_r or 16,
                       reference="adapters" if lora else
                       "precomputed" if plan.reference == "model" else plan.reference)
    changes = ["gradient checkpointing"] * (not plan.checkpointing) + ["LoRA rank 16"] * lora
    changes += ["precomputed reference"] * (plan.reference == "model" and not lora)
    if not estimate(combined).fits(gpu_bytes):
        b = _largest_batch(combined, gpu_bytes) or 1
        changes.append(_smaller_batch(plan, b))
        combined = replace(combined, batch_pairs=b)
    out.append(line("together: " + ", ".join(changes), combined))
    if not estimate(combined).fits(gpu_bytes):
        out.append(f"even so it exceeds {HEADROOM:.0%} of {_gib(gpu_bytes)}: shorten "
                   f"max_length (the longest pair now has {plan.seq_len} tokens) or pick a "
                   f"smaller model")
    return out


class OutOfMemory(RuntimeError):
    """Training ran out of device memory; the message says what to change."""


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` is an out-of-memory error (CUDA, MPS or CPU)."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def oom_message(est: Estimate, gpu_bytes: int, err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    lines = [f"Out of memory: {first[:200]}",
             f"The estimate for this run was {_gib(est.total)} on a device of "
             f"{_gib(gpu_bytes)}:", *("  " + line for line in str(est).splitlines())]
    tips = suggest(est, gpu_bytes)
    if not tips:  # the estimate said it fits: allocator slack, other tensors, a longer batch
        tips = suggest(est, int(est.total / HEADROOM * 0.75))
        lines.append("The estimate fitted, so something else holds memory (another model "
                     "still loaded, earlier runs in this kernel: restart it), or batches "
                     "were longer than estimated. To fit with a wide margin:")
    else:
        lines.append("To make it fit:")
    return "\n".join([*lines, *("  - " + t for t in tips)])


def guard(fn: Callable[[], Any], message: Callable[[BaseException], str]) -> Any:
    """``fn()``, or, if it runs out of memory, an ``OutOfMemory`` error with
    ``message(err)`` instead of the allocator's traceback."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - only out-of-memory errors are translated
        if not is_oom(err):
            raise
        text = message(err)
    gc.collect()  # the failed pass's tensors went with the exception's frames
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    raise OutOfMemory(text)


def run_with_oom_help(fn: Callable[[], Any], est: Estimate, gpu_bytes: int) -> Any:
    """``fn()``, or, if it runs out of memory, an ``OutOfMemory`` error whose message holds
    the estimate and ``suggest``'s changes."""
    return guard(fn, lambda err: oom_message(est, gpu_bytes, err))


# --- evaluation passes -----------------------------------------------------------------------
#
# Evaluation runs without gradients, on top of what is held already (the weights, a reference
# copy). Its batches are sized to the memory left (``EvalPass.sized``): a fixed 64 rows of
# a 150k-token vocabulary at 320 tokens is 23 GiB of logits alone.

EVAL_ROWS = 64  # the most rows of an evaluation batch: more buys little speed


def score_row_bytes(shape: Shape, seq_len: int, mixed_precision: bool) -> int:
    """Bytes per row of a no-grad pass that scores rows of ``seq_len`` tokens (response
    log-probs): three fp32 copies of the logits, as in training (the output upcast, the
    shifted copy ``cross_entropy`` flattens, its log-softmax), and one block's activations
    (without gradients each block's are freed as the next one runs)."""
    block = layer_activation_bytes(Plan(shape, 1, seq_len, mixed_precision))
    return seq_len * (3 * 4 * shape.vocab + block)


def sample_row_bytes(shape: Shape, prompt_len: int, new_tokens: int,
                     mixed_precision: bool) -> int:
    """Bytes per row of ``generate`` on a prompt of ``prompt_len`` tokens, ``new_tokens``
    more: every layer's keys and values at full length (the KV cache), the prompt pass's
    one block of activations, and fp32 logits of the last position only (``generate``
    asks for no more)."""
    e = 2 if mixed_precision else 4
    cache = (prompt_len + new_tokens) * shape.layers * 2 * shape.k * e
    block = layer_activation_bytes(Plan(shape, 1, max(prompt_len, 2), mixed_precision))
    return cache + prompt_len * block + 3 * 4 * shape.vocab


@dataclass(frozen=True)
class EvalPass:
    """One evaluation pass: its name, rows per batch, tokens per row, and the predicted
    bytes of one batch beyond what is held already."""

    name: str
    rows: int
    tokens: int
    bytes: int

    @classmethod
    def sized(cls, name: str, row_bytes: int, tokens: int, budget: int | None,
              most: int = EVAL_ROWS) -> EvalPass:
        """The most rows (between 1 and ``most``) whose batch fits ``budget`` bytes; ``most``
        without a budget (on a CPU)."""
        rows = most if budget is None else max(1, min(most, budget // row_bytes))
        return cls(name, rows, tokens, rows * row_bytes)

    def __str__(self) -> str:
        return (f"{self.name}: batches of {self.rows} rows x {self.tokens} tokens, "
                f"{_gib(self.bytes)}")


def eval_oom_message(ev: EvalPass, budget: int, err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return (f"Out of memory in evaluation: {first[:200]}\n"
            f"Batches were sized to the {_gib(budget)} left on the device, by the estimate: "
            f"{ev}.\nSomething else holds memory (another model still loaded, earlier runs in "
            f"this kernel: restart it), or the estimate is short: lower max_new_tokens or "
            f"max_length.")


# --- measuring -------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_stderr_fd():
    """Silence file descriptor 2 (the profiler's C++ code prints start/stop lines there)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def resident_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def cpu_peak(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()`` and the most bytes the CPU allocator held during it beyond what was held
    when it started: the running sum of the profiler's allocation and free events."""
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                  profile_memory=True)
    with _quiet_stderr_fd():
        prof.start()
    try:
        result = fn()
    finally:
        with _quiet_stderr_fd():
            prof.stop()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return result, peak


def measured_peak(fn: Callable[[], Any], model: torch.nn.Module) -> tuple[Any, int]:
    """``fn()`` and its peak memory on ``model``'s device: ``max_memory_allocated`` on a
    GPU; on a CPU, the model's resident bytes plus ``cpu_peak``."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device)
    base = resident_bytes(model)
    result, peak = cpu_peak(fn)
    return result, base + peak
