"""What the model sees, token by token, for every format and for a tokenizer that adds
bos by itself and one that does not; truncation and its report; the collated batch."""

import copy

import pytest
import torch
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer
from trl.data_utils import _tokenize, common_prefix_length

from dpolab import chat, model, pairs, preference
from dpolab.logps import IGNORE

Q, C, R = "What is 2 plus 3?", "2 plus 3 is 5.", "Ugh, 6."
PROMPT_TEXT = f"<s><|user|>\n{Q}<|end|>\n<|assistant|>\n"
ROWS = {
    "standard explicit": {"prompt": Q, "chosen": C, "rejected": R},
    "standard implicit": {"chosen": f"{Q} {C}", "rejected": f"{Q} {R}"},
    "conversational explicit": {"prompt": [{"role": "user", "content": Q}],
                                "chosen": [{"role": "assistant", "content": C}],
                                "rejected": [{"role": "assistant", "content": R}]},
    "conversational implicit": {
        "chosen": [{"role": "user", "content": Q}, {"role": "assistant", "content": C}],
        "rejected": [{"role": "user", "content": Q}, {"role": "assistant", "content": R}]},
}
# A standard implicit pair's responses start with the space that followed the prompt.
RESPONSES = {fmt: (" " + C, " " + R) if fmt == "standard implicit" else (C, R) for fmt in ROWS}


@pytest.fixture(scope="module")
def plain():
    tok = AutoTokenizer.from_pretrained(model.bundled(model.BASE))
    assert tok("hi")["input_ids"][0] != tok.bos_token_id  # adds no bos by itself
    return tok


@pytest.fixture(scope="module")
def adds_bos(plain):
    """The same tokenizer with a post-processor that prepends bos, like Llama's."""
    tok = copy.deepcopy(plain)
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.bos_token_id)])
    assert tok("hi")["input_ids"][0] == tok.bos_token_id
    return tok


def encoded(tok, fmt, **limits):
    rows, _ = preference.validate([ROWS[fmt]])
    examples, report = pairs.encode_pairs(tok, rows, **limits)
    return examples, report


def pieces(tok, ids):
    return [tok.decode([i]) for i in ids]


@pytest.mark.parametrize("which", ["plain", "adds_bos"])
@pytest.mark.parametrize("fmt", list(ROWS))
def test_what_the_model_sees(request, which, fmt):
    tok = request.getfixturevalue(which)
    (ex,), _ = encoded(tok, fmt)
    batch = pairs.collate_pairs([ex], tok.pad_token_id)
    specials = set(preference.special_tokens_of(tok))
    n_prompt = len(ex["prompt_ids"])
    for row, (key, response) in enumerate(zip(("chosen_ids", "rejected_ids"), RESPONSES[fmt],
                                              strict=True)):
        n = n_prompt + len(ex[key])
        ids = batch["input_ids"][row, :n].tolist()
        seen = pieces(tok, ids)
        # Token by token, the text is the prompt rendered once, then the response and eos.
        assert "".join(seen) == PROMPT_TEXT + response + "</s>"
        assert [t for t in seen if t in specials] == ["<s>", "<|user|>", "<|end|>",
                                                     "<|assistant|>", "</s>"]
        assert seen[0] == "<s>" and seen[-1] == "</s>"  # one bos first, one eos last
        assert "".join(seen[:n_prompt]) == PROMPT_TEXT  # the boundary: after the header
        # The prompt is masked; every response token, eos included, is a label.
        labels = batch["labels"][row].tolist()
        assert labels[:n_prompt] == [IGNORE] * n_prompt
        assert labels[n_prompt:n] == ids[n_prompt:]
        assert all(y == IGNORE for y in labels[n:])
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (len(labels) - n)
    # Chosen and rejected share the prompt ids, so the boundary is the same.
    assert batch["input_ids"][0, :n_prompt].tolist() == batch["input_ids"][1, :n_prompt].tolist()


def test_both_tokenizers_give_the_same_ids(plain, adds_bos):
    for fmt in ROWS:
        assert encoded(plain, fmt)[0] == encoded(adds_bos, fmt)[0]


