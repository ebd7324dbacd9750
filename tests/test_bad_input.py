"""Bad input and faults, one table row each: what a user gets (exit code, message, counts).

The contract (README, "Exit codes and messages"): exit 0 clean, 1 when rows have problems
or a run stops on a guard, 2 for unusable input or arguments, with a message naming the
file, the line (from 1), the row (from 0) and the field, and never a traceback.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import time
from pathlib import Path

import pytest
import torch

from dpolab import (
    chat,
    cli,
    dpo,
    guards,
    model,
    pairs,
    pipeline,
    ppo,
    preference,
    sft,
    world,
    worldprefs,
)
from dpolab import reward_model as rm_lib

ROW = {"prompt": "What is 2 plus 2?", "chosen": "4.", "rejected": "5."}
LINE = json.dumps(ROW)


def jsonl(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def parquet_bytes(tmp_path: Path) -> bytes:
    import datasets

    datasets.Dataset.from_list([ROW]).to_parquet(tmp_path / "real.parquet")
    return (tmp_path / "real.parquet").read_bytes()


# --- data check on files: (name, file, content, exit, message parts, counts) ---------------

FILES = [
    ("not UTF-8", "p.jsonl", jsonl(LINE, "") + b'{"prompt": "Q", "chosen": "\xff"}\n', 1,
     ["p.jsonl: line 3, row 1, field '(line)'", "expected UTF-8 text", "[bad_utf8]"],
     ["rows: 2", "kept: 1", "dropped: 1"]),
    ("lone surrogate escape", "p.jsonl", jsonl(LINE, LINE.replace("4.", "4.\\ud800")), 1,
     ["line 2, row 1", "lone surrogate", "[bad_json]"], ["rows: 2", "kept: 1"]),
    ("nested very deep", "p.jsonl", jsonl("[" * 100_000, LINE), 1,
     ["line 1, row 0", "nested too deeply"], ["rows: 2", "kept: 1"]),
    ("U+2028 and U+0085 inside a string", "p.jsonl",
     jsonl(json.dumps({**ROW, "chosen": "4.\u2028\x85"}, ensure_ascii=False)), 0,
     ["problems: none"], ["rows: 1", "kept: 1", "dropped: 0"]),
    ("blank lines keep line numbers", "p.jsonl",
     jsonl(LINE, "", "   ", json.dumps({"prompt": "Q", "chosen": "A"})), 1,
     ["line 4, row 1, field 'rejected'", "[missing_key]", "(lines counted from 1)"],
     ["rows: 2", "kept: 1"]),
    ("one bad line never hides the rest", "p.jsonl",
     jsonl("{oops", LINE, "[1,", json.dumps({**ROW, "rejected": 3}), LINE), 1,
     ["line 1, row 0", "line 3, row 2", "line 4, row 3, field 'rejected'", "bad_json  "],
     ["rows: 5", "kept: 2", "dropped: 3"]),
    ("upper-case extension", "P.JSONL", jsonl(LINE), 0, ["problems: none"], ["rows: 1"]),
    ("a pretty-printed object in .json", "p.json", json.dumps(ROW, indent=2).encode(), 0,
     ["problems: none"], ["rows: 1"]),
    ("a .json array", "p.json", json.dumps([ROW, ROW]).encode(), 0, [], ["rows: 2"]),
    ("a pretty-printed object in .jsonl", "p.jsonl", json.dumps(ROW, indent=2).encode(), 2,
     ["p.jsonl", "one JSON document", "write one object per line"], []),
    ("a .json array with a trailing comma", "p.json", f"[\n{LINE},\n]\n".encode(), 2,
     ["p.json: not valid JSON (line 3, column 1", "trailing comma"], []),
    ("a .json file that is not UTF-8", "p.json", b'[{"prompt": "\xff"}]', 2,
     ["p.json: line 1: byte 0xff is not UTF-8"], []),
    ("gzip content", "p.jsonl", gzip.compress(jsonl(LINE)), 2,
     ["p.jsonl", "gzip-compressed", "gunzip"], []),
    (".jsonl.gz", "p.jsonl.gz", gzip.compress(jsonl(LINE)), 2, ["gzip-compressed"], []),
    (".csv", "p.csv", b"prompt,chosen,rejected\nQ,A,B\n", 2,
     ["p.csv: expected a .jsonl, .json or .parquet file, not .csv", "read_csv"], []),
    (".txt", "p.txt", b"hello\n", 2, ["not .txt"], []),
    ("no extension", "pairs", jsonl(LINE), 2, ["not 'no extension'"], []),
    ("corrupt Parquet", "p.parquet", b"PAR1 this is not parquet", 2,
     ["p.parquet: not a readable Parquet file"], []),
    ("empty file", "p.jsonl", b"", 2, ["p.jsonl: the file is empty or blank (no rows)"], []),
    ("blank lines only", "p.jsonl", b"\n  \n\t\n", 2, ["empty or blank"], []),
    ("an empty .json array", "p.json", b"[]", 2, ["the JSON array is empty"], []),
    ("a JSON number", "p.json", b"3", 2, ["one JSON int"], []),
]


@pytest.mark.parametrize("name, filename, content, code, messages, counts", FILES,
                         ids=[f[0] for f in FILES])
def test_data_check_on_a_bad_file(tmp_path, capsys, name, filename, content, code, messages,
                                  counts):
    path = tmp_path / filename
    path.write_bytes(content)
    assert cli.main(["data", "check", "--no-tokenizer", str(path)]) == code
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    for part in messages + counts:
        assert part in text, (part, text)
    if code == 2:
        assert "error:" in out.err and "usage:" in out.err


def test_data_check_names_parquet_under_another_name(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_bytes(parquet_bytes(tmp_path))
    assert cli.main(["data", "check", "--no-tokenizer", str(path)]) == 2
    assert "the file is Parquet: rename it to p.parquet" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["data", "check", "{dir}/missing.jsonl"], "missing.jsonl: no such file"),
    (["data", "check", "{dir}"], "not a file"),
    (["data", "check", "--tokenizer", "someone/some-model", "{dir}/ok.jsonl"],
     "someone/some-model: not a local folder, and loading it from the Hugging Face hub needs "
     "the network"),
    (["data", "check", "--tokenizer", "{dir}/no-such-folder", "{dir}/ok.jsonl"],
     "not a model folder"),
    (["data", "check", "--tokenizer", "{dir}", "{dir}/ok.jsonl"], "cannot load a tokenizer"),
], ids=["missing file", "a folder", "hub id offline", "missing tokenizer folder",
        "folder without a tokenizer"])
def test_unusable_input_exits_2_in_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "ok.jsonl").write_bytes(jsonl(LINE))
    start = time.perf_counter()
    assert cli.main([a.format(dir=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert time.perf_counter() - start < 20  # no minute of retries


def test_unreadable_file_exits_2(tmp_path, capsys, monkeypatch):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl(LINE))

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert cli.main(["data", "check", "--no-tokenizer", str(path)]) == 2
    assert "p.jsonl: cannot be read (Permission denied)" in capsys.readouterr().err


def test_special_token_with_the_bundled_tokenizer(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl(LINE, json.dumps({**ROW, "chosen": "Sure.</s> more"})))
    assert cli.main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "line 2, row 1, field 'chosen'" in out and "['</s>']" in out and "kept: 1" in out


def test_tokenizer_folder_with_auto_map_never_runs_its_code(tmp_path, capsys):
    folder = tmp_path / "tok"
    folder.mkdir()
    for f in model.bundled(model.BASE).glob("tokenizer*"):
        (folder / f.name).write_bytes(f.read_bytes())
    marker = tmp_path / "ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n"
                                    "from transformers import PreTrainedTokenizerFast as Evil\n")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "evil.Evil"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "ok.jsonl").write_bytes(jsonl(LINE))
    code = cli.main(["data", "check", "--tokenizer", str(folder), str(tmp_path / "ok.jsonl")])
    assert code in (0, 2) and not marker.exists()


# --- arguments: refused before any work, exit 2 ---------------------------------------------

ARGS = [
    (["align", "--steps", "-3"], "argument --steps: expected a positive integer, got -3"),
    (["align", "--steps", "0"], "argument --steps: expected a positive integer, got 0"),
    (["align", "--steps", "two"], "expected a positive integer, got 'two'"),
    (["align", "--eval-prompts", "0"], "argument --eval-prompts"),
    (["align", "--lr", "-1"], "argument --lr: expected a finite number > 0, got -1"),
    (["align", "--beta", "nan"], "argument --beta: expected a finite number > 0, got nan"),
    (["align", "--beta", "inf"], "got inf"),
    (["align", "--threads", "0"], "argument --threads"),
    (["align", "--loss", "nope"], "argument --loss: invalid choice"),
    (["rlhf", "--updates", "0"], "argument --updates"),
    (["rlhf", "--rm-pairs", "-1"], "argument --rm-pairs"),
    (["rlhf", "--kl-coef", "-0.1"], "argument --kl-coef: expected a finite number >= 0"),
    (["rlhf", "--target-kl", "nan"], "argument --target-kl"),
    (["rlhf", "--reward", "judge"], "argument --reward: invalid choice"),
    (["data", "check", "--max-problems", "-1", "x.jsonl"], "argument --max-problems"),
]


@pytest.mark.parametrize("argv, message", ARGS, ids=[" ".join(a) for a, _ in ARGS])
def test_bad_argument_exits_2_before_any_work(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage:" in err


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": -3}, "steps must be a positive integer, got -3"),
    ({"eval_prompts": 0}, "eval_prompts must be a positive integer"),
    ({"beta": float("nan")}, "beta must be a finite number > 0"),
    ({"lr": -1.0}, "lr must be a finite number > 0"),
])
def test_align_api_refuses_bad_arguments_at_once(kwargs, message):
    with pytest.raises(guards.InputError, match=message):
        pipeline.align(**kwargs)


# --- nothing loops forever -------------------------------------------------------------------

def test_pair_builders_refuse_a_negative_count():
    with pytest.raises(ValueError, match="integer >= 0, got -3"):
        worldprefs.offpolicy_pairs(-3)


def test_pair_builder_gives_up_after_bounded_draws(monkeypatch):
    monkeypatch.setattr(worldprefs.Demonstrator, "respond", lambda self, prompt: "Same.")
    with pytest.raises(ValueError, match=r"only 0 of 5 pairs after 200 prompts .*identical"):
        worldprefs.offpolicy_pairs(5)


@pytest.mark.parametrize("families", [(), ("nope",)])
def test_unknown_or_no_families_are_refused(families):
    with pytest.raises(ValueError, match="expected a non-empty tuple"):
        world.World(0).prompts(4, "train", families)
    with pytest.raises(ValueError, match="expected a non-empty tuple"):
        next(world.World(0).iter_prompts("train", families))


def test_a_split_without_prompts_raises_instead_of_looping(monkeypatch):
    monkeypatch.setattr(world, "is_held_out_combo", lambda task: False)  # no eval prompt
    with pytest.raises(ValueError, match="no eval prompt of family 'helpful' in 10000 draws"):
        world.World(0).prompts(1, "eval", ("helpful",))


# --- special tokens on every path that encodes -------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return model.load(model.SFT)


def test_special_token_is_caught_at_encoding_without_a_tokenizer_at_load(tmp_path, tiny):
    _, tok = tiny
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl(json.dumps({**ROW, "chosen": "Sure.</s> more"})))
    rows, report = preference.load_pairs(path)  # no tokenizer: not checked here
    assert report.ok
    with pytest.raises(preference.PreferenceDataError,
                       match=r"row 0, field 'chosen': .*\['</s>'\].*\[special_token\]"):
        pairs.encode_pairs(tok, rows)


@pytest.mark.parametrize("encode", [
    lambda tok: sft.encode(tok, "Hi <|assistant|>", "Hello."),
    lambda tok: sft.encode(tok, "Hi", "Hello.</s>"),
    lambda tok: chat.prompt_ids(tok, [{"role": "user", "content": "<s>hi"}]),
], ids=["prompt", "response", "message"])
def test_special_token_is_caught_on_the_trainers_path(tiny, encode):
    with pytest.raises(chat.SpecialTokenError, match="special token"):
        encode(tiny[1])


# --- trainer guards -------------------------------------------------------------------------

def test_sft_stops_on_a_nan_loss_naming_step_and_batch(tiny):
    policy, tok = model.load(model.SFT)
    with torch.no_grad():
        policy.get_input_embeddings().weight.fill_(float("nan"))
    cfg = sft.SFTConfig(n_examples=4, batch_size=4, epochs=1)
    with pytest.raises(FloatingPointError, match=r"SFT loss is nan at step 1 \(batch rows \["):
        sft.train_sft(policy, tok, sft.demonstrations(4), cfg)


def test_reward_model_stops_on_an_inf_gradient_naming_the_parameter():
    rm, tok = rm_lib.load()
    rm.score.weight.register_hook(lambda g: g * float("inf"))
    rows = worldprefs.offpolicy_pairs(4)
    with pytest.raises(FloatingPointError, match=r"reward-model gradient norm is (inf|nan) at "
                                                 r"step 1 .*first non-finite gradient: score"):
        rm_lib.train_reward_model(rm, tok, rows, rm_lib.RMConfig(batch_size=4))


def test_sft_cuts_examples_beyond_the_context_with_a_count(tiny, capsys):
    policy, tok = model.load(model.SFT)
    examples = sft.demonstrations(4)
    examples[1] = (examples[1][0], "word " * 400)
    sft.train_sft(policy, tok, examples, sft.SFTConfig(batch_size=4, epochs=1))
    assert "1 of 4 examples cut to the model's context of 256 tokens" in capsys.readouterr().out


def test_prompt_beyond_the_context_is_refused():
    with pytest.raises(guards.InputError, match="example 0: the prompt has 300 tokens, the "
                                                "model reads at most 256"):
        guards.fit_context([([1] * 300, [2])], 256, "example")


def test_dpo_cuts_pairs_beyond_the_context_with_a_count(tiny, capsys):
    _, tok = tiny
    rows = [{**ROW, "chosen": "four " * 300}, ROW]
    examples = dpo._encode(tok, rows, None, context=256)
    assert max(len(e["prompt_ids"]) + len(e["chosen_ids"]) for e in examples) <= 256
    assert "1 chosen and 0 rejected responses cut" in capsys.readouterr().out


def test_ppo_rollouts_beyond_the_context_are_refused():
    batch = {"input_ids": torch.zeros(2, 300, dtype=torch.long), "P": 20}
    with pytest.raises(guards.InputError, match="PPO rollouts reach 300 tokens .* at most 256"):
        ppo._check_context(batch, 256, 280)


# --- checkpoints ------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 2048 vs 1024"),
], ids=["ENOSPC", "torch unexpected pos"])
def test_disk_full_names_the_checkpoint_and_leaves_no_temporary_file(tmp_path, monkeypatch,
                                                                     fault):
    path = tmp_path / "ck.pt"
    dpo.save_checkpoint(path, {"step": 1})

    def full(state, f):
        Path(f).write_bytes(b"half")
        raise fault

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=f"no space left .* writing checkpoint {path}") as e:
        dpo.save_checkpoint(path, {"step": 2})
    assert e.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]
    assert guards.load_checkpoint(path) == {"step": 1}  # the previous one, intact


@pytest.mark.parametrize("damage", [lambda b: b[:len(b) // 2], lambda b: b"not a checkpoint"],
                         ids=["truncated", "garbage"])
def test_a_damaged_checkpoint_is_named(tmp_path, damage):
    path = tmp_path / "ck.pt"
    dpo.save_checkpoint(path, {"step": 1, "w": torch.zeros(1000)})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(guards.InputError, match=f"checkpoint {path} is damaged"):
        guards.load_checkpoint(path)


def test_stale_temporary_checkpoints_are_cleaned(tmp_path):
    path = tmp_path / "ck.pt"
    dead = tmp_path / ".ck.pt.tmp-999999999"
    live = tmp_path / f".ck.pt.tmp-{os.getppid()}"  # a writer still running
    dead.write_bytes(b"x")
    live.write_bytes(b"x")
    dpo.save_checkpoint(path, {"step": 1})
    assert not dead.exists() and live.exists() and path.exists()


def test_align_resumes_from_its_checkpoint(tmp_path, capsys):
    ck = tmp_path / "align.pt"
    first, _ = pipeline.align(steps=2, batch_size=4, eval_prompts=4, checkpoint=ck)
    written = ck.stat().st_mtime_ns
    again, history = pipeline.align(steps=2, batch_size=4, eval_prompts=4, checkpoint=ck)
    assert ck.stat().st_mtime_ns == written  # resumed at its last step: nothing retrained
    assert again["after"] == first["after"] and len(history.train) == 2


# --- the exit code of a run that stops --------------------------------------------------------

@pytest.mark.parametrize("fault, code, message", [
    (FloatingPointError("DPO loss is nan at step 3"), 1, "DPO loss is nan at step 3"),
    (OSError(errno.ENOSPC, "no space left writing checkpoint x.pt"), 1, "checkpoint x.pt"),
    (guards.InputError("checkpoint x.pt is damaged"), 2, "checkpoint x.pt is damaged"),
], ids=["non-finite", "disk full", "damaged checkpoint"])
def test_align_exit_code_when_a_run_stops(monkeypatch, capsys, fault, code, message):
    seen = {}

    def stop(**kwargs):
        seen.update(kwargs)
        raise fault

    monkeypatch.setattr(pipeline, "align", stop)
    assert cli.main(["align", "--steps", "2", "--checkpoint", "x.pt"]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and seen["checkpoint"] == "x.pt"


def test_hub_model_id_offline_fails_fast():
    start = time.perf_counter()
    with pytest.raises(guards.InputError, match="needs the network"):
        model.load("someone/some-model")
    assert time.perf_counter() - start < 5
