"""A full DPO run on a small pretrained model on a GPU: notebook 08 and benchmarks/gpu_run.py.

The steps, each a function the notebook calls in its own cell:

1. ``resolve``: the run's configuration for this machine. Without a CUDA GPU the run
   switches to ``CPU_FALLBACK``: the bundled tiny SFT model on world data, sized for a
   minute on two CPU cores.
2. ``load_model``: a hub model (safetensors only, no remote code) or a bundled one; a
   failed download says what to do and falls back the same way.
3. ``load_data``: world preference pairs (scored afterwards by the gold judge) or a subset
   of UltraFeedback binarized (held-out reward accuracy and margins).

The recipe, the same on every model (``experiments/smollm2.py`` measures why): world pairs
of a good demonstrator response against the model's own sample for the same prompt
(``worldprefs.demo_vs_model_pairs``), and DPO with a small negative log-likelihood term on
the chosen response (``variants.rpo_loss``, ``rpo_alpha``). A pretrained model that never
saw this world learns nothing the gold judge can see from pairs of two demonstrator
responses, both far from anything it would write; beside its own answer, and with the
chosen answer's likelihood pulled up, it learns the world's refusals, formats and brevity.
4. ``prepare_model``: gradient checkpointing, LoRA (peft, every linear layer of every
   block; the reference is the model with its adapters switched off).
5. ``plan``: the inputs of the memory estimate (``memory.estimate``) and of the time
   estimate (``throughput.estimate_time``).
6. ``evaluate_run`` before and after ``train``, which runs ``dpo.train_dpo`` under the
   out-of-memory guard and measures throughput and peak memory. Evaluation batches are
   sized to the memory left on the GPU (``eval_plan``) and guarded the same way.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from . import (
    adapters,
    chat,
    dpo,
    evaluate,
    judge,
    memory,
    stats,
    throughput,
    variants,
    world,
    worldprefs,
)
from . import model as models
from .env import seed_everything
from .pairs import TruncationReport, encode_pairs
from .precision import Precision

HUB_MODELS = ("HuggingFaceTB/SmolLM2-360M-Instruct", "Qwen/Qwen2.5-0.5B-Instruct",
              "HuggingFaceTB/SmolLM2-135M-Instruct")
ULTRAFEEDBACK = "HuggingFaceH4/ultrafeedback_binarized"

# The hub models' shapes (from their config.json), so their estimates need no download.
HUB_CONFIGS = {
    "HuggingFaceTB/SmolLM2-360M-Instruct": dict(
        hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
        intermediate_size=2560, vocab_size=49152, tie_word_embeddings=True),
    "HuggingFaceTB/SmolLM2-135M-Instruct": dict(
        hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True),
    "Qwen/Qwen2.5-0.5B-Instruct": dict(
        hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
        model_type="qwen2"),
}


@dataclass(frozen=True)
class RunConfig:
    """One DPO run. The defaults fit a free Colab T4 (16 GB) with room to spare."""

    model: str = HUB_MODELS[0]  # a hub id, or a bundled name (models.SFT) or folder
    data: str = "world"  # "world" | "ultrafeedback"
    lora_r: int | None = 16  # LoRA rank; None: full fine-tuning
    n_pairs: int = 2000  # training pairs
    n_eval: int = 256  # held-out prompts (world) or pairs (ultrafeedback)
    epochs: int = 1
    batch_size: int = 4  # pairs per micro-batch
    grad_accum: int = 4  # micro-batches per optimizer step
    lr: float = 5e-4
    beta: float = 0.1  # larger keeps the policy closer to the reference
    rpo_alpha: float | None = 0.2  # NLL weight on the chosen response; None: plain DPO
    pairs: str = "demo_vs_model"  # world pairs: "demo_vs_model" | "offpolicy" (two demos)
    warmup_steps: int = 10
    max_length: int = 256  # prompt + response tokens; longer responses are cut
    gradient_checkpointing: bool = False
    precision: str = "auto"  # "auto" | "bf16" | "fp16" | "fp32" (precision.choose)
    max_new_tokens: int = 64  # for evaluation samples
    label_noise: float = 0.1  # world annotators' temperature
    seed: int = 0

    def __post_init__(self):
        if self.data not in ("world", "ultrafeedback"):
            raise ValueError(f"data must be 'world' or 'ultrafeedback', got {self.data!r}")
        if self.pairs not in ("demo_vs_model", "offpolicy"):
            raise ValueError(f"pairs must be 'demo_vs_model' or 'offpolicy', got {self.pairs!r}")

    @property
    def pairs_per_step(self) -> int:
        return self.batch_size * self.grad_accum

    @property
    def reference(self) -> str:
        """LoRA: the adapters switched off. Full fine-tuning: log-probs precomputed, which
        keeps no second model in memory and costs one forward pass over the data, the
        same as a frozen copy would cost in one epoch."""
        return "adapters" if self.lora_r is not None else "precomputed"

    @property
    def loss_type(self) -> str:
        """``DPOConfig.loss_type``: RPO with ``rpo_alpha``, or DPO's sigmoid loss."""
        return "sigmoid" if self.rpo_alpha is None else variants.register("rpo",
                                                                          alpha=self.rpo_alpha)

    def steps(self, n_pairs: int | None = None) -> int:
        return self.epochs * ((n_pairs or self.n_pairs) // self.pairs_per_step)


# No GPU: the bundled tiny SFT model, full fine-tuning, in well under a minute on 2 CPU
# cores. Its beta is larger than the hub default's: the tiny model's log-ratios move fast.
CPU_FALLBACK = RunConfig(model=models.SFT, data="world", lora_r=None, n_pairs=1024,
                         n_eval=256, epochs=1, batch_size=16, grad_accum=1, lr=2e-4,
                         beta=1.0, warmup_steps=4, max_length=128, precision="fp32",
                         max_new_tokens=48)


# No GPU, SmolLM2-135M-Instruct installed offline (``python -m dpolab smollm2``): the same
# recipe on the real model, 4 steps of 16 pairs, a few minutes on 2 CPU cores.
# ``experiments/smollm2.py`` is the full run (32 steps, 256 held-out prompts).
CPU_REAL = RunConfig(model=models.SMOLLM2, data="world", lora_r=16, n_pairs=64, n_eval=48,
                     epochs=1, batch_size=8, grad_accum=2, warmup_steps=1, max_length=256,
                     precision="fp32", max_new_tokens=48)


def model_name(cfg: RunConfig) -> str:
    """``cfg.model`` as a reader should see it: a local folder by its name, not its path."""
    path = Path(cfg.model)
    return f"{path.name} (local folder)" if path.is_dir() and cfg.model not in (
        models.BASE, models.SFT) else cfg.model


def _fallback(cfg: RunConfig) -> RunConfig:
    """The CPU run: SmolLM2-135M offline where it is installed, else the tiny model."""
    if models.smollm2_available():
        return replace(CPU_REAL, model=str(models.smollm2()), seed=cfg.seed)
    return replace(CPU_FALLBACK, seed=cfg.seed)


def pick_device() -> torch.device:
    """A CUDA GPU when there is one, else the CPU (the tiny fallback model gains nothing
    from Apple's MPS, and its peak memory is measured on the CPU only)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve(cfg: RunConfig, device: torch.device) -> tuple[RunConfig, str | None]:
    """The configuration to run here and, when it is not ``cfg``, why: without a CUDA GPU,
    a hub model gives way to SmolLM2-135M offline (``CPU_REAL``) or the tiny model."""
    if device.type == "cuda" or cfg.model in (models.BASE, models.SFT) or \
            Path(cfg.model).is_dir():  # a bundled model or a local folder runs as it is
        return cfg, None
    fallback = _fallback(cfg)
    gpu = (f"For {cfg.model}, run this notebook on a GPU (on Colab: Runtime > Change runtime "
           f"type > T4 GPU, then run all cells again).")
    if fallback.model != models.SFT:
        return fallback, (
            f"No CUDA GPU here ({device.type}): this run uses {models.SMOLLM2}, installed "
            f"offline (`python -m dpolab smollm2`), with the same recipe: LoRA rank "
            f"{fallback.lora_r}, fp32, {fallback.steps()} steps of {fallback.pairs_per_step} "
            f"pairs, a few minutes on two CPU cores. The full CPU run of this recipe "
            f"(experiments/smollm2.py) is shown after it. {gpu}")
    return fallback, (
        f"No CUDA GPU here ({device.type}), and {models.SMOLLM2} is not installed "
        f"(`{models.SMOLLM2_INSTALL}`): this run uses the bundled tiny model ({models.SFT}) "
        f"on world data, full fine-tuning in fp32, sized to finish in about a minute. {gpu}")


def load_model(cfg: RunConfig, device: torch.device,
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, RunConfig, str | None]:
    """Model and tokenizer in fp32 on ``device`` (safetensors only, no remote code), the
    configuration they belong to and, after a failed download, what happened."""
    try:
        model, tok = models.load(cfg.model, dtype=torch.float32, device=device)
        return model, tok, cfg, None
    except (OSError, ValueError) as err:
        if cfg.model in (models.BASE, models.SFT):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        note = (f"Could not load {cfg.model} ({type(err).__name__}: {first}).\n"
                f"What to do: check the network (on Colab, re-run the cell; the hub is "
                f"sometimes slow), check the model id in the configuration cell, or, on a "
                f"machine without internet, download it where there is one "
                f"(`hf download {cfg.model}`), copy the cache over and set "
                f"HF_HUB_OFFLINE=1.\n")
        fallback = _fallback(cfg)
        note += ("Falling back to the bundled tiny model on world data." if
                 fallback.model == models.SFT else
                 f"Falling back to {models.SMOLLM2}, installed offline, on world data.")
        model, tok = models.load(fallback.model, dtype=torch.float32, device=device)
        return model, tok, fallback, note


# --- data ------------------------------------------------------------------------------------

@dataclass
class Data:
    """Encoded training pairs and what evaluation reads."""

    kind: str  # "world" | "ultrafeedback"
    examples: list[dict]
    report: TruncationReport
    eval_prompts: list  # world.Prompt (world) or prompt texts (ultrafeedback)
    eval_examples: list[dict] = field(default_factory=list)  # held-out pairs (ultrafeedback)
    rows: list[dict] = field(default_factory=list)  # the world pairs as text, gold scores
    skipped: dict[str, int] = field(default_factory=dict)  # draws skipped building them

    @property
    def seq_len(self) -> int:
        """Tokens of the longest row (prompt + the longer response): the width of the
        widest batch."""
        return max(len(e["prompt_ids"]) + max(len(e["chosen_ids"]), len(e["rejected_ids"]))
                   for e in self.examples)


def world_rows(cfg: RunConfig, model: PreTrainedModel | None = None,
               tokenizer: PreTrainedTokenizerBase | None = None,
               ) -> tuple[worldprefs.Pairs, list[world.Prompt]]:
    """Training pairs (``cfg.pairs``; ``"demo_vs_model"`` samples ``model``) and held-out
    prompts of the four alignment families."""
    if cfg.pairs == "demo_vs_model":
        if model is None or tokenizer is None:
            raise ValueError("pairs='demo_vs_model' samples the model: pass model and tokenizer")
        rows = worldprefs.demo_vs_model_pairs(model, tokenizer, cfg.n_pairs, seed=cfg.seed,
                                              temperature=cfg.label_noise,
                                              max_new_tokens=cfg.max_new_tokens)
    else:
        rows = worldprefs.offpolicy_pairs(cfg.n_pairs, seed=cfg.seed,
                                          temperature=cfg.label_noise,
                                          families=world.ALIGNMENT_FAMILIES)
    return rows, world.World(cfg.seed).prompts(cfg.n_eval, "eval")


def ultrafeedback_rows(cfg: RunConfig) -> tuple[list[dict], list[dict]]:
    """The first ``n_pairs`` of ``train_prefs`` and ``n_eval`` of ``test_prefs``, streamed
    (nothing else is downloaded), through ``adapters.ultrafeedback``."""
    from datasets import load_dataset

    def take(split: str, n: int) -> list[dict]:
        stream = load_dataset(ULTRAFEEDBACK, split=split, streaming=True)
        return adapters.ultrafeedback(list(itertools.islice(stream, n)), split)

    return take("train_prefs", cfg.n_pairs), take("test_prefs", cfg.n_eval)


def load_data(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase,
              model: PreTrainedModel | None = None) -> tuple[Data, RunConfig, str | None]:
    """The run's pairs, tokenized and cut to ``max_length`` (what was cut is in
    ``Data.report``), the configuration and, if UltraFeedback could not be fetched, why
    world data is used instead. World pairs of ``cfg.pairs="demo_vs_model"`` sample
    ``model`` (before LoRA or training changes it)."""
    note = None
    if cfg.data == "ultrafeedback":
        try:
            train, held_out = ultrafeedback_rows(cfg)
        except Exception as err:  # noqa: BLE001 - any failure to fetch falls back, said aloud
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            note = (f"Could not fetch {ULTRAFEEDBACK} ({type(err).__name__}: {first}).\n"
                    f"What to do: check the network and re-run this cell; or keep going "
                    f"with world data, which needs no download (used now).")
            cfg = replace(cfg, data="world")
        else:
            examples, report = encode_pairs(tokenizer, train, max_length=cfg.max_length)
            eval_examples, _ = encode_pairs(tokenizer, held_out, max_length=cfg.max_length)
            return Data("ultrafeedback", examples, report, [r["prompt"] for r in held_out],
                        eval_examples), cfg, None
    rows, prompts = world_rows(cfg, model, tokenizer)
    examples, report = encode_pairs(tokenizer, rows, max_length=cfg.max_length)
    return Data("world", examples, report, prompts, rows=list(rows),
                skipped=dict(rows.skipped)), cfg, note


# --- model, plan ------------------------------------------------------------------------------

def prepare_model(model: PreTrainedModel, cfg: RunConfig) -> PreTrainedModel:
    """Gradient checkpointing (non-reentrant) and LoRA as ``cfg`` asks."""
    if cfg.gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.config.use_cache = False
    if cfg.lora_r is None:
        return model
    from peft import get_peft_model

    lora = lora_config(cfg.lora_r)
    with warnings.catch_warnings():
        # peft reads a checkpointing property that transformers 5 renamed (FutureWarning).
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        return get_peft_model(model, lora)


def lora_config(r: int):
    """peft's ``LoraConfig`` of the run: rank ``r`` on every linear layer of every block
    (not the output layer), scaled by ``lora_alpha / r = 2``, no dropout (DPO's log-ratios
    must be deterministic: the policy and its adapters-off reference see the same model)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


