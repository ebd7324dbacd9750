"""Adapters on small fixture files with the schemas of UltraFeedback binarized, Anthropic
HH-RLHF and Intel orca_dpo_pairs (written here; nothing is downloaded)."""

import json

import datasets
import pytest

from dpolab import adapters, preference


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def conv(user, assistant):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


ULTRAFEEDBACK = [
    {"prompt": "Name a primary color.", "prompt_id": "a1",
     "chosen": conv("Name a primary color.", "Red is a primary color."),
     "rejected": conv("Name a primary color.", "Green."),
     "messages": conv("Name a primary color.", "Red is a primary color."),
     "score_chosen": 8.0, "score_rejected": 5.5},
    {"prompt": "Say hi.", "prompt_id": "b2", "chosen": conv("Say hi.", "Hi!"),
     "rejected": conv("Say hi.", "Hello there."), "messages": conv("Say hi.", "Hi!"),
     "score_chosen": 7.0, "score_rejected": 7.0},
]
HH = [
    {"chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water and yeast, "
               "then bake it.",
     "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: Buy some."},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke."
               "\n\nAssistant: Why did the bread rise? It was well bred.",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke."
                 "\n\nAssistant: No."},
]
ORCA = [
    {"system": "You are a helpful assistant.", "question": "What is 2 plus 2?",
     "chosen": "2 plus 2 is 4.", "rejected": "5."},
    {"system": "", "question": "Translate 'bonjour'.", "chosen": "Hello.", "rejected": "Bye."},
]


def test_ultrafeedback_to_standard_explicit(tmp_path):
    rows = adapters.ultrafeedback(write_jsonl(tmp_path / "uf.jsonl", ULTRAFEEDBACK))
    assert rows[0] == {"prompt": "Name a primary color.", "chosen": "Red is a primary color.",
                       "rejected": "Green.", "prompt_id": "a1", "score_chosen": 8.0,
                       "score_rejected": 5.5}
    kept, report = preference.validate(rows)
    assert report.ok and report.format == "standard explicit" and len(kept) == 2
    ties = sum(r["score_chosen"] == r["score_rejected"] for r in rows)
    assert ties == 1


def test_ultrafeedback_from_parquet_and_a_dataset_dict(tmp_path):
    ds = datasets.Dataset.from_list(ULTRAFEEDBACK)
    ds.to_parquet(tmp_path / "uf.parquet")
    expected = adapters.ultrafeedback(ULTRAFEEDBACK)
    assert adapters.ultrafeedback(tmp_path / "uf.parquet") == expected
    assert adapters.ultrafeedback(datasets.DatasetDict({"train_prefs": ds})) == expected


def test_ultrafeedback_row_without_assistant_answer_is_named():
    bad = {**ULTRAFEEDBACK[0], "rejected": [{"role": "user", "content": "Name a primary color."}]}
    with pytest.raises(preference.PreferenceDataError, match=r"row 1, field 'rejected': expected "
                       r"a conversation ending with an assistant message"):
        adapters.ultrafeedback([ULTRAFEEDBACK[1], bad])


def test_hh_rlhf_to_conversational_explicit(tmp_path):
    rows = adapters.hh_rlhf(write_jsonl(tmp_path / "hh.jsonl", HH))
    assert rows[0] == {"prompt": [{"role": "user", "content": "How do I bake bread?"}],
                       "chosen": [{"role": "assistant",
                                   "content": "Mix flour, water and yeast, then bake it."}],
                       "rejected": [{"role": "assistant", "content": "Buy some."}]}
    assert [m["role"] for m in rows[1]["prompt"]] == ["user", "assistant", "user"]
    assert rows[1]["prompt"][1]["content"] == "Hello! How can I help?"
    kept, report = preference.validate(rows)
    assert report.ok and report.format == "conversational explicit"
    assert kept[1]["chosen"] == "Why did the bread rise? It was well bred."


def test_hh_rlhf_prompt_is_the_shared_conversation():
    bad = {"chosen": HH[1]["chosen"], "rejected": HH[1]["rejected"].replace("Hi", "Hey", 1)}
    with pytest.raises(preference.PreferenceDataError, match="row 0, field 'rejected': expected "
                       "the same turns as 'chosen'"):
        adapters.hh_rlhf([bad])


def test_hh_rlhf_malformed_transcripts_are_named():
    rows = [HH[0], {"chosen": "Human: hi Assistant: yo", "rejected": HH[0]["rejected"]},
            {"chosen": HH[0]["chosen"] + "\n\nHuman: thanks", "rejected": HH[0]["rejected"]}]
    with pytest.raises(preference.PreferenceDataError) as e:
        adapters.hh_rlhf(rows)
    assert [(p.row, p.field, p.kind) for p in e.value.problems] == [
        (1, "chosen", "wrong_type"), (2, "chosen", "not_assistant")]


def test_orca_dpo_pairs_to_conversational_explicit(tmp_path):
    rows = adapters.orca_dpo_pairs(write_jsonl(tmp_path / "orca.jsonl", ORCA))
    assert rows[0]["prompt"] == [{"role": "system", "content": "You are a helpful assistant."},
                                 {"role": "user", "content": "What is 2 plus 2?"}]
    assert rows[1]["prompt"] == [{"role": "user", "content": "Translate 'bonjour'."}]
    kept, report = preference.validate(rows)
    assert report.ok and [r["chosen"] for r in kept] == ["2 plus 2 is 4.", "Hello."]


def test_orca_missing_question_is_named():
    with pytest.raises(preference.PreferenceDataError,
                       match="row 0, field 'question': expected text in 'question'"):
        adapters.orca_dpo_pairs([{"system": "", "chosen": "a", "rejected": "b"}])
