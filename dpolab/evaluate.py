"""Evaluation every notebook uses: sample, score with the gold judge, estimate KL.

- ``sample``: batched sampling through ``model.generate`` (KV cache on), left-padded
  prompts, the chat template applied once; each response knows whether it finished
  (emitted eos) or was cut at ``max_new_tokens``.
- ``gold``: per-axis mean gold scores of a set of responses.
- ``kl_to_reference``: a sequence-level Monte Carlo estimate of KL(policy || reference):
  the mean of ``log pi(y|x) - log pi_ref(y|x)`` over responses ``y`` sampled from the policy
  at temperature 1.
- ``evaluate``: all three at once, the row of numbers the course reports.
- ``compare``: models side by side, each score with its 95% interval and, against a
  baseline scored on the same prompts and sampling seed, the paired difference with its
  own interval (``dpolab.stats``), and the word the course may use for it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd
import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from . import chat, judge, stats
from .logps import model_logps
from .world import AXES, Prompt


@dataclass
class Generation:
    prompt: str
    response: str
    finished: bool
    prompt_ids: list[int]
    response_ids: list[int]  # up to and including eos when finished


# Every knob of ``GenerationConfig`` that reshapes the next-token distribution or the
# length, at the value that leaves it as the model gives it. Left unset (None), ``generate``
# would take each from the model's ``generation_config``: a checkpoint's
# ``repetition_penalty`` would bias the sampled KL and the gold scores, even when greedy.
# (``min_new_tokens=0`` overrides any ``min_length``.)
NEUTRAL = dict(num_beams=1, num_return_sequences=1, repetition_penalty=1.0,
               encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
               encoder_no_repeat_ngram_size=0, min_new_tokens=0, guidance_scale=1.0,
               renormalize_logits=False, remove_invalid_values=False)
SAMPLING = dict(top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0,
                eta_cutoff=0.0)
# Greedy decoding ignores the sampling knobs; at transformers' defaults they draw no warning.
GREEDY = dict(temperature=1.0, top_k=50, top_p=1.0, typical_p=1.0, epsilon_cutoff=0.0,
              eta_cutoff=0.0)
# Knobs with no neutral value but None: a model that sets one is refused, not half-obeyed.
NO_NEUTRAL = ("sequence_bias", "bad_words_ids", "forced_bos_token_id", "forced_eos_token_id",
              "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
              "top_h", "watermarking_config", "stop_strings", "max_time", "dola_layers",
              "constraints", "force_words_ids")


def decoding_config(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    max_new_tokens: int, temperature: float) -> GenerationConfig:
    """Pure sampling at ``temperature`` (0: greedy) up to ``max_new_tokens`` or eos, with
    every other knob neutral, whatever the model's ``generation_config`` says."""
    own = model.generation_config
    inherited = [k for k in NO_NEUTRAL if getattr(own, k, None) is not None]
    if inherited:
        raise ValueError(f"the model's generation_config sets {inherited}, which would change "
                         f"the samples: set them to None (model.generation_config.<name> = None)")
    mode = dict(do_sample=True, temperature=temperature, **SAMPLING) if temperature > 0 \
        else dict(do_sample=False, **GREEDY)
    return GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, use_cache=True, **NEUTRAL,
                            **mode)


@torch.no_grad()
def sample(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
           prompts: list[str | Prompt], max_new_tokens: int = 48, temperature: float = 1.0,
           batch_size: int = 64, seed: int = 0) -> list[Generation]:
    """Sample one response per prompt (``temperature=0`` is greedy decoding), from the
    model's own distribution: every decoding knob is set (``decoding_config``), none is
    taken from the model's ``generation_config``."""
    config = decoding_config(model, tokenizer, max_new_tokens, temperature)
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
        seqs = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                              generation_config=config)
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


