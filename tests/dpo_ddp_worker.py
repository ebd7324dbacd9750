"""Run by ``test_dpo.py`` under ``torchrun --nproc_per_node 2`` with ``ACCELERATE_USE_CPU=true``:
three DPO steps, each process with half of every batch of 8; the main process writes the
history as JSON."""

import json
import sys

import torch
from accelerate import PartialState

from dpolab import dpo, model, pairs, worldprefs

torch.set_num_threads(1)
m, tok = model.load(model.SFT)
examples = pairs.encode_pairs(tok, worldprefs.offpolicy_pairs(48, seed=0))[0]
cfg = dpo.DPOConfig(steps=3, batch_size=4, lr=1e-3, reference="precomputed")
history = dpo.train_dpo(m, tok, examples, cfg)
state = PartialState()  # this launch: rank and world size
if state.is_main_process:
    params = torch.cat([p.detach().flatten() for p in m.parameters()])
    with open(sys.argv[1], "w") as f:
        json.dump({"processes": state.num_processes, "train": history.train,
                   "param_sum": params.sum().item(), "param_abs_sum": params.abs().sum().item()},
                  f)
