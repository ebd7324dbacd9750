"""Direct Preference Optimization (Rafailov et al. 2023): a trainer to read top to bottom.

One optimizer step:

1. a batch of pairs becomes one (2B, T) tensor, chosen rows then rejected rows
   (``pairs.collate_pairs``);
2. one forward pass of the policy gives the sequence log-probs of both halves
   (``concatenated_forward``, logits upcast to fp32);
3. the reference's log-probs of the same responses come from one of three places
   (``DPOConfig.reference``): ``"model"``, a frozen copy run on every batch;
   ``"precomputed"``, computed once over the dataset before training, so no second model
   is in memory while training; ``"adapters"``, the same peft model with its LoRA
   adapters switched off;
4. the loss (``losses.preference_loss``), its gradient, clipping and AdamW with warmup
   and linear decay, over ``grad_accum`` micro-batches per step;
5. the metrics TRL logs, under its names and definitions: ``rewards/chosen`` and
   ``rewards/rejected`` (batch means of ``beta * (logp - ref_logp)``),
   ``rewards/accuracies`` (share of pairs with chosen reward strictly above rejected),
   ``rewards/margins``, ``logps/chosen`` and ``logps/rejected`` (batch means of summed
   response log-probs).

Every ``eval_every`` steps the policy samples on held-out prompts, scored by the gold judge,
with a Monte Carlo KL to the reference. Several processes (DDP) run through Hugging Face
Accelerate: each takes its share of every batch; on one process Accelerate changes nothing.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import evaluate, guards, losses, stats
from .env import seed_everything
from .logps import sequence_logps
from .losses import preference_loss
from .optim import adamw_with_schedule
from .pairs import collate_pairs, encode_pairs, truncate_pairs
from .progress import tqdm
from .world import AXES, Prompt

REFERENCES = ("model", "precomputed", "adapters")
METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
           "logps/chosen", "logps/rejected")


@dataclass
class DPOConfig:
    beta: float = 0.1  # larger keeps the policy closer to the reference
    loss_type: str = "sigmoid"  # a key of losses.LOSSES
    # assumed label-flip rate eps (sigmoid: cDPO; cdpo, robust). None: the loss's own value,
    # the default of its function or the one fixed by variants.register; a number (0 too) is
    # passed to the loss as it is.
    label_smoothing: float | None = None
    lr: float = 5e-4
    steps: int | None = None  # optimizer steps; None: `epochs` passes over the pairs
    epochs: int = 1
    batch_size: int = 32  # pairs per micro-batch and process
    grad_accum: int = 1  # micro-batches per optimizer step
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    reference: str = "model"  # "model" | "precomputed" | "adapters"
    average_logps: bool = False  # mean instead of sum over response tokens
    max_length: int | None = None  # prompt + response tokens (pairs.encode_pairs truncation)
    shuffle: bool = True
    eval_every: int = 0  # steps between evaluations (0: before and after training only)
    eval_max_new_tokens: int = 48
    checkpoint_every: int = 0  # steps between checkpoints (0: at the end only)
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16", through Accelerate
    seed: int = 0

    def __post_init__(self):
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")

    def loss_options(self) -> dict[str, float]:
        """Keyword options for the loss function; raises if it cannot take them, or if the
        loss already fixes them (one place sets eps, never two)."""
        if self.loss_type not in losses.LOSSES:
            raise ValueError(f"unknown loss_type {self.loss_type!r}: expected one of "
                             f"{sorted(losses.LOSSES)}")
        if self.label_smoothing is None:
            return {}
        fn = losses.LOSSES[self.loss_type]
        fixed = fn.keywords if isinstance(fn, functools.partial) else {}
        if "label_smoothing" in fixed:
            raise ValueError(f"loss_type {self.loss_type!r} fixes label_smoothing="
                             f"{fixed['label_smoothing']}; DPOConfig(label_smoothing="
                             f"{self.label_smoothing}) would override it: set it in one place")
        if "label_smoothing" not in inspect.signature(fn).parameters:
            raise ValueError(f"loss_type {self.loss_type!r} does not take label_smoothing")
        return {"label_smoothing": self.label_smoothing}

    def effective_label_smoothing(self) -> float | None:
        """The eps the loss trains with (None for a loss without one)."""
        fn = losses.LOSSES[self.loss_type]
        if self.label_smoothing is not None:
            return self.label_smoothing
        if isinstance(fn, functools.partial) and "label_smoothing" in fn.keywords:
            return fn.keywords["label_smoothing"]
        param = inspect.signature(fn).parameters.get("label_smoothing")
        return None if param is None else param.default


# --- log-probs ---------------------------------------------------------------------------

def concatenated_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                         average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probs of the chosen and rejected halves of a ``collate_pairs`` batch,
    from ONE forward pass over all 2B rows."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   use_cache=False).logits
    logps = sequence_logps(logits, batch["labels"], average)
    return logps.chunk(2)


@torch.no_grad()
def precompute_ref_logps(reference: torch.nn.Module, examples: list[dict], pad_id: int,
                         batch_size: int = 64, average: bool = False) -> torch.Tensor:
    """(N, 2) reference log-probs of (chosen, rejected) of every pair, on the CPU."""
    device = next(reference.parameters()).device
    was_training = reference.training
    reference.eval()
    out = []
    for i in range(0, len(examples), batch_size):
        batch = collate_pairs(examples[i:i + batch_size], pad_id)
        chosen, rejected = concatenated_forward(reference, _to(batch, device), average)
        out.append(torch.stack([chosen, rejected], 1).cpu())
    reference.train(was_training)
    return torch.cat(out)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off: policy and reference log-probs must be computed the same way, or the
    log-ratio is noise (TRL and the reference implementation do the same)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


# --- the record of a run ---------------------------------------------------------------------

@dataclass
class History:
    """Metrics per optimizer step (``train``) and per evaluation (``eval``); ``seconds`` of
    training (reference pass included, evaluations not: they are ``eval_seconds``)."""

    train: list[dict[str, float]] = field(default_factory=list)
    eval: list[dict[str, float]] = field(default_factory=list)
    # per evaluation, each column's per-prompt scores (the same prompts and sampling seed
    # every time, so any two evaluations are paired)
    eval_scores: list[dict[str, list[float]]] = field(default_factory=list)
    seconds: float = 0.0
    eval_seconds: float = 0.0
    pairs_seen: int = 0

    def frame(self, which: str = "train") -> pd.DataFrame:
        return pd.DataFrame(getattr(self, which)).set_index("step")

    def paired(self, column: str = "total", before: int = 0, after: int = -1) -> stats.Estimate:
        """Paired change of ``column`` between two evaluations (default: first and last),
        with its 95% bootstrap interval over the held-out prompts."""
        if not self.eval_scores:
            raise ValueError("no evaluation was run: pass eval_prompts to train_dpo")
        return stats.paired_diff(self.eval_scores[before][column],
                                 self.eval_scores[after][column])

    def plot(self, title: str = "DPO training") -> plt.Figure:
        """Loss, reward accuracy, margins, chosen/rejected log-probs, KL and gold reward."""
        t = self.frame("train")
        fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
        panels = [("loss", ["loss"], "loss"),
                  ("reward accuracy", ["rewards/accuracies"], "share of pairs"),
                  ("implicit rewards", ["rewards/chosen", "rewards/rejected", "rewards/margins"],
                   "beta * log-ratio"),
                  ("sequence log-probs", ["logps/chosen", "logps/rejected"], "log p(y|x)")]
        for ax, (name, cols, ylabel) in zip(axes.flat, panels, strict=False):
            for col in cols:
                ax.plot(t.index, t[col], label=col)
            ax.set(title=name, xlabel="optimizer step", ylabel=ylabel)
            if len(cols) > 1:
                ax.legend(fontsize=8)
        ax_kl, ax_gold = axes.flat[4], axes.flat[5]
        if self.eval:
            e = self.frame("eval")
            ax_kl.plot(e.index, e["kl"], "o-")
            for col in ("total", *AXES):
                if col in e:
                    ax_gold.plot(e.index, e[col], "o-", label=col, lw=2.5 if col == "total" else 1)
            ax_gold.legend(fontsize=8)
        ax_kl.set(title="sampled KL to the reference", xlabel="optimizer step",
                  ylabel="nats per response")
        ax_gold.set(title="gold reward, held-out prompts", xlabel="optimizer step",
                    ylabel="mean gold score")
        fig.suptitle(title)
        fig.tight_layout()
        return fig


# --- evaluation ----------------------------------------------------------------------------------

def evaluate_policy(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    prompts: list[Prompt], reference: PreTrainedModel | None = None,
                    adapters: bool = False, max_new_tokens: int = 48, seed: int = 0,
                    ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Gold scores of samples on ``prompts`` and the sampled KL to the reference (the frozen
    ``reference``, or ``policy`` with its adapters off when ``adapters``; NaN with neither):
    the means, and each column per prompt (``kl`` per response)."""
    gens = evaluate.sample(policy, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
    row = evaluate.gold(gens)
    scores = {k: v.tolist() for k, v in evaluate.per_prompt(gens).items()}
    pad = tokenizer.pad_token_id
    if adapters:
        with policy.disable_adapter():
            ref_logps = evaluate.response_logps(policy, gens, pad)
    elif reference is not None:
        ref_logps = evaluate.response_logps(reference, gens, pad)
    else:
        return {**row, "kl": math.nan}, scores
    kl = evaluate.response_logps(policy, gens, pad) - ref_logps
    return {**row, "kl": kl.mean().item()}, {**scores, "kl": kl.tolist()}


# --- checkpoints ---------------------------------------------------------------------------------

def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to a temporary file next to ``path``, then rename it over ``path``:
    a crash while writing leaves the previous checkpoint intact, never half of one. Stale
    temporary files of dead writers are removed; a full disk is named with the path."""
    guards.write_atomic(path, lambda tmp: torch.save(state, tmp))


def _check_resumable(saved: dict, cfg: DPOConfig, path: Path) -> None:
    current = asdict(cfg)
    diff = [k for k in current if k != "checkpoint_every" and saved.get(k) != current[k]]
    if diff:
        raise ValueError(f"checkpoint {path} was written by a run with another config: "
                         + ", ".join(f"{k}={saved.get(k)!r} (now {current[k]!r})" for k in diff))


# --- the trainer ---------------------------------------------------------------------------------

def _accelerator(mixed_precision: str) -> Accelerator:
    """Accelerate keeps one state per process and refuses a second precision in it; on one
    process (a notebook training in fp32, then in bf16) the precision is switched here."""
    current = AcceleratorState._shared_state.get("_mixed_precision")
    if current not in (None, mixed_precision) and AcceleratorState().num_processes == 1:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed_precision)


def _encode(tokenizer: PreTrainedTokenizerBase, pairs: list[dict], max_length: int | None,
            context: int | None) -> list[dict]:
    """Encoded pairs within ``max_length`` and the model's context, cuts reported."""
    limits = [n for n in (max_length, context) if n is not None]
    limit = min(limits) if limits else None
    if pairs and "prompt_ids" in pairs[0]:
        examples, report = truncate_pairs(pairs, limit, bos_id=tokenizer.bos_token_id)
    else:
        examples, report = encode_pairs(tokenizer, pairs, max_length=limit)
    if report.dropped_too_long or report.chosen_cut or report.rejected_cut:
        print(report)
    return examples


def global_batch(n: int, step: int, size: int, seed: int, shuffle: bool) -> list[int]:
    """Indices of the pairs of optimizer step ``step``: epoch ``e`` reads a permutation
    seeded by ``seed + e`` in slices of ``size`` (the last partial slice is skipped).
    A pure function of the step, so a resumed run reads the same batches."""
    per_epoch = n // size
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)) \
        if shuffle else torch.arange(n)
    return order[k * size:(k + 1) * size].tolist()


