"""The checks of notebook 07 accept the worked solutions, say "not done" for a stub and reject
typical wrong answers with the diagnosis meant for them."""

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from dpolab import dpo
from dpolab import model as models
from dpolab.exercises import nb07 as ex
from dpolab.solutions import nb07 as sol

IGNORE = -100


def blank(*args, **kwargs):
    return None


def assert_wrong(exercise, fn, why):
    v = exercise.verdict(fn)
    assert v.status == "wrong", v
    assert why in v.message, v.message


# --- sequence log-probs ---

def _picked(scores, labels, mask=True):
    picked = scores.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (labels != IGNORE)).sum(-1) if mask else picked.sum(-1)


def no_shift(logits, labels):
    return _picked(torch.log_softmax(logits.float(), -1), labels)


def no_mask(logits, labels):
    return _picked(torch.log_softmax(logits[:, :-1].float(), -1), labels[:, 1:], mask=False)


def mean(logits, labels):
    return sol.sequence_logps(logits, labels) / (labels[:, 1:] != IGNORE).sum(-1)


def raw_logits(logits, labels):
    return _picked(logits[:, :-1].float(), labels[:, 1:])


def softmax_only(logits, labels):
    return _picked(torch.softmax(logits[:, :-1].float(), -1), labels[:, 1:])


def bf16(logits, labels):
    return _picked(torch.log_softmax(logits[:, :-1], -1), labels[:, 1:])


@pytest.mark.parametrize(("fn", "why"), [
    (no_shift, "off by one token: check the shift between logits and labels"),
    (no_mask, "summed over prompt tokens"),
    (mean, "mean over the response tokens"),
    (raw_logits, "raw logits"),
    (softmax_only, "probabilities (softmax)"),
    (bf16, "not in fp32"),
])
def test_sequence_logps_wrong(fn, why):
    assert_wrong(ex.sequence_logps, fn, why)


def test_sequence_logps_equals_package():
    logits, labels = torch.randn(4, 10, 17), torch.randint(0, 17, (4, 10))
    labels[:, :3] = IGNORE
    from dpolab.logps import sequence_logps
    assert torch.allclose(sol.sequence_logps(logits, labels), sequence_logps(logits, labels))


# --- the DPO loss ---

def _rewards(c, r, rc, rr, beta):
    return beta * (c - rc), beta * (r - rr)


def no_reference(c, r, rc, rr, beta):
    losses = -F.logsigmoid(beta * (c - r))
    return losses, (beta * c).detach(), (beta * r).detach()


def flipped(c, r, rc, rr, beta):
    wc, wr = _rewards(c, r, rc, rr, beta)
    return -F.logsigmoid(wr - wc), wc.detach(), wr.detach()


def no_beta(c, r, rc, rr, beta):
    wc, wr = _rewards(c, r, rc, rr, 1.0)
    return -F.logsigmoid(wc - wr), (beta * wc).detach(), (beta * wr).detach()


def not_detached(c, r, rc, rr, beta):
    wc, wr = _rewards(c, r, rc, rr, beta)
    return -F.logsigmoid(wc - wr), wc, wr


def unstable(c, r, rc, rr, beta):
    wc, wr = _rewards(c, r, rc, rr, beta)
    return -torch.log(torch.sigmoid(wc - wr)), wc.detach(), wr.detach()


def batch_mean(c, r, rc, rr, beta):
    losses, wc, wr = sol.dpo_loss(c, r, rc, rr, beta)
    return losses.mean(), wc, wr


def rewards_without_beta(c, r, rc, rr, beta):
    losses, wc, wr = sol.dpo_loss(c, r, rc, rr, beta)
    return losses, wc / beta, wr / beta


@pytest.mark.parametrize(("fn", "why"), [
    (no_reference, "the loss is not ln 2 at step 0"),
    (flipped, "the sign is flipped"),
    (no_beta, "β is missing"),
    (not_detached, "detach the rewards"),
    (unstable, "log(sigmoid(x)) underflows"),
    (batch_mean, "one entry per pair"),
    (rewards_without_beta, "the rewards need β"),
])
def test_dpo_loss_wrong(fn, why):
    assert_wrong(ex.dpo_loss, fn, why)


# --- the training loop ---

class Uniform(torch.nn.Module):
    """A "reference" that is not the policy's starting point: uniform next-token logits."""

    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab_size))


def wrong_reference(policy, reference, examples, cfg, pad_id):
    return sol.dpo_loop(policy, Uniform(policy.config.vocab_size), examples, cfg, pad_id)


def ties_count(policy, reference, examples, cfg, pad_id):
    rows = sol.dpo_loop(policy, reference, examples, cfg, pad_id)
    rows[0]["rewards/accuracies"] = 1.0  # what >= gives where every reward is 0
    return rows


def margins_wrong(policy, reference, examples, cfg, pad_id):
    rows = sol.dpo_loop(policy, reference, examples, cfg, pad_id)
    for row in rows:
        row["rewards/margins"] = row["rewards/chosen"] + row["rewards/rejected"]
    return rows


def with_metrics(**flags):
    def loop(policy, reference, examples, cfg, pad_id):
        return ex._variant(policy, reference, examples, cfg, pad_id, **flags)
    return loop


@pytest.mark.parametrize(("fn", "why"), [
    (wrong_reference, "not ln 2"),
    (with_metrics(frozen_reference=False), "the reference moves with the policy"),
    (ties_count, "use > rather than >="),
    (with_metrics(zero_grad=False), "call optimizer.zero_grad()"),
    (with_metrics(clip=False), "the gradient is not clipped"),
    (with_metrics(schedule=False), "the learning rate never decays"),
    (margins_wrong, "rewards/margins"),
])
def test_dpo_loop_wrong(fn, why):
    assert_wrong(ex.dpo_loop, fn, why)


def test_dpo_loop_matches_train_dpo():
    """The worked loop is ``train_dpo`` step for step (same data, seed, schedule, clipping)."""
    start, examples, pad_id = ex._loop_setting()
    policy, theirs_model = (copy.deepcopy(start) for _ in range(2))
    reference = copy.deepcopy(start).eval().requires_grad_(False)
    mine = sol.dpo_loop(policy, reference, examples, ex.CHECK, pad_id)

    class Tok:
        pad_token_id = pad_id
        bos_token_id = models.load(models.SFT)[1].bos_token_id

    theirs = dpo.train_dpo(theirs_model, Tok(), examples, ex.CHECK, ref_model=reference).train
    for a, b in zip(mine, theirs, strict=True):
        for m in dpo.METRICS:
            assert abs(a[m] - b[m]) < 1e-6, (m, a[m], b[m])
