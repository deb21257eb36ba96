"""Token classification (NER): readers, tagging schemes, features with windows, predictions back to words.

    spec = tagging_task(scheme="iob2")                      # labels inferred: with_tag_labels(spec, ...)
    sentences = read_tagged(spec, "conll/eng.train")        # words and tags per sentence, file order
    features = encode_sentences(tok, sentences, spec, 128)  # pieces, labels (-100 = ignored), word ids
    tags = tags_from_logits(features, logits, sentences)    # one predicted tag per input word

Formats (`data.format`, or detected): `conll` is one token per line, columns split by spaces or tabs, the tag in
the last column (or `task.tag_column`), `-DOCSTART-` lines skipped, a blank line between sentences; the Chinese
character-per-line BIO files (MSRA, People's Daily, Weibo) are the same layout with two columns. Weibo NER's
`weiboNER_2nd_conll.*` files write each character with its position in its segmented word (`口0`, `p10`, `310`: the
digit 3 at position 10 of its word); `strip_position_digits` reads the character alone. `jsonl` holds one sentence
per line with `tokens` and `tags` arrays (names configurable). `cluener` is CLUENER's span format,
`{"text": ..., "label": {"type": {"entity": [[start, end]]}}}` (end inclusive), turned into character tags
(`bertcli.tasks.tagging.cluener`); spans nested in others (a book title holding company names) are resolved by `nested`
(keep the outer or the inner ones, counted, or refuse the file). `auto` tells JSON lines from CoNLL by the first
line's content, whatever the name.

Schemes: IOB1 (the original CoNLL-2003 release: I- everywhere, B- only between two touching entities of a type),
IOB2/BIO and BIOES. Every tag must be `O` or a prefix of the scheme and a type. By default a sequence that breaks
the scheme (I- after O in IOB2) is read as seqeval's default mode reads it: the I- opens an entity, as conlleval
does. `strict: true` makes such a sequence an error (file, line) and scores with seqeval's strict mode. An IOB1 file
read as IOB2 (entities open with I-) is noticed (`reading_notes`), and the strict error says so.

The first WordPiece piece of a word carries the word's label and the others -100 (ignored by the loss), as HF's
run_ner.py does; `label_all_pieces` labels every piece (a B- word's later pieces get its I- label). A sentence
longer than `max_seq_length` pieces is cut into consecutive windows at word boundaries, each scored on its own,
so every word is predicted exactly once. A word the tokenizer turns into no piece at all (a zero-width space) is
encoded as [UNK], so it still gets a tag.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.tasks.classification import _data_file, _decode_guard, _open_text, json_records
from bertcli.tasks.tagging.cluener import NESTED_POLICIES, label_spans, resolve_nested, span_tags

SCHEMES = {"iob1": "BI", "iob2": "BI", "bioes": "BIES"}  # scheme -> the prefixes its tags may carry
TAGGING_METRICS = ("f1", "precision", "recall", "accuracy")
TAGGING_FORMATS = ("conll", "jsonl", "cluener")
IGNORED = -100  # the label the loss skips (torch's cross_entropy ignore_index, HF's convention)


@dataclass(frozen=True)
class TaggingSpec:
    """A token-classification task. Shares the names the finetune and eval pipelines read with `TaskSpec`."""

    name: str = "ner"
    label_names: tuple[str, ...] | None = None  # id order; None until read from the training file
    scheme: str = "iob2"
    strict: bool = False
    tag_column: int = -1  # conll: the column of the tag (0-based; -1 the last)
    tokens_field: str = "tokens"
    tags_field: str = "tags"
    label_all_pieces: bool = False
    strip_position_digits: bool = False  # conll: Weibo NER's `口0` tokens: the character without its word position
    nested: str = "outer"  # cluener: spans inside other spans (NESTED_POLICIES)
    metrics: tuple[str, ...] = TAGGING_METRICS
    main_metric: str = "f1"
    is_regression: bool = False
    family: str = "tagging"
    files: dict[str, str] = field(default_factory=dict)
    eval_only: bool = False

    @property
    def num_labels(self) -> int:
        return len(self.label_names or ())

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names or ()))

    @property
    def label_values(self) -> tuple[str, ...] | None:
        return self.label_names

    @property
    def validation_splits(self) -> list[str]:
        return []


def tagging_task(scheme: str = "iob2", labels=None, **options) -> TaggingSpec:
    """A tagging task; `labels` (id order) given, or None to read them from the training file (`infer_tags`)."""
    if scheme not in SCHEMES:
        raise UsageError(f"unknown tagging scheme {scheme!r}; task.scheme is one of {', '.join(SCHEMES)}")
    if options.get("nested", "outer") not in NESTED_POLICIES:
        raise UsageError(f"unknown task.nested {options['nested']!r}; use one of {', '.join(NESTED_POLICIES)}")
    spec = TaggingSpec(scheme=scheme, **options)
    return spec if labels is None else with_tag_labels(spec, labels)


def with_tag_labels(spec: TaggingSpec, labels) -> TaggingSpec:
    names = tuple(str(x) for x in labels)
    if len(set(names)) != len(names):
        raise UsageError(f"the label list {list(names)} repeats a label")
    for tag in names:
        if _split_tag(tag, spec.scheme) is None:
            raise UsageError(f"task.labels: {tag!r} is not O or {'/'.join(SCHEMES[spec.scheme])}-TYPE ({spec.scheme})")
    return dataclasses.replace(spec, label_names=names)


def infer_tags(sentences: TaggedSentences, scheme: str) -> tuple[str, ...]:
    """The label list of a training file, in a stable order: O, then each entity type found (Unicode order) with
    every prefix of the scheme (B, I[, E, S]), so a tag of a known type never surprises an evaluation file."""
    types = sorted({t.split("-", 1)[1] for tags in sentences.tags or [] for t in tags if t != "O"})
    return ("O", *(f"{p}-{t}" for t in types for p in SCHEMES[scheme]))


def _split_tag(tag: str, scheme: str) -> tuple[str, str] | None:
    """(prefix, type) of a tag, ("O", "") for O; None when the tag is not of the scheme."""
    if tag == "O":
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return (prefix, kind) if kind and prefix in SCHEMES[scheme] else None


# --- what a reader returns ----------------------------------------------------------------------------------


@dataclass
class TaggedSentences:
    """Sentences of one file, in file order. `lines[i][j]`: the line of word j of sentence i (1-based; JSON:
    the record's line). `columns`: a CoNLL file's other columns per word, written back beside predictions.
    `dropped_spans`: CLUENER spans dropped by the nested policy; `iob1_starts`: under iob2, the entities opened by
    I- when the file follows IOB1's pattern (0 otherwise); `positional_tokens`: every token ends in digits as Weibo
    NER's word positions do (and they were not stripped)."""

    path: Path
    words: list[list[str]]
    tags: list[list[str]] | None
    lines: list[list[int]]
    columns: list[list[list[str]]] | None = None
    dropped_spans: int = 0
    iob1_starts: int = 0
    positional_tokens: bool = False

    def __len__(self) -> int:
        return len(self.words)

    @property
    def has_labels(self) -> bool:
        return self.tags is not None

    @property
    def word_count(self) -> int:
        return sum(len(w) for w in self.words)


def tagging_format(path: Path | str, declared: str = "auto") -> str:
    """`declared` unless "auto"; auto reads the first non-blank line: a JSON object makes the file JSON lines
    (`cluener` when it has a `text` and a `label` object, else `jsonl`), whatever its name (CLUENER's files are
    often renamed .txt); otherwise .json/.jsonl files are `jsonl` (the reader names the bad line), others `conll`."""
    if declared != "auto":
        if declared not in TAGGING_FORMATS:
            raise UsageError(f"data.format {declared!r} is not a tagging format; use one of {TAGGING_FORMATS}")
        return declared
    with _open_text(Path(path)) as handle:
        first = next((line for line in _decode_guard(Path(path), handle) if line.strip()), "")
    record = _json_object(first)
    if record is None:
        return "jsonl" if Path(path).suffix.lower() in (".json", ".jsonl") else "conll"
    return "cluener" if "text" in record and isinstance(record.get("label"), dict) else "jsonl"


def _json_object(line: str) -> dict | None:
    """The JSON object a line holds; None for anything else (a CoNLL token line never parses as one)."""
    if not line.lstrip().startswith("{"):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def read_tagged(spec: TaggingSpec, path: Path | str, fmt: str = "auto", *, require_labels: bool = False):
    """Read one file of a tagging task; every tag checked against the scheme (and the label list, if known)."""
    path = _data_file(path)
    fmt = tagging_format(path, fmt)
    sentences = {"conll": _read_conll, "jsonl": _read_jsonl, "cluener": _read_cluener}[fmt](path, spec)
    if not len(sentences):
        raise UsageError(f"{path}: no sentences (the split is empty); check the file and data.format")
    if sentences.tags is None and require_labels:
        raise UsageError(f"{path}: no tags ({_where_tags(fmt, spec)}); a training or evaluation file needs them")
    if sentences.tags is not None:
        if spec.scheme == "iob2":
            sentences.iob1_starts = _iob1_starts(sentences.tags)
        _check_tags(spec, sentences)
    return sentences


def reading_notes(spec: TaggingSpec, sentences: TaggedSentences) -> list[str]:
    """One line per thing the user should know about how a file was read (printed by finetune and eval)."""
    notes, path = [], sentences.path
    if sentences.dropped_spans:
        keep = "the outer span" if spec.nested == "outer" else "the inner spans"
        notes.append(f"{path}: CLUENER spans inside (or crossing) another, dropped: {sentences.dropped_spans} "
                     f"(task.nested {spec.nested} keeps {keep}; error refuses the file)")  # fmt: skip
    if sentences.iob1_starts:
        notes.append(f"{path}: the tags look like IOB1 ({sentences.iob1_starts} entities start with I-, B- only "
                     "between touching entities of a type); task.scheme iob1 (--set task.scheme=iob1) reads them "
                     "exactly")  # fmt: skip
    if sentences.positional_tokens:
        notes.append(f"{path}: every token ends in digits, as Weibo NER's word positions do (口0, p10); "
                     "task.strip_position_digits true reads the characters alone")  # fmt: skip
    return notes


def _where_tags(fmt: str, spec: TaggingSpec) -> str:
    where = {"conll": "one column only: tokens without tags", "jsonl": f"no {spec.tags_field!r} field"}
    return where.get(fmt, "no 'label' field")


def _read_conll(path: Path, spec: TaggingSpec) -> TaggedSentences:
    out = TaggedSentences(path, [], [], [], [])
    rows: list[tuple[int, list[str]]] = []  # the current sentence: (line, fields) per token
    width, positional = None, True
    with _open_text(path) as handle:
        for number, text in _decode_guard(path, enumerate(handle, start=1)):
            # ASCII spaces and tabs only: a full-width space (U+3000) is a token in Chinese files, not a separator
            fields = _SEPARATORS.split(text.strip(" \t\r\n")) if text.strip(" \t\r\n") else []
            if not fields or fields[0] == "-DOCSTART-":
                _add_sentence(out, rows, spec, width)
                continue
            if width is None and _json_object(text) is not None:
                raise UsageError(f"{path}:{number}: a JSON record, not a token line: the file is JSON lines (jsonl "
                                 "or CLUENER); set data.format auto (or jsonl, cluener)")  # fmt: skip
            width = width or len(fields)  # one column: tokens without tags (a file to tag)
            if len(fields) != width:
                raise UsageError(f"{path}:{number}: {len(fields)} columns, the file's first token line has {width}; "
                                 "every line is a token and its tag (and the same other columns)")  # fmt: skip
            if spec.strip_position_digits:
                fields[0] = _without_position(path, number, fields[0])
            else:
                positional = positional and _ONE_CHAR_POSITIONED.fullmatch(fields[0]) is not None
            rows.append((number, fields))
    _add_sentence(out, rows, spec, width)
    out.positional_tokens = positional and bool(out.words) and not spec.strip_position_digits
    return out


_SEPARATORS = re.compile(r"[ \t]+")
_POSITIONED = re.compile(r"(.+?)([0-9]+)")  # a character, then its position in its word (ASCII digits): 口0, 310
_ONE_CHAR_POSITIONED = re.compile(r".[0-9]+")


def _without_position(path: Path, line: int, token: str) -> str:
    """The character of a Weibo NER token: `口0` -> 口, `p10` -> p, `310` -> 3 (the digit 3 at position 10 of its word).
    A token is one character followed by its position, which may have two digits, so every digit that ends the
    token goes except a leading one (dropping only the last character would leave `p1` and `31`)."""
    found = _POSITIONED.fullmatch(token)
    if found is None:
        why = "task.strip_position_digits is true (Weibo NER's 口0 layout); set it false for this file"
        raise UsageError(f"{path}:{line}: token {token!r} has no word-position digits after it, and {why}")
    return found.group(1)


def _add_sentence(out: TaggedSentences, rows: list, spec: TaggingSpec, width: int | None) -> None:
    """Move the sentence in `rows` (if any) into `out`: words, tags, lines and the other columns."""
    if not rows:
        return
    if width == 1:  # no tags: a file to tag (eval --predictions-only)
        out.tags = None
        out.words.append([fields[0] for _, fields in rows])
        out.lines.append([number for number, _ in rows])
        out.columns.append([[] for _ in rows])
        rows.clear()
        return
    tag_at = spec.tag_column if spec.tag_column >= 0 else width + spec.tag_column
    if not 0 < tag_at < width:
        raise UsageError(f"{out.path}: task.tag_column {spec.tag_column} is not a column after the token "
                         f"(1..{width - 1})")  # fmt: skip
    out.words.append([fields[0] for _, fields in rows])
    out.tags.append([fields[tag_at] for _, fields in rows])
    out.lines.append([number for number, _ in rows])
    out.columns.append([[f for i, f in enumerate(fields[1:], start=1) if i != tag_at] for _, fields in rows])
    rows.clear()


def _read_jsonl(path: Path, spec: TaggingSpec) -> TaggedSentences:
    out = TaggedSentences(path, [], [], [])
    for number, record in json_records(path):
        words = record.get(spec.tokens_field)
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise UsageError(f"{path}:{number}: no list of strings in {spec.tokens_field!r} (task.tokens_field)")
        if not words:
            raise UsageError(f"{path}:{number}: an empty sentence (no tokens); remove the line")
        tags = record.get(spec.tags_field)
        if tags is None:
            out.tags = None
        elif out.tags is not None:
            if all(isinstance(t, int) for t in tags) and spec.label_names:  # HF datasets store tag ids
                tags = [spec.label_names[t] if 0 <= t < spec.num_labels else str(t) for t in tags]
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise UsageError(
                    f"{path}:{number}: {spec.tags_field!r} is not a list of tag strings (ids need task.labels)"
                )
            if len(tags) != len(words):
                raise UsageError(f"{path}:{number}: {len(words)} tokens but {len(tags)} tags")
            out.tags.append(tags)
        out.words.append(words)
        out.lines.append([number] * len(words))
    return out


def _read_cluener(path: Path, spec: TaggingSpec) -> TaggedSentences:
    out = TaggedSentences(path, [], [], [])
    for number, record in json_records(path):
        text = record.get("text")
        if not isinstance(text, str) or not text:
            raise UsageError(f"{path}:{number}: an empty sentence (no 'text'); remove the line")
        out.words.append(list(text))
        out.lines.append([number] * len(text))
        if "label" not in record:
            out.tags = None
        elif out.tags is not None:
            spans = label_spans(path, number, text, record["label"])
            kept = resolve_nested(path, number, spans, spec.nested)
            out.dropped_spans += len(spans) - len(kept)
            out.tags.append(span_tags(len(text), kept, spec.scheme))
    return out


def _check_tags(spec: TaggingSpec, sentences: TaggedSentences) -> None:
    known = set(spec.label_names or ())
    for tags, lines in zip(sentences.tags, sentences.lines):
        previous = "O"
        for tag, line in zip(tags, lines):
            if _split_tag(tag, spec.scheme) is None:
                prefixes = "/".join(SCHEMES[spec.scheme])
                raise UsageError(f"{sentences.path}:{line}: tag {tag!r} is not O or {prefixes}-TYPE (task.scheme "
                                 f"{spec.scheme}); fix the file or set task.scheme")  # fmt: skip
            if known and tag not in known:
                labels = list(spec.label_names)
                raise UsageError(f"{sentences.path}:{line}: tag {tag!r} is not one of the labels {labels}; fix the "
                                 "file or list every label in task.labels")  # fmt: skip
            if spec.strict and (why := _breaks_scheme(previous, tag, spec.scheme)):
                raise _strict_error(sentences, line, f"tag {tag!r} after {previous!r} {why} in {spec.scheme}")
            previous = tag
        if spec.strict and spec.scheme == "bioes" and previous[:2] in ("B-", "I-"):
            raise UsageError(f"{sentences.path}:{lines[-1]}: the sentence ends inside an entity ({previous!r}); "
                             "bioes ends entities with E- or S- and task.strict is true")  # fmt: skip


def _strict_error(sentences: TaggedSentences, line: int, what: str) -> UsageError:
    hint = "; the tags look like IOB1: --set task.scheme=iob1 reads them" if sentences.iob1_starts else ""
    return UsageError(f"{sentences.path}:{line}: {what}, and task.strict is true (false reads it as seqeval's "
                      f"default mode does){hint}")  # fmt: skip


def _iob1_starts(tag_lists: list[list[str]]) -> int:
    """The entities that open with I- (after O or another type) when the file follows IOB1's pattern: B- only
    right after an entity of its type. 0 when none does, or when a B- opens an entity after O (IOB2 with a slip)."""
    starts = 0
    for tags in tag_lists:
        previous = ("O", "")
        for tag in tags:
            prefix, kind = _split_tag(tag, "iob2") or ("O", "")
            opens = prefix in ("B", "I") and kind != previous[1]
            if opens and prefix == "B":
                return 0
            starts += opens
            previous = (prefix, kind)
    return starts


def _breaks_scheme(previous: str, tag: str, scheme: str) -> str | None:
    """Why `tag` may not follow `previous` in a strict reading of the scheme; None when it may."""
    prev_prefix, prev_kind = _split_tag(previous, scheme) or ("O", "")
    prefix, kind = _split_tag(tag, scheme)
    inside = prev_prefix in ("B", "I") and prev_kind == kind
    if scheme == "iob2" and prefix == "I" and not inside:
        return "does not continue an entity"
    if scheme == "iob1" and prefix == "B" and prev_kind != kind:
        return "starts an entity that touches none of its type (IOB1 writes I- there)"
    if scheme == "bioes":
        if prefix in ("I", "E") and not inside:
            return "does not continue an entity"
        if prev_prefix in ("B", "I") and not (prefix in ("I", "E") and prev_kind == kind):
            return "leaves an entity without its E- tag"
    return None


# --- features -----------------------------------------------------------------------------------------------


@dataclass
class TaggingFeatures:
    """Model inputs of a split: one feature per window (a sentence, or a part of a long one). `word_ids[f][k]`:
    the sentence word (counted from the window's first, `word_start[f]`) of piece k, None for [CLS]/[SEP]."""

    input_ids: list[list[int]]
    labels: list[list[int]] | None
    word_ids: list[list[int | None]]
    sentence: np.ndarray
    word_start: np.ndarray
    windowed: int = 0  # sentences cut into more than one window
    cut_words: int = 0  # words with more pieces than a window holds: their later pieces were dropped
    empty_words: int = 0  # words the tokenizer turned into no piece, encoded as [UNK]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def encode_sentences(tok, sentences: TaggedSentences, spec: TaggingSpec, max_seq_length: int) -> TaggingFeatures:
    """Tokenize every sentence once (its words as given: is_split_into_words) and cut it into windows of at most
    `max_seq_length` pieces with [CLS] and [SEP]; labels aligned to pieces as the module docstring says."""
    enc = tok(sentences.words, is_split_into_words=True, add_special_tokens=False, return_attention_mask=False,
              return_token_type_ids=False, verbose=False)  # fmt: skip
    label_id = {name: i for i, name in enumerate(spec.label_names or ())}
    feats = TaggingFeatures([], [] if sentences.tags is not None else None, [], np.empty(0), np.empty(0))
    ends = special_ends(tok)
    sentence_of, starts, budget = [], [], max_seq_length - len(ends[0]) - len(ends[1])
    for i, words in enumerate(sentences.words):
        pieces = [[] for _ in words]
        for piece, word in zip(enc["input_ids"][i], enc.word_ids(i)):
            pieces[word].append(piece)
        for w, p in enumerate(pieces):
            if not p:
                pieces[w] = [tok.unk_token_id]
                feats.empty_words += 1
            elif len(p) > budget:
                pieces[w] = p[:budget]
                feats.cut_words += 1
        windows = _windows([len(p) for p in pieces], budget)
        feats.windowed += len(windows) > 1
        tags = sentences.tags[i] if sentences.tags is not None else None
        for first, last in windows:
            _add_window(feats, ends, pieces[first:last], tags[first:last] if tags else None, label_id, spec)
            sentence_of.append(i)
            starts.append(first)
    feats.sentence, feats.word_start = np.asarray(sentence_of, dtype=np.int64), np.asarray(starts, dtype=np.int64)
    return feats


def _windows(piece_counts: list[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive word ranges [first, last) whose pieces fit `budget` (greedy, at word boundaries)."""
    windows, first, used = [], 0, 0
    for w, n in enumerate(piece_counts):
        if used + n > budget and w > first:
            windows.append((first, w))
            first, used = w, 0
        used += n
    windows.append((first, len(piece_counts)))
    return windows


def special_ends(tok) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after one text: [CLS] and [SEP] for BERT, <s> and </s> for
    RoBERTa, whatever its post-processor adds for others (none for one without)."""
    word = [tok.unk_token or "a"]
    plain = tok(word, is_split_into_words=True, add_special_tokens=False)["input_ids"]
    full = tok(word, is_split_into_words=True)["input_ids"]
    if not plain:  # cannot happen for a tokenizer with an unknown token; BERT's layout then
        return [tok.cls_token_id], [tok.sep_token_id]
    at = next(i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain)
    return full[:at], full[at + len(plain) :]


def _add_window(feats: TaggingFeatures, ends, pieces: list[list[int]], tags, label_id: dict, spec) -> None:
    ids, word_ids, labels = list(ends[0]), [None] * len(ends[0]), [IGNORED] * len(ends[0])
    for w, word_pieces in enumerate(pieces):
        ids.extend(word_pieces)
        word_ids.extend([w] * len(word_pieces))
        if tags is not None:
            first = label_id[tags[w]]
            later = IGNORED
            if spec.label_all_pieces:  # a B- word's later pieces are inside the entity: I-, as run_ner does
                later = label_id.get("I-" + tags[w][2:], first) if tags[w].startswith("B-") else first
            labels.extend([first] + [later] * (len(word_pieces) - 1))
    ids.extend(ends[1])
    word_ids.extend([None] * len(ends[1]))
    labels.extend([IGNORED] * len(ends[1]))
    feats.input_ids.append(ids)
    feats.word_ids.append(word_ids)
    if feats.labels is not None:
        feats.labels.append(labels)


# --- predictions back to words, and scores ------------------------------------------------------------------


def tags_from_logits(feats: TaggingFeatures, logits, sentences: TaggedSentences, id2label) -> list[list[str]]:
    """One predicted tag per input word: the label of the word's first piece, in its window. `logits[f]`: an
    array (pieces, labels) per feature, in feature order (padding beyond the feature's length is ignored)."""
    out: list[list[str | None]] = [[None] * len(w) for w in sentences.words]
    for f, word_ids in enumerate(feats.word_ids):
        best = np.asarray(logits[f])[: len(word_ids)].argmax(-1)
        sentence, start, seen = int(feats.sentence[f]), int(feats.word_start[f]), set()
        for k, w in enumerate(word_ids):
            if w is not None and w not in seen:
                seen.add(w)
                out[sentence][start + w] = id2label[int(best[k])]
    missing = sum(t is None for tags in out for t in tags)
    if missing:
        raise RuntimeError(f"{missing} words got no prediction")
    return out


def tagging_metrics(references: list[list[str]], predictions: list[list[str]], spec: TaggingSpec) -> dict[str, float]:
    """Entity-level micro precision, recall and F1 and token accuracy as seqeval computes them (through the
    offline evaluate module `bertcli.metrics.seqeval`), plus `TYPE/precision`, `TYPE/recall`, `TYPE/f1` per type."""
    from bertcli.metrics import load_metric

    scores = load_metric("seqeval").compute(
        predictions=predictions, references=references, scheme=spec.scheme, strict=spec.strict
    )
    out = {"f1": scores["overall_f1"], "precision": scores["overall_precision"],
           "recall": scores["overall_recall"], "accuracy": scores["overall_accuracy"]}  # fmt: skip
    for kind, values in sorted((k, v) for k, v in scores.items() if isinstance(v, dict)):
        out.update({f"{kind}/{m}": float(values[m]) for m in ("precision", "recall", "f1")})
    return {k: float(v) for k, v in out.items()}
