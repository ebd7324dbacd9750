"""Checks of notebook 06, preference data: the label mask of a padded batch, and a tie
filter. Each compares the learner's function with the worked solution
(``dpolab.solutions.nb06``) and, where they differ, with the usual mistakes."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from dpolab.exercises import Exercise, Wrong
from dpolab.solutions import nb06 as solutions

__all__ = ["drop_ties", "make_labels"]

IGNORE = solutions.IGNORE
BOS, EOS, PAD = 1, 2, 0

# (prompt ids, response ids + eos): three rows of different lengths, as a collator gets them.
ROWS = [([BOS, 5, 6, 7, 4], [11, 12, 13, EOS]),
        ([BOS, 5, 8, 4], [14, EOS]),
        ([BOS, 5, 9, 9, 9, 4], [15, 16, 17, 18, 19, EOS])]


def _variant(rows: list[tuple[list[int], list[int]]], pad_id: int,
             cell: Callable[[int, int, int, int], int]) -> torch.Tensor:
    """Labels where ``cell(t, token, n_prompt, n_real)`` says what position ``t`` holds."""
    width = max(len(p) + len(r) for p, r in rows)
    out = torch.full((len(rows), width), IGNORE)
    for i, (p, r) in enumerate(rows):
        ids = p + r + [pad_id] * (width - len(p) - len(r))
        for t, tok in enumerate(ids):
            out[i, t] = cell(t, tok, len(p), len(p) + len(r))
    return out


def _labels(fn: Callable, rows: list[tuple[list[int], list[int]]], pad_id: int) -> torch.Tensor:
    got = fn(copy.deepcopy(rows), pad_id)
    return torch.as_tensor(got if isinstance(got, torch.Tensor) else list(got)).long()


def _diagnose_make_labels(fn: Callable) -> None:
    for pad_id in (PAD, EOS):  # a tokenizer with its own pad, then one whose pad is its eos
        want = solutions.make_labels(ROWS, pad_id)
        got = _labels(fn, ROWS, pad_id)
        if torch.equal(got, want):
            continue
        if got.shape != want.shape:
            raise Wrong(f"expected labels of shape {tuple(want.shape)} (rows, longest prompt + "
                        f"response); got {tuple(got.shape)}")
        mistakes = [  # by id first: with pad == eos it also masks the eos
            (lambda t, tok, n_p, n, pad=pad_id: tok if n_p <= t and tok != pad else IGNORE,
             "you masked by comparing with pad_id: this tokenizer's pad is its eos, so the "
             "eos disappears from the labels too. Mask by position (each row's length), not "
             "by token id"),
            (lambda t, tok, n_p, n: tok if n_p <= t < n - 1 else IGNORE,
             "you masked the eos: the model must learn to end its response, so the eos is "
             "part of the response and stays in the labels"),
            (lambda t, tok, n_p, n: tok if n_p + 1 <= t < n else IGNORE,
             "off by one at the prompt/response boundary: the first response token is "
             "masked. The response starts at position len(prompt_ids)"),
            (lambda t, tok, n_p, n: tok if n_p - 1 <= t < n else IGNORE,
             "off by one at the prompt/response boundary: the last prompt token is scored. "
             "The response starts at position len(prompt_ids)"),
            (lambda t, tok, n_p, n: tok if t >= n_p else IGNORE,
             "the padding is not masked: pad positions must be -100, or the loss learns to "
             "predict padding"),
            (lambda t, tok, n_p, n: tok if t < n else IGNORE,
             "the prompt tokens are in your labels: mask them (-100), the loss and the "
             "log-probs cover the response only"),
            (lambda t, tok, n_p, n, pad=pad_id: IGNORE if tok == pad else tok,
             "the prompt tokens are in your labels, and you masked by token id: mask by "
             "position, -100 on the prompt and on the padding"),
        ]
        for cell, why in mistakes:
            if torch.equal(got, _variant(ROWS, pad_id, cell)):
                raise Wrong(why)
        shifted = _variant(ROWS, pad_id, lambda t, tok, n_p, n: tok if n_p <= t < n else IGNORE)
        shifted = shifted[:, 1:]
        if torch.equal(got[:, :-1], shifted):
            raise Wrong("your labels are shifted by one position: keep them aligned with "
                        "input_ids (label t is token t); the causal shift is done later, in "
                        "the log-probs")
        row = int((got != want).any(1).nonzero()[0])
        raise Wrong(f"row {row} differs from the expected labels: got {got[row].tolist()}, "
                    f"expected -100 on the prompt and padding and the response ids (eos "
                    f"included) in between")


def _pair(prompt: str, chosen: str, rejected: str, gc: float, gr: float) -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "gold_chosen": gc,
            "gold_rejected": gr}


ROWS_GOLD = [
    _pair("Compute 2 plus 2.", "2 plus 2 is 4.", "5.", 1.0, 0.0),
    _pair("Say hi.", "Hi!", "Hello there.", 1.0, 1.0),  # a tie between different texts
    _pair("Name a color.", "Red.", "Red. Shut up.", 1.0, 0.5),
    _pair("Compute 3 plus 1.", "4.", "4.", 0.5, 0.5),  # a tie with identical texts
    _pair("Ben lost his ring.", "Sorry, Ben.", "Oh no, Ben!", 1.0, 1.0),  # another tie
    _pair("Say bye.", "Whatever, bye.", "Goodbye!", 0.5, 1.0),  # label against the judge
    _pair("List two fruits.", "Apple, pear.", "Apple.", 1.0, 0.0),
]


def _diagnose_drop_ties(fn: Callable) -> None:
    rows = copy.deepcopy(ROWS_GOLD)
    out = fn(rows)
    if rows != ROWS_GOLD:
        raise Wrong("your function changed the rows it was given: build a new list instead")
    if not (isinstance(out, tuple) and len(out) == 2):
        raise Wrong("expected a tuple (kept rows, number dropped)")
    kept, dropped = list(out[0]), out[1]
    want, n_ties = solutions.drop_ties(ROWS_GOLD)
    if kept != want:
        if kept == [r for r in ROWS_GOLD if r["chosen"] != r["rejected"]]:
            raise Wrong("you compared the texts: a tie is two different responses with the "
                        "same gold score; compare row['gold_chosen'] with row['gold_rejected']")
        if kept == ROWS_GOLD:
            raise Wrong("nothing was dropped: a tie is a pair whose gold scores are equal "
                        "(row['gold_chosen'] == row['gold_rejected'])")
        if kept == [r for r in ROWS_GOLD if r["gold_chosen"] == r["gold_rejected"]]:
            raise Wrong("you kept the ties and dropped the rest: keep the pairs whose gold "
                        "scores differ")
        if kept == [r for r in ROWS_GOLD if r["gold_chosen"] > r["gold_rejected"]]:
            raise Wrong("you also dropped the pairs labelled against the gold judge (chosen "
                        "scored lower): that is label noise, another filter; a tie is equal "
                        "scores only")
        if sorted(map(str, kept)) == sorted(map(str, want)):
            raise Wrong("the right rows, in another order: keep the rows in their order")
        raise Wrong(f"kept {len(kept)} rows, expected the {len(want)} whose gold scores "
                    "differ")
    if dropped == 0:
        raise Wrong("you did not count what you dropped: return the number of rows removed "
                    "(every filter reports its drops)")
    if dropped == len(want):
        raise Wrong("you returned the number of rows kept; return the number dropped")
    if dropped != n_ties:
        raise Wrong(f"the count is wrong: {n_ties} of {len(ROWS_GOLD)} rows are ties, you "
                    f"report {dropped}")


make_labels = Exercise("the label mask", _diagnose_make_labels, solutions.make_labels)
drop_ties = Exercise("the tie filter", _diagnose_drop_ties, solutions.drop_ties)
