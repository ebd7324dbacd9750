"""Every test runs offline (no hub downloads, no telemetry) and on one torch thread: the
models here are tiny, run fastest on one thread, and many times slower on two when the
cores are shared."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import torch  # noqa: E402

torch.set_num_threads(1)
