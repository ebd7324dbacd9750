"""DPO throughput and peak memory on the tiny model: our trainer, TRL's DPOTrainer, a bare loop.

    python benchmarks/bench_dpo.py [--steps 40] [--batch-size 8] [--repeats 3] [--threads 1]

All three run the same math with equal settings: the bundled SFT model in fp32, no
gradient checkpointing, the same pre-tokenized pairs read in the same order, the same batch
size (default 8, TRL's default), no truncation (the pairs are short), AdamW with linear
decay, clipping at 1.0, and a frozen reference model run on every batch. Our trainer with
``reference="precomputed"`` is timed as an extra row, in steady state: its one-off pass over
the data before training is not in the timed window (not an equal setting, so not in the
ratio).

How it is measured:
- throughput: pairs per second over ``--steps`` optimizer steps that follow 3 warm-up
  steps in the same run (steady state; model loading and trainer set-up excluded). Each
  step is timed on two clocks: the process's CPU time (all its threads), which on a shared
  machine measures the work an implementation does, and wall time, which also measures
  the neighbours. All three read the same batches in the same order, so step ``k`` is the
  same work in every round: the headline throughput takes, step by step, the fastest of
  the rounds (the least disturbed), in CPU time (wall time on a GPU, which works
  asynchronously); the median over rounds of whole-run wall time is shown beside it;
- peak memory (CPU): the peak resident set size of the process (``VmHWM``, reset through
  ``/proc/self/clear_refs`` once the models and data are loaded) minus the resident size at
  that moment: what training added on top of the loaded models, in MiB. It covers every
  allocation (torch, Python, the libraries), not just tensors. On a GPU it is
  ``torch.cuda.max_memory_allocated`` instead;
- every measurement runs in a fresh process, and the implementations take turns, in a
  rotating order, for ``--repeats`` rounds.

The last line is ``ratio_vs_trl=X.XX``: our throughput over TRL's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPLS = ("ours", "trl", "bare")
WARMUP = 3


def _vm(key: str) -> int:
    """A /proc/self/status field in KiB (Linux)."""
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


class Memory:
    """Peak memory added from now on (see the module docstring)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def start(self) -> None:
        import torch
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.base = _vm("VmRSS") * 1024

    def peak_mib(self) -> float:
        import torch
        peak = torch.cuda.max_memory_allocated() if self.cuda else _vm("VmHWM") * 1024
        return (peak - self.base) / 2**20


def setup(args):
    import datasets  # noqa: F401  (every library imported before memory is measured)
    import torch
    import trl  # noqa: F401

    from dpolab import dpo, model, pairs, worldprefs  # noqa: F401
    torch.set_num_threads(args.threads)
    name = model.SFT if (model.bundled(model.SFT) / "config.json").exists() else model.BASE
    policy, tok = model.load(name)
    ref = model.load(name)[0].eval().requires_grad_(False)
    n = (WARMUP + args.steps) * args.batch_size
    examples, _ = pairs.encode_pairs(tok, worldprefs.offpolicy_pairs(n, seed=0))
    return policy, ref, tok, examples


class Clock:
    """CPU and wall time of every step after warm-up step ``WARMUP``."""

    def __init__(self):
        self.stamps: dict[int, tuple[float, float]] = {}

    def tick(self, step: int) -> None:
        if step >= WARMUP:
            self.stamps[step] = (time.process_time(), time.perf_counter())

    def durations(self, clock: int) -> list[float]:
        t = [self.stamps[step][clock] for step in sorted(self.stamps)]
        return [b - a for a, b in zip(t[:-1], t[1:], strict=True)]


def run_ours(args, policy, ref, tok, examples, clock, reference="model"):
    from dpolab import dpo
    cfg = dpo.DPOConfig(steps=WARMUP + args.steps, batch_size=args.batch_size, lr=1e-4,
                        beta=0.1, shuffle=False, reference=reference)
    dpo.train_dpo(policy, tok, examples, cfg, ref_model=ref if reference == "model" else None,
                  callback=lambda step, history: clock.tick(step))


def run_trl(args, policy, ref, tok, examples, clock):
    import datasets
    import trl
    from transformers import TrainerCallback

    class PreTokenized(trl.DPOTrainer):
        def _prepare_dataset(self, dataset, *a, **k):
            return dataset

    class Tick(TrainerCallback):
        def on_step_end(self, targs, state, control, **kwargs):
            clock.tick(state.global_step)

    targs = trl.DPOConfig(
        output_dir=tempfile.mkdtemp(), max_steps=WARMUP + args.steps,
        per_device_train_batch_size=args.batch_size, learning_rate=1e-4,
        lr_scheduler_type="linear", warmup_steps=0, beta=0.1, bf16=False,
        gradient_checkpointing=False, max_length=None, train_sampling_strategy="sequential",
        report_to="none", save_strategy="no", disable_tqdm=True, dataloader_pin_memory=False,
        use_cpu=not args.cuda)
    trainer = PreTokenized(model=policy, ref_model=ref, args=targs, callbacks=[Tick()],
                           train_dataset=datasets.Dataset.from_list(examples),
                           processing_class=tok)
    trainer.train()


