"""Checks of notebook 08 (DPO on a GPU): the static memory of training, and LoRA's count of
trainable parameters.

``static_bytes`` is compared with ``memory.estimate`` for Qwen2.5-0.5B's shape, full and
LoRA, fp32 and mixed precision; ``lora_trainable`` with the worked solution (which agrees
with peft's count, tests/test_exercises_nb08.py) on a small grouped-query Llama built on the
meta device, so no weights are allocated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .. import memory
from ..solutions import nb08 as sol
from . import Exercise, Wrong

__all__ = ["lora_trainable", "static_bytes"]

# Qwen2.5-0.5B-Instruct (config.json): a large vocabulary, tied embeddings, q/k/v biases.
QWEN = memory.Shape(hidden=896, layers=24, heads=14, kv_heads=2, head_dim=64,
                    intermediate=4864, vocab=151936, tied=True, qkv_bias=True)


# --- static memory --------------------------------------------------------------------------

def _static_cases() -> list[tuple[int, int, int, bool]]:
    """(n_params, linear_params, trainable, mixed): full and LoRA-16, fp32 and mixed."""
    n, lin, lora = QWEN.n_params(), QWEN.linear_params(), QWEN.lora_params(16)
    return [(n, lin, n, False), (n, lin, lora, False), (n, lin, n, True), (n, lin, lora, True)]


def _estimated(n: int, lin: int, trainable: int, mixed: bool) -> int:
    """The batch-independent parts of ``memory.estimate`` for these inputs."""
    plan = memory.Plan(QWEN, 1, 2, mixed_precision=mixed,
                       lora_r=None if trainable == n else 16,
                       reference="precomputed" if trainable == n else "adapters")
    parts = memory.estimate(plan).parts
    return sum(parts[k] for k in ("weights (fp32)", "16-bit weight copies (autocast)",
                                  "gradients", "AdamW moments"))


STATIC_MISTAKES: list[tuple[Callable[[int, int, int, bool], int], str]] = [
    (lambda n, lin, t, m: 4 * n + 2 * lin * m + 4 * t,
     "AdamW's moments are missing: it keeps two of them, m and v, 4 bytes each per trainable "
     "parameter, on top of its 4-byte gradient"),
    (lambda n, lin, t, m: 4 * n + 2 * lin * m + 8 * t,
     "only one of AdamW's moments is counted: it keeps two (m and v), 4 bytes each per "
     "trainable parameter, plus the 4-byte gradient: 12 bytes in all"),
    (lambda n, lin, t, m: 4 * n + 2 * lin * m + 12 * n,
     "with LoRA you gave the frozen weights gradients and AdamW moments: only the trainable "
     "parameters (the adapters) get them"),
    (lambda n, lin, t, m: 4 * n + 2 * lin * m + 4 * n + 8 * t,
     "with LoRA you gave the frozen weights gradients: backward computes gradients only for "
     "parameters with requires_grad, the adapters"),
    (lambda n, lin, t, m: 4 * n + 12 * t,
     "under mixed precision the 16-bit weight copies are missing: autocast casts each linear "
     "layer's weight to 16 bits (2 bytes per linear parameter) and keeps it for backward"),
    (lambda n, lin, t, m: 4 * n + 2 * n * m + 12 * t,
     "autocast copies only the parameters that go through a linear layer (linear_params), "
     "not the norms or the embedding table"),
    (lambda n, lin, t, m: (2 if m else 4) * n + 12 * t,
     "mixed precision keeps the weights in fp32 (the master copy the optimizer updates, 4 "
     "bytes each) and adds 2 bytes per linear parameter for the 16-bit copy"),
    (lambda n, lin, t, m: (2 if m else 4) * (n + 3 * t) + 2 * lin * m,
     "under mixed precision gradients and AdamW moments stay in fp32 (4 bytes each): only "
     "the matrix multiplications run in 16 bits"),
]


def diagnose_static_bytes(fn: Callable) -> None:
    cases = _static_cases()
    got = [fn(*c) for c in cases]
    want = [_estimated(*c) for c in cases]
    if got == want or all(abs(float(g) - w) < 0.5 for g, w in zip(got, want, strict=True)):
        return
    for mistake, message in STATIC_MISTAKES:
        if all(abs(float(g) - mistake(*c)) < 0.5 for g, c in zip(got, cases, strict=True)):
            raise Wrong(message)
    labels = ["full fp32", "LoRA fp32", "full mixed", "LoRA mixed"]
    bad = [lab for lab, g, w in zip(labels, got, want, strict=True) if abs(float(g) - w) >= 0.5]
    raise Wrong(f"differs from memory.estimate for {', '.join(bad)} (Qwen2.5-0.5B): count 4 "
                "bytes per weight, 2 more per linear parameter under mixed precision, and 4 + 8 "
                "per trainable parameter for its gradient and AdamW's two moments")


static_bytes = Exercise("static_bytes", diagnose_static_bytes, sol.static_bytes)


# --- LoRA parameters -------------------------------------------------------------------------

@functools.cache
def small_llama() -> LlamaForCausalLM:
    """Two blocks of a grouped-query Llama (k and v narrower than q, an MLP wider than the
    residual stream), untied output layer, on the meta device: shapes without weights."""
    config = LlamaConfig(hidden_size=16, intermediate_size=40, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=4, num_hidden_layers=2, vocab_size=64,
                         tie_word_embeddings=False)
    with torch.device("meta"):
        return LlamaForCausalLM(config)


def _count(model: torch.nn.Module, r: int, targets, per: Callable[[int, int], int],
           head: bool = False, every: bool = False, blocks: int | None = None) -> int:
    """Sum of ``per(d_in, d_out)`` over the adapted linear layers, with a mistake's twist:
    ``head`` adapts the output layer too, ``every`` ignores ``targets``, ``blocks`` counts
    only that many blocks."""
    out = model.get_output_embeddings()
    total = 0
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.Linear):
            continue
        if blocks is not None and ".layers." in name and int(name.split(".layers.")[1]
                                                             .split(".")[0]) >= blocks:
            continue
        if every or targets == "all-linear":
            adapted = head or m is not out
        else:
            adapted = name.rsplit(".", 1)[-1] in targets or (head and m is out)
        if adapted:
            total += per(m.in_features, m.out_features)
    return total


def _lora_mistakes(model: torch.nn.Module, r: int, targets) -> list[tuple[int, str]]:
    both = lambda i, o: r * (i + o)  # noqa: E731
    return [
        (_count(model, r, targets, lambda i, o: r * i * o),
         "you counted r·d_in·d_out per matrix: LoRA's update B·A is a product of two thin "
         "matrices, A (r × d_in) and B (d_out × r), so it trains r·(d_in + d_out) numbers"),
        (_count(model, r, targets, lambda i, o: i * o),
         "you counted the adapted matrices' own weights, d_in·d_out each: under LoRA they are "
         "frozen; what trains is A (r × d_in) and B (d_out × r)"),
        (_count(model, r, targets, lambda i, o: r * i),
         "you counted only A (r × d_in): B (d_out × r) trains too, r·(d_in + d_out) in all"),
        (_count(model, r, targets, lambda i, o: r * o),
         "you counted only B (d_out × r): A (r × d_in) trains too, r·(d_in + d_out) in all"),
        (_count(model, r, targets, lambda i, o: r * (i + o) + o),
         "you gave each adapter a bias: peft's LoRA (bias='none') trains only A and B"),
        (_count(model, r, targets, both, head=True),
         "you adapted the output layer (lm_head): peft's 'all-linear' leaves it out, and a "
         "named target list adapts only the modules it names"),
        (_count(model, r, targets, both, every=True),
         "you adapted every linear layer: only the modules named in `targets` get adapters"),
        (_count(model, r, targets, both, blocks=1),
         "you counted one block's adapters: every block has its own"),
    ]


def diagnose_lora_trainable(fn: Callable) -> None:
    model = small_llama()
    for r, targets in [(4, ("q_proj", "v_proj")), (2, "all-linear"), (3, ("down_proj",))]:
        got, want = fn(model, r, targets), sol.lora_trainable(model, r, targets)
        if got == want:
            continue
        for value, message in _lora_mistakes(model, r, targets):
            if got == value:
                raise Wrong(message)
        raise Wrong(f"for rank {r} on {targets!r} you counted {got}, peft trains {want}: one "
                    "A (r × d_in) and one B (d_out × r) per adapted nn.Linear, read d_in and "
                    "d_out from its in_features and out_features")


lora_trainable = Exercise("lora_trainable", diagnose_lora_trainable, sol.lora_trainable)