@dataclass(frozen=True)
class Footprint:
    """One way to train, measured on a few steps: what it trains, how fast, how much memory."""

    name: str
    trainable: int
    seconds_per_step: float  # the mean of the steps after the first (warm-up)
    peak_bytes: int

    def row(self) -> dict[str, object]:
        return {"trainable parameters": f"{self.trainable:,}",
                "seconds per step": round(self.seconds_per_step, 2),
                "peak memory GiB": round(self.peak_bytes / memory.GIB, 3)}


def lora_vs_full(cfg: RunConfig, tok: PreTrainedTokenizerBase, data: Data, prec: Precision,
                 device: torch.device, steps: int = 3) -> pd.DataFrame:
    """LoRA of rank ``cfg.lora_r or 16`` against full fine-tuning of a fresh ``cfg.model``,
    each for ``steps`` optimizer steps of one micro-batch on ``data`` (LoRA's reference: the
    adapters off; full fine-tuning's: precomputed, so no second model in memory), with
    peak memory as ``train`` measures it."""
    out = []
    for lora_r in (cfg.lora_r or 16, None):
        run = replace(cfg, lora_r=lora_r, grad_accum=1)
        model, _ = models.load(cfg.model, dtype=torch.float32, device=device)
        model = prepare_model(model, run)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        dcfg = replace(dpo_config(run, prec), steps=steps, warmup_steps=0)
        stamps: list[float] = []

        def fit(model=model, dcfg=dcfg, stamps=stamps) -> dpo.History:
            stamps.append(time.perf_counter())
            return dpo.train_dpo(model, tok, data.examples, dcfg,
                                 callback=lambda step, h: stamps.append(time.perf_counter()))
        _, peak = memory.measured_peak(fit, model)
        per_step = (stamps[-1] - stamps[1]) / (len(stamps) - 2)
        out.append(Footprint(f"LoRA rank {lora_r}" if lora_r else "full fine-tuning",
                             trainable, per_step, peak))
        del model
    return pd.DataFrame({f.name: f.row() for f in out}).T