def per_prompt(generations: list[Generation]) -> pd.DataFrame:
    """One row per response: its gold total and each axis (NaN where the axis does not
    apply), and whether it finished. The raw material of every interval."""
    rows = []
    for g in generations:
        s = judge.score(g.prompt, g.response, g.finished)
        rows.append({"total": s.total, **s.axes, "stop_rate": float(g.finished)})
    cols = ["total", *[a for a in (*AXES, "sentiment") if any(a in r for r in rows)], "stop_rate"]
    return pd.DataFrame(rows).reindex(columns=cols).astype(float)


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

    def per_prompt(self) -> pd.DataFrame:
        return per_prompt(self.generations)


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt],
             reference: PreTrainedModel | None = None, max_new_tokens: int = 48,
             seed: int = 0) -> EvalResult:
    """Sample at temperature 1 on ``prompts``; gold scores; KL to ``reference`` if given."""
    gens = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
    kl = None if reference is None else kl_to_reference(model, reference, gens,
                                                        tokenizer.pad_token_id)
    return EvalResult(gold(gens), gens, kl)


def compare(results: dict[str, EvalResult], baseline: str | None = None) -> pd.DataFrame:
    """One row per model: ``mean ± 95% half-width`` of the gold total, each axis and the stop
    rate, and the KL where measured. With ``baseline`` (default: the first model), one more
    row per other model: its paired difference from the baseline with a 95% bootstrap
    interval, and the verdict ("improved", "fell" or "within noise"). Pairing needs both
    models sampled on the same prompts with the same seed, which ``evaluate`` does."""
    names = list(results)
    baseline = names[0] if baseline is None else baseline
    frames = {name: r.per_prompt() for name, r in results.items()}
    cols = list(frames[baseline].columns)
    table: dict[str, dict[str, str]] = {}
    for name, r in results.items():
        row = {c: stats.mean_ci(frames[name][c]).pm() for c in cols if c in frames[name]}
        if r.kl is not None:
            row["kl"] = f"{r.kl:.3f}"
        table[name] = row
    for name in names:
        if name == baseline:
            continue
        a, b = results[baseline].generations, results[name].generations
        if [g.prompt for g in a] != [g.prompt for g in b]:
            raise ValueError(f"{name!r} and {baseline!r} were not scored on the same prompts: "
                             "a paired difference needs the same prompts in the same order")
        row = {}
        for c in cols:
            est = stats.paired_diff(frames[baseline][c], frames[name][c])
            row[c] = f"{est} {stats.verdict(est)}"
        table[f"{name} − {baseline}"] = row
    return pd.DataFrame(table).T.fillna("")


def paired(before: EvalResult, after: EvalResult, column: str = "total") -> stats.Estimate:
    """The paired difference ``after - before`` of one column, with its 95% interval."""
    return stats.paired_diff(before.per_prompt()[column], after.per_prompt()[column])


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


@torch.no_grad()
def implicit_rewards(policy: PreTrainedModel, reference: PreTrainedModel,
                     tokenizer: PreTrainedTokenizerBase, rows: list[dict], beta: float,
                     batch_size: int = 64) -> pd.DataFrame:
    """DPO's implicit reward ``beta * [log pi(y|x) - log pi_ref(y|x)]`` of each pair's chosen
    and rejected response ("your language model is secretly a reward model", Rafailov et al.
    2023), with their gold totals: the columns of ``reward_model.score_pairs``, so
    ``reward_model.accuracy`` reads it too. The implicit reward is the true one only up to a
    constant per prompt (``beta log Z(x)``): compare it within a prompt, not across prompts."""
    from .pairs import encode_pair
    enc = [encode_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"]) for r in rows]

    def logps(model: PreTrainedModel, key: str) -> torch.Tensor:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        out = []
        for i in range(0, len(enc), batch_size):
            b = chat.batch([(e["prompt_ids"], e[key]) for e in enc[i:i + batch_size]],
                           tokenizer.pad_token_id)
            out.append(model_logps(model, **{k: v.to(device) for k, v in b.items()}).cpu())
        model.train(was_training)
        return torch.cat(out)

    r = {key: beta * (logps(policy, f"{key}_ids") - logps(reference, f"{key}_ids"))
         for key in ("chosen", "rejected")}
    return pd.DataFrame({
        "prompt": [row["prompt"] for row in rows],
        "r_chosen": r["chosen"].numpy(), "r_rejected": r["rejected"].numpy(),
        "gold_chosen": [judge.score(row["prompt"], row["chosen"]).total for row in rows],
        "gold_rejected": [judge.score(row["prompt"], row["rejected"]).total for row in rows]})
