"""Our DPO trainer against TRL's ``DPOTrainer``: same model (the bundled SFT model, fp32), same
token ids, same batches, same optimizer and schedule; the loss and the six metrics TRL logs
agree to fp32 rounding (``numeric.tolerance``: relative to each number's magnitude, growing
with the step) at step 0 and after several optimizer steps, and an off-by-one in the
log-probs is caught by the same comparison.

TRL tokenizes text itself (prompt and completion jointly, with the eos *string* appended), so
both trainers are fed the same pre-tokenized examples: ``_prepare_dataset`` is bypassed and
TRL's own collator pads them. ``bf16`` and gradient checkpointing, on by default in TRL, are
off; batches are read in order (``train_sampling_strategy="sequential"``).
"""

import math

import pytest
import torch
from numeric import assert_runs_close

from dpolab import dpo, logps, model, pairs, worldprefs

# TRL 1.16 still uses transformers' pre-5.0 name gradient_checkpointing; harmless here.
pytestmark = [pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated"),
              pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated")]
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

STEPS, BATCH, LR = 4, 8, 1e-3
SIX = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
       "logps/chosen", "logps/rejected")


class PreTokenizedDPOTrainer(trl.DPOTrainer):
    """TRL's trainer on examples that hold ``prompt_ids``, ``chosen_ids``, ``rejected_ids``."""

    def _prepare_dataset(self, dataset, *args, **kwargs):
        return dataset


@pytest.fixture(scope="module")
def data():
    tok = model.load(model.SFT)[1]
    examples, _ = pairs.encode_pairs(tok, worldprefs.offpolicy_pairs(STEPS * BATCH, seed=0))
    return tok, examples


def trl_history(tok, examples, loss_type: str, beta: float, tmp_path) -> list[dict]:
    args = trl.DPOConfig(
        output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=BATCH,
        learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, beta=beta, loss_type=[loss_type], bf16=False,
        gradient_checkpointing=False, max_length=None, train_sampling_strategy="sequential",
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
        dataloader_pin_memory=False, seed=0)
    policy, ref = model.load(model.SFT)[0], model.load(model.SFT)[0]
    trainer = PreTokenizedDPOTrainer(model=policy, ref_model=ref, args=args,
                                     train_dataset=datasets.Dataset.from_list(examples),
                                     processing_class=tok)
    trainer.train()
    return [row for row in trainer.state.log_history if "loss" in row]


def our_history(tok, examples, loss_type: str, beta: float, average: bool = False) -> list[dict]:
    cfg = dpo.DPOConfig(steps=STEPS, batch_size=BATCH, lr=LR, beta=beta, loss_type=loss_type,
                        shuffle=False, reference="model", average_logps=average)
    return dpo.train_dpo(model.load(model.SFT)[0], tok, examples, cfg).train


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge"])
def test_loss_and_metrics_match_trl(data, loss_type, tmp_path):
    tok, examples = data
    theirs = trl_history(tok, examples, loss_type, 0.1, tmp_path)
    ours = our_history(tok, examples, loss_type, 0.1)
    assert len(theirs) == len(ours) == STEPS
    if loss_type == "sigmoid":
        assert ours[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert_runs_close(ours, theirs, ("loss", *SIX))
    for t, o in zip(theirs, ours, strict=True):
        # a norm over a million gradient entries: its rounding is relative, not per step
        assert o["grad_norm"] == pytest.approx(t["grad_norm"], rel=1e-4)
        assert o["lr"] == pytest.approx(t["learning_rate"])
    # The run moved: later steps are not step 0 again.
    assert abs(ours[-1]["rewards/margins"]) > 1e-2


def test_an_off_by_one_in_the_logps_is_caught(data, tmp_path, monkeypatch):
    """The tolerance is tight enough to matter: log-probs that read the logits one position
    late (no shift between logits and labels) fail the same comparison."""
    tok, examples = data
    theirs = trl_history(tok, examples, "sigmoid", 0.1, tmp_path)

    def unshifted(logits, labels, average=False):
        return logps.sequence_logps(torch.cat([logits[:, 1:], logits[:, -1:]], 1), labels, average)

    monkeypatch.setattr(dpo, "sequence_logps", unshifted)
    ours = our_history(tok, examples, "sigmoid", 0.1)
    with pytest.raises(AssertionError, match="logps/chosen"):
        assert_runs_close(ours, theirs, ("logps/chosen", "logps/rejected"))


def test_trl_ipo_is_ipo_on_per_token_mean_logps(data, tmp_path):
    """TRL's ``ipo`` divides each log-ratio by its token count: our ``ipo_loss`` on averaged
    log-probs gives the same losses (TRL's rewards stay on summed log-probs, ours do not)."""
    tok, examples = data
    theirs = trl_history(tok, examples, "ipo", 0.5, tmp_path)
    ours = our_history(tok, examples, "ipo", 0.5, average=True)
    assert_runs_close(ours, theirs, ("loss",))
    summed = our_history(tok, examples, "ipo", 0.5, average=False)
    assert summed[1]["loss"] != pytest.approx(theirs[1]["loss"], abs=1e-3)


def test_same_token_ids_go_into_both(data):
    """TRL's collator and ours build the same tensors from the same examples."""
    tok, examples = data
    ours = pairs.collate_pairs(examples[:BATCH], tok.pad_token_id)
    theirs = trl.trainer.dpo_trainer.DataCollatorForPreference(pad_token_id=tok.pad_token_id)(
        examples[:BATCH])
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    assert torch.equal(ours["labels"] != -100, theirs["completion_mask"].bool())