def model_config(name: str) -> dict | PretrainedConfig:
    """The config of model ``name`` without loading its weights: a built-in hub shape, else
    the ``config.json`` of a bundled name, a folder or another hub id (downloaded, a few kB;
    from the cache when offline)."""
    if name in HUB_CONFIGS:
        return HUB_CONFIGS[name]
    path = models.bundled(name) if name in (models.BASE, models.SFT) else name
    return AutoConfig.from_pretrained(path, trust_remote_code=False)


def plan(cfg: RunConfig, model: PreTrainedModel | None, seq_len: int,
         mixed_precision: bool) -> memory.Plan:
    """The memory plan of ``cfg`` for ``model`` (or, without one, ``cfg.model``'s config)
    at ``seq_len`` tokens per row."""
    config = model.config if model is not None else model_config(cfg.model)
    return memory.Plan(memory.Shape.from_config(config), cfg.batch_size, seq_len,
                       mixed_precision=mixed_precision, lora_r=cfg.lora_r,
                       reference=cfg.reference, checkpointing=cfg.gradient_checkpointing)


# A T4's memory as CUDA reports it (total_memory), what ``device_bytes`` reads on one:
# 15,110 MiB, 14.76 GiB (nvidia-smi shows 15,360 MiB: 16 GiB less what ECC reserves).
T4_BYTES = 15110 * 2**20


