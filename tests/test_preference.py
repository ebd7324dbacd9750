"""Preference formats, sources and validation: every problem kind names row, field and the
expected form; policies raise or drop and count; the report's numbers are right."""

import json
import subprocess
import sys

import datasets
import pytest
from transformers import AutoTokenizer
from trl.data_utils import is_conversational, maybe_extract_prompt

from dpolab import cli, model
from dpolab.preference import (
    DEFAULT_POLICY,
    FORMATS,
    KINDS,
    PreferenceDataError,
    detect_format,
    explicit,
    load_pairs,
    to_conversational,
    validate,
)

Q, C, R = "What is 2 plus 3?", "2 plus 3 is 5.", "Ugh, 6."


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


ROWS = {
    "standard explicit": {"prompt": Q, "chosen": C, "rejected": R},
    "standard implicit": {"chosen": f"{Q} {C}", "rejected": f"{Q} {R}"},
    "conversational explicit": {"prompt": [user(Q)], "chosen": [assistant(C)],
                                "rejected": [assistant(R)]},
    "conversational implicit": {"chosen": [user(Q), assistant(C)],
                                "rejected": [user(Q), assistant(R)]},
}


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(model.bundled(model.BASE))


def problems_of(rows, **kw):
    """The problems ``validate`` raises for ``rows`` with every kind set to raise."""
    with pytest.raises(PreferenceDataError) as e:
        validate(rows, policy="raise", **kw)
    return e.value.problems


def only_problem(row, **kw):
    (p,) = problems_of([ROWS["standard explicit"], row], **kw)
    assert p.row == 1
    return p


# --- formats ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_detect_format(fmt):
    assert detect_format(ROWS[fmt]) == fmt
    assert is_conversational(ROWS[fmt]) == fmt.startswith("conversational")


