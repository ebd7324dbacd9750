"""Notebook 02's checks accept the worked solutions and name the typical mistakes."""

import torch
import torch.nn.functional as F

from dpolab.exercises import nb02 as ex
from dpolab.solutions import nb02 as sol

IGNORE = -100


def test_labels_on_the_prompt_are_rejected():
    def labels_all(p, r, width):
        return list(p) + list(r) + [IGNORE] * (width - len(p) - len(r))

    v = ex.sft_labels.verdict(labels_all)
    assert v.status == "wrong" and "you labelled the prompt" in v.message


def test_labelled_padding_is_rejected():
    def pad_labelled(p, r, width):
        return [IGNORE] * len(p) + list(r) + [0] * (width - len(p) - len(r))

    assert "the padding carries labels" in ex.sft_labels.verdict(pad_labelled).message


def test_pre_shifted_labels_are_rejected():
    def shifted(p, r, width):
        return ([IGNORE] * (len(p) - 1) + list(r) + [IGNORE] * (width - len(p) - len(r) + 1))

    assert "shifted one token to the left" in ex.sft_labels.verdict(shifted).message


def test_missing_eos_label_is_rejected():
    def no_eos(p, r, width):
        return [IGNORE] * len(p) + list(r[:-1]) + [IGNORE] * (width - len(p) - len(r) + 1)

    assert "its </s>, is missing" in ex.sft_labels.verdict(no_eos).message


def test_unpadded_row_is_rejected():
    assert "pad the labels to `width`" in ex.sft_labels.verdict(
        lambda p, r, width: [IGNORE] * len(p) + list(r)).message


def _ce(logits, labels, **kw):
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, **kw)


def test_unshifted_loss_is_rejected():
    v = ex.sft_loss.verdict(lambda logits, labels: _ce(logits, labels))
    assert v.status == "wrong" and "off by one token" in v.message


def test_mean_over_masked_positions_is_rejected():
    def all_positions(logits, labels):
        per = _ce(logits[:, :-1], labels[:, 1:], reduction="none")
        return per.mean()

    assert "averaged over every position" in ex.sft_loss.verdict(all_positions).message


def test_sum_and_row_means_are_rejected():
    def summed(logits, labels):
        return _ce(logits[:, :-1], labels[:, 1:], reduction="sum")

    def row_means(logits, labels):
        lb = labels[:, 1:]
        per = _ce(logits[:, :-1], lb, reduction="none").view(lb.shape)
        return (per.sum(-1) / (lb != IGNORE).sum(-1)).mean()

    assert "you returned the sum" in ex.sft_loss.verdict(summed).message
    assert "averaged each row" in ex.sft_loss.verdict(row_means).message


def test_solution_matches_transformers_loss():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     num_key_value_heads=2))
    ids = torch.randint(3, 32, (2, 8))
    labels = ids.clone()
    labels[:, :3] = IGNORE
    labels[1, 6:] = IGNORE
    out = m(input_ids=ids, labels=labels)
    assert torch.allclose(sol.sft_loss(out.logits, labels), out.loss, atol=1e-5)
