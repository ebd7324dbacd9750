"""Checks of notebook 02: the SFT label row and the SFT loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dpolab.exercises import Exercise, Wrong, close
from dpolab.solutions import nb02 as sol

IGNORE = sol.IGNORE

# Two examples in the shape chat.batch builds: a prompt (bos, user turn, assistant header)
# and a response ending in eos (id 2), padded with <pad> (id 0) to the batch width.
_ROWS = [([1, 4, 205, 61, 296, 6, 205, 5, 205], [25, 297, 338, 20, 2]),
         ([1, 4, 205, 88, 6, 205, 5, 205], [40, 41, 42, 43, 44, 45, 20, 2])]
_WIDTH = 17
_PAD = 0


def _diagnose_labels(fn: Callable) -> None:
    for p, r in _ROWS:
        want = sol.sft_labels(p, r, _WIDTH)
        got = fn(list(p), list(r), _WIDTH)
        got = [int(t) for t in (got.tolist() if isinstance(got, torch.Tensor) else got)]
        if len(got) != _WIDTH:
            raise Wrong(f"the row has {len(got)} labels, the batch is {_WIDTH} wide: pad the "
                        "labels to `width` like the input ids")
        if got == want:
            continue
        n, end = len(p), len(p) + len(r)
        if got[:n] == list(p):
            raise Wrong("you labelled the prompt: it is given, not generated, so its labels "
                        "must be -100 and only the response is trained on")
        if got[n - 1:end - 1] == list(r):
            raise Wrong("your labels are shifted one token to the left: put each response id "
                        "at its own position; the model shifts labels against logits itself")
        if got[:n] != [IGNORE] * n:
            raise Wrong("the prompt positions must all be -100")
        if got[n:end] == list(r[:-1]) + [IGNORE]:
            raise Wrong("the response's last label, its </s>, is missing: without it the model "
                        "is never trained to end its turn")
        if got[n:end] == list(r) and got[end:] != [IGNORE] * (_WIDTH - end):
            raise Wrong(f"the padding carries labels ({got[end:][:3]}...): padding is not text, "
                        "mask it with -100")
        raise Wrong(f"the labels differ from -100 on the prompt, the response ids, -100 on the "
                    f"padding: got {got}")


def _shifted(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


def _loss_variants(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    lg, lb = logits[:, :-1], labels[:, 1:]
    per_token = F.cross_entropy(lg.flatten(0, 1), lb.flatten(), ignore_index=IGNORE,
                                reduction="none").view(lb.shape)
    mask = lb != IGNORE
    return {
        "no shift": _shifted(logits, labels),
        "shift the wrong way": _shifted(logits[:, 1:], labels[:, :-1]),
        "all positions": per_token.mean(),
        "sum": per_token.sum(),
        "row means": (per_token.sum(-1) / mask.sum(-1)).mean(),
    }


def _diagnose_loss(fn: Callable) -> None:
    gen = torch.Generator().manual_seed(0)
    # rows of different response lengths, so a per-row mean differs from a per-token mean
    labels = torch.full((3, 9), IGNORE)
    labels[0, 3:9] = torch.randint(3, 11, (6,), generator=gen)
    labels[1, 5:7] = torch.randint(3, 11, (2,), generator=gen)
    labels[2, 2:6] = torch.randint(3, 11, (4,), generator=gen)
    logits = 2 * torch.randn(3, 9, 11, generator=gen)
    got = fn(logits.clone(), labels.clone())
    if not isinstance(got, torch.Tensor):
        got = torch.as_tensor(got)
    if got.numel() != 1:
        raise Wrong(f"the loss must be one number for the batch, got shape {tuple(got.shape)}")
    got = got.reshape(())
    if close(got, sol.sft_loss(logits, labels)):
        return
    v = _loss_variants(logits, labels)
    if close(got, v["no shift"]):
        raise Wrong("your loss is off by one token: the logits at position t predict the "
                    "token at t + 1; drop the last logit and the first label")
    if close(got, v["shift the wrong way"]):
        raise Wrong("you shifted the wrong way: keep logits[:, :-1] and labels[:, 1:]")
    if close(got, v["all positions"]):
        raise Wrong("you averaged over every position, the masked ones (0 loss) included: "
                    "the mean is over the labelled tokens only")
    if close(got, v["sum"]):
        raise Wrong("you returned the sum: the SFT loss is the mean over labelled tokens")
    if close(got, v["row means"]):
        raise Wrong("you averaged each row, then the rows: the loss is the mean over all "
                    "labelled tokens of the batch at once, as transformers computes it")
    raise Wrong(f"loss {got.item():.4f}, expected {sol.sft_loss(logits, labels).item():.4f}: "
                "check the shift, the -100 mask and the mean over labelled tokens")


sft_labels = Exercise("sft_labels", _diagnose_labels, sol.sft_labels,
                      "correct: the response only is labelled, eos included.")
sft_loss = Exercise("sft_loss", _diagnose_loss, sol.sft_loss,
                    "correct: shifted, masked, mean over labelled tokens.")
