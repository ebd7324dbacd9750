"""The memory estimate: hand-computed figures for a 360M model, measured peaks on the CPU
for small models, the suggestions, and the out-of-memory guard."""

from dataclasses import replace

import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import LlamaConfig, LlamaForCausalLM

from dpolab import dpo, evaluate, gpurun, memory, world, worldprefs
from dpolab import model as models
from dpolab.pairs import encode_pairs

# HuggingFaceTB/SmolLM2-360M's config.json, the keys the estimate reads.
SMOLLM2_360M = {"hidden_size": 960, "num_hidden_layers": 32, "num_attention_heads": 15,
                "num_key_value_heads": 5, "intermediate_size": 2560, "vocab_size": 49152,
                "tie_word_embeddings": True, "model_type": "llama"}
T4 = gpurun.T4_BYTES
QWEN = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
        "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936,
        "tie_word_embeddings": True, "model_type": "qwen2"}


def smollm2_plan(**kw) -> memory.Plan:
    return memory.Plan(memory.Shape.from_config(SMOLLM2_360M), **kw)


# --- a 360M model, by hand ---------------------------------------------------------------------

def test_smollm2_360m_parameter_counts_by_hand():
    shape = memory.Shape.from_config(SMOLLM2_360M)
    assert (shape.head_dim, shape.q, shape.k) == (64, 960, 320)
    embedding = 49152 * 960  # tied with the output layer: counted once
    attention = 960 * 960 + 960 * 320 + 960 * 320 + 960 * 960  # q, k, v, o
    mlp = 3 * 960 * 2560  # gate, up, down
    assert shape.n_params() == embedding + 32 * (attention + mlp + 2 * 960) + 960 == 361_821_120
    assert shape.linear_params() == 32 * (attention + mlp) + embedding == 361_758_720
    # LoRA rank 16 on q, k, v, o, gate, up, down: r * (in + out) each
    per_layer = 16 * ((960 + 960) + 2 * (960 + 320) + (960 + 960) + 2 * (960 + 2560)
                      + (2560 + 960))
    assert shape.lora_params(16) == 32 * per_layer == 8_683_520


def test_smollm2_360m_full_fine_tuning_on_a_t4_by_hand():
    """Batch 4 pairs of 512 tokens, fp16 autocast, full fine-tuning, precomputed reference."""
    est = memory.estimate(smollm2_plan(batch_pairs=4, seq_len=512, mixed_precision=True))
    n_tokens = 2 * 4 * 512
    # one block, per token: 16h fp32 residual/norms + 5 fp16 copies of projection inputs
    # + fp16 q, k, v, out (k and v repeated to 15 heads) + SwiGLU 4i + mask T + 4a + 8
    per_token = 16 * 960 + 5 * 2 * 960 + 2 * (2 * 960 + 2 * 960 + 4 * 2560 + 512) + 4 * 15 + 8
    assert per_token == 54_212
    expected = {
        "weights (fp32)": 4 * 361_821_120,  # 1.35 GiB
        "16-bit weight copies (autocast)": 2 * 361_758_720,
        "reference model": 0,
        "gradients": 4 * 361_821_120,
        "AdamW moments": 8 * 361_821_120,
        "activations": n_tokens * (32 * per_token + 10 * 960),  # + final norm
        "logits (fp32)": 3 * n_tokens * 49152 * 4,
    }
    assert est.parts == expected
    assert expected["activations"] == 7_144_996_864  # 6.65 GiB
    assert expected["logits (fp32)"] == 2_415_919_104  # 2.25 GiB
    assert est.step == est.total == 16_073_571_328  # 14.97 GiB
    assert est.precompute == 4 * 361_821_120 + 3 * 2 * n_tokens * 49152 * 4 < est.step
    assert not est.fits(T4)


