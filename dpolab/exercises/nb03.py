"""Checks of notebook 03: reading the reward at the last token, and the Bradley–Terry loss."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dpolab.exercises import Exercise, Wrong, close
from dpolab.solutions import nb03 as sol


def _as_tensor(x: object) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def _diagnose_last_token(fn: Callable) -> None:
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(4, 9, generator=gen)
    lengths = torch.tensor([5, 8, 3, 6])  # no row fills the batch: padding at every row's end
    mask = (torch.arange(9) < lengths[:, None]).long()
    got = _as_tensor(fn(values.clone(), mask.clone()))
    want = sol.last_token_reward(values, mask)
    if got.shape != want.shape:
        raise Wrong(f"one reward per sequence: expected shape {tuple(want.shape)}, got "
                    f"{tuple(got.shape)}")
    if close(got, want):
        full = torch.ones(2, 9, dtype=torch.long)
        full[1, 4:] = 0
        if not close(_as_tensor(fn(values[:2].clone(), full)),
                     sol.last_token_reward(values[:2], full)):
            raise Wrong("wrong on a row with no padding: its last real token is the last column")
        return
    rows = torch.arange(4)
    if close(got, values[:, -1]):
        raise Wrong("you read the last column, which is padding in every row shorter than the "
                    "batch: read each row at its own last real token, its </s>")
    if close(got, values[rows, lengths]):
        raise Wrong("one position too far: attention_mask.sum() is the length, the first pad "
                    "position; the last real token is one before it")
    if close(got, values[:, 0]):
        raise Wrong("you read the first token, <s>: it has seen neither prompt nor response")
    if close(got, (values * mask).sum(-1) / mask.sum(-1)):
        raise Wrong("you averaged over the positions: the reward is read at one position, the "
                    "last, whose hidden state has read the whole response")
    raise Wrong("the rewards differ from the head's output at each row's last real token: "
                "find it from the attention mask")


def _diagnose_bt(fn: Callable) -> None:
    gen = torch.Generator().manual_seed(0)
    at_tie = _as_tensor(fn(torch.zeros(4), torch.zeros(4))).reshape(-1)
    if at_tie.numel() != 1:
        raise Wrong(f"the loss must be one number for the batch, got shape {tuple(at_tie.shape)}")
    for scale in (1.0, 100.0):
        r_c = scale * torch.randn(16, generator=gen)
        r_r = scale * torch.randn(16, generator=gen)
        got = _as_tensor(fn(r_c.clone(), r_r.clone())).reshape(())
        want = sol.bt_loss(r_c, r_r)
        if close(got, want):
            continue
        if not torch.isfinite(got):
            raise Wrong(f"the loss is {got.item()} at large margins: log(sigmoid(x)) underflows "
                        "to log 0; use torch.nn.functional.logsigmoid")
        if close(got, sol.bt_loss(r_r, r_c)):
            raise Wrong("the sign is flipped: the loss must fall as the chosen reward rises "
                        "above the rejected one")
        if close(got, -F.logsigmoid(r_c - r_r).sum()):
            raise Wrong("you returned the sum over the pairs: the loss is their mean")
        if close(got, -(r_c - r_r).mean()):
            raise Wrong("no sigmoid: -mean(r_chosen - r_rejected) has no minimum, it can be "
                        "lowered forever by stretching the rewards")
        if not math.isclose(at_tie.item(), math.log(2), abs_tol=1e-5):
            raise Wrong(f"with equal rewards the loss is {at_tie.item():.4f}, not ln 2 = 0.6931: "
                        "a model that cannot tell the two apart gives each label probability 1/2")
        raise Wrong(f"loss {got.item():.4f}, expected {want.item():.4f}: the loss is the mean "
                    "of -log sigmoid(r_chosen - r_rejected)")


last_token_reward = Exercise("last_token_reward", _diagnose_last_token, sol.last_token_reward,
                             "correct: each sequence is scored at its own </s>.")
bt_loss = Exercise("bt_loss", _diagnose_bt, sol.bt_loss,
                   "correct: -log σ(r_chosen − r_rejected), averaged, exact at large margins.")
