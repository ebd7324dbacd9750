"""The reward model: Bradley–Terry loss, save/load, it learns the gold preferences."""

import math

import pandas as pd
import pytest
import torch

from dpolab import model, pairs, worldprefs
from dpolab import reward_model as RM


def test_bt_loss_is_the_negative_log_likelihood_of_the_labels():
    r_c = torch.tensor([2.0, -1.0, 0.5, 0.0])
    r_r = torch.tensor([1.0, 1.0, 0.5, -3.0])
    expected = sum(-math.log(1 / (1 + math.exp(-(c - r)))) for c, r in
                   zip(r_c.tolist(), r_r.tolist(), strict=True)) / 4
    assert RM.bt_loss(r_c, r_r).item() == pytest.approx(expected, abs=1e-6)
    # Only differences matter: a shared offset changes nothing.
    assert RM.bt_loss(r_c + 7, r_r + 7).item() == pytest.approx(expected, abs=1e-5)
    assert RM.bt_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(math.log(2))
    p = RM.preference_probability(r_c, r_r)
    assert torch.allclose(p + RM.preference_probability(r_r, r_c), torch.ones(4))


def test_bt_loss_gradient_is_sigmoid_of_the_wrong_margin():
    r_c = torch.tensor([0.3, -2.0], requires_grad=True)
    r_r = torch.tensor([0.0, 1.0])
    RM.bt_loss(r_c, r_r).backward()
    assert torch.allclose(r_c.grad, -torch.sigmoid(r_r - r_c.detach()) / 2)


@pytest.fixture(scope="module")
def fresh():
    return RM.from_sft(model.SFT, seed=0)


def test_from_sft_has_a_scalar_head_on_the_sft_trunk(fresh):
    rm, tok = fresh
    sft, _ = model.load(model.SFT)
    assert rm.score.weight.shape == (1, sft.config.hidden_size)
    assert torch.equal(rm.base_model.embed_tokens.weight, sft.model.embed_tokens.weight)
    assert rm.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    # The head is seeded.
    assert torch.equal(RM.from_sft(model.SFT, seed=0)[0].score.weight, rm.score.weight)


def test_reward_is_read_at_the_last_token_whatever_the_padding(fresh):
    rm, tok = fresh
    ex = pairs.encode_pair(tok, "What is 2 plus 3?", "5.", "The answer is 5, obviously.")
    batch = pairs.collate_pairs([ex], tok.pad_token_id)
    r_c, r_r = RM.pair_rewards(rm, batch)
    alone = RM.rewards(rm, tok, ["What is 2 plus 3?"], ["5."])
    assert r_c.item() == pytest.approx(alone.item(), abs=1e-5)  # chosen row is right-padded


def test_save_load_round_trip(fresh, tmp_path):
    rm, tok = fresh
    prompts = ["What is 2 plus 3?", "Name three fruits."]
    responses = ["5.", "Figs, limes and dates."]
    before = RM.rewards(rm, tok, prompts, responses)
    RM.save(rm, tok, tmp_path / "rm")
    loaded, tok2 = RM.load(tmp_path / "rm")
    assert (tmp_path / "rm" / "model.safetensors").exists()
    assert torch.allclose(RM.rewards(loaded, tok2, prompts, responses), before, atol=1e-6)


def test_bad_row_is_named():
    rm, tok = RM.from_sft(model.SFT)
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 40
    rows[3] = {"prompt": "p", "chosen": None, "rejected": "b"}
    with pytest.raises(ValueError, match=r"row 3: field 'chosen' must be a string"):
        RM.train_reward_model(rm, tok, rows)


def test_calibration_counts_both_orders_and_most_wrong_orients_by_gold():
    scored = pd.DataFrame({"prompt": ["a", "b", "c"], "chosen": ["x", "y", "z"],
                           "rejected": ["u", "v", "w"], "r_chosen": [2.0, 0.0, 1.0],
                           "r_rejected": [0.0, 0.0, 3.0], "gold_chosen": [1.0, 0.5, 1.0],
                           "gold_rejected": [0.0, 0.5, 0.0]})
    scored["p_model"] = torch.sigmoid(torch.tensor(scored.r_chosen - scored.r_rejected)).numpy()
    table = RM.calibration(scored, bins=4)
    # Both orders of 3 pairs: p = 0.88, 0.5, 0.12 with outcome 1, and 0.12, 0.5, 0.88 with 0.
    assert table.pairs.tolist() == [2, 2, 2]
    top = table.iloc[-1]  # pair a agreed with the label at 0.88, pair c reversed disagreed
    assert top.predicted == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert top.empirical == 0.5
    acc = RM.accuracy(scored)
    assert acc == {"annotators": pytest.approx(1 / 3), "gold": 0.5, "pairs": 3, "gold_ties": 1}
    worst = RM.most_wrong(scored, n=1).iloc[0]
    assert (worst.prompt, worst.better, worst.worse) == ("c", "z", "w")
    assert worst.p_wrong == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())


@pytest.mark.slow
def test_a_short_training_beats_chance_against_the_gold_judge():
    rm, tok = RM.from_sft(model.SFT)
    train = worldprefs.offpolicy_pairs(320, seed=0)
    held = worldprefs.offpolicy_pairs(200, seed=0, split="eval")
    before = RM.accuracy(RM.score_pairs(rm, tok, held))
    history = RM.train_reward_model(rm, tok, train, RM.RMConfig())
    after = RM.accuracy(RM.score_pairs(rm, tok, held))
    assert len(history.loss) == 10
    assert sum(history.loss[-3:]) / 3 < math.log(2)
    assert after["gold"] > 0.7 and after["gold"] > before["gold"] + 0.1