def t4_estimates(cfg: RunConfig) -> tuple[memory.Estimate, throughput.TimeEstimate]:
    """Memory and time of hub model ``cfg.model`` on a free Colab T4 (fp16 with loss
    scaling), by the estimates, with every row at ``max_length`` tokens (the worst case).
    The time counts every sampling pass: the model's half of its pairs (world data), and
    before and after training, greedy and at temperature 1 (``EVAL_PASSES``)."""
    p = plan(cfg, None, cfg.max_length, mixed_precision=True)
    n = p.shape.n_params()
    time_est = throughput.estimate_time(p, n, cfg.steps(), cfg.pairs_per_step, cfg.n_eval,
                                        cfg.max_new_tokens, evaluations=eval_passes(cfg),
                                        gpu="T4", dtype="fp16", samples=model_samples(cfg))
    return memory.estimate(p), time_est


def eval_passes(cfg: RunConfig) -> int:
    """Sampling passes over the held-out prompts in a run: before and after training,
    greedy and at temperature 1 on world data; a few greedy prompts on UltraFeedback."""
    return 4 if cfg.data == "world" else 2


def model_samples(cfg: RunConfig) -> int:
    """Responses the model samples to build its training pairs."""
    return cfg.n_pairs if cfg.data == "world" and cfg.pairs == "demo_vs_model" else 0