def test_naive_tokenization_would_double_bos(adds_bos):
    """The trap the encoders avoid: tokenizing the rendered template with special tokens."""
    naive = adds_bos(chat.chat_text(adds_bos, Q))["input_ids"]
    assert naive[:2] == [adds_bos.bos_token_id] * 2
    assert chat.prompt_ids(adds_bos, Q).count(adds_bos.bos_token_id) == 1


@pytest.mark.parametrize("which", ["plain", "adds_bos"])
def test_matches_trl_tokenization_of_conversations(request, which):
    """TRL's DPO tokenization of the conversational row, with a system turn and history."""
    tok = request.getfixturevalue(which)
    row = {"prompt": [{"role": "system", "content": "Be kind."},
                      {"role": "user", "content": "Hi."},
                      {"role": "assistant", "content": "Hello! How can I help?"},
                      {"role": "user", "content": Q}],
           "chosen": [{"role": "assistant", "content": C}],
           "rejected": [{"role": "assistant", "content": " " + R}]}
    p = _tokenize(tok, row["prompt"], add_generation_prompt=True)["input_ids"]
    pc = _tokenize(tok, row["prompt"] + row["chosen"])["input_ids"]
    pr = _tokenize(tok, row["prompt"] + row["rejected"])["input_ids"]
    n = min(common_prefix_length(p, pc), common_prefix_length(p, pr))
    ex = pairs.encode_pair(tok, **preference.explicit(row))
    assert ex == {"prompt_ids": p[:n], "chosen_ids": pc[n:], "rejected_ids": pr[n:]}
    # A standard row is tokenized like its conversational version.
    std = pairs.encode_pair(tok, **preference.explicit(ROWS["standard explicit"]))
    assert std == pairs.encode_pair(tok, **preference.explicit(
        preference.to_conversational(ROWS["standard explicit"])))


def test_encode_pair_keeps_its_three_keys(plain):
    ex = pairs.encode_pair(plain, Q, C, R)
    assert set(ex) == {"prompt_ids", "chosen_ids", "rejected_ids"}
    assert ex["chosen_ids"][-1] == ex["rejected_ids"][-1] == plain.eos_token_id


def test_collate_puts_all_chosen_rows_then_all_rejected_rows(plain):
    exs = [pairs.encode_pair(plain, Q, C, R), pairs.encode_pair(plain, "Hi.", "Hello!", "What.")]
    b = pairs.collate_pairs(exs, plain.pad_token_id)
    assert b["input_ids"].shape[0] == 4
    decoded = [plain.decode(b["labels"][i][b["labels"][i] != IGNORE]) for i in range(4)]
    assert decoded == [C + "</s>", "Hello!</s>", R + "</s>", "What.</s>"]


# --- truncation ---------------------------------------------------------------------------

LONG_Q = "Tell me a story. " * 10 + Q


def test_prompt_keeps_its_end_and_its_bos(plain):
    full = pairs.encode_pair(plain, LONG_Q, C, R)
    cut = pairs.encode_pair(plain, LONG_Q, C, R, max_prompt_length=12)
    assert len(cut["prompt_ids"]) == 12 < len(full["prompt_ids"])
    assert cut["prompt_ids"][0] == plain.bos_token_id
    assert cut["prompt_ids"][1:] == full["prompt_ids"][-11:]
    assert plain.decode(cut["prompt_ids"]).endswith(f"{Q}<|end|>\n<|assistant|>\n")
    assert cut["chosen_ids"] == full["chosen_ids"]


def test_responses_keep_their_start_and_lose_their_eos(plain):
    full = pairs.encode_pair(plain, Q, C, R)
    n = len(full["prompt_ids"])
    cut = pairs.encode_pair(plain, Q, C, R, max_length=n + 3)
    assert cut["chosen_ids"] == full["chosen_ids"][:3]
    assert plain.eos_token_id not in cut["chosen_ids"]
    assert cut["prompt_ids"] == full["prompt_ids"]
    assert all(n + len(cut[k]) <= n + 3 for k in ("chosen_ids", "rejected_ids"))


