"""SFT (masking, eos, determinism, it learns the format) and evaluation (sampling, KL)."""

import pytest
import torch

from dpolab import chat, evaluate, model, sft
from dpolab.logps import IGNORE
from dpolab.world import World


@pytest.fixture(scope="module")
def base():
    return model.load(model.BASE)


def test_labels_cover_the_response_and_its_eos_only(base):
    _, tok = base
    p, r = sft.encode(tok, "What is 2 plus 3?", "5.")
    b = chat.batch([(p, r), (p, r + r)], tok.pad_token_id)
    labels = b["labels"][0]
    assert (labels[: len(p)] == IGNORE).all()
    assert tok.decode(labels[labels != IGNORE]) == "5.</s>"
    # Padding is its own token, masked, and never an eos label.
    assert (b["input_ids"][0, len(p) + len(r):] == tok.pad_token_id).all()
    assert (b["attention_mask"][0, len(p) + len(r):] == 0).all()
    assert (b["labels"] == tok.eos_token_id).sum() == 3


def test_demonstrations_are_deterministic():
    assert sft.demonstrations(50, seed=3) == sft.demonstrations(50, seed=3)
    assert sft.demonstrations(50, seed=3) != sft.demonstrations(50, seed=4)


def test_same_seed_same_sft_loss_history():
    cfg = sft.SFTConfig(n_examples=96, batch_size=16, epochs=1)
    examples = sft.demonstrations(cfg.n_examples)
    runs = []
    for _ in range(2):
        m, tok = model.load(model.BASE)
        runs.append(sft.train_sft(m, tok, examples, cfg).loss)
    assert runs[0] == runs[1] and len(runs[0]) == 6


def test_sft_teaches_format_and_stopping():
    """A short SFT run from the base model makes it stop and score higher."""
    m, tok = model.load(model.BASE)
    prompts = World(5).prompts(64, "eval")
    before = evaluate.gold(evaluate.sample(m, tok, prompts))
    cfg = sft.SFTConfig(n_examples=1200, epochs=1)
    sft.train_sft(m, tok, sft.demonstrations(cfg.n_examples), cfg)
    after = evaluate.gold(evaluate.sample(m, tok, prompts))
    assert after["stop_rate"] > before["stop_rate"] + 0.3
    assert after["total"] > before["total"] + 0.1


def test_sampling_is_seeded_and_greedy_is_deterministic():
    m, tok = model.load(model.SFT)
    prompts = World(0).prompts(8, "eval")
    a = evaluate.sample(m, tok, prompts, seed=1)
    assert [g.response for g in a] == [g.response for g in evaluate.sample(m, tok, prompts, seed=1)]
    g1 = evaluate.sample(m, tok, prompts, temperature=0)
    g2 = evaluate.sample(m, tok, prompts, temperature=0, batch_size=3)
    assert [g.response for g in g1] == [g.response for g in g2]  # padding does not leak


def test_finished_flag_and_response_ids():
    m, tok = model.load(model.SFT)
    gens = evaluate.sample(m, tok, World(0).prompts(16, "eval"), max_new_tokens=48)
    for g in gens:
        assert g.finished == (g.response_ids[-1] == tok.eos_token_id)
        assert tok.eos_token_id not in g.response_ids[:-1]
    cut = evaluate.sample(m, tok, World(0).prompts(4, "eval"), max_new_tokens=2)
    assert not any(g.finished for g in cut)


def test_kl_to_itself_is_zero_and_to_base_positive():
    m, tok = model.load(model.SFT)
    ref, _ = model.load(model.SFT)
    base, _ = model.load(model.BASE)
    gens = evaluate.sample(m, tok, World(0).prompts(32, "eval"))
    assert evaluate.kl_to_reference(m, ref, gens, tok.pad_token_id) == pytest.approx(0, abs=1e-5)
    assert evaluate.kl_to_reference(m, base, gens, tok.pad_token_id) > 1.0


def test_response_logps_match_a_manual_sum():
    m, tok = model.load(model.SFT)
    g = evaluate.sample(m, tok, ["What is 2 plus 3?"])[0]
    ids = torch.tensor([g.prompt_ids + g.response_ids])
    logp = torch.log_softmax(m(ids).logits[0, :-1].float(), -1)
    manual = sum(logp[len(g.prompt_ids) - 1 + t, tok_id].item()
                 for t, tok_id in enumerate(g.response_ids))
    got = evaluate.response_logps(m, [g], tok.pad_token_id).item()
    assert got == pytest.approx(manual, abs=1e-4)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sampling_ignores_the_models_generation_config(base, temperature):
    """A checkpoint's decoding settings (here a repetition penalty, an n-gram ban, a minimum
    length, top-k and top-p) do not leak into ``sample``: it draws the same tokens as from
    a model with a blank generation_config, greedy or at temperature 1. The settings do
    change ``generate`` when left to it, so the test can fail."""
    m, tok = base
    prompts = World(0).prompts(8, "eval")
    clean = evaluate.sample(m, tok, prompts, max_new_tokens=16, temperature=temperature)
    own = m.generation_config
    try:
        m.generation_config = own.__class__(**own.to_dict())
        m.generation_config.update(repetition_penalty=3.0, no_repeat_ngram_size=2, min_length=30,
                                   top_k=2, top_p=0.5, temperature=0.3)
        biased = evaluate.sample(m, tok, prompts, max_new_tokens=16, temperature=temperature)
        ids = torch.tensor([clean[0].prompt_ids])
        inherited = m.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=0)
    finally:
        m.generation_config = own
    assert [g.response_ids for g in biased] == [g.response_ids for g in clean]
    plain = m.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=0)
    assert not torch.equal(inherited, plain)


def test_sampling_refuses_a_setting_it_cannot_neutralise(base):
    m, tok = base
    own = m.generation_config
    try:
        m.generation_config = own.__class__(**own.to_dict())
        m.generation_config.suppress_tokens = [5]
        with pytest.raises(ValueError, match=r"generation_config sets \['suppress_tokens'\]"):
            evaluate.sample(m, tok, ["Hi"], max_new_tokens=4)
    finally:
        m.generation_config = own
