"""Preference data: the four formats TRL accepts, read, validated and normalised.

A preference row is one prompt and two responses, the chosen one and the rejected one.
TRL (``trl.data_utils``) accepts four layouts, and so does this module:

| format                  | ``prompt``       | ``chosen`` / ``rejected``                        |
|-------------------------|------------------|--------------------------------------------------|
| standard explicit       | text             | response text                                    |
| standard implicit       | (absent)         | prompt + response text (prompt: common prefix)   |
| conversational explicit | list of messages | ``[{"role": "assistant", "content": ...}]``      |
| conversational implicit | (absent)         | whole conversations (prompt: common first turns) |

As in TRL's ``maybe_extract_prompt``, a text ``prompt`` next to conversational responses
(UltraFeedback's layout) is ignored and the prompt is read from the conversations.

Every valid row is normalised to one *explicit form*, the input of ``pairs.encode_pair``:
``{"prompt": text or messages, "chosen": text, "rejected": text}`` plus the row's other
columns, untouched. It is a form to tokenize, not one of the formats to store (TRL would
not read a message prompt next to text responses): ``to_conversational`` turns it back into
the conversational explicit format. A text prompt is one user turn; the chat template is
applied to it once, at tokenization (TRL instead feeds standard text to the model raw).

Validation names the row (counted from 0, like ``dataset[i]``), the field and the expected
form of every problem; a row read from a file is also named by its file and its line
(counted from 1, like an editor). Each problem kind has a policy: ``"raise"`` (stop, listing every
such problem) or ``"drop"`` (remove the row and count it in the ``Report``). Nothing is
removed without a count.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from . import chat
from .guards import InputError, offline

FORMATS = ("standard explicit", "standard implicit", "conversational explicit",
           "conversational implicit")

# Problem kinds, and what each means.
KINDS = {
    "bad_json": "the line is not a JSON object",
    "bad_utf8": "the line is not UTF-8 text",
    "missing_key": "a required field is missing (or null)",
    "unexpected_key": "a field of another dataset type (completion, label, messages, text)",
    "wrong_type": "a field has the wrong type",
    "empty": "an empty prompt or response",
    "identical": "chosen is identical to rejected",
    "not_assistant": "a conversational response is not exactly one assistant turn",
    "role_order": "prompt roles out of order (system first, then user/assistant, ending with user)",
    "no_common_prefix": "an implicit pair whose chosen and rejected share no prompt",
    "mixed_format": "the row's format differs from the dataset's (TRL reads it from row 0)",
    "special_token": "text contains one of the tokenizer's special tokens",
}
# Malformed files stop the load; pairs that carry no preference signal are dropped.
DEFAULT_POLICY = {**dict.fromkeys(KINDS, "raise"), "identical": "drop", "empty": "drop"}
OTHER_TYPE_KEYS = ("completion", "label", "messages", "text")
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Problem:
    row: int  # counted from 0, like dataset[i]
    field: str
    kind: str
    expected: str
    line: int | None = None  # counted from 1, in the file the row was read from
    file: str | None = None

    def __str__(self) -> str:
        where = "" if self.line is None else f"{self.file}: line {self.line}, "
        return f"{where}row {self.row}, field {self.field!r}: {self.expected} [{self.kind}]"


class PreferenceDataError(ValueError):
    """Raised when rows have problems whose policy is ``"raise"``; lists all of them."""

    def __init__(self, problems: list[Problem], limit: int = 20):
        self.problems = problems
        lines = [str(p) for p in problems[:limit]]
        if len(problems) > limit:
            lines.append(f"... and {len(problems) - limit} more")
        super().__init__(f"{len(problems)} problem(s) in the preference data:\n  "
                         + "\n  ".join(lines))


def _short(value: Any, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n - 3] + "..."


# --- formats ---------------------------------------------------------------------

def is_messages(value: Any) -> bool:
    """A list whose first item is a dict with a role: TRL's test for conversational data."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) \
        and "role" in value[0]


def detect_format(row: dict) -> str:
    """Which of ``FORMATS`` a row is in, read the way TRL reads it (it does not validate)."""
    conversational = is_messages(row.get("chosen"))
    prompt = row.get("prompt")
    explicit = prompt is not None and (is_messages(prompt) or not conversational)
    return f"{'conversational' if conversational else 'standard'} " \
           f"{'explicit' if explicit else 'implicit'}"


