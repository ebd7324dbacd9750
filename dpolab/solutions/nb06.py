"""Worked solutions of notebook 06, preference data.

- ``make_labels``: the labels of a right-padded batch, -100 on prompt and padding, the
  response ids (eos included) on the response, found by *position*, never by token id.
- ``drop_ties``: remove pairs whose gold scores are equal (their label is a coin flip) and
  count them.
"""

from __future__ import annotations

import torch

IGNORE = -100


def make_labels(rows: list[tuple[list[int], list[int]]], pad_id: int) -> torch.Tensor:
    """Labels of shape ``(len(rows), width)``, ``width`` the longest prompt + response.

    Row ``i`` is ``prompt + response`` right-padded with ``pad_id``; its labels are -100 on
    the ``len(prompt)`` prompt positions and on the padding after ``len(prompt) +
    len(response)``, and the response ids in between. The positions decide, not the ids:
    when ``pad_id`` is the eos id, a mask by id would remove every eos from the loss."""
    width = max(len(p) + len(r) for p, r in rows)
    labels = torch.full((len(rows), width), IGNORE)
    for i, (p, r) in enumerate(rows):
        labels[i, len(p):len(p) + len(r)] = torch.tensor(r)
    return labels


def drop_ties(rows: list[dict]) -> tuple[list[dict], int]:
    """The rows whose gold scores differ (``gold_chosen != gold_rejected``), in order, and
    how many rows were dropped. A tie is equal *scores* of two different responses: no
    labeler can do better than a coin flip on it."""
    kept = [r for r in rows if r["gold_chosen"] != r["gold_rejected"]]
    return kept, len(rows) - len(kept)
