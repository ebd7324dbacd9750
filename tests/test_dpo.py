"""The DPO trainer: log-probs, gradient, reference modes, accumulation, checkpoints, NaN guard,
two processes through Accelerate, and that it aligns the SFT model."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from numeric import assert_runs_close

from dpolab import chat, dpo, losses, model, pairs, pipeline, world, worldprefs
from dpolab.logps import model_logps

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tok():
    return model.load(model.SFT)[1]


@pytest.fixture(scope="module")
def examples(tok):
    rows = worldprefs.offpolicy_pairs(48, seed=0)
    return pairs.encode_pairs(tok, rows)[0]


def fresh():
    return model.load(model.SFT)[0]


def run(examples, tok, **overrides):
    cfg = dpo.DPOConfig(**{"steps": 3, "batch_size": 8, "lr": 1e-3, **overrides})
    m = fresh()
    return m, dpo.train_dpo(m, tok, examples, cfg)


def assert_same_run(a, b, tol=1e-5):
    assert len(a.train) == len(b.train)
    for ra, rb in zip(a.train, b.train, strict=True):
        for k in dpo.METRICS:
            assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=tol), (ra["step"], k)


def test_concatenated_forward_equals_separate_forwards(tok, examples):
    m = fresh()
    batch = pairs.collate_pairs(examples[:4], tok.pad_token_id)
    chosen, rejected = dpo.concatenated_forward(m, batch)
    for key, got in (("chosen_ids", chosen), ("rejected_ids", rejected)):
        alone = chat.batch([(e["prompt_ids"], e[key]) for e in examples[:4]], tok.pad_token_id)
        torch.testing.assert_close(got, model_logps(m, **alone), atol=1e-5, rtol=1e-6)
    mean_chosen, _ = dpo.concatenated_forward(m, batch, average=True)
    n = torch.tensor([len(e["chosen_ids"]) for e in examples[:4]])
    torch.testing.assert_close(mean_chosen, chosen / n)


def test_step_zero_loss_is_ln2_and_rewards_are_zero(tok, examples):
    _, h = run(examples, tok, steps=1)
    first = h.train[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert first[k] == pytest.approx(0.0, abs=1e-6)
    assert first["rewards/accuracies"] == 0.0  # strict >: ties are not counted as correct
    assert first["logps/chosen"] < 0 and first["logps/rejected"] < 0


def test_dpo_gradient_matches_its_closed_form(tok, examples):
    """d loss / d theta = -beta * sigmoid(-beta * h) * (grad logp_w - grad logp_l).

    Compared over all parameters at once: where grad logp_w and grad logp_l nearly cancel,
    single entries carry float32 rounding (Llama's RMSNorm computes in fp32 whatever the
    model's dtype), so the tolerance is relative to the largest gradient entry."""
    m = fresh()
    beta = 0.5
    batch = pairs.collate_pairs(examples[:1], tok.pad_token_id)
    params = [p for p in m.parameters()]
    logp_w, logp_l = dpo.concatenated_forward(m, batch)
    ref_w, ref_l = logp_w.detach() - 0.7, logp_l.detach() + 0.4  # h = 1.1, away from 0
    loss = losses.dpo_loss(logp_w, logp_l, ref_w, ref_l, beta).sum()
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    grad_w = torch.autograd.grad(logp_w.sum(), params, retain_graph=True)
    grad_l = torch.autograd.grad(logp_l.sum(), params)
    h = ((logp_w - ref_w) - (logp_l - ref_l)).detach()
    weight = -beta * torch.sigmoid(-beta * h)
    got = torch.cat([g.flatten() for g in grads])
    closed_form = weight * torch.cat([(gw - gl).flatten() for gw, gl in zip(grad_w, grad_l,
                                                                             strict=True)])
    scale = closed_form.abs().max().item()
    torch.testing.assert_close(got, closed_form, atol=1e-5 * scale, rtol=1e-4)
    assert scale > 1e-3  # a real gradient, not zeros compared with zeros


def test_precomputed_reference_equals_frozen_copy(tok, examples):
    m1, a = run(examples, tok, reference="model")
    m2, b = run(examples, tok, reference="precomputed")
    assert_same_run(a, b)
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_reference_with_adapters_disabled(tok, examples):
    from peft import LoraConfig, get_peft_model
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    base = fresh()
    policy = get_peft_model(fresh(), lora)
    batch = pairs.collate_pairs(examples[:4], tok.pad_token_id)
    with torch.no_grad():  # a trained-looking adapter, so the two models differ
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        with policy.disable_adapter():
            off = dpo.concatenated_forward(policy, batch)
        on = dpo.concatenated_forward(policy, batch)
        torch.testing.assert_close(off, dpo.concatenated_forward(base, batch), atol=1e-5, rtol=0)
        assert not torch.allclose(on[0], off[0], atol=1e-3)
    # Training with adapters off as the reference equals training against a copy of the base.
    cfg = dpo.DPOConfig(steps=3, batch_size=8, lr=1e-2)
    runs = []
    for reference, ref_model in (("adapters", None), ("model", fresh())):
        torch.manual_seed(0)
        p = get_peft_model(fresh(), lora)
        cfg.reference = reference
        runs.append(dpo.train_dpo(p, tok, examples, cfg, ref_model=ref_model))
    assert_same_run(*runs)
    assert runs[0].train[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert runs[0].train[-1]["rewards/margins"] != 0.0


def test_bf16_autocast_after_fp32_in_one_process(tok, examples):
    """A notebook may train in fp32 and then in bf16; the reference runs in the same
    precision as the policy, so step 0 is still exactly ln 2."""
    _, fp32 = run(examples, tok, steps=1)
    _, bf16 = run(examples, tok, steps=2, mixed_precision="bf16", reference="precomputed")
    assert bf16.train[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert bf16.train[0]["logps/chosen"] != fp32.train[0]["logps/chosen"]  # bf16 matmuls
    assert bf16.train[0]["logps/chosen"] == pytest.approx(fp32.train[0]["logps/chosen"], rel=0.05)


def test_gradient_accumulation_equals_a_bigger_batch(tok, examples):
    _, a = run(examples, tok, batch_size=8, grad_accum=1)
    _, b = run(examples, tok, batch_size=4, grad_accum=2)
    assert_same_run(a, b)


class Crash(Exception):
    pass


def test_resume_continues_the_same_run(tok, examples, tmp_path):
    cfg = dict(steps=6, checkpoint_every=3, reference="precomputed")
    _, straight = run(examples, tok, **cfg)
    ckpt = tmp_path / "run.pt"

    def crash_after_3(step, history):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        dpo.train_dpo(fresh(), tok, examples, dpo.DPOConfig(batch_size=8, lr=1e-3, **cfg),
                      callback=crash_after_3, checkpoint=ckpt)
    assert ckpt.exists() and [p.name for p in tmp_path.iterdir()] == ["run.pt"]
    assert torch.load(ckpt, weights_only=True)["step"] == 3
    m = fresh()
    resumed = dpo.train_dpo(m, tok, examples, dpo.DPOConfig(batch_size=8, lr=1e-3, **cfg),
                            checkpoint=ckpt)
    assert [r["step"] for r in resumed.train] == [1, 2, 3, 4, 5, 6]
    assert_same_run(straight, resumed, tol=1e-6)
    for r1, r2 in zip(straight.train, resumed.train, strict=True):
        assert r1["lr"] == r2["lr"]
    with pytest.raises(ValueError, match="another config: beta=0.1 .now 0.2."):
        dpo.train_dpo(fresh(), tok, examples,
                      dpo.DPOConfig(batch_size=8, lr=1e-3, beta=0.2, **cfg), checkpoint=ckpt)


def test_nan_loss_names_step_and_batch(tok, examples):
    m = fresh()
    with torch.no_grad():
        m.model.norm.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"DPO loss is nan at step 1, micro-batch 0 of 1 "
                                                 r"\(pairs \[\d+, "):
        dpo.train_dpo(m, tok, examples, dpo.DPOConfig(steps=2, batch_size=8))


def test_nan_gradient_names_step_and_parameter(tok, examples):
    m = fresh()
    m.model.layers[1].mlp.up_proj.weight.register_hook(lambda g: g * float("inf"))
    message = r"gradient norm is (nan|inf) at step 1 \(first non-finite gradient: model.layers.1"
    with pytest.raises(FloatingPointError, match=message):
        dpo.train_dpo(m, tok, examples, dpo.DPOConfig(steps=2, batch_size=8))


def test_fp16_overflow_is_skipped_by_the_loss_scaler_not_raised(tok, examples, monkeypatch):
    """With fp16 on a GPU, Accelerate scales the loss; an inf gradient is then an overflow
    that the scaler answers by skipping the step and halving the scale. CPU has no fp16
    scaler, so one is attached here by hand."""
    def with_scaler(mixed_precision):
        accelerator = dpo.Accelerator()
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
        return accelerator
    monkeypatch.setattr(dpo, "_accelerator", with_scaler)
    m = fresh()
    w = m.model.layers[1].mlp.up_proj.weight
    backward_calls = []

    def overflow_once(grad):  # an inf gradient in step 1 only
        backward_calls.append(1)
        return grad * float("inf") if len(backward_calls) == 1 else grad

    w.register_hook(overflow_once)
    before = w.detach().clone()
    weights = []
    h = dpo.train_dpo(m, tok, examples, dpo.DPOConfig(steps=3, batch_size=8, lr=1e-3,
                                                      warmup_steps=3),
                      callback=lambda step, history: weights.append(w.detach().clone()))
    assert [math.isfinite(r["grad_norm"]) for r in h.train] == [False, True, True]
    assert math.isfinite(h.train[-1]["loss"]) and not torch.equal(w, before)
    # The skipped step made no update, so the warmup did not advance on it either: step 2
    # runs at step 1's learning rate.
    assert torch.equal(weights[0], before) and not torch.equal(weights[1], before)
    assert [r["lr"] for r in h.train] == pytest.approx([1e-3 / 3, 1e-3 / 3, 2e-3 / 3])
    # The history says so: the scale each step ran at, halved after the skipped one.
    assert [(r["loss_scale"], r["skipped"]) for r in h.train] == [
        (2.0**16, 1.0), (2.0**15, 0.0), (2.0**15, 0.0)]


def test_bad_config_and_too_few_pairs_raise(tok, examples):
    with pytest.raises(ValueError, match="reference must be one of"):
        dpo.DPOConfig(reference="copy")
    with pytest.raises(ValueError, match="loss_type 'hinge' does not take label_smoothing"):
        dpo.train_dpo(fresh(), tok, examples, dpo.DPOConfig(loss_type="hinge", label_smoothing=0.1))
    with pytest.raises(ValueError, match="unknown loss_type 'dpo'"):
        dpo.train_dpo(fresh(), tok, examples, dpo.DPOConfig(loss_type="dpo"))
    with pytest.raises(ValueError, match="48 pairs cannot fill one batch of 64"):
        dpo.train_dpo(fresh(), tok, examples, dpo.DPOConfig(batch_size=64))
    with pytest.raises(ValueError, match="needs a peft model"):
        dpo.train_dpo(fresh(), tok, examples, dpo.DPOConfig(reference="adapters", batch_size=8))


def test_history_plots_in_one_call(tok, examples):
    import matplotlib
    matplotlib.use("Agg")
    _, h = run(examples, tok, steps=2)
    fig = h.plot()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "reward accuracy", "implicit rewards", "sequence log-probs",
                      "sampled KL to the reference", "gold reward, held-out prompts"]
    assert h.frame().shape[0] == 2


@pytest.mark.slow
def test_two_processes_agree_with_one(tok, examples, tmp_path):
    """DDP over two CPU processes (gloo), each with half of every batch, matches one process."""
    out = tmp_path / "ddp.json"
    # torchrun starts the processes; ACCELERATE_USE_CPU makes Accelerate join them over gloo.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "dpo_ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(out.read_text())
    assert ddp["processes"] == 2
    m, one = run(examples, tok, steps=3, batch_size=8, reference="precomputed")
    assert_runs_close(ddp["train"], one.train, dpo.METRICS)
    params = torch.cat([p.detach().flatten() for p in m.parameters()])
    assert ddp["param_sum"] == pytest.approx(params.sum().item(), abs=1e-4)
    assert ddp["param_abs_sum"] == pytest.approx(params.abs().sum().item(), rel=1e-6)


@pytest.mark.slow
def test_dpo_raises_held_out_gold_reward_of_the_sft_model():
    """A short run on world pairs: gold reward on held-out prompts goes up, at a finite KL."""
    m, tok = model.load(model.SFT)
    rows = pipeline.world_pairs(480, seed=1)
    prompts = world.World(1).prompts(128, "eval")
    cfg = dpo.DPOConfig(steps=30, batch_size=16, lr=3e-4, beta=1.0, reference="precomputed")
    h = dpo.train_dpo(m, tok, rows, cfg, ref_model=model.load(model.SFT)[0], eval_prompts=prompts)
    before, after = h.eval[0], h.eval[-1]
    assert before["kl"] == pytest.approx(0.0, abs=1e-6)
    assert after["total"] > before["total"] + 0.05
    assert 0.0 < after["kl"] < 10.0
    assert h.train[-1]["rewards/accuracies"] > 0.6


def test_world_pairs_mix_onpolicy_and_offpolicy_pairs():
    rows = pipeline.world_pairs(1000, seed=3)
    assert len(rows) == 1000 and rows == pipeline.world_pairs(1000, seed=3)
    sources = {r["source"] for r in rows}
    assert sources == {"model", "demonstrator"}
    assert {r["family"] for r in rows} == set(world.ALIGNMENT_FAMILIES)
    assert len(pipeline.world_pairs(100, seed=3)) == 100


def test_align_command_prints_the_table_and_writes_json(tmp_path, capsys):
    from dpolab import cli
    out = tmp_path / "align.json"
    assert cli.main(["align", "--steps", "3", "--eval-prompts", "16", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for side in ("before", "after"):
        assert set(result[side]) >= {"total", *world.AXES}
    assert math.isfinite(result["kl"]) and result["seconds"] > 0
    assert result["pairs"] == 3 * pipeline.DEFAULTS.batch_size
    printed = capsys.readouterr().out
    assert "change [95% CI]" in printed and "KL(policy || SFT)" in printed
    change = result["ci"]["total"]["change"]
    assert change["lo"] <= change["mean"] <= change["hi"]
    assert change["mean"] == pytest.approx(result["after"]["total"] - result["before"]["total"])
