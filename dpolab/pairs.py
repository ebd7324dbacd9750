"""Preference pairs as tensors: one prompt, a chosen and a rejected response.

``encode_pair`` tokenizes the prompt once (chat template applied once) and each response
with one trailing eos, so the prompt/response boundary is the same for chosen and
rejected. ``collate_pairs`` right-pads and stacks all chosen rows, then all rejected rows,
into one batch: one forward pass scores both halves of every pair.

Truncation, when asked for, keeps what carries the preference:

- ``max_prompt_length``: a longer prompt keeps its *end* (the last question and the
  assistant header the responses follow) and its bos; the tokens after bos are cut.
- ``max_length`` (prompt + response): a longer response keeps its *start*, like TRL's
  default ``truncation_mode="keep_start"``. A cut response loses its eos: the model is
  then trained on text that never ends, which is why ``encode_pairs`` reports every cut.
- A pair whose prompt leaves no room for a response cannot fit: it is dropped (and
  counted) or raises, per ``if_too_long``.
- A pair whose responses become the same tokens once cut (they differed only past the
  cut) carries no preference any more: ``encode_pairs`` drops it and counts it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from . import chat, preference
from .logps import IGNORE


class PairTooLongError(ValueError):
    """A pair whose prompt leaves no room for a response under ``max_length``."""


def _check_limits(max_length: int | None, max_prompt_length: int | None) -> None:
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    if max_prompt_length is not None and max_prompt_length < 2:
        raise ValueError(f"max_prompt_length must be at least 2, got {max_prompt_length}")
    if None not in (max_length, max_prompt_length) and max_prompt_length >= max_length:
        raise ValueError(f"max_prompt_length ({max_prompt_length}) must be smaller than "
                         f"max_length ({max_length}) to leave room for the responses")


def truncate(example: dict[str, list[int]], max_length: int | None = None,
             max_prompt_length: int | None = None, bos_id: int | None = None,
             ) -> dict[str, list[int]]:
    """The pair cut to the limits (see the module docstring); raises ``PairTooLongError``
    when the prompt leaves no room for a response."""
    _check_limits(max_length, max_prompt_length)
    p, c, r = example["prompt_ids"], example["chosen_ids"], example["rejected_ids"]
    if max_prompt_length is not None and len(p) > max_prompt_length:
        keep_bos = bos_id is not None and p[0] == bos_id
        p = p[:1] + p[len(p) - max_prompt_length + 1:] if keep_bos else p[-max_prompt_length:]
    if max_length is not None:
        room = max_length - len(p)
        if room < 1:
            raise PairTooLongError(f"the prompt has {len(p)} tokens, max_length is {max_length}: "
                                   f"no room for a response (set max_prompt_length)")
        c, r = c[:room], r[:room]
    return {"prompt_ids": p, "chosen_ids": c, "rejected_ids": r}


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict], chosen: str,
                rejected: str, max_length: int | None = None,
                max_prompt_length: int | None = None) -> dict[str, list[int]]:
    example = {"prompt_ids": chat.prompt_ids(tokenizer, prompt),
               "chosen_ids": chat.response_ids(tokenizer, chosen),
               "rejected_ids": chat.response_ids(tokenizer, rejected)}
    if max_length is None and max_prompt_length is None:
        return example
    return truncate(example, max_length, max_prompt_length, tokenizer.bos_token_id)


@dataclass
class TruncationReport:
    """What ``encode_pairs`` cut or dropped, in pairs and in tokens."""

    max_length: int | None
    max_prompt_length: int | None
    pairs: int = 0
    kept: int = 0
    dropped_too_long: int = 0
    dropped_identical: int = 0  # chosen and rejected identical once cut
    prompts_cut: int = 0
    chosen_cut: int = 0  # chosen responses cut short (they lost their eos)
    rejected_cut: int = 0
    tokens_cut: int = 0  # tokens removed from kept pairs (a prompt counts once)
    tokens_total: int = 0  # tokens of kept pairs before cutting

    def __str__(self) -> str:
        share = self.tokens_cut / self.tokens_total if self.tokens_total else 0.0
        return (f"pairs: {self.pairs}   kept: {self.kept}   dropped: {self.dropped_too_long} "
                f"cannot fit, {self.dropped_identical} identical once cut\n"
                f"max_prompt_length={self.max_prompt_length} (keeps the prompt's end): "
                f"{self.prompts_cut} prompts cut\n"
                f"max_length={self.max_length} (keeps the response's start, which loses its "
                f"eos): {self.chosen_cut} chosen and {self.rejected_cut} rejected responses cut\n"
                f"tokens removed: {self.tokens_cut} of {self.tokens_total} ({share:.1%})")


def _n_tokens(e: dict[str, list[int]]) -> int:
    return len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"])


def truncate_pairs(examples: Iterable[dict[str, list[int]]], max_length: int | None = None,
                   max_prompt_length: int | None = None, bos_id: int | None = None,
                   if_too_long: str = "drop",
                   ) -> tuple[list[dict[str, list[int]]], TruncationReport]:
    """``truncate`` every encoded pair and count what was cut; pairs that cannot fit are
    dropped and counted (``if_too_long="drop"``) or raise (``"raise"``), pairs identical
    once cut are dropped and counted."""
    if if_too_long not in ("drop", "raise"):
        raise ValueError(f"if_too_long must be 'drop' or 'raise', got {if_too_long!r}")
    _check_limits(max_length, max_prompt_length)
    report = TruncationReport(max_length, max_prompt_length)
    out = []
    for i, full in enumerate(examples):
        report.pairs += 1
        try:
            cut = truncate(full, max_length, max_prompt_length, bos_id)
        except PairTooLongError as e:
            if if_too_long == "raise":
                raise PairTooLongError(f"row {i}: {e}") from None
            report.dropped_too_long += 1
            continue
        if cut["chosen_ids"] == cut["rejected_ids"]:
            report.dropped_identical += 1
            continue
        report.kept += 1
        report.prompts_cut += len(cut["prompt_ids"]) < len(full["prompt_ids"])
        report.chosen_cut += len(cut["chosen_ids"]) < len(full["chosen_ids"])
        report.rejected_cut += len(cut["rejected_ids"]) < len(full["rejected_ids"])
        report.tokens_cut += _n_tokens(full) - _n_tokens(cut)
        report.tokens_total += _n_tokens(full)
        out.append(cut)
    return out, report


def encode_pairs(tokenizer: PreTrainedTokenizerBase, rows: Iterable[dict],
                 max_length: int | None = None, max_prompt_length: int | None = None,
                 if_too_long: str = "drop",
                 ) -> tuple[list[dict[str, list[int]]], TruncationReport]:
    """Tokenize rows in explicit form (``preference.validate`` returns them), then
    ``truncate_pairs``. Raises ``PreferenceDataError`` naming each row and field whose
    text holds a special token."""
    rows = list(rows)
    problems = preference.special_token_problems(rows, tokenizer)
    if problems:
        raise preference.PreferenceDataError(problems)
    full = [encode_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    return truncate_pairs(full, max_length, max_prompt_length, tokenizer.bos_token_id,
                          if_too_long)


def collate_pairs(examples: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``labels`` of shape (2B, T): rows 0..B-1 are
    prompt+chosen, rows B..2B-1 prompt+rejected; labels are -100 on prompt and padding."""
    rows = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + \
           [(e["prompt_ids"], e["rejected_ids"]) for e in examples]
    return chat.batch(rows, pad_id)


def token_table(tokenizer: PreTrainedTokenizerBase, batch: dict[str, torch.Tensor],
                row: int) -> pd.DataFrame:
    """One row of a batch, token by token: what the model reads and what it is scored on
    (``label`` is -100 where the loss ignores the position)."""
    ids, labels = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
    mask = batch["attention_mask"][row].tolist()
    return pd.DataFrame({
        "token": [tokenizer.decode([t]) for t in ids],
        "input_id": ids,
        "attention": mask,
        "label": [str(IGNORE) if y == IGNORE else tokenizer.decode([y]) for y in labels],
    })
