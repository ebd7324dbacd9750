"""Prompts and responses as token ids, with the chat template applied exactly once.

Every trainer and evaluator goes through these two functions, so a prompt is encoded the
same way for SFT, reward modelling, PPO and DPO:

- ``prompt_ids``: the chat template with the generation prompt, rendered to text and then
  tokenized *without* the tokenizer's own special tokens (the template already has bos;
  letting the tokenizer add one more is the classic double-BOS bug).
- ``response_ids``: the response tokens followed by one eos id, the token the model
  must learn to emit to stop.
- ``batch``: (prompt, response) rows right-padded into tensors, labels on the response.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from .logps import IGNORE


def chat_text(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict],
              system: str | None = None) -> str:
    """The prompt rendered by the chat template, ending where the assistant starts."""
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system is not None:
        msgs = [{"role": "system", "content": system}, *msgs]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


class SpecialTokenError(ValueError):
    """Text holding a special token's string, which the tokenizer would turn into that token
    (an eos mid-response, a forged role marker)."""


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """Every special token string of a tokenizer (bos, eos, pad, role markers, ...)."""
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    return tuple(dict.fromkeys([*tokenizer.all_special_tokens, *added]))


def check_plain(tokenizer: PreTrainedTokenizerBase, text: str, what: str) -> None:
    """A ``SpecialTokenError`` when ``text`` contains one of the tokenizer's special tokens."""
    found = [t for t in special_tokens(tokenizer) if t in text]
    if found:
        raise SpecialTokenError(f"{what} contains special token(s) {found}, which would be "
                                f"encoded as those tokens: expected plain text, got "
                                f"{text[:60]!r}")


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict],
               system: str | None = None) -> list[int]:
    """The templated prompt's ids; its text must hold no special token (the template adds
    them)."""
    messages = [{"content": prompt}] if isinstance(prompt, str) else prompt
    for m in [*messages, {"content": system or ""}]:
        check_plain(tokenizer, m["content"], "a prompt")
    return tokenizer(chat_text(tokenizer, prompt, system), add_special_tokens=False)["input_ids"]


def response_ids(tokenizer: PreTrainedTokenizerBase, response: str) -> list[int]:
    check_plain(tokenizer, response, "a response")
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` from (prompt ids,
    response ids) rows. Labels are the response ids and -100 on prompt and padding, so the
    loss and the log-probs cover the response (and its eos) only."""
    width = max(len(p) + len(r) for p, r in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), IGNORE)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        input_ids[i, :n] = torch.tensor(p + r)
        labels[i, len(p):n] = torch.tensor(r)
        mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
