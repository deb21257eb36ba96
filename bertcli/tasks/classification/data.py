"""Sequence classification (GLUE, custom): the registry (`glue_task("mrpc")`), readers for the original GLUE files.

    spec = glue_task("mrpc")                # or custom_task(text_columns=("text",), label_column="label")
    examples = read_examples(spec, "glue/MRPC/dev.tsv")
    examples.text_a, examples.text_b, examples.labels  # labels: class ids (or floats), None for a test file

GLUE's .tsv files are split on tabs and nothing else: they are not csv-quoted, so a quote character inside a
field is text (reading them with csv's default quoting silently merges rows). Every problem in an input file
is a one-line `UsageError` naming the file, the line and the offending value (or the columns found).

Label ids follow the order of `TaskSpec.label_names`, which for GLUE is the order of the `glue` datasets on
the Hugging Face hub, so our models and theirs agree on `id2label`. A custom task without a label list infers
one from its training file in a stable order: numerically when every label is an integer, else in Unicode
string order.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bertcli.errors import UsageError
from bertcli.files import why_missing, wide_text_error

# Metric names are the keys used in metrics.json and by bertcli.metrics.
ACCURACY, F1, MCC, PEARSON, SPEARMAN = "accuracy", "f1", "matthews_correlation", "pearson", "spearmanr"


@dataclass(frozen=True)
class TaskSpec:
    """What a task's files look like and how it is scored.

    text_columns: the column names of the one or two texts, in model input order (sentence A, sentence B).
    label_column: the column of the label (absent in test files). label_names: the classes in id order
    (id2label); label_values: how each class is written in the file, same order. None for regression.
    files: split name -> file name inside the task's GLUE folder; the "validation*" splits are evaluated.
    positions: for files without a header (CoLA), column name -> field position; expected_fields: field count.
    main_metric: picks the best checkpoint (averaged over the validation splits, e.g. MNLI m and mm).
    """

    name: str
    text_columns: tuple[str, ...]
    label_column: str | None
    label_names: tuple[str, ...] | None
    label_values: tuple[str, ...] | None
    is_regression: bool
    metrics: tuple[str, ...]
    main_metric: str
    files: dict[str, str] = field(default_factory=dict)
    index_columns: tuple[str, ...] = ("index", "id")
    positions: dict[str, int] | None = None
    expected_fields: int | None = None
    eval_only: bool = False
    family: str = "classification"  # the task family (`bertcli.tasks.registry`)

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names or ())

    @property
    def id2label(self) -> dict[int, str]:
        return {i: name for i, name in enumerate(self.label_names or ("score",))}

    @property
    def validation_splits(self) -> list[str]:
        return [s for s in self.files if s.startswith("validation")]

    @property
    def test_splits(self) -> list[str]:
        return [s for s in self.files if s.startswith("test")]


def _glue(name, text_columns, label_column, names, values, metrics, main, files=None, **kw) -> TaskSpec:
    files = files or {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    regression = names is None
    return TaskSpec(name, tuple(text_columns), label_column, names, values, regression, metrics, main, files, **kw)


_BINARY = ("0", "1")
_NLI3 = ("entailment", "neutral", "contradiction")
_NLI2 = ("entailment", "not_entailment")
_MNLI_FILES = {
    "train": "train.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}

GLUE_TASKS: dict[str, TaskSpec] = {
    # CoLA train/dev have no header: source, label, original judgement mark, sentence. Its test file has one.
    "cola": _glue(
        "cola", ["sentence"], "label", ("unacceptable", "acceptable"), _BINARY, (MCC,), MCC,
        positions={"source": 0, "label": 1, "original_label": 2, "sentence": 3}, expected_fields=4,
    ),
    "sst2": _glue("sst2", ["sentence"], "label", ("negative", "positive"), _BINARY, (ACCURACY,), ACCURACY),
    "mrpc": _glue(
        "mrpc", ["#1 String", "#2 String"], "Quality", ("not_equivalent", "equivalent"), _BINARY,
        (F1, ACCURACY), F1,
    ),
    "qqp": _glue(
        "qqp", ["question1", "question2"], "is_duplicate", ("not_duplicate", "duplicate"), _BINARY,
        (F1, ACCURACY), F1,
    ),
    "stsb": _glue("stsb", ["sentence1", "sentence2"], "score", None, None, (PEARSON, SPEARMAN), PEARSON),
    "mnli": _glue(
        "mnli", ["sentence1", "sentence2"], "gold_label", _NLI3, _NLI3, (ACCURACY,), ACCURACY, _MNLI_FILES
    ),
    "qnli": _glue("qnli", ["question", "sentence"], "label", _NLI2, _NLI2, (ACCURACY,), ACCURACY),
    "rte": _glue("rte", ["sentence1", "sentence2"], "label", _NLI2, _NLI2, (ACCURACY,), ACCURACY),
    # WNLI writes its labels as 0/1 with 1 = entailment (the hub's order: not_entailment, entailment).
    "wnli": _glue(
        "wnli", ["sentence1", "sentence2"], "label", ("not_entailment", "entailment"), _BINARY,
        (ACCURACY,), ACCURACY,
    ),
    # The diagnostic set is scored with an MNLI model; GLUE reports its Matthews correlation (R3).
    "ax": _glue(
        "ax", ["sentence1", "sentence2"], "label", _NLI3, _NLI3, (MCC,), MCC, {"test": "AX.tsv"},
        eval_only=True,
    ),
}  # fmt: skip


def glue_task(name: str) -> TaskSpec:
    """The registered GLUE task `name` (case-insensitive, "sst-2" and "sts-b" accepted)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        near = difflib.get_close_matches(key, list(GLUE_TASKS), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise UsageError(f"unknown task '{name}'{hint} Known: {', '.join(GLUE_TASKS)}, or 'custom'")
    return GLUE_TASKS[key]


def custom_task(
    text_columns: Sequence[str],
    label_column: str | None = "label",
    labels: Sequence[str] | None = None,
    regression: bool = False,
    metrics: Sequence[str] | None = None,
    name: str = "custom",
) -> TaskSpec:
    """A task over the user's own csv/tsv/json/jsonl files. `labels=None` (classification): call `with_labels`
    with `infer_labels(...)` of the training file before reading labelled files."""
    if not 1 <= len(text_columns) <= 2:
        raise UsageError(f"a task has one or two text columns, got {list(text_columns)}")
    default = (PEARSON, SPEARMAN) if regression else (ACCURACY, F1)
    metrics = tuple(metrics or default)
    names = None if regression or labels is None else tuple(str(x) for x in labels)
    if names is not None and len(set(names)) != len(names):
        raise UsageError(f"the label list {list(names)} repeats a label")
    return TaskSpec(name, tuple(text_columns), label_column, names, names, regression, metrics, metrics[0], files={})


def with_labels(spec: TaskSpec, labels: Sequence[str]) -> TaskSpec:
    """`spec` with this label list (names and values as written in the file)."""
    names = tuple(str(x) for x in labels)
    return dataclasses.replace(spec, label_names=names, label_values=names)


def infer_labels(values: Sequence[str]) -> tuple[str, ...]:
    """The distinct labels in a stable order: by number if every label is an integer ("2" < "10"), else by
    Unicode string order. The same file always gives the same list, whatever the order of its rows."""
    distinct = set(values)
    try:
        return tuple(sorted(distinct, key=int))
    except ValueError:
        return tuple(sorted(distinct))


# --- what a reader returns ----------------------------------------------------------------------------------


@dataclass
class TaskExamples:
    """The examples of one file, as columns. `labels` holds class ids (int) or scores (float), or is None when
    the file has no label column (a GLUE test file). `lines` are 1-based line numbers, for messages."""

    path: Path
    text_a: list[str]
    text_b: list[str] | None
    labels: list | None
    index: list[str]
    lines: list[int]
    skipped_empty: int = 0

    def __len__(self) -> int:
        return len(self.text_a)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def columns(self) -> dict[str, list]:
        """Plain columns for `datasets.Dataset.from_dict`: text_a, [text_b], [label], index."""
        out: dict[str, list] = {"text_a": self.text_a}
        if self.text_b is not None:
            out["text_b"] = self.text_b
        if self.labels is not None:
            out["label"] = self.labels
        out["index"] = self.index
        return out


# --- readers ------------------------------------------------------------------------------------------------

FORMATS = ("tsv", "csv", "json", "jsonl")


def file_format(path: Path | str, declared: str = "auto") -> str:
    """The format of a data file: `declared` unless "auto", else its extension (.tsv .csv .json .jsonl)."""
    if declared != "auto":
        if declared not in FORMATS:  # conll, cluener: the tagging formats
            raise UsageError(f"data.format {declared} is for task ner; this task reads one of {FORMATS}")
        return declared
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise UsageError(f"{path}: unknown extension; set data.format to one of {FORMATS}")
    return suffix


def read_examples(
    spec: TaskSpec, path: Path | str, fmt: str = "auto", *, empty_text: str = "error", require_labels=False
) -> TaskExamples:
    """Read one file of `spec`'s task. GLUE files are tsv; custom tasks may also be csv, json or jsonl.

    empty_text: "error" (default) or "skip" rows whose required text is empty (counted in `skipped_empty`).
    require_labels: a missing label column is an error instead of a test file.
    """
    path = _data_file(path)
    fmt = file_format(path, fmt)
    rows = _ROW_READERS[fmt](path, spec)
    header = next(rows)
    examples = _collect(spec, path, header, rows, empty_text, require_labels)
    if not len(examples):
        raise UsageError(f"{path}: no examples (the split is empty); check the file and data.format")
    return examples


def _data_file(path: Path | str) -> Path:
    """`path`, if it is a file; a directory or a missing file is an error that says what is expected."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lstrip(".").lower() in FORMATS)
        inside.sort(key=lambda name: not name.startswith("dev"))  # an evaluation file first
        if not inside:
            raise UsageError(
                f"data file {path} is a directory, with no data file in it; give a tsv, csv or json(l) file"
            )
        raise UsageError(f"data file {path} is a directory; give one of its data files, such as {path / inside[0]}")
    if not path.is_file():
        raise UsageError(f"data file {path} {why_missing(path)}")
    return path


def _collect(spec, path, header, rows, empty_text, require_labels) -> TaskExamples:
    found = ", ".join(repr(h) for h in header)
    missing = [c for c in spec.text_columns if c not in header]
    if missing:
        raise UsageError(f"{path}: no column {missing[0]!r} for task '{spec.name}'; columns found: {found}")
    has_label = spec.label_column is not None and spec.label_column in header
    if require_labels and not has_label:
        raise UsageError(f"{path}: no label column {spec.label_column!r}; columns found: {found}")
    text_pos = [header.index(c) for c in spec.text_columns]
    label_pos = header.index(spec.label_column) if has_label else None
    index_pos = next((header.index(c) for c in spec.index_columns if c in header), None)
    out = TaskExamples(path, [], [] if len(text_pos) == 2 else None, [] if has_label else None, [], [])
    for line, fields in rows:
        if len(fields) != len(header):
            raise UsageError(
                f"{path}:{line}: {len(fields)} fields, the header has {len(header)} ({found}); a tab in a "
                "text or a cut line?"
            )
        texts = [fields[p] for p in text_pos]
        empty = next((spec.text_columns[i] for i, t in enumerate(texts) if not t.strip()), None)
        if empty is not None:
            if empty_text == "skip":
                out.skipped_empty += 1
                continue
            raise UsageError(f"{path}:{line}: empty text in column {empty!r} (data.empty_text=skip drops such rows)")
        out.text_a.append(texts[0])
        if out.text_b is not None:
            out.text_b.append(texts[1])
        if label_pos is not None:
            out.labels.append(_label(spec, path, line, fields[label_pos]))
        out.index.append(fields[index_pos] if index_pos is not None else str(len(out.index)))
        out.lines.append(line)
    return out


def _label(spec: TaskSpec, path: Path, line: int, raw: str):
    value = raw.strip()
    if spec.is_regression:
        try:
            score = float(value)
        except ValueError:
            raise UsageError(
                f"{path}:{line}: label {raw!r} in column {spec.label_column!r} is not a number, and task "
                f"'{spec.name}' is a regression"
            ) from None
        if score != score or score in (float("inf"), float("-inf")):
            raise UsageError(f"{path}:{line}: label {raw!r} is not a finite number")
        return score
    if spec.label_values is None:
        raise ValueError("classification task without labels: call with_labels(spec, infer_labels(...))")
    try:
        return spec.label_values.index(value)
    except ValueError:
        fix = "fix the file, or list every label in task.labels" if spec.name == "custom" else "fix the file"
        raise UsageError(
            f"{path}:{line}: label {raw!r} is not one of task '{spec.name}''s labels {list(spec.label_values)}; {fix}"
        ) from None


def read_label_values(spec: TaskSpec, path: Path | str, fmt: str = "auto") -> list[str]:
    """The raw label strings of a labelled file, for `infer_labels`."""
    path = _data_file(path)
    rows = _ROW_READERS[file_format(path, fmt)](path, spec)
    header = next(rows)
    if spec.label_column not in header:
        found = ", ".join(repr(h) for h in header)
        raise UsageError(f"{path}: no label column {spec.label_column!r}; columns found: {found}")
    pos = header.index(spec.label_column)
    return [fields[pos].strip() for _, fields in rows if len(fields) > pos]


# Each row reader yields the header (list of column names) first, then (line number, list of fields).


def _open_text(path: Path):
    # utf-8-sig drops a byte-order mark (MRPC's files may start with one); newline="" keeps \r in fields.
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from None


def _decode_guard(path: Path, lines: Iterator) -> Iterator:
    try:
        yield from lines
    except UnicodeDecodeError:
        raise not_utf8_error(path) from None


def not_utf8_error(path: Path) -> UsageError:
    """Where the file's first byte that is not UTF-8 is: its line, and its place in the line (both from 1). The
    decoder's own offset counts from the start of a buffer, neither the file's nor a line's. A UTF-16/32 file
    is named as such."""
    with path.open("rb") as handle:
        if wide := wide_text_error(path, handle.read(4)):
            return wide
        handle.seek(0)
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return UsageError(
                    f"{path}:{number}: byte {err.start + 1} of the line (0x{raw[err.start]:02X}) is not UTF-8; "
                    f"convert the file, e.g. `iconv -f cp1252 -t utf-8 {path} > {path}.utf8` if it is Windows-1252"
                )
    return UsageError(f"{path}: not UTF-8 text; convert the file to UTF-8")


def _tsv_rows(path: Path, spec: TaskSpec) -> Iterator:
    with _open_text(path) as handle:
        lines = _decode_guard(path, enumerate(handle, start=1))
        first = next(lines, None)
        if first is None:
            raise UsageError(f"{path}: the file is empty (the split is empty)")
        fields = first[1].rstrip("\r\n").split("\t")
        if spec.positions and not all(c in fields for c in spec.text_columns):
            # No header (CoLA train/dev): name the fields by position and read the first line as data.
            names = [""] * (spec.expected_fields or max(spec.positions.values()) + 1)
            for name, pos in spec.positions.items():
                names[pos] = name
            yield names
            lines = _chain(first, lines)
        else:
            yield [f.strip() for f in fields]
        for number, text in lines:
            text = text.rstrip("\r\n")
            if text.strip():  # a blank line (often the last) is not a row
                yield number, text.split("\t")


def _chain(first, rest):
    yield first
    yield from rest


def _csv_rows(path: Path, spec: TaskSpec) -> Iterator:
    with _open_text(path) as handle:
        reader = csv.reader(_decode_guard(path, handle))
        try:
            header = next(reader, None)
            if header is None:
                raise UsageError(f"{path}: the file is empty (the split is empty)")
            yield [h.strip() for h in header]
            for fields in reader:
                if fields and any(f.strip() for f in fields):
                    yield reader.line_num, fields
        except csv.Error as err:
            raise UsageError(f"{path}:{reader.line_num}: malformed csv ({err})") from None


def _records_to_rows(path: Path, spec: TaskSpec, records: Iterator) -> Iterator:
    wanted = [*spec.text_columns, *([spec.label_column] if spec.label_column else [])]
    first = next(records, None)
    if first is None:
        raise UsageError(f"{path}: no records (the split is empty)")
    header = list(first[1].keys())
    missing = [c for c in spec.text_columns if c not in header]
    if missing:
        found = ", ".join(repr(h) for h in header)
        raise UsageError(f"{path}: no field {missing[0]!r} for task '{spec.name}'; fields found: {found}")
    index_col = next((c for c in spec.index_columns if c in header), None)
    names = [c for c in wanted if c in header] + ([index_col] if index_col else [])
    yield names
    for line, record in _chain(first, records):
        absent = [c for c in names if c not in record]
        if absent:
            found = ", ".join(repr(k) for k in record)
            raise UsageError(f"{path}:{line}: no field {absent[0]!r}; fields found: {found}")
        yield line, [_scalar_text(path, line, record[c]) for c in names]


def _scalar_text(path: Path, line: int, value) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (dict, list)):
        raise UsageError(f"{path}:{line}: value {json.dumps(value)[:60]} is not text or a number")
    return json.dumps(value)  # 1 -> "1", true -> "true": the label as written in the file


def _jsonl_rows(path: Path, spec: TaskSpec) -> Iterator:
    yield from _records_to_rows(path, spec, json_records(path))


def json_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON-lines file; a line that is not a JSON object is a
    one-line error naming it. Shared by every task family's jsonl reader."""
    with _open_text(path) as handle:
        for number, text in _decode_guard(path, enumerate(handle, start=1)):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise UsageError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise UsageError(f"{path}:{number}: expected a JSON object per line")
            yield number, record


def _json_rows(path: Path, spec: TaskSpec) -> Iterator:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except UnicodeDecodeError:
        raise not_utf8_error(path) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UsageError(f'{path}: expected a JSON array of objects (or {{"data": [...]}})')
    # A JSON array has no useful line numbers: report the record number instead (1-based).
    yield from _records_to_rows(path, spec, iter(enumerate(data, start=1)))


_ROW_READERS = {"tsv": _tsv_rows, "csv": _csv_rows, "json": _json_rows, "jsonl": _jsonl_rows}


def task_files(spec: TaskSpec, data_dir: Path | str) -> dict[str, Path]:
    """The split files of a GLUE task found in `data_dir`: split -> path, e.g. {"train": .../train.tsv}."""
    data_dir = Path(data_dir)
    return {split: data_dir / name for split, name in spec.files.items() if (data_dir / name).is_file()}