def train_dpo(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[dict],
              cfg: DPOConfig | None = None, ref_model: PreTrainedModel | None = None,
              eval_prompts: list[Prompt] | None = None,
              callback: Callable[[int, History], None] | None = None,
              checkpoint: str | Path | None = None) -> History:
    """DPO-train ``model`` in place on preference ``pairs`` and return the ``History``.

    ``pairs``: rows ``{"prompt", "chosen", "rejected"}`` (tokenized with
    ``pairs.encode_pairs``) or already encoded examples. ``ref_model``: the reference
    (default: a frozen copy of ``model`` as it is now; with ``"precomputed"`` the copy is
    not kept, and the sampled KL needs ``ref_model``). ``eval_prompts``: held-out prompts
    for gold reward and KL, before training, every ``cfg.eval_every`` steps and at the end.
    ``callback(step, history)`` runs after every step. ``checkpoint``: a file written every
    ``cfg.checkpoint_every`` steps and at the end; if it exists, the run resumes from it.
    """
    cfg = cfg or DPOConfig()
    loss_options = cfg.loss_options()
    t0 = time.perf_counter()
    accelerator = _accelerator(cfg.mixed_precision)
    seed_everything(cfg.seed)
    examples = _encode(tokenizer, pairs, cfg.max_length, guards.context_length(model))
    pad_id = tokenizer.pad_token_id
    size = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
    if len(examples) < size:
        raise ValueError(f"{len(examples)} pairs cannot fill one batch of {size} "
                         f"(batch_size x grad_accum x processes)")
    steps = cfg.steps or cfg.epochs * (len(examples) // size)
    if ref_model is model:
        raise ValueError("ref_model is the policy itself: pass a separate copy, or none")
    if cfg.reference == "adapters" and (not _is_peft(model) or ref_model is not None):
        raise ValueError("reference='adapters' needs a peft model (and no ref_model): the "
                         "reference is the same model with its adapters disabled")
    disable_dropout(model)
    model.to(accelerator.device)

    # The reference: a frozen copy, log-probs computed once, or the adapters switched off.
    reference = None
    if cfg.reference == "model":
        reference = ref_model if ref_model is not None else copy.deepcopy(model)
        reference.to(accelerator.device).eval().requires_grad_(False)
        disable_dropout(reference)
    ref_logps = None
    state = None
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state = guards.load_checkpoint(path)
        _check_resumable(state["config"], cfg, path)
        model.load_state_dict(state["model"])
        ref_logps = state["ref_logps"]
    if cfg.reference == "precomputed" and ref_logps is None:
        source = ref_model.to(accelerator.device) if ref_model is not None else model
        with accelerator.autocast():  # the same precision as the policy's forward
            ref_logps = precompute_ref_logps(source, examples, pad_id, 2 * cfg.batch_size,
                                             cfg.average_logps)

    optimizer, scheduler = adamw_with_schedule(
        model.parameters(), cfg.lr, steps, cfg.warmup_steps, cfg.weight_decay,
        fused=accelerator.device.type in ("cpu", "cuda"))
    model, optimizer = accelerator.prepare(model, optimizer)
    policy = accelerator.unwrap_model(model)
    history = History()
    start = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        history = History(**state["history"])
        start = state["step"]
        t0 -= history.seconds + history.eval_seconds

    def reference_logps(batch: dict, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if ref_logps is not None:
            ref = ref_logps[idx].to(accelerator.device)
            return ref[:, 0], ref[:, 1]
        with torch.no_grad(), accelerator.autocast():
            if cfg.reference == "adapters":
                with policy.disable_adapter():
                    return concatenated_forward(policy, batch, cfg.average_logps)
            return concatenated_forward(reference, batch, cfg.average_logps)

    def run_eval(step: int) -> None:
        start_eval = time.perf_counter()
        if eval_prompts is not None and accelerator.is_main_process:
            row, scores = evaluate_policy(policy, tokenizer, eval_prompts, reference or ref_model,
                                          cfg.reference == "adapters", cfg.eval_max_new_tokens,
                                          cfg.seed)
            history.eval.append({"step": step, **row})
            history.eval_scores.append(scores)
        accelerator.wait_for_everyone()
        history.eval_seconds += time.perf_counter() - start_eval

    def save(step: int) -> None:
        if path is not None and accelerator.is_main_process:
            save_checkpoint(path, {
                "step": step, "config": asdict(cfg), "model": policy.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "ref_logps": ref_logps,
                "history": asdict(history)})
        accelerator.wait_for_everyone()

    if start == 0:
        run_eval(0)
    quiet = {} if accelerator.is_main_process else {"disable": True}  # one bar, not one per process
    bar = tqdm(total=steps, initial=start, desc="DPO", **quiet)
    rank, n_proc = accelerator.process_index, accelerator.num_processes
    metric_dtype = torch.float32 if accelerator.device.type == "mps" else torch.float64  # sums
    model.train()
    for step in range(start, steps):
        idx = global_batch(len(examples), step, size, cfg.seed, cfg.shuffle)
        # This process's micro-batches: micro-batch j of process p holds slice (j, p).
        micro = [idx[(j * n_proc + rank) * cfg.batch_size:(j * n_proc + rank + 1) * cfg.batch_size]
                 for j in range(cfg.grad_accum)]
        sums = torch.zeros(len(METRICS) + 1, dtype=metric_dtype, device=accelerator.device)
        micro_losses = []
        for j, mb in enumerate(micro):
            batch = _to(collate_pairs([examples[i] for i in mb], pad_id), accelerator.device)
            sync = j == cfg.grad_accum - 1
            with nullcontext() if sync else accelerator.no_sync(model):
                logps_chosen, logps_rejected = concatenated_forward(model, batch, cfg.average_logps)
                ref_chosen, ref_rejected = reference_logps(batch, mb)
                losses, chosen_rewards, rejected_rewards = preference_loss(
                    logps_chosen, logps_rejected, ref_chosen, ref_rejected, cfg.beta,
                    cfg.loss_type, **loss_options)
                loss = losses.mean()
                accelerator.backward(loss / cfg.grad_accum)
            micro_losses.append(loss.detach())
            with torch.no_grad():
                sums += torch.stack([
                    losses.sum(), chosen_rewards.sum(), rejected_rewards.sum(),
                    (chosen_rewards > rejected_rewards).sum(),
                    (chosen_rewards - rejected_rewards).sum(), logps_chosen.sum(),
                    logps_rejected.sum(), torch.tensor(len(mb), device=sums.device),
                ]).to(metric_dtype)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or math.inf)
        sums = accelerator.reduce(sums, "sum")
        # One host sync per step: metrics, grad norm and the finiteness check together.
        values = torch.cat([sums, grad_norm.view(1).to(metric_dtype),
                            torch.stack(micro_losses).to(metric_dtype)]).tolist()
        # With fp16's loss scaler an inf gradient is an overflow the scaler handles: it
        # skips this step and lowers the scale. Without a scaler it is an error.
        _check_finite(values, step, micro, policy, grads=accelerator.scaler is None)
        lr = scheduler.get_last_lr()[0]
        scale = accelerator.scaler.get_scale() if accelerator.scaler is not None else None
        optimizer.step()
        # A step the loss scaler skipped (it found an inf and lowered the scale) made no
        # update, so the schedule waits too. The scale is the test: fused AdamW skips inside
        # its kernel, which Accelerate's optimizer_step_was_skipped does not see.
        skipped = scale is not None and accelerator.scaler.get_scale() < scale
        if not skipped:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        n = values[len(METRICS)]
        row = {"step": step + 1, **{m: v / n for m, v in zip(METRICS, values, strict=False)},
               "grad_norm": values[len(METRICS) + 1], "lr": lr}
        if scale is not None:  # fp16: the loss scale this step ran at, and whether it was skipped
            row |= {"loss_scale": scale, "skipped": float(skipped)}
        history.train.append(row)
        history.pairs_seen += int(n)
        bar.update()
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['rewards/accuracies']:.2f}",
                        refresh=False)
        last = step + 1 == steps
        if last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0):
            run_eval(step + 1)
        history.seconds = time.perf_counter() - t0 - history.eval_seconds
        if last or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0):
            save(step + 1)
        if callback is not None:
            callback(step + 1, history)
    bar.close()
    model.eval()
    return history


def _check_finite(values: list[float], step: int, micro: list[list[int]],
                  policy: torch.nn.Module, grads: bool = True) -> None:
    """A clear error, before the optimizer step, when a loss or (if ``grads``) the gradient
    norm is NaN/inf."""
    n_metrics = len(METRICS) + 1
    for j, loss in enumerate(values[n_metrics + 1:]):
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"DPO loss is {loss} at step {step + 1}, micro-batch {j} of {len(micro)} "
                f"(pairs {micro[j][:8]}{' ...' if len(micro[j]) > 8 else ''} of the training "
                f"set): check those pairs, or lower lr")
    if grads and not math.isfinite(values[n_metrics]):
        bad = next((name for name, p in policy.named_parameters()
                    if p.grad is not None and not torch.isfinite(p.grad).all()), "?")
        raise FloatingPointError(
            f"gradient norm is {values[n_metrics]} at step {step + 1} (first non-finite "
            f"gradient: {bad}; micro-batches of pairs {[m[:4] for m in micro]}): lower lr "
            f"or set max_grad_norm")
