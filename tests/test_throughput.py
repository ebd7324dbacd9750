"""Peak-FLOPs table, MFU and the time estimate, checked by hand."""

import pytest

from dpolab import gpurun, memory, throughput

N_360M = 361_821_120


@pytest.mark.parametrize("name, dtype, tflops", [
    ("Tesla T4", "fp16", 65.0), ("NVIDIA A100-SXM4-40GB", "bf16", 312.0),
    ("NVIDIA H100 80GB HBM3", "bf16", 989.0), ("NVIDIA H100 PCIe", "bf16", 756.0),
    ("NVIDIA H200", "fp16", 989.0), ("NVIDIA L4", "bf16", 121.0),
    ("NVIDIA L40S", "bf16", 362.0)])
def test_peak_flops_by_device_name(name, dtype, tflops):
    assert throughput.peak_flops(name, dtype) == tflops * 1e12


def test_unknown_peaks_are_none():
    assert throughput.peak_flops("Tesla T4", "bf16") is None  # no native bf16
    assert throughput.peak_flops("cpu", "fp32") is None
    assert throughput.mfu(N_360M, 1000.0, None) is None


def test_mfu_is_six_n_tokens_per_second_over_the_peak():
    assert throughput.mfu(N_360M, 10_000.0, 65e12) == pytest.approx(6 * N_360M * 1e4 / 65e12)


def test_flops_per_token_counts_what_the_dpo_step_does():
    shape = memory.Shape.from_config(gpurun.HUB_CONFIGS[gpurun.HUB_MODELS[0]])
    plan = memory.Plan(shape, 4, 256)
    assert throughput.flops_per_token(plan, 1) == 6  # forward 2, backward 4
    lora = memory.Plan(shape, 4, 256, lora_r=16, reference="adapters")
    assert throughput.flops_per_token(lora, 1) == 6  # backward 2 (inputs only), reference 2
    assert throughput.flops_per_token(memory.Plan(shape, 4, 256, checkpointing=True,
                                                  reference="model"), 1) == 10


def test_default_configuration_on_a_t4_by_hand():
    """2000 world pairs, 16 per step, LoRA, rows at most 256 tokens, fp16 on a T4."""
    cfg = gpurun.RunConfig()
    est, t = gpurun.t4_estimates(cfg)
    tokens = 125 * 16 * 2 * 256  # 125 steps of 16 pairs of two rows
    assert t.train == pytest.approx(tokens * 6 * N_360M / (65e12 * 0.2))  # 171 s
    assert t.precompute == 0.0
    # Sampling, 64 tokens per batch at 20 ms a token (launch-bound): 4 evaluation passes
    # (before and after, greedy and at temperature 1) x 4 batches of 64 held-out prompts,
    # and the model's half of its 2000 pairs, 32 batches of 64.
    assert t.generate == pytest.approx((4 * 4 + 32) * 64 * 0.02)
    assert t.total <= 20 * 60
    assert est.fits(gpurun.T4_BYTES)
    assert "peak TFLOPS=65.0" in str(t) and "assumed MFU=0.2" in str(t)


def test_the_quick_and_full_alternatives_fit_a_t4_too():
    from dataclasses import replace
    for cfg in (replace(gpurun.RunConfig(), model=gpurun.HUB_MODELS[2]),
                replace(gpurun.RunConfig(), lora_r=None)):
        est, t = gpurun.t4_estimates(cfg)
        assert est.fits(gpurun.T4_BYTES) and t.total <= 20 * 60, (cfg, str(est), str(t))


def test_time_estimate_refuses_unknown_gpus():
    plan = memory.Plan(memory.Shape.from_config(gpurun.HUB_CONFIGS[gpurun.HUB_MODELS[0]]), 4, 64)
    with pytest.raises(ValueError, match="no peak bf16 throughput known for 'Tesla T4'"):
        throughput.estimate_time(plan, N_360M, 10, 16, 64, 32, 2, "Tesla T4", "bf16")
