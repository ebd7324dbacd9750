"""Adapters from the schemas of widely used preference datasets to TRL formats.

- UltraFeedback binarized (``HuggingFaceH4/ultrafeedback_binarized``): ``prompt`` text,
  ``chosen``/``rejected`` conversations ending with the assistant turn, ``score_chosen``/
  ``score_rejected`` (GPT-4 ratings, 1-10), plus ``prompt_id`` and ``messages``.
  → standard explicit, scores kept (ties are pairs with equal scores).
- Anthropic HH-RLHF (``Anthropic/hh-rlhf``): ``chosen``/``rejected`` whole transcripts,
  ``"\\n\\nHuman: ... \\n\\nAssistant: ..."``; the prompt is every turn before the last
  assistant turn, which both transcripts must share. → conversational explicit.
- Intel orca_dpo_pairs (``Intel/orca_dpo_pairs``): ``system`` (often empty),
  ``question``, ``chosen``, ``rejected`` text. → conversational explicit (system turn
  when there is one).

Each takes anything ``preference.read_rows`` reads and returns rows ready for
``preference.validate``; a row that does not fit the schema raises a
``PreferenceDataError`` naming it, with every other such row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .preference import PreferenceDataError, Problem, locate, read_rows


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _need_text(i: int, row: dict, keys: tuple[str, ...]) -> list[Problem]:
    return [Problem(i, k, "missing_key" if row.get(k) is None else "wrong_type",
                    f"expected text in {k!r}, got {row.get(k)!r:.40}")
            for k in keys if not isinstance(row.get(k), str)]


def _convert(source: Any, one: Callable[[int, dict], tuple[dict | None, list[Problem]]],
             split: str) -> list[dict]:
    rows, problems = read_rows(source, split)
    out = []
    for i, row in enumerate(rows):
        if row is None:
            continue
        if not isinstance(row, dict):
            problems.append(Problem(i, "(row)", "wrong_type",
                                    f"expected an object, got {row!r:.40}"))
            continue
        converted, row_problems = one(i, row)
        problems += row_problems
        if converted is not None:
            out.append(converted)
    if problems:
        raise PreferenceDataError(locate(sorted(problems, key=lambda p: p.row), rows))
    return out


# --- UltraFeedback binarized -------------------------------------------------------------

def _ultrafeedback_row(i: int, row: dict) -> tuple[dict | None, list[Problem]]:
    problems = _need_text(i, row, ("prompt",))
    for k in ("chosen", "rejected"):
        conv = row.get(k)
        last = conv[-1] if isinstance(conv, list) and conv else None
        if not (isinstance(last, dict) and last.get("role") == "assistant"
                and isinstance(last.get("content"), str)):
            problems.append(Problem(i, k, "not_assistant",
                                    "expected a conversation ending with an assistant message"))
    if problems:
        return None, problems
    if row["chosen"][:-1] != row["rejected"][:-1]:
        return None, [Problem(i, "rejected", "no_common_prefix",
                              "expected the same turns as 'chosen' before the last assistant turn")]
    out = {"prompt": row["prompt"], "chosen": row["chosen"][-1]["content"],
           "rejected": row["rejected"][-1]["content"]}
    for k in ("prompt_id", "score_chosen", "score_rejected"):
        if k in row:
            out[k] = row[k]
    return out, []


def ultrafeedback(source: Any, split: str = "train_prefs") -> list[dict]:
    """UltraFeedback binarized rows → standard explicit (``messages`` is left out: it
    repeats ``chosen``)."""
    return _convert(source, _ultrafeedback_row, split)


# --- Anthropic HH-RLHF ---------------------------------------------------------------------

_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> list[dict] | None:
    """HH-RLHF text as messages; None when it does not start with ``"\\n\\nHuman:"``."""
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) < 3 or parts[1] != "Human":
        return None
    return [{"role": _ROLE[speaker], "content": content.strip()}
            for speaker, content in zip(parts[1::2], parts[2::2], strict=True)]


def _hh_row(i: int, row: dict) -> tuple[dict | None, list[Problem]]:
    problems = _need_text(i, row, ("chosen", "rejected"))
    if problems:
        return None, problems
    convs = {}
    for k in ("chosen", "rejected"):
        convs[k] = parse_transcript(row[k])
        if convs[k] is None:
            problems.append(Problem(i, k, "wrong_type", "expected a transcript of "
                                    "'\\n\\nHuman: ...' and '\\n\\nAssistant: ...' turns"))
        elif convs[k][-1]["role"] != "assistant":
            problems.append(Problem(i, k, "not_assistant",
                                    "expected the transcript to end with an Assistant turn"))
    if problems:
        return None, problems
    if convs["chosen"][:-1] != convs["rejected"][:-1]:
        return None, [Problem(i, "rejected", "no_common_prefix",
                              "expected the same turns as 'chosen' before the last Assistant turn")]
    return {"prompt": convs["chosen"][:-1], "chosen": [convs["chosen"][-1]],
            "rejected": [convs["rejected"][-1]]}, []


def hh_rlhf(source: Any, split: str = "train") -> list[dict]:
    """HH-RLHF transcripts → conversational explicit."""
    return _convert(source, _hh_row, split)


# --- Intel orca_dpo_pairs ------------------------------------------------------------------

def _orca_row(i: int, row: dict) -> tuple[dict | None, list[Problem]]:
    problems = _need_text(i, row, ("question", "chosen", "rejected"))
    if row.get("system") is not None and not isinstance(row["system"], str):
        problems.append(Problem(i, "system", "wrong_type",
                                f"expected text, got {row['system']!r:.40}"))
    if problems:
        return None, problems
    system = (row.get("system") or "").strip()
    prompt = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": row["question"]}]
    return {"prompt": prompt, "chosen": _assistant(row["chosen"]),
            "rejected": _assistant(row["rejected"])}, []


def orca_dpo_pairs(source: Any, split: str = "train") -> list[dict]:
    """orca_dpo_pairs rows → conversational explicit."""
    return _convert(source, _orca_row, split)
