"""Multiple-choice files -> `ChoiceExamples`: SWAG's CSV and a generic JSON-lines layout (ChID-style cloze too).

SWAG CSV (the `swag` dataset's columns; run_swag.py's pairing):
    sent1, sent2, ending0 .. endingN[, label]   ->  (sent1, "sent2 endingK") for each K
    startphrase, ending0 .. endingN[, label]    ->  (startphrase, endingK)   (no sent1/sent2 columns)
Every `endingN` column of the header is a choice, in the order of N; `label` is the index of the right ending.

JSON lines, one question per line:
    {"id": "q1", "context": "...", "question": "...", "choices": ["...", "..."], "label": 1}
`context` or `question` (or both: then the context is the first text and the question goes before each choice,
as SWAG's sent2 does), `choices` a list of two or more texts, `label` the right choice's index (a JSON number)
or its text (a JSON string); no `label` field in any line: an unlabelled file (predictions only). Lines may have
different numbers of choices: batches pad the missing choices, which the model never picks (`choice_mask`).

Chinese idiom cloze (ChID): the same JSON lines, the passage as `context` with a blank written `#idiom#` (CLUE's
`#idiom000123#` form too) and the candidate idioms as `choices`. The blank becomes the tokenizer's [MASK] and each
candidate is the second text of its pair; the `features` module says why, and how a long passage is cut around the
blank.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from bertcli.errors import UsageError
from bertcli.tasks.classification import _data_file, _decode_guard, _open_text, json_records

# The task names of the family: `swag` for SWAG's csv, `multiple_choice` for any file of either layout (ChID too).
CHOICE_TASKS = ("swag", "multiple_choice")

# A ChID blank: `#idiom#`, or CLUE's numbered `#idiom000123#`.
BLANK = re.compile(r"#idiom\d*#")
FORMATS = ("csv", "jsonl")
_ENDING = re.compile(r"ending(\d+)")


@dataclass(frozen=True)
class ChoiceSpec:
    """A multiple-choice task; carries the names the finetune and eval pipelines read of any task spec. The head
    gives one score per choice (`num_labels` 1: `BertForMultipleChoice`'s classifier), scored by accuracy."""

    name: str = "swag"
    metrics: tuple[str, ...] = ("accuracy",)
    main_metric: str = "accuracy"
    is_regression: bool = False
    family: str = "multiple_choice"
    label_names: tuple[str, ...] = ("score",)
    files: dict[str, str] = field(default_factory=dict)
    eval_only: bool = False

    @property
    def num_labels(self) -> int:
        return 1

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def validation_splits(self) -> list[str]:
        return []


def choice_task(name: str = "swag") -> ChoiceSpec:
    if name not in CHOICE_TASKS:
        raise UsageError(f"unknown multiple-choice task '{name}': one of {', '.join(CHOICE_TASKS)}")
    return ChoiceSpec(name=name)


@dataclass
class ChoiceExamples:
    """The questions of one file, in file order. Question i pairs `contexts[i]` with each of `choices[i]`
    (prefixed by `prefixes[i]` and a space when that is not empty: SWAG's sent2, a JSON line's question).
    `labels[i]`: the right choice's index; `labels` is None for an unlabelled file. `lines`: 1-based, for messages.
    `empty_text`: "error" or "skip" a question with an empty context, question or choice (data.empty_text);
    `skipped_empty` counts the skipped ones."""

    path: Path
    ids: list[str] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    choices: list[list[str]] = field(default_factory=list)
    labels: list[int] | None = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    empty_text: str = "error"
    skipped_empty: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def pairs(self, i: int) -> list[tuple[str, str]]:
        """The (first text, second text) of each choice of question i, as the model reads them."""
        prefix = self.prefixes[i]
        return [(self.contexts[i], f"{prefix} {c}" if prefix else c) for c in self.choices[i]]

    def counts(self) -> dict[str, int]:
        """What a run prints and records of the file: questions, the fewest and most choices, blanks (ChID)."""
        sizes = [len(c) for c in self.choices] or [0]
        blanks = sum(1 for c in self.contexts if BLANK.search(c))
        return {"examples": len(self), "min_choices": min(sizes), "max_choices": max(sizes), "blanks": blanks,
                "skipped_empty": self.skipped_empty}  # fmt: skip

    def skip_empty(self, line: int, what: str) -> None:
        """Count a question whose `what` is empty (data.empty_text=skip), or raise the one-line error saying so."""
        if self.empty_text != "skip":
            raise UsageError(f"{self.path}:{line}: {what} is empty (data.empty_text=skip skips such questions)")
        self.skipped_empty += 1


def describe_counts(counts: dict[str, int]) -> str:
    """One line for the run's log, e.g. "120 questions, 4 choices each; 3 contexts truncated"."""
    lo, hi = counts["min_choices"], counts["max_choices"]
    n = counts["examples"]
    line = f"{n} question{'s' * (n != 1)}, " + (f"{lo} choices each" if lo == hi else f"{lo} to {hi} choices")
    if counts.get("blanks"):
        line += f", {counts['blanks']} with a #idiom# blank"
    if counts.get("truncated"):
        line += f"; {counts['truncated']} context(s) cut to fit"
    if counts.get("choices_cut"):
        line += f"; {counts['choices_cut']} choice(s) too long, cut too"
    if counts.get("skipped_empty"):
        line += f"; {counts['skipped_empty']} skipped (empty text)"
    return line


def file_format(path: Path, declared: str = "auto") -> str:
    """csv (SWAG's columns) or jsonl, from `declared` unless "auto", else from the extension."""
    if declared != "auto":
        if declared not in FORMATS:
            raise UsageError(f"data.format {declared} is not a multiple-choice format; use one of {FORMATS}")
        return declared
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise UsageError(f"{path}: unknown extension for a multiple-choice file; set data.format to one of {FORMATS}")
    return suffix


def read_choices(path: Path | str, fmt: str = "auto", require_labels: bool = False,
                 empty_text: str = "error") -> ChoiceExamples:  # fmt: skip
    """Read one multiple-choice file (SWAG CSV or JSON lines). require_labels: an unlabelled file is an error.
    empty_text: "error" (default) or "skip" a question with an empty context, question or choice (counted)."""
    path = _data_file(path)
    examples = _READERS[file_format(path, fmt)](ChoiceExamples(path, empty_text=empty_text))
    if not len(examples):
        raise UsageError(f"{path}: no examples (the split is empty); check the file and data.format")
    if require_labels and not examples.has_labels:
        raise UsageError(f"{path}: no labels (no `label` column or field); training and scoring need them")
    return examples


# --- SWAG CSV ---------------------------------------------------------------------------------------------------


def _read_swag_csv(out: ChoiceExamples) -> ChoiceExamples:
    path = out.path
    with _open_text(path) as handle:
        reader = csv.reader(_decode_guard(path, handle))
        try:
            header = [h.strip() for h in next(reader, None) or []]
            if not header:
                raise UsageError(f"{path}: the file is empty (the split is empty)")
            layout = _swag_layout(path, header)
            out.labels = [] if "label" in header else None
            for fields in reader:
                if fields and any(f.strip() for f in fields):
                    _add_swag_row(out, path, reader.line_num, header, layout, fields)
        except csv.Error as err:
            raise UsageError(f"{path}:{reader.line_num}: malformed csv ({err})") from None
    return out


def _swag_layout(path: Path, header: list[str]) -> dict:
    """Where the texts are: the context column(s), the ending columns in order, the id column."""
    endings = sorted((int(m.group(1)), i) for i, h in enumerate(header) if (m := _ENDING.fullmatch(h)))
    found = ", ".join(repr(h) for h in header)
    if len(endings) < 2:
        raise UsageError(f"{path}: a SWAG csv needs ending0, ending1, ... columns (two or more); columns: {found}")
    if [n for n, _ in endings] != list(range(len(endings))):
        raise UsageError(f"{path}: the ending columns must be numbered ending0 to ending{len(endings) - 1} "
                         f"without gaps; columns: {found}")  # fmt: skip
    if "sent1" in header and "sent2" in header:
        context, prefix = header.index("sent1"), header.index("sent2")
    elif "startphrase" in header:
        context, prefix = header.index("startphrase"), None
    else:
        raise UsageError(f"{path}: a SWAG csv needs sent1 and sent2 columns (or startphrase); columns: {found}")
    id_col = next((header.index(c) for c in ("id", "") if c in header), None)  # SWAG's first column is unnamed
    label = header.index("label") if "label" in header else None
    return {"context": context, "prefix": prefix, "endings": [i for _, i in endings], "id": id_col, "label": label}


def _add_swag_row(out: ChoiceExamples, path: Path, line: int, header: list[str], layout: dict, fields: list) -> None:
    if len(fields) != len(header):
        raise UsageError(f"{path}:{line}: {len(fields)} fields, the header has {len(header)}; a cut line?")
    context = fields[layout["context"]]
    choices = [fields[i] for i in layout["endings"]]
    empty = _empty_text({header[layout["context"]]: context}, choices)
    if empty:
        return out.skip_empty(line, empty)
    label = None
    if layout["label"] is not None:
        raw = fields[layout["label"]].strip()
        if not re.fullmatch(r"\d+", raw):
            raise UsageError(f"{path}:{line}: label {raw!r} is not the index of an ending (0 to {len(choices) - 1})")
        label = _index_in_range(path, line, int(raw), choices)
    ident = fields[layout["id"]].strip() if layout["id"] is not None else ""
    prefix = fields[layout["prefix"]].strip() if layout["prefix"] is not None else ""
    _append(out, ident or str(len(out)), context, prefix, choices, label, line)


# --- JSON lines -------------------------------------------------------------------------------------------------


def _read_jsonl(out: ChoiceExamples) -> ChoiceExamples:
    path = out.path
    labelled = None  # whether the file's lines carry labels: decided by the first line, the same for every line
    for line, record in json_records(path):
        has_label = "label" in record
        if labelled is None:
            labelled = has_label
        elif has_label != labelled:
            which = "has no" if labelled else "has a"
            raise UsageError(f"{path}:{line}: this line {which} `label` and earlier lines do not; label every line "
                             "or none")  # fmt: skip
        texts = _json_texts(path, line, record)
        choices = record.get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise UsageError(f"{path}:{line}: `choices` must be a list of texts; fields found: "
                             f"{', '.join(repr(k) for k in record)}")  # fmt: skip
        if len(choices) < 2:
            raise UsageError(f"{path}:{line}: {len(choices)} choice(s); a multiple-choice question needs two or more")
        empty = _empty_text(texts, choices)
        if empty:
            out.skip_empty(line, empty)
            continue
        context, prefix = (texts["context"], texts["question"]) if len(texts) == 2 else (next(iter(texts.values())), "")
        label = _json_label(path, line, record["label"], choices) if has_label else None
        ident = record.get("id")
        _append(out, str(ident) if ident is not None else str(len(out)), context, prefix, choices, label, line)
    if not labelled:
        out.labels = None
    return out


def _json_texts(path: Path, line: int, record: dict) -> dict[str, str]:
    """The line's `context` and `question` (either or both), checked to be texts."""
    texts = {k: record[k] for k in ("context", "question") if k in record}
    if not texts:
        raise UsageError(f"{path}:{line}: no `context` or `question` field; fields found: "
                         f"{', '.join(repr(k) for k in record)}")  # fmt: skip
    for key, value in texts.items():
        if not isinstance(value, str):
            raise UsageError(f"{path}:{line}: `{key}` must be a text, not {json.dumps(value)[:40]}")
    return texts


def _json_label(path: Path, line: int, raw, choices: list[str]) -> int:
    """A JSON number is an index; a JSON string is the right choice's text."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise UsageError(f"{path}:{line}: label {raw!r} is neither a choice's index (a number) nor its text")
    if isinstance(raw, int):
        return _index_in_range(path, line, raw, choices)
    matches = [i for i, c in enumerate(choices) if c == raw]
    if not matches:
        hint = f" (an index is written as a number: {raw})" if raw.strip().isdigit() else ""
        raise UsageError(f"{path}:{line}: label {raw!r} is not one of the choices {choices}{hint}")
    if len(matches) > 1:
        raise UsageError(f"{path}:{line}: label {raw!r} is the text of choices {matches}; give its index instead")
    return matches[0]


# --- shared checks ------------------------------------------------------------------------------------------------


def _empty_text(texts: dict[str, str], choices: list[str]) -> str | None:
    """What is empty in a question ("the context (sent1)", "choice 2"), or None."""
    empty = next((key for key, text in texts.items() if not text.strip()), None)
    if empty is not None:
        return f"the {empty}" if empty in ("context", "question") else f"the context ({empty})"
    index = next((i for i, c in enumerate(choices) if not c.strip()), None)
    return None if index is None else f"choice {index}"


def _index_in_range(path: Path, line: int, index: int, choices: list[str]) -> int:
    if not 0 <= index < len(choices):
        raise UsageError(f"{path}:{line}: label {index} is out of range: {len(choices)} choices (0 to "
                         f"{len(choices) - 1})")  # fmt: skip
    return index


def _append(out: ChoiceExamples, ident: str, context: str, prefix: str, choices, label, line: int) -> None:
    if len(BLANK.findall(context)) > 1:
        raise UsageError(f"{out.path}:{line}: {len(BLANK.findall(context))} #idiom# blanks in one context; write "
                         "one line per blank")  # fmt: skip
    out.ids.append(ident)
    out.contexts.append(context)
    out.prefixes.append(prefix)
    out.choices.append(list(choices))
    if out.labels is not None and label is not None:
        out.labels.append(label)
    out.lines.append(line)


_READERS = {"csv": _read_swag_csv, "jsonl": _read_jsonl}
