"""World preference datasets, and audits of any preference data against the gold judge.

Three kinds of pairs, all labelled by simulated annotators (``annotators.Annotator``:
Bradley–Terry on the gold scores, ``temperature`` sets the noise):

- **off-policy**: two demonstrator responses to the same prompt. Cheap and varied, but
  written by someone other than the model being trained.
- **on-policy**: two samples from the model itself (the SFT model) for the same prompt,
  the data DPO's derivation assumes (Rafailov et al. 2023, section 4).
- **demonstrator against model**: a good demonstrator response (``GOOD``: no flaws) and
  one sample of the model for the same prompt. A pretrained model that never saw this
  world writes responses unlike any demonstrator's; this pair shows it the world's
  answer beside its own (the idea of Chen et al. 2024, "Self-Play Fine-Tuning", SPIN:
  human data as chosen, the model's generation as rejected). Samples cut at the token
  limit stay in: as the gold judge scores them (0), they are the rambling the model must
  unlearn.

Pairs come from training prompts by default; ``split="eval"`` draws held-out prompts,
whose texts the world keeps disjoint from training ones. Identical responses carry no
preference and are skipped, and so are unfinished samples (cut at the token limit) and
empty ones (eos first); all are counted in ``Pairs.skipped``.

The audit reads any pairs with world prompts: label agreement with the gold judge, ties
(equal gold scores: the label is a coin flip), length bias (how often chosen is the
longer response), duplicates and contradictions (the same pair labelled both ways).
"""

from __future__ import annotations

import itertools
import numbers
from collections import Counter
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import evaluate, judge, world
from .annotators import Annotator
from .demonstrator import GOOD, SFT_MIXTURE, Demonstrator, Mixture


class Pairs(list):
    """A list of preference rows that also counts what was skipped to build it."""

    def __init__(self, rows=(), skipped: Counter | None = None):
        super().__init__(rows)
        self.skipped = Counter() if skipped is None else skipped


def _row(prompt: world.Prompt, label, annotator_temperature: float, source: str,
         chosen_finished: bool = True) -> dict:
    gold_chosen = judge.score(prompt, label.chosen, chosen_finished).total
    return {"prompt": prompt.text, "chosen": label.chosen, "rejected": label.rejected,
            "family": prompt.task.family, "kind": prompt.task.kind,
            "gold_chosen": round(gold_chosen, 4),
            "gold_rejected": round(gold_chosen - label.gold_margin, 4),
            "p_chosen": round(label.p_chosen, 4), "temperature": annotator_temperature,
            "source": source}


def offpolicy_pairs(n: int, seed: int = 0, temperature: float = 0.1,
                    mixture: Mixture = SFT_MIXTURE, split: str = "train",
                    families: tuple[str, ...] = world.FAMILIES) -> Pairs:
    """``n`` pairs of two demonstrator responses per prompt, labelled with annotator
    noise ``temperature``. Prompts are drawn at most ``max_draws(n)`` times."""
    _check_count(n)
    demo = Demonstrator(mixture, seed=seed)
    annotator = Annotator(temperature, seed=seed)
    out = Pairs()
    prompts = world.World(seed).iter_prompts(split, families)
    for prompt in itertools.islice(prompts, max_draws(n)):
        if len(out) == n:
            break
        a, b = demo.respond(prompt), demo.respond(prompt)
        if a == b:
            out.skipped["identical"] += 1
            continue
        out.append(_row(prompt, annotator.label(prompt, a, b), temperature, "demonstrator"))
    return _enough(out, n)


