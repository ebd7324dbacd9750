"""The precision choice, on GPUs this machine does not have (torch.cuda monkeypatched)."""

import pytest
import torch

from dpolab import precision


def fake_gpu(monkeypatch, name: str, capability: tuple[int, int]) -> None:
    """torch.cuda as it answers on ``name``: native bf16 from compute capability 8.0."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return capability >= (8, 0) or including_emulation  # emulated bf16 says yes too

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)


@pytest.mark.parametrize("name, capability", [("NVIDIA A100-SXM4-40GB", (8, 0)),
                                              ("NVIDIA L4", (8, 9)),
                                              ("NVIDIA H200", (9, 0))])
def test_ampere_and_newer_train_in_bf16_without_a_scaler(monkeypatch, name, capability):
    fake_gpu(monkeypatch, name, capability)
    p = precision.choose()
    assert (p.device, p.param_dtype, p.autocast_dtype) == ("cuda", torch.float32, torch.bfloat16)
    assert not p.needs_scaler and p.scaler() is None
    assert p.name == "bf16" and p.capability == capability
    assert name in p.why and f"{capability[0]}.{capability[1]}" in p.why


def test_t4_trains_in_fp16_with_loss_scaling_although_bf16_is_emulated(monkeypatch):
    fake_gpu(monkeypatch, "Tesla T4", (7, 5))
    assert torch.cuda.is_bf16_supported()  # the default answer would mislead
    p = precision.choose("cuda")
    assert (p.param_dtype, p.autocast_dtype, p.needs_scaler) == (torch.float32, torch.float16,
                                                                 True)
    assert p.name == "fp16" and p.capability == (7, 5)
    assert "Tesla T4" in p.why and "7.5" in p.why and "loss scaling" in p.why
    assert isinstance(p.scaler(), torch.amp.GradScaler)


def test_pre_volta_gpu_stays_in_fp32(monkeypatch):
    fake_gpu(monkeypatch, "Tesla P100-PCIE-16GB", (6, 0))
    p = precision.choose()
    assert (p.autocast_dtype, p.needs_scaler, p.name) == (None, False, "fp32")


def test_cpu_is_fp32_and_autocast_is_a_no_op(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    p = precision.choose()
    assert (p.device, p.param_dtype, p.autocast_dtype, p.needs_scaler) == ("cpu", torch.float32,
                                                                          None, False)
    assert p.scaler() is None
    with p.autocast():
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


def test_forcing_a_precision(monkeypatch):
    fake_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB", (8, 0))
    assert precision.choose(want="fp16").needs_scaler
    assert precision.choose(want="fp32").autocast_dtype is None
    fake_gpu(monkeypatch, "Tesla T4", (7, 5))
    with pytest.raises(ValueError, match="no native bf16"):
        precision.choose(want="bf16")
    with pytest.raises(ValueError, match="only set up for CUDA"):
        precision.choose("cpu", want="bf16")
    with pytest.raises(ValueError, match="want must be"):
        precision.choose(want="half")


def test_asking_for_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        precision.choose("cuda")


def test_gpu_autocast_targets_cuda_in_the_chosen_dtype(monkeypatch):
    fake_gpu(monkeypatch, "Tesla T4", (7, 5))
    p = precision.choose()
    ctx = p.autocast()  # built, not entered: this machine has no CUDA kernels to run
    assert isinstance(ctx, torch.autocast)
    assert (ctx.device, ctx.fast_dtype) == ("cuda", torch.float16)