def _common_prefix(a: list | str, b: list | str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _split_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) of a standard implicit pair: the prompt is the common
    prefix, less a space it ends with (that space starts the responses, as in TRL)."""
    n = _common_prefix(chosen, rejected)
    if 0 < n < min(len(chosen), len(rejected)) and chosen[n - 1] == " ":
        n -= 1
    return chosen[:n], chosen[n:], rejected[n:]


def _split_messages(chosen: list, rejected: list) -> tuple[list, list, list]:
    n = _common_prefix(chosen, rejected)
    return chosen[:n], chosen[n:], rejected[n:]


# --- validation of one row ---------------------------------------------------------

def _message_problems(i: int, name: str, messages: Any) -> list[Problem]:
    expected = "expected a list of {'role': str, 'content': str} messages"
    if not isinstance(messages, list) or not messages:
        return [Problem(i, name, "wrong_type" if messages != [] else "empty",
                        f"{expected}, got {_short(messages)}")]
    out = []
    for j, m in enumerate(messages):
        where = f"{name}[{j}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content"), str):
            out.append(Problem(i, where, "wrong_type", f"{expected}, got {_short(m)}"))
    return out


def _prompt_problems(i: int, name: str, messages: list) -> list[Problem]:
    """Roles: an optional system turn first, then user and assistant alternating, ending
    with user (the model answers the last user turn)."""
    roles = [m["role"] for m in messages]
    body = roles[1:] if roles[0] == "system" else roles
    wanted = ["user" if k % 2 == 0 else "assistant" for k in range(len(body))]
    if not body or body != wanted or body[-1] != "user":
        return [Problem(i, name, "role_order",
                        f"expected roles system (optional), then user/assistant alternating, "
                        f"ending with user; got {roles}")]
    return [Problem(i, f"{name}[{j}]", "empty", "expected non-empty content")
            for j, m in enumerate(messages) if not m["content"].strip()]


def _response_text(i: int, name: str, messages: list) -> tuple[str | None, list[Problem]]:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = [m["role"] for m in messages]
        return None, [Problem(i, name, "not_assistant",
                              f"expected exactly one assistant message, got roles {roles}")]
    return messages[0]["content"], []


def _special_problems(i: int, texts: dict[str, str], special: tuple[str, ...]) -> list[Problem]:
    out = []
    for name, text in texts.items():
        found = [t for t in special if t in text]
        if found:
            out.append(Problem(i, name, "special_token",
                               f"expected plain text; found special token(s) {found} (the chat "
                               f"template and tokenizer add them)"))
    return out


def check_row(i: int, row: Any, special_tokens: tuple[str, ...] = ()
              ) -> tuple[dict | None, list[Problem]]:
    """The explicit form of row ``i`` and its problems (the form is None when it has any)."""
    if not isinstance(row, dict):
        return None, [Problem(i, "(row)", "wrong_type",
                              f"expected an object with prompt/chosen/rejected, got {_short(row)}")]
    problems = [Problem(i, k, "unexpected_key",
                        f"expected a preference row (prompt, chosen, rejected); {k!r} belongs to "
                        f"another dataset type") for k in OTHER_TYPE_KEYS if row.get(k) is not None]
    problems += [Problem(i, k, "missing_key", f"expected a {k!r} field")
                 for k in ("chosen", "rejected") if row.get(k) is None]
    if problems:
        return None, problems
    fmt = detect_format(row)
    chosen, rejected = row["chosen"], row["rejected"]
    if fmt.startswith("standard"):
        for name in ("chosen", "rejected"):
            if not isinstance(row[name], str):
                problems.append(Problem(i, name, "wrong_type",
                                        f"expected text (like 'chosen' is), got {_short(row[name])}"
                                        if is_messages(row[name]) else
                                        f"expected text or a list of messages, got "
                                        f"{_short(row[name])}"))
        if fmt == "standard explicit" and not isinstance(row["prompt"], str):
            problems.append(Problem(i, "prompt", "wrong_type",
                                    f"expected text like the responses (a list of messages "
                                    f"needs message lists for chosen and rejected too), got "
                                    f"{_short(row['prompt'])}"))
        if problems:
            return None, problems
        if fmt == "standard implicit":
            prompt, chosen, rejected = _split_text(chosen, rejected)
            if not prompt.strip():
                return None, [Problem(i, "chosen/rejected", "no_common_prefix",
                                      "expected chosen and rejected to start with the same "
                                      f"prompt; they differ from the first character "
                                      f"({_short(row['chosen'], 20)} vs "
                                      f"{_short(row['rejected'], 20)})")]
        else:
            prompt = row["prompt"]
            if not prompt.strip():
                problems.append(Problem(i, "prompt", "empty", "expected non-empty text"))
    else:
        problems += _message_problems(i, "chosen", chosen) + _message_problems(i, "rejected",
                                                                               rejected)
        if fmt == "conversational explicit":
            problems += _message_problems(i, "prompt", row["prompt"])
        if problems:
            return None, problems
        if fmt == "conversational implicit":
            prompt, chosen, rejected = _split_messages(chosen, rejected)
            if not prompt:
                return None, [Problem(i, "chosen/rejected", "no_common_prefix",
                                      "expected both conversations to start with the same "
                                      "turns; they differ from the first message")]
        else:
            prompt = row["prompt"]
        problems += _prompt_problems(i, "prompt", prompt)
        chosen, p_c = _response_text(i, "chosen", chosen)
        rejected, p_r = _response_text(i, "rejected", rejected)
        problems += p_c + p_r
        if problems:
            return None, problems
    problems += [Problem(i, name, "empty", "expected a non-empty response")
                 for name, text in (("chosen", chosen), ("rejected", rejected))
                 if not text.strip()]
    if not problems and chosen == rejected:
        problems.append(Problem(i, "chosen/rejected", "identical",
                                "expected two different responses, got the same text twice"))
    texts = {"chosen": chosen, "rejected": rejected}
    texts.update({"prompt": prompt} if isinstance(prompt, str) else
                 {f"prompt[{j}]": m["content"] for j, m in enumerate(prompt)})
    problems += _special_problems(i, texts, special_tokens)
    if problems:
        return None, problems
    extra = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}, []


def explicit(row: dict, special_tokens: tuple[str, ...] = ()) -> dict:
    """The explicit form of one row in any of the four formats; raises on any problem."""
    out, problems = check_row(0, row, special_tokens)
    if problems:
        raise PreferenceDataError(problems)
    return out


def to_conversational(row: dict) -> dict:
    """An explicit-form row in TRL's conversational explicit format."""
    prompt = row["prompt"]
    return {"prompt": [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt,
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}


# --- sources ---------------------------------------------------------------------

class Rows(list):
    """Rows read from a file, with the file's name and the 1-based line of each row."""

    def __init__(self, rows=(), file: str | None = None, lines: list[int] | None = None):
        super().__init__(rows)
        self.file = file
        self.lines = lines


def locate(problems: list[Problem], rows: Any) -> list[Problem]:
    """``problems`` with the file and line of their row, when ``rows`` came from a file."""
    lines = getattr(rows, "lines", None)
    if lines is None:
        return problems
    return [replace(p, line=lines[p.row], file=rows.file) if p.line is None else p
            for p in problems]


# The first bytes of files that are not JSON Lines, and what to do with them.
MAGIC = {b"\x1f\x8b": "gzip-compressed: decompress it first (gunzip FILE)",
         b"PK\x03\x04": "a zip archive: extract the .jsonl/.json/.parquet file from it",
         b"BZh": "bzip2-compressed: decompress it first (bunzip2 FILE)",
         b"\xfd7zXZ": "xz-compressed: decompress it first (unxz FILE)",
         b"\x28\xb5\x2f\xfd": "zstd-compressed: decompress it first (unzstd FILE)"}
SUFFIXES = (".jsonl", ".json", ".parquet")
CONVERT = {".csv": "pandas.read_csv(FILE).to_json(OUT, orient='records', lines=True)",
           ".tsv": "pandas.read_csv(FILE, sep='\\t').to_json(OUT, orient='records', lines=True)",
           ".txt": "one JSON object per line, saved as .jsonl"}


def read_rows(source: Any, split: str = "train") -> tuple[list[Any], list[Problem]]:
    """Rows from a list of dicts, a ``.jsonl``/``.json``/``.parquet`` file, a
    ``datasets.Dataset``/``DatasetDict`` (its ``split``) or a hub dataset id.

    A file's unreadable lines come back as ``bad_json``/``bad_utf8`` problems (and ``None``
    rows); its rows are a ``Rows`` list that knows each row's line. A file that cannot be
    read at all (compressed, another format, corrupt, empty) raises ``InputError``."""
    import datasets

    if isinstance(source, datasets.DatasetDict):
        source = source[split]
    if isinstance(source, datasets.Dataset):
        return source.to_list(), []
    if isinstance(source, (list, tuple)):
        return list(source), []
    path = Path(source)
    if path.exists():
        return read_file(path)
    if path.suffix.lower() in (*SUFFIXES, *CONVERT, ".gz") or "/" not in str(source):
        raise InputError(f"{path}: no such file")
    if offline():
        raise InputError(f"{source}: not a local file, and loading it from the Hugging Face hub "
                         f"needs the network (HF_HUB_OFFLINE=1 is set): pass a local file")
    return datasets.load_dataset(str(source), split=split).to_list(), []


def read_file(path: Path) -> tuple[Rows, list[Problem]]:
    """Rows of a ``.jsonl``/``.json``/``.parquet`` file (extensions in any case)."""
    if not path.is_file():
        raise InputError(f"{path}: not a file (expected a .jsonl, .json or .parquet file)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror}): check that it exists and "
                         f"that you may read it") from None
    for magic, what in MAGIC.items():
        if data.startswith(magic):
            raise InputError(f"{path}: the file is {what}, then check the .jsonl file")
    suffix = path.suffix.lower()
    if data.startswith(b"PAR1") or suffix == ".parquet":
        return _read_parquet(path, data, suffix)
    if suffix in CONVERT:
        raise InputError(f"{path}: expected a .jsonl, .json or .parquet file, not {suffix}. "
                         f"Convert it: {CONVERT[suffix]}")
    if suffix not in (".jsonl", ".json"):
        raise InputError(f"{path}: expected a .jsonl, .json or .parquet file, not "
                         f"{path.suffix or 'no extension'!r}")
    if not data.strip():
        raise InputError(f"{path}: the file is empty or blank (no rows): expected one JSON "
                         f"object per line")
    if suffix == ".json" or data.lstrip()[:1] in (b"[", b"{"):
        document = _read_document(path, data, strict=suffix == ".json")
        if document is not None:
            return document, []
    return _read_lines(path, data)


def _read_parquet(path: Path, data: bytes, suffix: str) -> tuple[Rows, list[Problem]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if suffix != ".parquet":
        raise InputError(f"{path}: the file is Parquet: rename it to {path.stem}.parquet")
    try:
        rows = pq.read_table(pa.BufferReader(data)).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable Parquet file ({e}): write it again, e.g. "
                         f"with datasets.Dataset.to_parquet") from None
    if not rows:
        raise InputError(f"{path}: the Parquet file has no rows")
    return Rows(rows), []


def _read_document(path: Path, data: bytes, strict: bool) -> Rows | None:
    """The rows of a file that is one JSON document (an array of rows, or one row written
    over several lines); None when it is JSON Lines. ``strict``: a .json file, whose
    syntax errors stop the read (for .jsonl they are reported line by line)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if not strict:
            return None
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}: line {line}: byte {data[e.start]:#04x} is not UTF-8 (re-save "
                         f"the file as UTF-8)") from None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        if not strict or (isinstance(e, json.JSONDecodeError) and e.msg == "Extra data"):
            return None  # several values (JSON Lines), or a .jsonl file read line by line
        raise InputError(f"{path}: not valid JSON ({_json_error(e, text)})") from None
    if not isinstance(value, (list, dict)):
        raise InputError(f"{path}: the file holds one JSON {type(value).__name__}; expected "
                         f"an array of rows or one row per line")
    if not strict and b"\n" not in data.strip():
        return None  # a one-line JSON Lines file
    if not strict:
        raise InputError(f"{path}: the file is one JSON document (a pretty-printed "
                         f"{'array' if isinstance(value, list) else 'object'}), not JSON Lines: "
                         f"write one object per line (json.dumps(row) on each), or name it .json")
    rows = value if isinstance(value, list) else [value]
    if not rows:
        raise InputError(f"{path}: the JSON array is empty (no rows)")
    return Rows(rows)


def _json_error(e: Exception, text: str) -> str:
    """Where a JSON document breaks, with a hint for the usual mistake."""
    if isinstance(e, RecursionError):
        return "nested too deeply"
    where = f"line {e.lineno}, column {e.colno}: {e.msg}"
    before = text[:e.pos].rstrip()
    if e.msg.startswith("Expecting") and before.endswith(","):
        where += "; a comma before the closing bracket (a trailing comma) is not allowed in JSON"
    return where


def _read_lines(path: Path, data: bytes) -> tuple[Rows, list[Problem]]:
    """JSON Lines split on ``\\n`` only (a string may hold U+2028 or U+0085), each line
    decoded and parsed on its own, so one bad line never hides the rest. Blank lines are
    skipped without shifting the line numbers."""
    rows, problems = Rows(file=path.name, lines=[]), []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        value, problem = _parse_line(raw, number == 1)
        if problem is not None:
            kind, expected = problem
            problems.append(Problem(len(rows), "(line)", kind, expected, number, path.name))
        rows.append(value)
        rows.lines.append(number)
    if not rows:
        raise InputError(f"{path}: the file has only blank lines (no rows): expected one JSON "
                         f"object per line")
    return rows, problems


def _parse_line(raw: bytes, first: bool) -> tuple[Any, tuple[str, str] | None]:
    """(value, None) for a line of JSON, (None, (kind, expected)) otherwise."""
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as e:
        return None, ("bad_utf8", f"expected UTF-8 text; byte {raw[e.start]:#04x} at column "
                                  f"{e.start + 1} is not (re-save the file as UTF-8)")
    try:
        value = json.loads(text)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # fails on a lone surrogate
    except json.JSONDecodeError as e:
        return None, ("bad_json", f"expected one JSON object per line ({e.msg} at column "
                                  f"{e.colno})")
    except RecursionError:
        return None, ("bad_json", "expected one JSON object per line (nested too deeply)")
    except UnicodeEncodeError:
        return None, ("bad_json", "expected text; a \\ud800-\\udfff escape stands alone (a lone "
                                  "surrogate, not a character): fix or remove it")
    return value, None


# --- the report ----------------------------------------------------------------------

def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values),
            "mean": round(statistics.fmean(values), 1), "max": max(values)}


@dataclass
class Report:
    """What a load read, dropped and kept, and how long the kept pairs are."""

    rows: int
    format: str | None
    kept: int
    problems: list[Problem] = field(default_factory=list)
    policy: dict[str, str] = field(default_factory=dict)
    unit: str = "characters"
    lengths: dict[str, dict[str, float]] = field(default_factory=dict)
    chosen_longer: float = float("nan")  # share of kept pairs whose chosen is longer
    same_length: float = float("nan")

    @property
    def ok(self) -> bool:
        """No problems, and at least one row: empty data is not clean data."""
        return not self.problems and self.rows > 0

    @property
    def dropped(self) -> int:
        return self.rows - self.kept

    def by_kind(self) -> dict[str, list[int]]:
        """Rows with each kind of problem, in row order."""
        return self._by_kind(lambda p: p.row)

    def _by_kind(self, key: Callable[[Problem], int | None]) -> dict[str, list[int | None]]:
        out: dict[str, list[int | None]] = {}
        for p in self.problems:
            places = out.setdefault(p.kind, [])
            if key(p) not in places:
                places.append(key(p))
        return out

    def __str__(self) -> str:
        return self.summary()

    def summary(self, max_problems: int | None = 10) -> str:
        """The report as text, listing the first ``max_problems`` problems (None: all)."""
        lines = [f"rows: {self.rows}   format: {self.format or 'unknown'}   kept: {self.kept}   "
                 f"dropped: {self.dropped}"]
        in_file = bool(self.problems) and self.problems[0].line is not None
        if self.problems:
            lines.append("problems by kind (lines counted from 1):" if in_file else
                         "problems by kind (rows counted from 0):")
            by_kind = self._by_kind((lambda p: p.line) if in_file else (lambda p: p.row))
            for kind, rows in by_kind.items():
                first = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
                lines.append(f"  {kind:<17} {len(rows):>5} {'line' if in_file else 'row'}(s)  "
                             f"first: {first}  "
                             f"(policy: {self.policy.get(kind, 'raise')})")
            shown = self.problems[:max_problems]
            lines.append("problems:" if len(shown) == len(self.problems) else
                         f"first {len(shown)} of {len(self.problems)} problems:")
            lines += [f"  {p}" for p in shown]
        elif not self.rows:
            lines.append("problems: no rows (empty data)")
        else:
            lines.append("problems: none")
        if self.lengths:
            lines.append(f"lengths ({self.unit}): " + "; ".join(
                f"{k} median {v['median']:g} (min {v['min']}, max {v['max']})"
                for k, v in self.lengths.items()))
            lines.append(f"chosen longer than rejected: {self.chosen_longer:.1%} of pairs "
                         f"(same length: {self.same_length:.1%})")
        return "\n".join(lines)


def _length(tokenizer: PreTrainedTokenizerBase | None, value: str | list[dict]) -> int:
    text = value if isinstance(value, str) else "".join(m["content"] for m in value)
    if tokenizer is None:
        return len(text)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def special_tokens_of(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """Every special token string of a tokenizer (bos, eos, pad, role markers, ...)."""
    return chat.special_tokens(tokenizer)


def special_token_problems(rows: list[dict], tokenizer: PreTrainedTokenizerBase,
                           ) -> list[Problem]:
    """``special_token`` problems of explicit-form rows: checked again at encoding, since
    rows loaded without a tokenizer were never checked."""
    special = special_tokens_of(tokenizer)
    out = []
    for i, r in enumerate(rows):
        prompt = r["prompt"]
        texts = {"prompt": prompt} if isinstance(prompt, str) else \
            {f"prompt[{j}]": m["content"] for j, m in enumerate(prompt)}
        out += _special_problems(i, {**texts, "chosen": r["chosen"], "rejected": r["rejected"]},
                                 special)
    return out


def validate(rows: Iterable[Any], tokenizer: PreTrainedTokenizerBase | None = None,
             policy: dict[str, str] | str | None = None,
             problems: list[Problem] | None = None) -> tuple[list[dict], Report]:
    """Check every row, then apply the policy: raise if any problem's kind is ``"raise"``,
    else drop the rows with problems. Returns the kept rows in explicit form and the report.

    ``policy`` maps kinds to ``"raise"``/``"drop"`` (unlisted kinds use
    ``DEFAULT_POLICY``), or is one of those words for every kind. With a tokenizer, text
    holding its special tokens is a problem, and lengths are counted in its tokens."""
    if isinstance(policy, str):
        policy = dict.fromkeys(KINDS, policy)
    policy = {**DEFAULT_POLICY, **(policy or {})}
    for kind, action in policy.items():
        if kind not in KINDS or action not in ("raise", "drop"):
            raise ValueError(f"policy {kind!r}: {action!r}; expected a kind in {list(KINDS)} "
                             f"mapped to 'raise' or 'drop'")
    special = special_tokens_of(tokenizer) if tokenizer is not None else ()
    source, rows = rows, list(rows)
    problems = list(problems or [])
    bad_rows = {p.row for p in problems}
    kept: list[dict] = []
    fmt = None
    for i, row in enumerate(rows):
        if i in bad_rows:
            continue
        out, row_problems = check_row(i, row, special)
        if out is not None:
            row_fmt = detect_format(row)
            fmt = fmt or row_fmt
            if row_fmt != fmt:
                row_problems = [Problem(i, "(row)", "mixed_format",
                                        f"expected the dataset's format ({fmt}), got {row_fmt}")]
        problems += row_problems
        if not row_problems:
            kept.append(out)
    problems = locate(sorted(problems, key=lambda p: p.row), source)
    fatal = [p for p in problems if policy[p.kind] == "raise"]
    if fatal:
        raise PreferenceDataError(fatal)
    report = Report(rows=len(rows), format=fmt, kept=len(kept), problems=problems, policy=policy,
                    unit="tokens" if tokenizer is not None else "characters")
    if kept:
        lens = {k: [_length(tokenizer, r[k]) for r in kept]
                for k in ("prompt", "chosen", "rejected")}
        report.lengths = {k: _stats(v) for k, v in lens.items()}
        pairs = list(zip(lens["chosen"], lens["rejected"], strict=True))
        report.chosen_longer = sum(c > r for c, r in pairs) / len(pairs)
        report.same_length = sum(c == r for c, r in pairs) / len(pairs)
    return kept, report


def load_pairs(source: Any, tokenizer: PreTrainedTokenizerBase | None = None,
               policy: dict[str, str] | str | None = None, split: str = "train",
               ) -> tuple[list[dict], Report]:
    """Read a source (see ``read_rows``) and ``validate`` it."""
    rows, problems = read_rows(source, split)
    return validate(rows, tokenizer, policy, problems)