def test_smollm2_360m_lora_by_hand_fits_a_t4():
    """Batch 4 pairs of 256 tokens, fp16 autocast, LoRA rank 16, adapters-off reference."""
    est = memory.estimate(smollm2_plan(batch_pairs=4, seq_len=256, mixed_precision=True,
                                       lora_r=16, reference="adapters"))
    n_tokens = 2 * 4 * 256
    per_token = (16 * 960 + 5 * 2 * 960 + 2 * (2 * 960 + 2 * 960 + 4 * 2560 + 256) + 4 * 15 + 8
                 + 7 * 2 * 16)  # the rank-16 intermediates of 7 adapters
    assert est.parts["gradients"] == 4 * 8_683_520
    assert est.parts["AdamW moments"] == 8 * 8_683_520
    assert est.parts["activations"] == n_tokens * (32 * per_token + 10 * 960)
    assert est.parts["logits (fp32)"] == 4 * n_tokens * 49152 * 4  # + the reference forward's
    assert est.precompute == 0
    assert est.total == 7_439_240_960  # 6.93 GiB
    assert est.fits(T4)


def test_checkpointing_keeps_block_inputs_only():
    plain = smollm2_plan(batch_pairs=4, seq_len=512, mixed_precision=True)
    est = memory.estimate(replace(plain, checkpointing=True))
    n_tokens = 2 * 4 * 512
    # every block's fp32 input and the final norm; the one rebuilt block (222 MB) is smaller
    # than the logits' buffers, freed by then
    assert est.parts["activations"] == n_tokens * (32 * 4 * 960 + 10 * 960)
    # autocast holds 16-bit copies of the output layer and of the block being rebuilt
    assert est.parts["16-bit weight copies (autocast)"] == 2 * (49152 * 960 + 9_830_400)
    assert est.total == 8_861_727_744  # 8.25 GiB
    assert est.fits(T4)


def test_reference_copy_costs_a_model_and_a_logits_copy():
    base = smollm2_plan(batch_pairs=2, seq_len=256)
    copy = memory.estimate(replace(base, reference="model"))
    pre = memory.estimate(base)
    assert copy.parts["reference model"] == 4 * 361_821_120
    assert copy.parts["logits (fp32)"] - pre.parts["logits (fp32)"] == 2 * 2 * 256 * 49152 * 4


def test_shape_matches_real_models():
    tiny, _ = models.load(models.SFT)
    assert memory.Shape.from_config(tiny.config).n_params() == models.n_params(tiny)
    for config in (
        dict(SMOLLM2_360M),
        # Qwen2.5-0.5B: biases on q, k, v
        dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
             num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
             tie_word_embeddings=True, model_type="qwen2"),
    ):
        from transformers import AutoConfig, AutoModelForCausalLM
        kind = config.pop("model_type")
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **config))
        config["model_type"] = kind
        assert memory.Shape.from_config(config).n_params() == models.n_params(model)
    assert memory.Shape.from_config(config).n_params() == 494_032_768


def test_lora_count_matches_peft():
    model, _ = models.load(models.SFT)
    shape = memory.Shape.from_config(model.config)
    peft_model = gpurun.prepare_model(model, gpurun.RunConfig(lora_r=4))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert shape.lora_params(4) == trainable


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="reference must be one of"):
        smollm2_plan(batch_pairs=1, seq_len=8, reference="copy")
    with pytest.raises(ValueError, match="needs LoRA"):
        smollm2_plan(batch_pairs=1, seq_len=8, reference="adapters")
    with pytest.raises(ValueError, match="batch_pairs >= 1"):
        smollm2_plan(batch_pairs=0, seq_len=8)


# --- measured on the CPU ------------------------------------------------------------------------

