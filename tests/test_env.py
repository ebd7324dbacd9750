import random
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

from dpolab import cli, env


def test_supported_dtypes_on_cpu():
    assert env.supported_dtypes(torch.device("cpu")) == ["float32", "bfloat16"]
    assert env.supported_dtypes("cpu") == ["float32", "bfloat16"]


def test_supported_dtypes_on_cuda_count_native_bf16_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert env.supported_dtypes("cuda") == ["float32", "bfloat16", "float16"]  # Ampere and newer
    # A T4: bf16 only emulated, which torch counts unless told not to.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation)
    assert env.supported_dtypes("cuda") == ["float32", "float16"]


def test_doctor_on_a_t4_lists_no_bf16(monkeypatch):
    monkeypatch.setattr(env, "device", lambda: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation)
    lines = env.doctor().splitlines()
    assert lines[:2] == ["device: cuda (Tesla T4)", "dtypes: float32, float16"]


def test_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert env.device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert env.device() == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert env.device() == torch.device("cpu")


def test_in_colab(monkeypatch):
    assert not env.in_colab()
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert env.in_colab()


def test_versions():
    v = env.versions()
    assert set(v) == {"python", "torch", "transformers", "tokenizers", "datasets", "accelerate",
                      "peft", "trl", "ipywidgets", "numpy"}
    assert v["torch"] == torch.__version__
    assert v["python"] == ".".join(map(str, sys.version_info[:3]))


def test_widgets_ok(monkeypatch):
    assert env.widgets_ok()[0]
    for version, expected in [("7.7.1", True), ("8.1.5", True), ("7.6.5", False)]:
        monkeypatch.setitem(sys.modules, "ipywidgets",
                            types.SimpleNamespace(__version__=version))
        ok, message = env.widgets_ok()
        assert ok == expected and version in message
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes the import fail
    ok, message = env.widgets_ok()
    assert not ok and "not installed" in message


def test_bundled_model_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("DPOLAB_DATA", raising=False)
    assert env.bundled_model_dir() == Path(__file__).resolve().parent.parent / "data/tiny-llama"
    monkeypatch.setenv("DPOLAB_DATA", str(tmp_path))
    assert env.bundled_model_dir() == tmp_path / "tiny-llama"


def test_seed_everything_repeats():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    env.seed_everything(3)
    first = draw()
    env.seed_everything(3)
    assert draw() == first


def test_doctor_command():
    out = subprocess.run([sys.executable, "-m", "dpolab", "doctor"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "device: cpu" in out.stdout or "device: cuda" in out.stdout
    assert f"torch: {torch.__version__}" in out.stdout
    assert "bundled model:" in out.stdout


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "doctor" in capsys.readouterr().err