def test_a_pair_that_cannot_fit_is_dropped_and_counted_or_raises(plain):
    rows = [{"prompt": Q, "chosen": C, "rejected": R},
            {"prompt": LONG_Q, "chosen": C, "rejected": R}]
    n = len(chat.prompt_ids(plain, Q))
    examples, report = pairs.encode_pairs(plain, rows, max_length=n + 2)
    assert len(examples) == 1 and report.dropped_too_long == 1 and report.kept == 1
    with pytest.raises(pairs.PairTooLongError, match="row 1: the prompt has"):
        pairs.encode_pairs(plain, rows, max_length=n + 2, if_too_long="raise")


def test_truncation_report_counts_every_cut(plain):
    rows = [{"prompt": Q, "chosen": C, "rejected": R},
            {"prompt": LONG_Q, "chosen": C, "rejected": R}]
    n_r = len(chat.response_ids(plain, R))
    full, untouched = pairs.encode_pairs(plain, rows)
    assert untouched.tokens_cut == 0 and untouched.kept == 2
    examples, report = pairs.encode_pairs(plain, rows, max_length=16 + n_r, max_prompt_length=16)
    assert len(chat.response_ids(plain, C)) > n_r  # so the long prompt's chosen must be cut
    assert report.prompts_cut == 1 and report.rejected_cut == 0 and report.chosen_cut >= 1
    assert report.chosen_cut == sum(len(e["chosen_ids"]) < len(f["chosen_ids"])
                                    for e, f in zip(examples, full, strict=True))
    removed = sum(sum(map(len, f.values())) - sum(map(len, e.values()))
                  for e, f in zip(examples, full, strict=True))
    assert report.tokens_cut == removed > 0
    assert report.tokens_total == sum(sum(map(len, f.values())) for f in full)
    assert "keeps the prompt's end" in str(report) and "keeps the response's start" in str(report)


def test_pairs_identical_once_cut_are_dropped_and_counted(plain):
    rows = [{"prompt": Q, "chosen": "The answer is 5.", "rejected": "The answer is 5. Ugh."}]
    n = len(chat.prompt_ids(plain, Q)) + len(chat.response_ids(plain, "The answer is 5."))
    examples, report = pairs.encode_pairs(plain, rows, max_length=n - 1)
    assert examples == [] and report.dropped_identical == 1 and report.kept == 0
    examples, report = pairs.encode_pairs(plain, rows, max_length=n)  # the eos still differs
    assert len(examples) == 1 and report.dropped_identical == 0


def test_limits_are_checked(plain):
    with pytest.raises(ValueError, match="must be smaller than max_length"):
        pairs.encode_pair(plain, Q, C, R, max_length=10, max_prompt_length=10)
    with pytest.raises(ValueError, match="if_too_long"):
        pairs.encode_pairs(plain, [], if_too_long="skip")


def test_token_table_shows_the_masked_prompt(plain):
    ex = pairs.encode_pair(plain, Q, C, R)
    table = pairs.token_table(plain, pairs.collate_pairs([ex], plain.pad_token_id), 0)
    n = len(ex["prompt_ids"])
    assert (table["label"][:n] == "-100").all()
    assert "".join(table["label"][n:n + len(ex["chosen_ids"])]) == C + "</s>"
    assert "".join(table["token"][:n]) == PROMPT_TEXT
    assert torch.equal(torch.tensor(table["input_id"].tolist()[:n]), torch.tensor(ex["prompt_ids"]))


def test_truncating_encoded_pairs_is_encoding_with_limits(plain):
    rows = [{"prompt": LONG_Q, "chosen": C, "rejected": R}, {"prompt": Q, "chosen": C,
                                                            "rejected": R}]
    full, _ = pairs.encode_pairs(plain, rows)
    direct = pairs.encode_pairs(plain, rows, max_length=20, max_prompt_length=10)
    assert pairs.truncate_pairs(full, 20, 10, plain.bos_token_id) == direct
