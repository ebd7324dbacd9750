"""Rebuild the world preference datasets under ``data/prefs``: ``python scripts/make_prefs.py``.

Off-policy pairs (two demonstrator responses per prompt) and on-policy pairs (two samples
of ``data/tiny-llama-sft`` per prompt), each a training file on training prompts and a
held-out file on held-out prompts, labelled by annotators at the default noise. Writes
JSONL in the standard explicit format and a README with each file's audit. Deterministic:
the same command writes the same files on the same machine.
"""

import argparse
import json
from pathlib import Path

import torch

from dpolab import env, model, worldprefs

TEMPERATURE = 0.1


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")


def describe(name: str, rows: worldprefs.Pairs) -> str:
    skipped = ", ".join(f"{v} {k}" for k, v in sorted(rows.skipped.items())) or "none"
    return f"### {name}.jsonl\n\nskipped while building: {skipped}\n\n```\n" \
           f"{worldprefs.audit(rows)}\n```\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(env.data_dir() / "prefs"))
    parser.add_argument("--train", type=int, default=2000, help="off-policy training pairs")
    parser.add_argument("--heldout", type=int, default=500, help="off-policy held-out pairs")
    parser.add_argument("--onpolicy-train", type=int, default=1000)
    parser.add_argument("--onpolicy-heldout", type=int, default=250)
    parser.add_argument("--skip-onpolicy", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a tiny model samples fastest on one thread
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    sets = {"offpolicy_train": worldprefs.offpolicy_pairs(args.train, 0, TEMPERATURE),
            "offpolicy_heldout": worldprefs.offpolicy_pairs(args.heldout, 0, TEMPERATURE,
                                                            split="eval")}
    if not args.skip_onpolicy:
        sft, tok = model.load(model.SFT)
        sets["onpolicy_train"] = worldprefs.onpolicy_pairs(sft, tok, args.onpolicy_train, 0,
                                                           TEMPERATURE)
        sets["onpolicy_heldout"] = worldprefs.onpolicy_pairs(sft, tok, args.onpolicy_heldout, 0,
                                                             TEMPERATURE, split="eval")
    for name, rows in sets.items():
        write(out / f"{name}.jsonl", rows)
        print(f"{name}: {len(rows)} pairs, skipped {dict(rows.skipped)}")

    (out / "README.md").write_text(f"""# World preference pairs

Preference pairs on world prompts, in the standard explicit format (`prompt`, `chosen`,
`rejected` text), one JSON object per line. Extra columns: `family` and `kind` of the
prompt, the gold scores `gold_chosen`/`gold_rejected`, `p_chosen` (the Bradley–Terry
probability of the label drawn), the annotator `temperature` ({TEMPERATURE}) and the
`source` of the responses (`demonstrator`: off-policy; `model`: two samples of
`data/tiny-llama-sft` at temperature 1, on-policy). `*_train` files use training prompts,
`*_heldout` files held-out prompts (no prompt text in common).

Check a file with `python -m dpolab data check data/prefs/offpolicy_train.jsonl`.
Rebuild all of them with `python scripts/make_prefs.py`.

## Audits

{chr(10).join(describe(name, rows) for name, rows in sets.items())}""", encoding="utf-8")