def run_bare(args, policy, ref, tok, examples, clock):
    """The same math with nothing around it."""
    import torch
    import torch.nn.functional as F

    from dpolab.pairs import collate_pairs
    device = "cuda" if args.cuda else "cpu"
    policy.to(device).train()
    ref.to(device)
    steps = WARMUP + args.steps
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)

    def logps(m, b):
        logits = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                   use_cache=False).logits[:, :-1].float()
        labels = b["labels"][:, 1:]
        nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
        return (-nll.view(labels.shape)).sum(-1).chunk(2)

    for step in range(steps):
        chunk = examples[step * args.batch_size:(step + 1) * args.batch_size]
        b = {k: v.to(device) for k, v in collate_pairs(chunk, tok.pad_token_id).items()}
        c, r = logps(policy, b)
        with torch.no_grad():
            rc, rr = logps(ref, b)
        loss = -F.logsigmoid(0.1 * ((c - rc) - (r - rr))).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        clock.tick(step + 1)
    loss.item()


def child(args) -> None:
    import torch
    os.environ.setdefault("TQDM_DISABLE", "1")
    policy, ref, tok, examples = setup(args)
    if args.cuda:
        policy.cuda(), ref.cuda()
    memory = Memory(args.cuda)
    memory.start()
    clock = Clock()
    impl = args.child
    if impl == "ours":
        run_ours(args, policy, ref, tok, examples, clock)
    elif impl == "ours-precomputed":
        del ref
        run_ours(args, policy, None, tok, examples, clock, reference="precomputed")
    elif impl == "trl":
        run_trl(args, policy, ref, tok, examples, clock)
    else:
        run_bare(args, policy, ref, tok, examples, clock)
    if args.cuda:
        torch.cuda.synchronize()
    cpu, wall = clock.durations(0), clock.durations(1)
    assert len(wall) == args.steps, f"{impl}: timed {len(wall)} steps, expected {args.steps}"
    print(json.dumps({"impl": impl, "steps": wall if args.cuda else cpu,
                      "wall_pairs_per_s": args.steps * args.batch_size / sum(wall),
                      "peak_mib": memory.peak_mib()}))


def measure(impl: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
           "TQDM_DISABLE": "1"}
    out = subprocess.run(cmd + (["--cuda"] if args.cuda else []), env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8, help="pairs per step (TRL's default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--cuda", action="store_true", help="run on the GPU")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    impls = (*IMPLS, "ours-precomputed")
    results: dict[str, list[dict]] = {i: [] for i in impls}
    pairs = args.steps * args.batch_size
    for r in range(args.repeats):
        for impl in impls[r % len(impls):] + impls[:r % len(impls)]:  # rotate the order
            results[impl].append(measure(impl, args))
            x = results[impl][-1]
            print(f"round {r + 1}: {impl:17s} {pairs / sum(x['steps']):7.1f} pairs/s "
                  f"({'wall' if args.cuda else 'CPU'}), {x['wall_pairs_per_s']:7.1f} wall",
                  file=sys.stderr)
    # Step by step, the fastest round: the same batch, the least disturbed measurement.
    best = {i: pairs / sum(map(min, zip(*(x["steps"] for x in results[i]), strict=True)))
            for i in impls}
    wall = {i: statistics.median(x["wall_pairs_per_s"] for x in results[i]) for i in impls}
    peak = {i: statistics.median(x["peak_mib"] for x in results[i]) for i in impls}
    device = "cuda" if args.cuda else f"cpu, {args.threads} thread(s)"
    clock = "wall" if args.cuda else "CPU"
    print(f"DPO on the tiny model ({device}): {args.steps} steps of {args.batch_size} pairs "
          f"after {WARMUP} warm-up steps, {args.repeats} alternating rounds")
    print(f"{'':18s}{'pairs/s ' + clock:>13s}{'wall (median)':>15s}{'peak MiB':>10s}"
          f"{'vs TRL':>8s}{'vs bare':>9s}")
    for i in impls:
        print(f"{i:18s}{best[i]:13.1f}{wall[i]:15.1f}{peak[i]:10.1f}"
              f"{best[i] / best['trl']:8.2f}{best[i] / best['bare']:9.2f}")
    per_round = [sum(t["steps"]) / sum(o["steps"])
                 for o, t in zip(results["ours"], results["trl"], strict=True)]
    print("ours vs TRL, round by round: " + ", ".join(f"{x:.2f}" for x in per_round))
    ratio = best["ours"] / best["trl"]
    assert math.isfinite(ratio)
    print(f"ratio_vs_trl={ratio:.2f}")


if __name__ == "__main__":
    main()
