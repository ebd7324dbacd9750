"""Rebuild the bundled reward model: ``python scripts/make_reward_model.py``.

Trains a reward model from ``data/tiny-llama-sft`` (``reward_model.from_sft``) with the
Bradley–Terry loss and ``RMConfig()`` defaults on the world preference pairs under
``data/prefs``: the demonstrator pairs and the pairs of the SFT model's own samples
(``offpolicy_train.jsonl`` + ``onpolicy_train.jsonl``, shuffled). Evaluates it on both
held-out files against the annotators and the gold judge, and writes the model with a
card to ``data/tiny-llama-rm``. Deterministic for a given machine.
"""

import argparse
import json
import random
from pathlib import Path

import torch

from dpolab import env, model, preference
from dpolab import reward_model as RM

TRAIN = ("offpolicy_train", "onpolicy_train")
HELD_OUT = ("offpolicy_heldout", "onpolicy_heldout")


def read(name: str) -> list[dict]:
    rows, _ = preference.load_pairs(env.data_dir() / "prefs" / f"{name}.jsonl", policy="raise")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(model.bundled(RM.BUNDLED)))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)

    rows = [r for name in TRAIN for r in read(name)]
    random.Random(args.seed).shuffle(rows)
    rm, tok = RM.from_sft(model.SFT, seed=args.seed)
    cfg = RM.RMConfig(seed=args.seed)
    history = RM.train_reward_model(rm, tok, rows, cfg)
    RM.save(rm, tok, args.out)

    acc = {name: RM.accuracy(RM.score_pairs(rm, tok, read(name))) for name in HELD_OUT}
    stats = {"config": vars(cfg), "train_files": TRAIN, "pairs": len(rows),
             "steps": len(history.loss), "seconds": round(history.seconds, 1),
             "final_loss": sum(history.loss[-20:]) / 20, "held_out": acc}
    out = Path(args.out)
    (out / "rm_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    lines = "\n".join(f"| {name}.jsonl | {a['pairs']} | {a['annotators']:.1%} | {a['gold']:.1%} "
                      f"({a['pairs'] - a['gold_ties']} pairs) |" for name, a in acc.items())
    (out / "README.md").write_text(f"""# tiny-llama-rm: the course's reward model

`data/tiny-llama-sft` with a scalar head (`LlamaForSequenceClassification`, one label),
trained with the Bradley–Terry loss on {len(rows)} world preference pairs
({' + '.join(f'`data/prefs/{n}.jsonl`' for n in TRAIN)}), {len(history.loss)} steps of
{cfg.batch_size} pairs, AdamW lr {cfg.lr}, seed {args.seed}; {history.seconds:.0f} s on 2 CPU
cores; final loss {stats['final_loss']:.3f}.

Accuracy on held-out pairs: how often it ranks the pair as the annotators labelled it, and
as the gold judge ranks it (pairs with equal gold scores left out):

| file | pairs | annotators | gold |
|---|---|---|---|
{lines}

Rebuild: `python scripts/make_reward_model.py`.

Load: `dpolab.reward_model.load("{out.name}")` or
`AutoModelForSequenceClassification.from_pretrained("data/{out.name}")`.
""")
    print((out / "README.md").read_text())