def gqa_model() -> LlamaForCausalLM:
    """A small random Llama with grouped-query attention and a large vocabulary."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=8192, hidden_size=192, intermediate_size=512, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True,
        pad_token_id=0, bos_token_id=1, eos_token_id=2))


@pytest.fixture
def fresh_accelerator_state():
    """train_dpo builds an Accelerator, whose state is a process-wide singleton that
    refuses another mixed-precision setting: start and leave it empty."""
    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


@pytest.mark.parametrize("model_name, mixed, lora, reference, ckpt", [
    ("tiny", False, None, "precomputed", False),
    ("tiny", False, None, "model", True),
    ("tiny", True, None, "precomputed", False),
    ("tiny", True, 8, "adapters", False),
    ("gqa", False, None, "model", False),
    ("gqa", True, 8, "adapters", True),
])
def test_estimate_is_within_30_percent_above_the_measured_cpu_peak(
        fresh_accelerator_state, model_name, mixed, lora, reference, ckpt):
    """Two steps of the real trainer, batch 8 (tiny) or 4 (gqa) pairs; the peak is the
    model's bytes plus the most the CPU allocator held beyond them (profiler events). bf16
    autocast on the CPU stands in for the GPU's 16-bit autocast."""
    model, tok = models.load(models.SFT)
    batch = 8
    if model_name == "gqa":
        model, batch = gqa_model(), 4  # world text in the bundled tokenizer's ids (< 1024)
    model = gpurun.prepare_model(model, gpurun.RunConfig(lora_r=lora, gradient_checkpointing=ckpt))
    examples, _ = encode_pairs(tok, worldprefs.offpolicy_pairs(2 * batch, seed=0))
    seq_len = max(len(e["prompt_ids"]) + max(len(e["chosen_ids"]), len(e["rejected_ids"]))
                  for e in examples)
    cfg = dpo.DPOConfig(batch_size=batch, steps=2, reference=reference, shuffle=False,
                        mixed_precision="bf16" if mixed else "no")
    _, peak = memory.measured_peak(lambda: dpo.train_dpo(model, tok, examples, cfg), model)
    est = memory.estimate(memory.Plan(memory.Shape.from_config(model.config), batch, seq_len,
                                      mixed, lora, reference, ckpt))
    assert 1.0 <= est.total / peak <= 1.3, (est.total, peak, str(est))


@pytest.mark.parametrize("which", ["sample", "score"])
def test_evaluation_estimates_are_above_the_measured_cpu_peak(which):
    """32 held-out prompts, 48 new tokens, on the grouped-query model: the estimate of a
    batch errs high (measured 1.2x for scoring, 1.7x for sampling), never low."""
    model, tok = gqa_model(), models.load(models.SFT)[1]
    shape = memory.Shape.from_config(model.config)
    prompts = world.World(0).prompts(32, "eval")
    gens, peak = memory.cpu_peak(lambda: evaluate.sample(model, tok, prompts, 48, batch_size=32))
    if which == "sample":
        prompt_len = max(len(g.prompt_ids) for g in gens)
        est = 32 * memory.sample_row_bytes(shape, prompt_len, 48, False)
    else:
        _, peak = memory.cpu_peak(lambda: evaluate.response_logps(model, gens, 0, batch_size=32))
        seq_len = max(len(g.prompt_ids) + len(g.response_ids) for g in gens)
        est = 32 * memory.score_row_bytes(shape, seq_len, False)
    assert 1.0 <= est / peak <= 2.5, (est, peak)


def test_a_fixed_evaluation_batch_of_64_rows_would_not_fit_a_t4():
    """Qwen2.5-0.5B scoring rows of 320 tokens under fp16 autocast: 64 rows of logits are
    more than a T4 holds; the sized pass takes what fits next to the weights."""
    shape = memory.Shape.from_config(QWEN)
    row = memory.score_row_bytes(shape, 320, True)
    assert row >= 320 * 12 * 151936
    budget = int(memory.HEADROOM * T4) - 4 * shape.n_params()
    assert 64 * row > T4
    ev = memory.EvalPass.sized("scoring", row, 320, budget)
    assert 1 <= ev.rows < 64 and ev.bytes <= budget < ev.bytes + row
    assert memory.EvalPass.sized("scoring", row, 320, None).rows == memory.EVAL_ROWS
    assert memory.EvalPass.sized("scoring", row, 320, 0).rows == 1  # one row, and the guard


def test_cpu_peak_sees_a_temporary_allocation():
    n = 4_000_000

    def work():
        x = torch.ones(n)  # 16 MB, freed on return
        return float(x.sum())

    result, peak = memory.cpu_peak(work)
    assert result == n
    assert 4 * n <= peak < 4 * n + 1_000_000


