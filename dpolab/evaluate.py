"""Evaluation every notebook uses: sample, score with the gold judge, estimate KL.

- ``sample``: batched sampling through ``model.generate`` (KV cache on), left-padded
  prompts, the chat template applied once; each response knows whether it finished
  (emitted eos) or was cut at ``max_new_tokens``.
- ``gold``: per-axis mean gold scores of a set of responses.
- ``kl_to_reference``: a sequence-level Monte Carlo estimate of KL(policy || reference):
  the mean of ``log pi(y|x) - log pi_ref(y|x)`` over responses ``y`` sampled from the policy
  at temperature 1.
- ``evaluate``: all three at once, the row of numbers the course reports.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import chat, judge
from .logps import model_logps
from .world import AXES, Prompt


@dataclass
class Generation:
    prompt: str
    response: str
    finished: bool
    prompt_ids: list[int]
    response_ids: list[int]  # up to and including eos when finished


@torch.no_grad()
def sample(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
           prompts: list[str | Prompt], max_new_tokens: int = 48, temperature: float = 1.0,
           batch_size: int = 64, seed: int = 0) -> list[Generation]:
    """Sample one response per prompt (``temperature=0`` is greedy decoding)."""
    texts = [p.text if isinstance(p, Prompt) else p for p in prompts]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: list[Generation] = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        ids = [chat.prompt_ids(tokenizer, t) for t in chunk]
        width = max(map(len, ids))
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
        kwargs = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} \
            if temperature > 0 else {"do_sample": False}
        seqs = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                              max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id, use_cache=True, **kwargs)
        for text, p_ids, row in zip(chunk, ids, seqs[:, width:].tolist(), strict=True):
            finished = tokenizer.eos_token_id in row
            r_ids = row[:row.index(tokenizer.eos_token_id) + 1] if finished else row
            response = tokenizer.decode(r_ids, skip_special_tokens=True)
            out.append(Generation(text, response, finished, p_ids, r_ids))
    model.train(was_training)
    return out


def gold(generations: list[Generation]) -> dict[str, float]:
    """Mean gold score per axis (over the responses where it applies), the mean total and
    the share of responses that finished."""
    per_axis: dict[str, list[float]] = defaultdict(list)
    totals = []
    for g in generations:
        s = judge.score(g.prompt, g.response, g.finished)
        totals.append(s.total)
        for axis, v in s.axes.items():
            per_axis[axis].append(v)
    result = {"total": sum(totals) / len(totals)}
    for axis in (*AXES, "sentiment"):
        if per_axis[axis]:
            result[axis] = sum(per_axis[axis]) / len(per_axis[axis])
    result["stop_rate"] = sum(g.finished for g in generations) / len(generations)
    return result


@torch.no_grad()
def response_logps(model: PreTrainedModel, generations: list[Generation], pad_id: int,
                   batch_size: int = 64) -> torch.Tensor:
    """``log p(response | prompt)`` of each generation under ``model``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(generations), batch_size):
        rows = [(g.prompt_ids, g.response_ids) for g in generations[i:i + batch_size]]
        b = {k: v.to(device) for k, v in chat.batch(rows, pad_id).items()}
        out.append(model_logps(model, **b).cpu())
    model.train(was_training)
    return torch.cat(out)


def kl_to_reference(policy: PreTrainedModel, reference: PreTrainedModel,
                    generations: list[Generation], pad_id: int) -> float:
    """Monte Carlo KL(policy || reference) in nats per response, from samples of the policy
    (drawn at temperature 1, or the estimate is biased)."""
    diff = response_logps(policy, generations, pad_id) - response_logps(reference, generations,
                                                                         pad_id)
    return diff.mean().item()


@dataclass
class EvalResult:
    scores: dict[str, float]
    generations: list[Generation] = field(repr=False)
    kl: float | None = None

    def row(self) -> dict[str, float]:
        return {**self.scores, **({"kl": self.kl} if self.kl is not None else {})}


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt],
             reference: PreTrainedModel | None = None, max_new_tokens: int = 48,
             seed: int = 0) -> EvalResult:
    """Sample at temperature 1 on ``prompts``; gold scores; KL to ``reference`` if given."""
    gens = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
    kl = None if reference is None else kl_to_reference(model, reference, gens,
                                                        tokenizer.pad_token_id)
    return EvalResult(gold(gens), gens, kl)


def compare(results: dict[str, EvalResult]) -> pd.DataFrame:
    """One row per model: gold per axis, total, stop rate and KL where measured."""
    return pd.DataFrame({name: r.row() for name, r in results.items()}).T.round(3)


def side_by_side(results: dict[str, EvalResult], n: int = 5) -> pd.DataFrame:
    """The first ``n`` prompts and each model's response, with its gold total."""
    names = list(results)
    rows = []
    for i in range(n):
        row = {"prompt": results[names[0]].generations[i].prompt}
        for name in names:
            g = results[name].generations[i]
            total = judge.score(g.prompt, g.response, g.finished).total
            row[name] = f"{g.response}{'' if g.finished else ' …'}  [{total:.2f}]"
        rows.append(row)
    return pd.DataFrame(rows)