def reference_for_eval(cfg: RunConfig, model: PreTrainedModel) -> PreTrainedModel | str:
    """What the KL after training is measured against: ``"adapters"`` for LoRA, else a
    fresh frozen copy of the starting model (precomputed log-probs kept none)."""
    if cfg.lora_r is not None:
        return "adapters"
    device = next(model.parameters()).device
    reference, _ = models.load(cfg.model, dtype=torch.float32, device=device)
    return reference.eval().requires_grad_(False)


def device_bytes(device: torch.device) -> int | None:
    """Total memory of a GPU, None elsewhere."""
    return torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" \
        else None


# --- evaluation ----------------------------------------------------------------------------------

@dataclass
class Evaluation:
    """One model's numbers on the held-out set, and its samples for a side-by-side."""

    scores: dict[str, float]
    samples: list[evaluate.Generation]  # greedy: what the gold scores and side-by-side read
    sampled: list[evaluate.Generation] = field(default_factory=list)  # temperature 1 (world)
    pair_logps: torch.Tensor | None = None  # (N, 2) held-out chosen/rejected (ultrafeedback)


def eval_budget(device: torch.device) -> int | None:
    """Bytes an evaluation batch may take on a GPU: ``HEADROOM`` of its memory less what is
    allocated now (the model, a reference copy); None elsewhere."""
    total = device_bytes(device)
    if total is None:
        return None
    return max(0, int(memory.HEADROOM * total) - torch.cuda.memory_allocated(device))


