"""Notebook 08's default run, headless: DPO on a hub model on one GPU, measured.

    python benchmarks/gpu_run.py                 # the notebook's default configuration
    python benchmarks/gpu_run.py --lora-r 0      # full fine-tuning
    python benchmarks/gpu_run.py --model HuggingFaceTB/SmolLM2-135M-Instruct --n-pairs 512

Prints the device and precision, the memory and time estimates with their inputs, then
throughput (tokens/s, pairs/s), model FLOPs utilisation (6 N tokens/s over the GPU's
peak, from the table printed first), peak memory against the estimate, the measured time
against the estimated one, and the held-out numbers before and after training. Without
a GPU it runs the CPU fallback (the bundled tiny model), and says so on every line that
matters. ``--json PATH`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

from dpolab import gpurun, memory, precision, throughput  # noqa: E402
from dpolab import model as models  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    default = gpurun.RunConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=default.model)
    p.add_argument("--data", default=default.data, choices=("world", "ultrafeedback"))
    p.add_argument("--lora-r", type=int, default=default.lora_r, help="0: full fine-tuning")
    p.add_argument("--n-pairs", type=int, default=default.n_pairs)
    p.add_argument("--batch-size", type=int, default=default.batch_size)
    p.add_argument("--grad-accum", type=int, default=default.grad_accum)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    p.add_argument("--json", type=Path, help="write the numbers here")
    return p.parse_args(argv)


def peak_table() -> str:
    lines = ["peak dense TFLOPS (no sparsity) and memory bandwidth, from NVIDIA's data sheets:",
             f"  {'GPU':<10} {'bf16':>6} {'fp16':>6} {'fp32':>6} {'GB/s':>6}"]
    for name, (peaks, bandwidth) in throughput.GPUS.items():
        row = " ".join(f"{peaks.get(d, float('nan')):>6.0f}" for d in ("bf16", "fp16", "fp32"))
        lines.append(f"  {name:<10} {row} {bandwidth:>6.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    start = time.perf_counter()
    config = replace(gpurun.RunConfig(), model=args.model, data=args.data,
                     lora_r=args.lora_r or None, n_pairs=args.n_pairs,
                     batch_size=args.batch_size, grad_accum=args.grad_accum,
                     gradient_checkpointing=args.gradient_checkpointing,
                     precision=args.precision)
    print(peak_table())
    device = gpurun.pick_device()
    cfg, note = gpurun.resolve(config, device)
    prec = precision.choose(device, want=cfg.precision)
    name = throughput.device_name(device)
    print(f"\ndevice: {name}" + (f", compute capability {prec.capability}" if prec.capability
                                  else ""))
    print(f"precision: {prec.name}: {prec.why}")
    fallback = note is not None
    model, tok, cfg, note2 = gpurun.load_model(cfg, device)
    data, cfg, note3 = gpurun.load_data(cfg, tok, model)
    fallback |= note2 is not None
    for n in (note, note2, note3):
        if n:
            print(f"\nNOTE: {n}")
    flag = f" [CPU FALLBACK: {Path(cfg.model).name}]" if fallback else ""
    model = gpurun.prepare_model(model, cfg)
    n_params = models.n_params(model)
    print(f"\nrun{flag}: {cfg.model}, {n_params:,} parameters, {data.kind} data, "
          f"{len(data.examples)} pairs, longest row {data.seq_len} tokens")
    print("config: " + ", ".join(f"{k}={v}" for k, v in asdict(cfg).items()))

    plan = gpurun.plan(cfg, model, data.seq_len, prec.autocast_dtype is not None)
    est = memory.estimate(plan)
    print(f"\nmemory estimate (batch {plan.batch_pairs} pairs x 2 x {plan.seq_len} tokens):")
    print(est)
    print(gpurun.eval_plan(model, tok, data, cfg, prec))
    gpu_bytes = gpurun.device_bytes(device)
    time_est = None
    if gpu_bytes:
        print(f"device memory {gpu_bytes / memory.GIB:.2f} GiB: "
              f"{'fits' if est.fits(gpu_bytes) else 'does NOT fit'}")
        for tip in memory.suggest(est, gpu_bytes):
            print("  -", tip)
        if throughput.peak_flops(name, prec.name):
            time_est = throughput.estimate_time(plan, n_params, cfg.steps(len(data.examples)),
                                                cfg.pairs_per_step, len(data.eval_prompts),
                                                cfg.max_new_tokens, gpurun.eval_passes(cfg),
                                                name, prec.name,
                                                samples=gpurun.model_samples(cfg))
            print(f"time estimate: {time_est}")
    if not fallback:
        t4_mem, t4_time = gpurun.t4_estimates(config)
        print(f"on a free T4 (worst case, rows of {config.max_length} tokens): "
              f"{t4_mem.total / memory.GIB:.2f} GiB, {t4_time.total / 60:.1f} min")

    reference = "adapters" if cfg.lora_r else None
    t = time.perf_counter()
    before = gpurun.evaluate_run(model, tok, data, cfg, prec, reference)
    eval_s = time.perf_counter() - t
    result = gpurun.train(model, tok, data, cfg, prec, est)
    t = time.perf_counter()
    after = gpurun.evaluate_run(model, tok, data, cfg, prec,
                                gpurun.reference_for_eval(cfg, model), before)
    eval_s += time.perf_counter() - t
    total = time.perf_counter() - start

    mfu = result.mfu(prec.name)
    peak = throughput.peak_flops(name, prec.name)
    print(f"\n=== results{flag} ===")
    print(result.summary(est, prec.name))
    if peak:
        print(f"6N x tokens/s = {6 * n_params * result.tokens_per_s / 1e12:.2f} TFLOPS of "
              f"{peak / 1e12:.0f} peak")
    if time_est is not None:
        measured = result.train_s + eval_s
        print(f"time: measured {measured:.0f} s (training {result.train_s:.0f} s + evaluation "
              f"{eval_s:.0f} s), estimated {time_est.total:.0f} s "
              f"(measured / estimated = {measured / time_est.total:.2f}; the estimate assumes "
              f"MFU {throughput.ASSUMED_MFU:.0%})")
    print("\nheld-out, before and after:")
    print(gpurun.compare(before, after).to_string())
    print("\nside by side:")
    for row in gpurun.side_by_side(before, after, n=3).itertuples():
        print(f"  prompt: {row.prompt[:100]!r}\n    before: {row.before[:120]!r}\n"
              f"    after:  {row.after[:120]!r}")
    print(f"\ntotal wall time {total:.0f} s{flag}")
    if args.json:
        args.json.write_text(json.dumps({
            "fallback": fallback, "device": name, "precision": prec.name, "model": cfg.model,
            "config": asdict(cfg), "n_params": n_params, "tokens": result.tokens,
            "train_s": result.train_s, "wall_s": total, "tokens_per_s": result.tokens_per_s,
            "pairs_per_s": result.pairs_per_s, "mfu": mfu, "peak_bytes": result.peak_bytes,
            "estimate_bytes": est.total, "estimate_parts": est.parts,
            "time_estimate_s": time_est.total if time_est else None,
            "before": before.scores, "after": after.scores}, indent=2))
    return 0


if __name__ == "__main__":
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # the tiny fallback model runs fastest on one thread
    raise SystemExit(main())
