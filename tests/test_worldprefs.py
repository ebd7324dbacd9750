"""World preference pairs (off- and on-policy) and the audits against the gold judge."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpolab import env, judge, model, preference, world, worldprefs

ROOT = Path(__file__).resolve().parent.parent


def test_offpolicy_pairs_are_deterministic_and_seeded():
    assert worldprefs.offpolicy_pairs(100, seed=1) == worldprefs.offpolicy_pairs(100, seed=1)
    assert worldprefs.offpolicy_pairs(100, seed=1) != worldprefs.offpolicy_pairs(100, seed=2)


def test_offpolicy_pairs_are_valid_standard_rows_with_their_gold_scores():
    pairs = worldprefs.offpolicy_pairs(300)
    kept, report = preference.validate(pairs, policy="raise")
    assert len(kept) == 300 and report.format == "standard explicit"
    for r in pairs[:50]:
        for k in ("chosen", "rejected"):
            assert judge.score(r["prompt"], r[k]).total == pytest.approx(r[f"gold_{k}"], abs=1e-4)


def test_identical_responses_are_skipped_and_counted():
    pairs = worldprefs.offpolicy_pairs(300)
    assert all(r["chosen"] != r["rejected"] for r in pairs)
    assert pairs.skipped["identical"] > 0


def test_held_out_pairs_use_held_out_prompts_only():
    train = worldprefs.offpolicy_pairs(500)
    held = worldprefs.offpolicy_pairs(200, split="eval")
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    assert {r["family"] for r in held} == set(world.FAMILIES)


def test_perfect_annotators_agree_with_the_gold_judge_and_noise_lowers_agreement():
    agreement = {t: worldprefs.audit(worldprefs.offpolicy_pairs(600, temperature=t)).gold_agreement
                 for t in (0.0, 0.1, 1.0)}
    assert agreement[0.0] == 1.0
    assert agreement[0.0] >= agreement[0.1] > agreement[1.0] > 0.5


def test_audit_counts_ties_length_bias_duplicates_and_contradictions():
    q = "What is 2 plus 3?"
    rows = [{"prompt": q, "chosen": "2 plus 3 is 5.", "rejected": "6."},  # agrees, chosen longer
            {"prompt": q, "chosen": "6.", "rejected": "2 plus 3 is 5."},  # noise (contradicts 0)
            {"prompt": q, "chosen": "It is 5.", "rejected": "The answer is 5."},  # tie
            {"prompt": q, "chosen": "2 plus 3 is 5.", "rejected": "6."}]  # duplicate of 0
    a = worldprefs.audit(rows)
    assert (a.pairs, a.ties, a.duplicates, a.contradictions) == (4, 0.25, 1, 2)
    assert a.gold_agreement == pytest.approx(2 / 3)
    assert a.chosen_longer == 0.5 and a.gold_longer == 1.0


def test_audit_reads_conversational_prompts():
    row = {"prompt": [{"role": "user", "content": "What is 2 plus 3?"}], "chosen": "5.",
           "rejected": "6."}
    assert worldprefs.audit([row]).gold_agreement == 1.0


@pytest.fixture(scope="module")
def sft():
    return model.load(model.SFT)


def test_onpolicy_pairs_are_two_finished_samples_of_the_model(sft):
    m, tok = sft
    pairs = worldprefs.onpolicy_pairs(m, tok, 24, seed=0)
    assert len(pairs) == 24 and pairs == worldprefs.onpolicy_pairs(m, tok, 24, seed=0)
    assert all(r["source"] == "model" and r["chosen"] != r["rejected"] for r in pairs)
    kept, _ = preference.validate(pairs, tok, policy="raise")
    assert len(kept) == 24
    labelled = sum(pairs.skipped.values()) + len(pairs)
    assert labelled >= 24 and set(pairs.skipped) <= {"identical", "unfinished", "empty"}


def test_demo_vs_model_pairs_put_a_good_demonstration_beside_the_model_s_own_sample(sft):
    """One response is the flawless demonstrator's, the other the model's sample; labels
    read the gold judge with the sample's own finish (a sample cut at the limit scores 0)."""
    m, tok = sft
    pairs = worldprefs.demo_vs_model_pairs(m, tok, 48, seed=0, temperature=0.0,
                                           max_new_tokens=8)
    assert len(pairs) == 48 and pairs == worldprefs.demo_vs_model_pairs(
        m, tok, 48, seed=0, temperature=0.0, max_new_tokens=8)
    assert {r["family"] for r in pairs} == set(world.ALIGNMENT_FAMILIES)
    cut = [r for r in pairs if not r["model_finished"]]
    assert cut, "8 new tokens cut some samples of the tiny model"
    for r in pairs:
        model_response = r["chosen"] if r["model_chosen"] else r["rejected"]
        demo_response = r["rejected"] if r["model_chosen"] else r["chosen"]
        assert judge.score(r["prompt"], demo_response).total == 1.0  # GOOD is flawless
        gold_model = judge.score(r["prompt"], model_response, r["model_finished"]).total
        assert r[f"gold_{'chosen' if r['model_chosen'] else 'rejected'}"] == \
            pytest.approx(gold_model, abs=1e-4)
    # a perfect annotator never prefers a cut sample to the flawless demonstration
    assert not any(r["model_chosen"] for r in cut)


def test_exports_are_rebuilt_identically(tmp_path):
    """``scripts/make_prefs.py`` is deterministic: the off-policy files it writes match."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_prefs.py"), "--out", str(tmp_path),
                    "--train", "40", "--heldout", "10", "--skip-onpolicy"], check=True,
                   capture_output=True, text=True, timeout=120)
    rows = [json.loads(x) for x in (tmp_path / "offpolicy_train.jsonl").read_text().splitlines()]
    assert rows == json.loads(json.dumps(worldprefs.offpolicy_pairs(40)))
    kept, report = preference.load_pairs(tmp_path / "offpolicy_heldout.jsonl")
    assert report.ok and len(kept) == 10


def test_committed_exports_are_current():
    """``data/prefs`` holds what ``scripts/make_prefs.py`` writes with today's world."""
    path = env.data_dir() / "prefs" / "offpolicy_train.jsonl"
    with path.open() as f:
        head = [json.loads(next(f)) for _ in range(100)]
    assert head == json.loads(json.dumps(worldprefs.offpolicy_pairs(100)))