@dataclass(frozen=True)
class EvalPlan:
    """The batches of an evaluation, sized to ``budget`` (None: on a CPU, ``EVAL_ROWS``)."""

    sample: memory.EvalPass
    score: memory.EvalPass
    budget: int | None

    def __str__(self) -> str:
        room = "no budget (CPU)" if self.budget is None else f"{self.budget / memory.GIB:.2f} GiB"
        return f"evaluation within {room}:\n  {self.sample}\n  {self.score}"


def eval_plan(model: PreTrainedModel, tok: PreTrainedTokenizerBase, data: Data, cfg: RunConfig,
              prec: Precision) -> EvalPlan:
    """Rows per batch of sampling and of scoring (response log-probs, or the held-out
    pairs' two rows each) for ``data``'s held-out set, from the memory left on the device."""
    shape = memory.Shape.from_config(model.config)
    mixed = prec.autocast_dtype is not None
    budget = eval_budget(next(model.parameters()).device)
    texts = [p.text if isinstance(p, world.Prompt) else p for p in data.eval_prompts]
    prompt_len = max(len(chat.prompt_ids(tok, t)) for t in texts)
    sample = memory.EvalPass.sized(
        "sampling", memory.sample_row_bytes(shape, prompt_len, cfg.max_new_tokens, mixed),
        prompt_len + cfg.max_new_tokens, budget)
    seq_len = prompt_len + cfg.max_new_tokens if data.kind == "world" else max(
        len(e["prompt_ids"]) + max(len(e["chosen_ids"]), len(e["rejected_ids"]))
        for e in data.eval_examples)
    score = memory.EvalPass.sized("scoring", memory.score_row_bytes(shape, seq_len, mixed),
                                  seq_len, budget)
    return EvalPlan(sample, score, budget)


def _guarded(fn: Callable[[], Any], ev: memory.EvalPass, budget: int | None) -> Any:
    """``fn()``, its out-of-memory error explained on a GPU."""
    if budget is None:
        return fn()
    return memory.guard(fn, lambda err: memory.eval_oom_message(ev, budget, err))