def onpolicy_pairs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int,
                   seed: int = 0, temperature: float = 0.1, split: str = "train",
                   families: tuple[str, ...] = world.FAMILIES, max_new_tokens: int = 48,
                   sampling_temperature: float = 1.0, batch_size: int = 128) -> Pairs:
    """``n`` pairs of two samples of ``model`` per prompt (``evaluate.sample``), labelled
    with annotator noise ``temperature``. Prompts are drawn at most ``max_draws(n)`` times."""
    _check_count(n)
    annotator = Annotator(temperature, seed=seed)
    stream = itertools.islice(world.World(seed).iter_prompts(split, families), max_draws(n))
    out = Pairs()
    for round_ in itertools.count():
        if len(out) == n:
            break
        needed = n - len(out)
        prompts = list(itertools.islice(stream, min(batch_size // 2, needed + needed // 4 + 4)))
        if not prompts:
            break
        gens = evaluate.sample(model, tokenizer, prompts + prompts, max_new_tokens=max_new_tokens,
                               temperature=sampling_temperature, batch_size=batch_size,
                               seed=seed * 1000 + round_)
        for prompt, a, b in zip(prompts, gens[:len(prompts)], gens[len(prompts):], strict=True):
            if len(out) == n:
                break
            if not (a.finished and b.finished):
                out.skipped["unfinished"] += 1
            elif not (a.response.strip() and b.response.strip()):
                out.skipped["empty"] += 1
            elif a.response == b.response:
                out.skipped["identical"] += 1
            else:
                out.append(_row(prompt, annotator.label(prompt, a.response, b.response),
                                temperature, "model"))
    return _enough(out, n)


def demo_vs_model_pairs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int,
                        seed: int = 0, temperature: float = 0.1, split: str = "train",
                        families: tuple[str, ...] = world.ALIGNMENT_FAMILIES,
                        max_new_tokens: int = 48, mixture: Mixture = GOOD,
                        batch_size: int = 64) -> Pairs:
    """``n`` pairs of a demonstrator response (``mixture``) and one sample of ``model``
    (temperature 1) per prompt, labelled with annotator noise ``temperature``; a sample
    identical to the demonstrator's, or empty, is skipped and counted."""
    _check_count(n)
    demo = Demonstrator(mixture, seed=seed)
    annotator = Annotator(temperature, seed=seed)
    stream = itertools.islice(world.World(seed).iter_prompts(split, families), max_draws(n))
    out = Pairs()
    for round_ in itertools.count():
        needed = n - len(out)
        prompts = list(itertools.islice(stream, min(batch_size, needed + needed // 8 + 2)))
        if needed == 0 or not prompts:
            break
        gens = evaluate.sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, seed=seed * 1000 + round_)
        for prompt, gen in zip(prompts, gens, strict=True):
            good = demo.respond(prompt)
            if len(out) == n:
                break
            if not gen.response.strip():
                out.skipped["empty"] += 1
            elif gen.response.strip() == good:
                out.skipped["identical"] += 1
            else:
                label = annotator.label(prompt, good, gen.response, (True, gen.finished))
                model_chosen = label.chosen is gen.response
                out.append(_row(prompt, label, temperature, "demonstrator vs model",
                                gen.finished or not model_chosen)
                           | {"model_finished": gen.finished, "model_chosen": model_chosen})
    return _enough(out, n)


def max_draws(n: int) -> int:
    """Prompts a builder of ``n`` pairs may draw: far more than skips ever need, and finite."""
    return 20 * n + 100


def _check_count(n: int) -> None:
    if not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"the number of pairs must be an integer >= 0, got {n!r}")


def _enough(out: Pairs, n: int) -> Pairs:
    """``out`` if it holds ``n`` pairs, else an error saying what every draw was skipped for."""
    if len(out) < n:
        raise ValueError(f"only {len(out)} of {n} pairs after {max_draws(n)} prompts (skipped: "
                         f"{dict(out.skipped)}): too few distinct responses for these prompts")
    return out


# --- audits ----------------------------------------------------------------------------

def _prompt_text(prompt: str | list[dict]) -> str:
    return prompt if isinstance(prompt, str) else \
        [m["content"] for m in prompt if m["role"] == "user"][-1]


@dataclass(frozen=True)
class Audit:
    pairs: int
    gold_agreement: float  # share of non-tied pairs whose chosen has the higher gold score
    ties: float  # share of pairs with equal gold scores
    chosen_longer: float  # share of pairs whose chosen response has more characters
    gold_longer: float  # share of non-tied pairs whose gold-better response is longer
    duplicates: int  # rows repeating an earlier (prompt, chosen, rejected)
    contradictions: int  # rows whose pair appears earlier with the opposite label

    def __str__(self) -> str:
        return (f"pairs: {self.pairs}\n"
                f"label agrees with the gold judge: {self.gold_agreement:.1%} of non-tied pairs\n"
                f"ties (equal gold scores, coin-flip labels): {self.ties:.1%}\n"
                f"chosen is longer: {self.chosen_longer:.1%} "
                f"(the gold-better response is longer in {self.gold_longer:.1%})\n"
                f"duplicates: {self.duplicates}   contradictions: {self.contradictions}")


def audit(rows: list[dict]) -> Audit:
    """Audit explicit-form rows (text responses) whose prompts are world prompts."""
    if not rows:
        raise ValueError("no pairs to audit")
    agree = ties = longer = gold_longer = duplicates = contradictions = 0
    seen: set[tuple[str, str, str]] = set()
    for r in rows:
        prompt = _prompt_text(r["prompt"])
        c, j = judge.score(prompt, r["chosen"]).total, judge.score(prompt, r["rejected"]).total
        longer += len(r["chosen"]) > len(r["rejected"])
        if c == j:
            ties += 1
        else:
            agree += c > j
            better, worse = (r["chosen"], r["rejected"]) if c > j else (r["rejected"], r["chosen"])
            gold_longer += len(better) > len(worse)
        key = (prompt, r["chosen"], r["rejected"])
        duplicates += key in seen
        contradictions += (prompt, r["rejected"], r["chosen"]) in seen
        seen.add(key)
    n, decided = len(rows), len(rows) - ties
    return Audit(pairs=n, gold_agreement=agree / decided if decided else float("nan"),
                 ties=ties / n, chosen_longer=longer / n,
                 gold_longer=gold_longer / decided if decided else float("nan"),
                 duplicates=duplicates, contradictions=contradictions)
