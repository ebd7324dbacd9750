"""Rebuild the bundled base model: ``python scripts/pretrain.py [--out data/tiny-llama]``."""

import argparse

from dpolab.model import bundled
from dpolab.pretrain import PretrainConfig, pretrain

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(bundled()))
    parser.add_argument("--steps", type=int, default=PretrainConfig.steps)
    args = parser.parse_args()
    stats = pretrain(PretrainConfig(steps=args.steps), args.out)
    print({k: v for k, v in stats.items() if k != "config"})