def _pair_logps(model: PreTrainedModel, examples: list[dict], pad_id: int, prec: Precision,
                ev: EvalPlan) -> torch.Tensor:
    def run() -> torch.Tensor:
        with prec.autocast():  # a pair is two rows
            return dpo.precompute_ref_logps(model, examples, pad_id,
                                            batch_size=max(1, ev.score.rows // 2))
    return _guarded(run, ev.score, ev.budget)


def _response_logps(model: PreTrainedModel, gens: list[evaluate.Generation], pad_id: int,
                    adapters_off: bool, prec: Precision, ev: EvalPlan) -> torch.Tensor:
    def run() -> torch.Tensor:
        context = model.disable_adapter() if adapters_off else contextlib.nullcontext()
        with context, prec.autocast():
            return evaluate.response_logps(model, gens, pad_id, batch_size=ev.score.rows)
    return _guarded(run, ev.score, ev.budget)


def _sample(model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list,
            cfg: RunConfig, prec: Precision, ev: EvalPlan, **kwargs,
            ) -> list[evaluate.Generation]:
    def run() -> list[evaluate.Generation]:
        with prec.autocast():
            return evaluate.sample(model, tok, prompts, cfg.max_new_tokens, seed=cfg.seed,
                                   batch_size=ev.sample.rows, **kwargs)
    return _guarded(run, ev.sample, ev.budget)


def evaluate_run(model: PreTrainedModel, tok: PreTrainedTokenizerBase, data: Data,
                 cfg: RunConfig, prec: Precision, reference: PreTrainedModel | str | None = None,
                 before: Evaluation | None = None) -> Evaluation:
    """Held-out numbers of ``model``.

    World data: the gold judge's mean scores of greedy responses on held-out prompts (one
    readable answer per prompt, as a user would get it), the gold total of samples at
    temperature 1 (``sampled total``), and from those samples the KL to the reference
    (``reference``: a model, ``"adapters"`` for the LoRA model with its adapters off, or
    None): a Monte Carlo KL needs samples of the policy's own distribution. UltraFeedback:
    on held-out pairs, how often the model gives the chosen response the higher log-prob,
    and, with ``before`` (the evaluation of the reference), DPO's implicit reward accuracy and mean
    margin ``beta * h``; greedy samples on a few prompts for a side-by-side. Batches are
    sized to the memory left (``eval_plan``), and running out of it says so."""
    pad = tok.pad_token_id
    adapters_off = reference == "adapters"
    ev = eval_plan(model, tok, data, cfg, prec)
    if data.kind == "world":
        greedy = _sample(model, tok, data.eval_prompts, cfg, prec, ev, temperature=0)
        gens = _sample(model, tok, data.eval_prompts, cfg, prec, ev)
        scores = {**evaluate.gold(greedy), "sampled total": evaluate.gold(gens)["total"]}
        if reference is not None:
            ref = _response_logps(model, gens, pad, True, prec, ev) if adapters_off else \
                _response_logps(reference, gens, pad, False, prec, ev)
            policy = _response_logps(model, gens, pad, False, prec, ev)
            scores["kl"] = (policy - ref).mean().item()
        return Evaluation(scores, greedy, gens)
    logps = _pair_logps(model, data.eval_examples, pad, prec, ev)
    scores = {"logp accuracy": (logps[:, 0] > logps[:, 1]).float().mean().item()}
    if before is not None:
        h = (logps[:, 0] - before.pair_logps[:, 0]) - (logps[:, 1] - before.pair_logps[:, 1])
        scores["reward accuracy"] = (h > 0).float().mean().item()
        scores["reward margin"] = (cfg.beta * h).mean().item()
    gens = _sample(model, tok, data.eval_prompts[:4], cfg, prec, ev, temperature=0)
    return Evaluation(scores, gens, pair_logps=logps)


def record_evals(history: dpo.History, before: Evaluation, after: Evaluation) -> dpo.History:
    """``history`` with the before/after evaluations as its eval rows, so ``History.plot``
    draws KL and gold reward (at step 0 the policy is the reference: KL 0)."""
    history.eval = [{"step": 0, **before.scores, "kl": before.scores.get("kl", 0.0)},
                    {"step": len(history.train), **after.scores}]
    return history


def paired(before: Evaluation, after: Evaluation, column: str = "total",
           sampled: bool = False) -> stats.Estimate:
    """World data: the paired change ``after - before`` of one gold column over the same
    held-out prompts, with its 95% interval: of the greedy responses, or with ``sampled``
    of the samples at temperature 1 (the same sampling seed before and after)."""
    which = "sampled" if sampled else "samples"
    return stats.paired_diff(evaluate.per_prompt(getattr(before, which))[column],
                             evaluate.per_prompt(getattr(after, which))[column])


def compare(before: Evaluation, after: Evaluation) -> pd.DataFrame:
    return pd.DataFrame({"before": before.scores, "after": after.scores}).T.round(3)


def side_by_side(before: Evaluation, after: Evaluation, n: int = 4) -> pd.DataFrame:
    """The first ``n`` held-out prompts with the greedy response before and after training
    (`` …``: cut at the token limit) and, for world prompts, each one's gold total."""
    rows = []
    for b, a in zip(before.samples[:n], after.samples[:n], strict=True):
        row = {"prompt": b.prompt, "before": b.response + ("" if b.finished else " …"),
               "after": a.response + ("" if a.finished else " …")}
        if before.sampled:  # world data: the gold judge reads the prompt
            row["gold before"] = judge.score(b.prompt, b.response, b.finished).total
            row["gold after"] = judge.score(a.prompt, a.response, a.finished).total
        rows.append(row)
    return pd.DataFrame(rows).round(2)


# --- training --------------------------------------------------------------------------------

@dataclass
class TrainResult:
    history: dpo.History
    wall_s: float  # the whole call
    train_s: float  # training: reference log-probs and optimizer steps (no evaluation)
    pairs: int
    tokens: int  # prompt + response tokens the policy read (padding not counted)
    peak_bytes: int
    n_params: int
    device: str

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.train_s

    def mfu(self, dtype: str) -> float | None:
        return throughput.mfu(self.n_params, self.tokens_per_s,
                              throughput.peak_flops(self.device, dtype))

    def summary(self, est: memory.Estimate, dtype: str) -> str:
        mfu = self.mfu(dtype)
        return "\n".join([
            f"wall time {self.wall_s:.1f} s (training {self.train_s:.1f} s)",
            f"throughput {self.tokens_per_s:,.0f} tokens/s, {self.pairs_per_s:.1f} pairs/s",
            "model FLOPs utilisation " + (f"{mfu:.1%} of the {dtype} peak" if mfu is not None
                                          else f"n/a (no peak known for {self.device})"),
            f"peak memory {self.peak_bytes / memory.GIB:.3f} GiB measured, "
            f"{est.total / memory.GIB:.3f} GiB estimated "
            f"(estimate / measured = {est.total / self.peak_bytes:.2f})"])


def dpo_config(cfg: RunConfig, prec: Precision) -> dpo.DPOConfig:
    return dpo.DPOConfig(beta=cfg.beta, loss_type=cfg.loss_type, lr=cfg.lr, epochs=cfg.epochs,
                         batch_size=cfg.batch_size,
                         grad_accum=cfg.grad_accum, warmup_steps=cfg.warmup_steps,
                         reference=cfg.reference, max_length=cfg.max_length,
                         mixed_precision=prec.name if prec.autocast_dtype else "no",
                         seed=cfg.seed)


def tokens_read(examples: list[dict], dcfg: dpo.DPOConfig, steps: int) -> int:
    """Prompt and response tokens in the batches of ``steps`` optimizer steps (each pair
    reads its prompt twice: once with each response)."""
    size = dcfg.batch_size * dcfg.grad_accum
    total = 0
    for step in range(steps):
        for i in dpo.global_batch(len(examples), step, size, dcfg.seed, dcfg.shuffle):
            e = examples[i]
            total += 2 * len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"])
    return total


def train(model: PreTrainedModel, tok: PreTrainedTokenizerBase, data: Data, cfg: RunConfig,
          prec: Precision, est: memory.Estimate) -> TrainResult:
    """``dpo.train_dpo`` on ``data``, with its peak memory measured
    (``memory.measured_peak``) and out-of-memory errors answered by
    ``memory.run_with_oom_help``."""
    seed_everything(cfg.seed)
    dcfg = dpo_config(cfg, prec)
    device = next(model.parameters()).device
    gpu = device_bytes(device)
    start = time.perf_counter()

    def fit() -> dpo.History:
        return dpo.train_dpo(model, tok, data.examples, dcfg)

    run = fit if gpu is None else lambda: memory.run_with_oom_help(fit, est, gpu)
    history, peak = memory.measured_peak(run, model)
    wall = time.perf_counter() - start
    steps = len(history.train)
    return TrainResult(history, wall, history.seconds, history.pairs_seen,
                       tokens_read(data.examples, dcfg, steps), peak,
                       models.n_params(model), throughput.device_name(device))
