"""Rebuild the bundled SFT model: ``python scripts/make_sft.py``.

Fine-tunes ``data/tiny-llama`` on demonstrations with ``SFTConfig()`` defaults (the same
run notebook 02 makes), evaluates base and SFT on held-out prompts, and writes the model
with a card and its numbers to ``data/tiny-llama-sft``.
"""

import argparse
import json
from pathlib import Path

from dpolab import evaluate, model, sft
from dpolab.world import World

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(model.bundled(model.SFT)))
    parser.add_argument("--eval-prompts", type=int, default=400)
    args = parser.parse_args()

    base, tok = model.load(model.BASE)
    policy, _ = model.load(model.BASE)
    cfg = sft.SFTConfig()
    history = sft.train_sft(policy, tok, sft.demonstrations(cfg.n_examples, cfg.seed), cfg)
    sft.save(policy, tok, args.out)

    prompts = World(0).prompts(args.eval_prompts, "eval")
    table = evaluate.compare({"base": evaluate.evaluate(base, tok, prompts),
                              "sft": evaluate.evaluate(policy, tok, prompts, reference=base)})
    print(table.to_string())
    stats = {"config": vars(cfg), "steps": len(history.loss), "seconds": round(history.seconds, 1),
             "final_loss": sum(history.loss[-20:]) / 20, "held_out": table.to_dict("index")}
    out = Path(args.out)
    (out / "sft_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    (out / "README.md").write_text(f"""# tiny-llama-sft: the course's SFT model

`data/tiny-llama` fine-tuned on {cfg.n_examples} demonstrations of mixed quality
(`dpolab.demonstrator.SFT_MIXTURE`), loss on assistant tokens only, {len(history.loss)} steps
of {cfg.batch_size}, AdamW lr {cfg.lr}, seed {cfg.seed}; {history.seconds:.0f} s on 2 CPU cores;
final loss {stats['final_loss']:.3f}.

Held-out prompts ({args.eval_prompts}), sampled at temperature 1 (KL to the base model in nats):

```
{table.to_string()}
```

Rebuild: `python scripts/make_sft.py`.
""")