def test_text_prompt_with_conversations_is_implicit_like_in_trl():
    """UltraFeedback's layout: TRL ignores the text prompt and reads it from the turns."""
    row = {"prompt": Q, **ROWS["conversational implicit"]}
    assert detect_format(row) == "conversational implicit"
    assert maybe_extract_prompt(row)["prompt"] == [user(Q)]
    assert explicit(row)["prompt"] == [user(Q)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_normalises_like_trl_extracts(fmt):
    row = ROWS[fmt]
    out = explicit(row)
    trl = maybe_extract_prompt(row)
    as_text = (lambda v: v[0]["content"]) if fmt.startswith("conversational") else (lambda v: v)
    assert out["prompt"] == trl["prompt"]
    assert out["chosen"] == as_text(trl["chosen"]) and out["rejected"] == as_text(trl["rejected"])


def test_implicit_text_prompt_is_the_common_prefix_and_responses_keep_their_space():
    assert explicit(ROWS["standard implicit"]) == {"prompt": Q, "chosen": " " + C,
                                                   "rejected": " " + R}


def test_to_conversational_is_a_trl_format_with_the_same_content():
    row = to_conversational(explicit(ROWS["standard explicit"]))
    assert row == ROWS["conversational explicit"]
    assert explicit(row) == {"prompt": [user(Q)], "chosen": C, "rejected": R}


def test_extra_columns_are_kept():
    out = explicit({**ROWS["standard explicit"], "score_chosen": 8.0, "id": "a"})
    assert out["score_chosen"] == 8.0 and out["id"] == "a"


# --- sources -----------------------------------------------------------------------------

def test_every_source_gives_the_same_rows(tmp_path):
    rows = [ROWS["conversational explicit"]] * 3
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(tmp_path / "p.parquet")
    expected, _ = load_pairs(rows)
    for source in (jsonl, tmp_path / "p.parquet", ds, datasets.DatasetDict({"train": ds})):
        kept, report = load_pairs(source)
        assert kept == expected and report.rows == 3 and report.ok


def test_unknown_file_type_is_refused(tmp_path):
    (tmp_path / "p.csv").write_text("prompt,chosen,rejected\n")
    with pytest.raises(ValueError, match=r"p\.csv: expected a \.jsonl, \.json or \.parquet"):
        load_pairs(tmp_path / "p.csv")


# --- validation: one test per problem kind ------------------------------------------------

def test_missing_key():
    p = only_problem({"prompt": Q, "chosen": C})
    assert (p.kind, p.field) == ("missing_key", "rejected")
    assert "expected a 'rejected' field" in str(p)


def test_null_is_missing():
    """Arrow-backed sources (Parquet, datasets) fill absent fields with null."""
    assert only_problem({"prompt": Q, "chosen": None, "rejected": R}).kind == "missing_key"


def test_key_of_another_dataset_type():
    p = problems_of([{"prompt": Q, "completion": C, "label": True}])
    assert [(x.kind, x.field) for x in p][:2] == [("unexpected_key", "completion"),
                                                  ("unexpected_key", "label")]
    assert "belongs to another dataset type" in p[0].expected


@pytest.mark.parametrize("row,field,expected", [
    ({"prompt": Q, "chosen": C, "rejected": 6}, "rejected", "expected text or a list of messages"),
    ({"prompt": Q, "chosen": C, "rejected": [assistant(R)]}, "rejected", "expected text"),
    ({"prompt": [user(Q)], "chosen": C, "rejected": R}, "prompt",
     "expected text like the responses"),
    ({"prompt": [user(Q)], "chosen": [assistant(C)], "rejected": [{"role": "assistant"}]},
     "rejected[0]", "expected a list of {'role': str, 'content': str} messages"),
    ([Q, C, R], "(row)", "expected an object with prompt/chosen/rejected"),
])
def test_wrong_type(row, field, expected):
    p = only_problem(row)
    assert p.field == field and expected in str(p)


def test_wrong_type_message_names_row_field_and_expected_form():
    p = only_problem({"prompt": Q, "chosen": C, "rejected": 6})
    assert str(p) == ("row 1, field 'rejected': expected text or a list of messages, got 6 "
                      "[wrong_type]")


@pytest.mark.parametrize("row,field", [
    ({"prompt": Q, "chosen": "   ", "rejected": R}, "chosen"),
    ({"prompt": "", "chosen": C, "rejected": R}, "prompt"),
    ({"prompt": [user(Q)], "chosen": [assistant(C)], "rejected": [assistant("")]}, "rejected"),
    ({"prompt": [user("")], "chosen": [assistant(C)], "rejected": [assistant(R)]}, "prompt[0]"),
])
def test_empty(row, field):
    p = only_problem(row)
    assert (p.kind, p.field) == ("empty", field)


def test_identical():
    p = only_problem({"prompt": Q, "chosen": C, "rejected": C})
    assert (p.kind, p.field) == ("identical", "chosen/rejected")


@pytest.mark.parametrize("chosen", [[user(C)], [assistant(C), assistant(C)], []])
def test_response_not_one_assistant_turn(chosen):
    p = only_problem({"prompt": [user(Q)], "chosen": chosen or [{"role": "tool", "content": C}],
                      "rejected": [assistant(R)]})
    assert (p.kind, p.field) == ("not_assistant", "chosen")
    assert "expected exactly one assistant message" in p.expected


@pytest.mark.parametrize("prompt", [
    [assistant("Hi."), user(Q)],
    [user("Hi."), user(Q)],
    [user(Q), {"role": "system", "content": "Be kind."}],
    [user(Q), assistant("5.")],
    [{"role": "human", "content": Q}],
])
def test_roles_out_of_order(prompt):
    p = only_problem({"prompt": prompt, "chosen": [assistant(C)], "rejected": [assistant(R)]})
    assert (p.kind, p.field) == ("role_order", "prompt")


def test_system_then_alternating_turns_is_valid():
    prompt = [{"role": "system", "content": "Be kind."}, user("Hi."), assistant("Hello!"), user(Q)]
    kept, _ = validate([{"prompt": prompt, "chosen": [assistant(C)], "rejected": [assistant(R)]}])
    assert kept[0]["prompt"] == prompt


@pytest.mark.parametrize("row", [
    {"chosen": "Yes, 5.", "rejected": "No idea."},
    {"chosen": [user("A?"), assistant(C)], "rejected": [user("B?"), assistant(R)]},
])
def test_implicit_pair_without_common_prefix(row):
    p = only_problem(row)
    assert (p.kind, p.field) == ("no_common_prefix", "chosen/rejected")


@pytest.mark.parametrize("row,field", [
    ({"prompt": Q, "chosen": C + "</s>", "rejected": R}, "chosen"),
    ({"prompt": "<s><|user|>\n" + Q, "chosen": C, "rejected": R}, "prompt"),
    ({"prompt": [user(Q + "<|end|>")], "chosen": [assistant(C)], "rejected": [assistant(R)]},
     "prompt[0]"),
])
def test_special_tokens_in_text(tok, row, field):
    p = only_problem(row, tokenizer=tok)
    assert (p.kind, p.field) == ("special_token", field)
    assert "expected plain text" in p.expected


def test_special_tokens_are_only_checked_with_a_tokenizer():
    kept, report = validate([{"prompt": Q, "chosen": C + "</s>", "rejected": R}])
    assert report.ok and report.unit == "characters"


def test_mixed_formats_follow_the_first_row_like_trl():
    p = only_problem(ROWS["conversational explicit"])
    assert p.kind == "mixed_format"
    assert "expected the dataset's format (standard explicit)" in p.expected


def test_bad_json_line_keeps_row_numbers(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(ROWS["standard explicit"]) + "\n{oops\n"
                    + json.dumps({"prompt": Q, "chosen": C, "rejected": C}) + "\n")
    kept, report = load_pairs(path, policy="drop")
    assert report.by_kind() == {"bad_json": [1], "identical": [2]} and len(kept) == 1


def test_every_kind_has_a_test_and_a_default_policy():
    assert set(DEFAULT_POLICY) == set(KINDS)
    assert {DEFAULT_POLICY[k] for k in KINDS} == {"raise", "drop"}


# --- policies and the report ----------------------------------------------------------------

BROKEN = [ROWS["standard explicit"],
          {"prompt": Q, "chosen": C, "rejected": C},  # identical: dropped by default
          {"prompt": Q, "chosen": "", "rejected": R},  # empty: dropped by default
          {"prompt": Q, "chosen": C},  # missing: raises by default
          {"prompt": Q, "chosen": C, "rejected": 3}]  # wrong type: raises by default


def test_default_policy_raises_listing_every_fatal_problem_only():
    with pytest.raises(PreferenceDataError) as e:
        validate(BROKEN)
    assert [(p.row, p.kind) for p in e.value.problems] == [(3, "missing_key"), (4, "wrong_type")]
    assert "row 3, field 'rejected'" in str(e.value) and "row 4, field 'rejected'" in str(e.value)


def test_drop_policy_counts_every_dropped_row():
    kept, report = validate(BROKEN, policy="drop")
    assert len(kept) == 1 and report.rows == 5 and report.dropped == 4
    assert report.by_kind() == {"identical": [1], "empty": [2], "missing_key": [3],
                                "wrong_type": [4]}
    text = str(report)
    assert "identical" in text and "first: 1" in text and "(policy: drop)" in text


def test_default_policy_drops_ties_of_text_and_empties_with_a_count():
    kept, report = validate(BROKEN[:3])
    assert len(kept) == 1 and report.by_kind() == {"identical": [1], "empty": [2]}


def test_policy_per_kind_overrides_the_default():
    with pytest.raises(PreferenceDataError, match="identical"):
        validate(BROKEN[:2], policy={"identical": "raise"})


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match="expected a kind in"):
        validate(BROKEN[:1], policy={"identicall": "drop"})
    with pytest.raises(ValueError, match="'raise' or 'drop'"):
        validate(BROKEN[:1], policy={"identical": "skip"})


