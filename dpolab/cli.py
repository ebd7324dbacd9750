"""The command line: ``python -m dpolab <command>``.

To add a command, write a ``cmd_<name>(args) -> int`` function (its return value is the
exit status) and register it, with its options, in ``build_parser``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import env, preference


def cmd_doctor(args: argparse.Namespace) -> int:
    print(env.doctor())
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Validate every row (all problem kinds dropped and counted), print the report."""
    from transformers import AutoTokenizer

    from . import model

    if not Path(args.path).is_file():
        print(f"error: {args.path} is not a file", file=sys.stderr)
        return 2
    tokenizer = None if args.no_tokenizer else \
        AutoTokenizer.from_pretrained(args.tokenizer or model.bundled(model.BASE))
    _, report = preference.load_pairs(args.path, tokenizer, policy="drop")
    print(Path(args.path).name)
    print(report.summary(max_problems=args.max_problems))
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpolab",
                                     description="dpolab: LLM alignment with DPO, by doing it.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    doctor = commands.add_parser("doctor", help="device, dtypes, versions, bundled model")
    doctor.set_defaults(func=cmd_doctor)

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
    check.add_argument("--max-problems", type=int, default=None,
                       help="list at most this many problems one by one (default: all)")
    check.set_defaults(func=cmd_data_check)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)
