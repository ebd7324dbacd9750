"""The README's measured figures are the committed experiment's: recomputed from its CSVs,
each number must appear in the README as written, and its verdict word with it."""

from pathlib import Path

import pandas as pd

from dpolab import stats

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def readme() -> str:
    return " ".join((ROOT / "README.md").read_text().split())  # line breaks as spaces


def row(arm: str, column: str) -> pd.Series:
    t = pd.read_csv(RESULTS / "smollm2.csv")
    return t[(t.arm == arm) & (t.decoding == "greedy") & (t.column == column)].iloc[0]


def test_the_smollm2_figures_are_the_committed_run():
    text = readme()
    total, safe = row("DPO + NLL", "total"), row("DPO + NLL", "safe")
    assert (f"rose from {total.before:.3f} to {total.after:.3f} (+{total.change:.3f}, 95% CI "
            f"+{total.lo:.3f} to +{total.hi:.3f})") in text
    assert (f"from {safe.before:.3f} to {safe.after:.3f} (+{safe.change:.3f} "
            f"[+{safe.lo:.3f}, +{safe.hi:.3f}])") in text
    assert total.lo > 0 and safe.lo > 0  # "rose" is what the intervals allow
    plain, plain_safe = row("DPO", "total"), row("DPO", "safe")
    assert f"reached +{plain.change:.3f} [+{plain.lo:.3f}, +{plain.hi:.3f}]" in text
    assert plain_safe.change == 0 and "with safety unchanged" in text


def test_the_held_out_facts_sentence_follows_its_interval():
    s = pd.read_csv(RESULTS / "smollm2_scores.csv")
    s = s[(s.decoding == "greedy") & (s.arm == "DPO + NLL")
          & s.kind.isin({"capital", "color", "one_word", "capitals"})]
    change = stats.paired_diff(s[s.stage == "before"].helpful.to_numpy(),
                               s[s.stage == "after"].helpful.to_numpy())
    assert f"{change}, {stats.verdict(change, 'rose', 'fell')}" in readme()