# --- suggestions and the out-of-memory guard -------------------------------------------------

def test_no_suggestions_when_it_fits():
    est = memory.estimate(smollm2_plan(batch_pairs=1, seq_len=128))
    assert est.fits(T4) and memory.suggest(est, T4) == []


def test_suggestions_are_concrete_and_their_numbers_are_estimates():
    plan = smollm2_plan(batch_pairs=4, seq_len=512, mixed_precision=True)
    est = memory.estimate(plan)
    tips = memory.suggest(est, T4)
    batch = next(t for t in tips if t.startswith("batch_size"))
    smaller = memory.estimate(replace(plan, batch_pairs=2))
    assert batch.startswith("batch_size 4 -> 2 with grad_accum x2")
    assert f"-> {smaller.total / memory.GIB:.2f} GiB (fits)" in batch
    assert any(t.startswith("gradient checkpointing") and t.endswith("(fits)") for t in tips)
    lora = next(t for t in tips if t.startswith("LoRA"))
    with_lora = memory.estimate(replace(plan, lora_r=16, reference="adapters"))
    assert f"-> {with_lora.total / memory.GIB:.2f} GiB" in lora
    assert not any(t.startswith("together") for t in tips)  # single changes are enough


def test_suggestions_combine_changes_when_none_is_enough():
    plan = memory.Plan(memory.Shape.from_config(QWEN), batch_pairs=16, seq_len=1024,
                       mixed_precision=True, reference="model")
    tips = memory.suggest(memory.estimate(plan), T4)
    assert all(t.endswith("(still too big)") for t in tips[:-1])
    assert tips[-1].startswith("together: gradient checkpointing, LoRA rank 16, batch_size 16 ->")
    assert tips[-1].endswith("(fits)")


def fake_oom():
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.25 GiB. GPU 0 "
                                      "has a total capacity of 14.74 GiB")


def test_out_of_memory_becomes_a_clear_message_with_suggestions():
    est = memory.estimate(smollm2_plan(batch_pairs=4, seq_len=512, mixed_precision=True))
    with pytest.raises(memory.OutOfMemory) as info:
        memory.run_with_oom_help(fake_oom, est, T4)
    text = str(info.value)
    assert text.startswith("Out of memory: CUDA out of memory. Tried to allocate 2.25 GiB")
    assert "14.97 GiB" in text and "activations" in text and "To make it fit:" in text
    assert "  - batch_size 4 -> 2 with grad_accum x2" in text
    assert info.value.__context__ is None  # not a chained allocator traceback


def test_runtime_out_of_memory_is_caught_too_and_other_errors_pass_through():
    est = memory.estimate(smollm2_plan(batch_pairs=4, seq_len=512, mixed_precision=True))

    def runtime_oom():
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(memory.OutOfMemory, match="CUDA error: out of memory"):
        memory.run_with_oom_help(runtime_oom, est, T4)

    def other():
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch") as info:
        memory.run_with_oom_help(other, est, T4)
    assert not isinstance(info.value, memory.OutOfMemory)
    assert memory.run_with_oom_help(lambda: 42, est, T4) == 42


def test_out_of_memory_although_the_estimate_fitted_says_what_else_to_check():
    est = memory.estimate(smollm2_plan(batch_pairs=1, seq_len=128))
    with pytest.raises(memory.OutOfMemory) as info:
        memory.run_with_oom_help(fake_oom, est, T4)
    assert "The estimate fitted, so something else holds memory" in str(info.value)


def test_measured_peak_on_a_gpu_reads_the_allocator(monkeypatch):
    """The CUDA path, with torch.cuda faked: peak stats reset before the run, read after."""
    from types import SimpleNamespace

    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda device=None: events.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 7 * memory.GIB)
    gpu_model = SimpleNamespace(
        parameters=lambda: iter([SimpleNamespace(device=torch.device("cuda", 0))]))
    result, peak = memory.measured_peak(lambda: events.append("run") or "done", gpu_model)
    assert (result, peak) == ("done", 7 * memory.GIB)
    assert events == ["sync", "reset", "run", "sync"]
