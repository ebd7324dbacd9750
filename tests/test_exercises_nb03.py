"""Notebook 03's checks accept the worked solutions and name the typical mistakes."""

import torch
import torch.nn.functional as F

from dpolab.exercises import nb03 as ex
from dpolab.solutions import nb03 as sol


def test_reading_the_padding_is_rejected():
    v = ex.last_token_reward.verdict(lambda values, mask: values[:, -1])
    assert v.status == "wrong" and "you read the last column" in v.message


def test_one_past_the_last_token_is_rejected():
    def one_past(values, mask):
        return values[torch.arange(len(values)), mask.sum(-1).clamp(max=values.shape[1] - 1)]

    assert "one position too far" in ex.last_token_reward.verdict(one_past).message


def test_first_token_and_mean_are_rejected():
    assert "the first token" in ex.last_token_reward.verdict(lambda v, m: v[:, 0]).message
    mean = ex.last_token_reward.verdict(lambda v, m: (v * m).sum(-1) / m.sum(-1))
    assert "averaged over the positions" in mean.message


def test_solution_reads_what_the_sequence_classifier_reads():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    rm = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=0))
    ids = torch.randint(3, 32, (3, 7))
    mask = torch.ones_like(ids)
    ids[0, 4:], mask[0, 4:] = 0, 0
    ids[2, 6:], mask[2, 6:] = 0, 0
    with torch.no_grad():
        values = rm.score(rm.model(input_ids=ids, attention_mask=mask).last_hidden_state)[..., 0]
        want = rm(input_ids=ids, attention_mask=mask).logits[:, 0]
    assert torch.allclose(sol.last_token_reward(values, mask), want, atol=1e-6)


def test_log_of_sigmoid_is_rejected_for_underflow():
    v = ex.bt_loss.verdict(lambda c, r: -torch.log(torch.sigmoid(c - r)).mean())
    assert v.status == "wrong" and "logsigmoid" in v.message


def test_flipped_sign_sum_and_no_sigmoid_are_rejected():
    assert "sign is flipped" in ex.bt_loss.verdict(lambda c, r: -F.logsigmoid(r - c).mean()).message
    assert "the sum over the pairs" in ex.bt_loss.verdict(
        lambda c, r: -F.logsigmoid(c - r).sum()).message
    assert "no sigmoid" in ex.bt_loss.verdict(lambda c, r: -(c - r).mean()).message


def test_other_losses_fall_back_to_the_ln2_check():
    v = ex.bt_loss.verdict(lambda c, r: F.relu(1 - (c - r)).mean())
    assert "not ln 2" in v.message