def test_report_lengths_and_chosen_longer_rate(tok):
    rows = [{"prompt": "a", "chosen": "xxxx", "rejected": "yy"},
            {"prompt": "bb", "chosen": "x", "rejected": "yyy"},
            {"prompt": "ccc", "chosen": "xx", "rejected": "yy"},
            {"prompt": "dddd", "chosen": "xxxxx", "rejected": "y"}]
    _, report = validate(rows)
    assert report.chosen_longer == 0.5 and report.same_length == 0.25
    assert report.lengths["prompt"] == {"min": 1, "median": 2.5, "mean": 2.5, "max": 4}
    assert report.lengths["chosen"]["max"] == 5
    _, report = validate([ROWS["standard explicit"]], tokenizer=tok)
    n = len(tok(C, add_special_tokens=False)["input_ids"])
    assert report.unit == "tokens" and report.lengths["chosen"]["max"] == n


# --- the command line ----------------------------------------------------------------------

def run_check(path):
    return subprocess.run([sys.executable, "-m", "dpolab", "data", "check", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_data_check_names_each_bad_row_and_fails(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in BROKEN) + "not json\n")
    out = run_check(path)
    assert out.returncode == 1, out.stderr
    for row, kind in [(1, "identical"), (2, "empty"), (3, "missing_key"), (4, "wrong_type"),
                      (5, "bad_json")]:
        assert f"row {row}, field" in out.stdout and kind in out.stdout
    assert "rows: 6" in out.stdout and "kept: 1" in out.stdout


def test_data_check_passes_a_clean_parquet_file(tmp_path, capsys):
    path = tmp_path / "clean.parquet"
    datasets.Dataset.from_list([ROWS["standard explicit"]] * 4).to_parquet(path)
    assert cli.main(["data", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rows: 4" in out and "problems: none" in out and "chosen longer than rejected" in out
