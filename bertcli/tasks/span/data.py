"""Span extraction (extractive QA): readers, features over sliding windows, n-best answers back to context text.

    spec = span_task("squad_v2")                              # squad, squad_v2 or cmrc2018
    examples = read_qa(spec, "squad/dev-v2.0.json")           # questions, contexts, gold answers, file order
    features = encode_qa(tok, examples, spec, 384, train=False)  # windows with character offsets
    answers = answers_from_logits(features, starts, ends, examples, spec)  # id -> text, null scores
    span_metrics(examples, answers, spec)                     # the official scripts' exact match and F1

Formats: SQuAD v1.1 / v2.0 JSON (`data` -> `paragraphs` -> `qas`, each answer with `text` and `answer_start`,
`is_impossible` in v2) and CMRC 2018 (the same layout, Chinese); JSON lines with `question`, `context`, `answers`
(a list of {text, answer_start}, or the datasets library's {text: [...], answer_start: [...]}) and an optional `id`.
Evaluation scores against the answer texts only, as the official SQuAD and CMRC scripts do. For training each
answer is located in its context (`locate_answer`): at `answer_start`; else at that offset read as UTF-16 code units
(files written by Java or JavaScript count a character outside the BMP, such as 𫚭, twice); else at the nearest
occurrence of its text within SEARCH_WINDOW characters (anywhere if the offset is missing or negative and the text
occurs once). An answer found nowhere is unlocatable: kept for scoring, left out of training (`trainable`), where a
question with no locatable answer is left out. An empty question or context is an error, or with
data.empty_text=skip skipped; every case is counted in `QAExamples.counts`.

Encoding is HF run_qa.py's prepare_train_features / prepare_validation_features: question and context through the
fast tokenizer with truncation="only_second", `max_seq_length` windows overlapping by `doc_stride` pieces
(return_overflowing_tokens), character offsets (return_offsets_mapping); a training window that does not hold the
whole answer points at [CLS] (position 0), as does an unanswerable question. Post-processing is utils_qa.py's
postprocess_qa_predictions: the n_best_size best starts and ends of every window of an example, pairs kept when both
lie in the context, end >= start and length <= max_answer_length, the text cut from the original context by the
offsets; v2: the null score (min over windows of start[CLS] + end[CLS]) against the best span's score, "" when
it exceeds it by more than null_score_diff_threshold.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.tasks.classification import _data_file, not_utf8_error

SPAN_TASKS = ("squad", "squad_v2", "cmrc2018")


@dataclass(frozen=True)
class SpanSpec:
    """An extractive QA task; shares the names the finetune and eval pipelines read with `TaskSpec`."""

    name: str = "squad"
    doc_stride: int = 128
    n_best_size: int = 20
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0
    metrics: tuple[str, ...] = ("exact_match", "f1")
    main_metric: str = "f1"
    is_regression: bool = False
    family: str = "span"
    label_names: tuple[str, ...] = ("start", "end")  # the two outputs of the QA head, per piece
    files: dict[str, str] = field(default_factory=dict)
    eval_only: bool = False

    @property
    def version_2(self) -> bool:
        """Whether a question may have no answer (SQuAD v2.0): the null answer is predicted and scored."""
        return self.name == "squad_v2"

    @property
    def num_labels(self) -> int:
        return 2  # a start and an end logit per piece

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def validation_splits(self) -> list[str]:
        return []


def span_task(name: str = "squad", **options) -> SpanSpec:
    if name not in SPAN_TASKS:
        raise UsageError(f"unknown QA task '{name}': one of {', '.join(SPAN_TASKS)}")
    return SpanSpec(name=name, **options)


SEARCH_WINDOW = 32  # characters either side of a wrong answer_start searched for the answer text
# what reading a file located, fixed and skipped, in the order the line of `describe_reading` names them
READ_COUNTS = ("answers_as_given", "answers_fixed_utf16", "answers_fixed_search", "answers_unlocatable",
               "skipped_empty_question", "skipped_empty_context")  # fmt: skip


@dataclass
class QAExamples:
    """Questions in file order; `answers[i]` is a list of (text, located start), empty when unanswerable; the
    start is None for an answer that could not be located in the context (scored by its text, never trained on).
    `empty_text`: "error" or "skip" a question whose question or context is empty (data.empty_text)."""

    ids: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)
    answers: list[list[tuple[str, int | None]]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(READ_COUNTS, 0))
    empty_text: str = "error"

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, path: Path, qid: str, question: str, context: str, answers: list[tuple[str, object]]) -> None:
        if qid in self._seen:
            raise UsageError(f"{path}: question id {qid!r} appears twice; ids must be unique (predictions use them)")
        empty = "question" if not str(question).strip() else "context" if not context.strip() else None
        if empty is not None:
            if self.empty_text != "skip":
                raise UsageError(f"{path}: question {qid}: the {empty} is empty (data.empty_text=skip skips such "
                                 "questions and counts them)")  # fmt: skip
            self.counts[f"skipped_empty_{empty}"] += 1
            return
        located = []
        for text, start in answers:
            at, how = locate_answer(context, text, start)
            self.counts[f"answers_{how}"] += 1
            located.append((text, at))
        self._append(qid, question, context, located)

    def _append(self, qid: str, question: str, context: str, answers: list[tuple[str, int | None]]) -> None:
        self._seen.add(qid)
        self.ids.append(qid)
        self.questions.append(question)
        self.contexts.append(context)
        self.answers.append(answers)

    def __post_init__(self):
        self._seen: set[str] = set(self.ids)


def locate_answer(context: str, text: str, start) -> tuple[int | None, str]:
    """(where `text` starts in `context`, how it was found: "as_given", "fixed_utf16", "fixed_search"), or
    (None, "unlocatable"). `start` is the file's answer_start (any JSON value)."""
    given = start if isinstance(start, int) and not isinstance(start, bool) and start >= 0 else None
    if not text:
        return None, "unlocatable"  # nothing to point at
    if given is not None and context.startswith(text, given):
        return given, "as_given"
    at = None if given is None else _code_point_index(context, given)
    if at is not None and at != given and context.startswith(text, at):
        return at, "fixed_utf16"
    at = _nearest(_occurrences(context, text), given)
    return (at, "fixed_search") if at is not None else (None, "unlocatable")


def _code_point_index(context: str, units: int) -> int | None:
    """The index of the character at UTF-16 offset `units` (a character outside the BMP counts two code units);
    None when `units` falls inside such a character or past the end."""
    count = 0
    for i, char in enumerate(context):
        if count >= units:
            return i if count == units else None
        count += 2 if ord(char) > 0xFFFF else 1
    return len(context) if count == units else None


def _occurrences(context: str, text: str) -> list[int]:
    found, at = [], context.find(text)
    while at >= 0:
        found.append(at)
        at = context.find(text, at + 1)
    return found


def _nearest(found: list[int], given: int | None) -> int | None:
    """The occurrence nearest the given offset within SEARCH_WINDOW characters (the earlier one on a tie); with no
    offset, the only occurrence: a text found twice could be either."""
    if given is None:
        return found[0] if len(found) == 1 else None
    near = [at for at in found if abs(at - given) <= SEARCH_WINDOW]
    return min(near, key=lambda at: (abs(at - given), at)) if near else None


def trainable(examples: QAExamples) -> QAExamples:
    """The questions a model learns from: only the answers that were located; a question whose answers all were
    unlocatable is left out (counted in `skipped_unlocatable`); unanswerable questions (squad_v2) stay."""
    out = QAExamples(counts={**examples.counts, "skipped_unlocatable": 0}, empty_text=examples.empty_text)
    for qid, question, context, answers in zip(examples.ids, examples.questions, examples.contexts, examples.answers):
        located = [(text, at) for text, at in answers if at is not None]
        if answers and not located:
            out.counts["skipped_unlocatable"] += 1
            continue
        out._append(qid, question, context, located)
    return out


ANSWER_WORDS = {"answers_fixed_utf16": "fixed from UTF-16 offsets",
                "answers_fixed_search": "found near a wrong answer_start",
                "answers_unlocatable": "unlocatable (scored by their text, not trained on)"}  # fmt: skip
SKIPPED_WORDS = {"skipped_unlocatable": "with no locatable answer (not trained on)",
                 "skipped_empty_question": "with an empty question",
                 "skipped_empty_context": "with an empty context"}  # fmt: skip


def describe_reading(counts: dict[str, int]) -> str:
    """One line of what reading a QA file located, fixed and skipped (`QAExamples.counts`)."""
    answers = [f"{counts['answers_as_given']} located as given", *_nonzero(counts, ANSWER_WORDS)]
    skipped = _nonzero(counts, SKIPPED_WORDS)
    return f"answers: {', '.join(answers)}" + (f"; questions skipped: {', '.join(skipped)}" if skipped else "")


def _nonzero(counts: dict[str, int], words: dict[str, str]) -> list[str]:
    return [f"{counts[key]} {text}" for key, text in words.items() if counts.get(key)]


def read_qa(spec: SpanSpec, path: Path | str, empty_text: str = "error") -> QAExamples:
    """Every question of a SQuAD-layout JSON file (SQuAD v1.1/v2.0, CMRC 2018) or of a JSON-lines file, answers
    located (`locate_answer`); `empty_text` "skip" skips a question whose question or context is empty."""
    path = _data_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise not_utf8_error(path) from None
    out = QAExamples(empty_text=empty_text)
    stripped = text.lstrip()
    if stripped.startswith("{") and '"data"' in stripped[:2000] and _whole_json(text) is not None:
        _read_squad(path, _whole_json(text), spec, out)
    else:
        _read_jsonl(path, text, out)
    if not out.ids:
        skipped = out.counts["skipped_empty_question"] + out.counts["skipped_empty_context"]
        raise UsageError(f"{path} holds no question" + (f" ({skipped} skipped: empty)" if skipped else ""))
    return out


def _whole_json(text: str):
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) and "data" in doc else None


def _read_squad(path: Path, doc: dict, spec: SpanSpec, out: QAExamples) -> None:
    for article in doc["data"]:
        for paragraph in article.get("paragraphs", []):
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise UsageError(f"{path}: a paragraph of {article.get('title', '?')!r} has no context string")
            for qa in paragraph.get("qas", []):
                qid = str(qa.get("id", f"q{len(out)}"))
                impossible = bool(qa.get("is_impossible", False))
                if impossible and not spec.version_2:
                    raise UsageError(f"{path}: question {qid} is_impossible, which only squad_v2 allows; set "
                                     "task.name: squad_v2")  # fmt: skip
                raw = [] if impossible else qa.get("answers") or []
                answers = [(a.get("text", ""), a.get("answer_start")) for a in raw]
                out.add(path, qid, str(qa.get("question") or "").lstrip(), context, answers)


def _read_jsonl(path: Path, text: str, out: QAExamples) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{path}:{number}: not a JSON object ({err.msg}); QA files are SQuAD JSON or jsonl "
                             "with question, context and answers") from None  # fmt: skip
        missing = [k for k in ("question", "context") if not isinstance(record.get(k), str)]
        if missing:
            raise UsageError(f"{path}:{number}: no {' or '.join(missing)} string; a QA line holds question, "
                             "context and answers")  # fmt: skip
        raw = record.get("answers") or []
        if isinstance(raw, dict):  # the datasets library's squad layout
            raw = [{"text": t, "answer_start": s} for t, s in zip(raw.get("text", []), raw.get("answer_start", []))]
        answers = [(a.get("text", ""), a.get("answer_start")) for a in raw]
        out.add(path, str(record.get("id", number)), record["question"].lstrip(), record["context"], answers)


# --- features --------------------------------------------------------------------------------------------------


@dataclass
class QAFeatures:
    """One feature per window: pieces, segment ids, the example it comes from, the character offsets of its
    context pieces (None elsewhere), and for training the start/end positions of the answer ([CLS] = 0)."""

    input_ids: list[list[int]] = field(default_factory=list)
    token_type_ids: list[list[int]] = field(default_factory=list)
    example: list[int] = field(default_factory=list)
    offsets: list[list[tuple[int, int] | None]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.input_ids], dtype=np.int64)


def encode_qa(tok, examples: QAExamples, spec: SpanSpec, max_seq_length: int) -> QAFeatures:
    """Windows of every example (run_qa.py's prepare_*_features in one): offsets kept for the context pieces,
    start/end the answer's first gold span inside the window, else [CLS]."""
    if spec.doc_stride >= max_seq_length:
        raise UsageError(f"task.doc_stride {spec.doc_stride} must be smaller than data.max_seq_length "
                         f"{max_seq_length}: windows overlap by doc_stride pieces")  # fmt: skip
    right = tok.padding_side == "right"  # the question first, as BERT was trained
    try:
        enc = tok(
            examples.questions if right else examples.contexts, examples.contexts if right else examples.questions,
            truncation="only_second" if right else "only_first", max_length=max_seq_length, stride=spec.doc_stride,
            return_overflowing_tokens=True, return_offsets_mapping=True, padding=False,
            return_token_type_ids=True,  # RoBERTa-style tokenizers leave them out unless asked (all 0 there)
        )  # fmt: skip
    except Exception as err:  # the fast tokenizer refuses a question that leaves no room for doc_stride context
        raise UsageError(f"cannot cut the contexts into windows of {max_seq_length} pieces overlapping by "
                         f"{spec.doc_stride} ({str(err).splitlines()[0]}); lower task.doc_stride or raise "
                         "data.max_seq_length") from None  # fmt: skip
    context_id = 1 if right else 0
    feats = QAFeatures()
    for i, ids in enumerate(enc["input_ids"]):
        e = enc["overflow_to_sample_mapping"][i]
        sequence = enc.sequence_ids(i)
        offsets = [o if sequence[k] == context_id else None for k, o in enumerate(enc["offset_mapping"][i])]
        start, end = _answer_position(offsets, examples.answers[e])
        feats.input_ids.append(ids)
        feats.token_type_ids.append(enc["token_type_ids"][i])
        feats.example.append(e)
        feats.offsets.append(offsets)
        feats.starts.append(start)
        feats.ends.append(end)
    return feats


def _answer_position(offsets: list, answers: Iterable[tuple[str, int | None]]) -> tuple[int, int]:
    """(first piece, last piece) of the first located gold answer when the window holds all of it, else (0, 0):
    [CLS]."""
    text, start_char = next(((t, s) for t, s in answers if s is not None), ("", None))
    if start_char is None:
        return 0, 0
    end_char = start_char + len(text)
    inside = [k for k, o in enumerate(offsets) if o is not None]
    if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
        return 0, 0
    first = next(k for k in inside if offsets[k][1] > start_char)
    last = next(k for k in reversed(inside) if offsets[k][0] < end_char)
    return first, last


# --- predictions back to text ----------------------------------------------------------------------------------


@dataclass
class SpanAnswers:
    """Per question id: the predicted text ("" for no answer), the best non-null text, and null - best score."""

    texts: dict[str, str]
    best_spans: dict[str, str]
    null_diffs: dict[str, float]


def answers_from_logits(feats: QAFeatures, starts, ends, examples: QAExamples, spec: SpanSpec) -> SpanAnswers:
    """utils_qa.postprocess_qa_predictions over every example: `starts`/`ends` are the logits of each feature."""
    by_example: dict[int, list[int]] = {}
    for f, e in enumerate(feats.example):
        by_example.setdefault(e, []).append(f)
    texts, spans, diffs = {}, {}, {}
    for e, qid in enumerate(examples.ids):
        best, null = _best_span(feats, starts, ends, by_example.get(e, []), examples.contexts[e], spec)
        spans[qid] = best[1]
        diffs[qid] = null - best[0]
        texts[qid] = "" if spec.version_2 and diffs[qid] > spec.null_score_diff_threshold else best[1]
    return SpanAnswers(texts, spans, diffs)


def _best_span(feats: QAFeatures, starts, ends, features: list[int], context: str, spec: SpanSpec):
    """((score, text) of the best valid span over the example's windows, the minimum null score)."""
    best, null = (-np.inf, ""), np.inf
    for f in features:
        s, t, offsets = np.asarray(starts[f]), np.asarray(ends[f]), feats.offsets[f]
        null = min(null, float(s[0] + t[0]))
        n = min(len(offsets), len(s))
        top_s = np.argsort(s[:n])[-1 : -spec.n_best_size - 1 : -1]
        top_e = np.argsort(t[:n])[-1 : -spec.n_best_size - 1 : -1]
        for i in top_s:
            for j in top_e:
                if offsets[i] is None or offsets[j] is None or j < i or j - i + 1 > spec.max_answer_length:
                    continue
                score = float(s[i] + t[j])
                if score > best[0]:
                    best = (score, context[offsets[i][0] : offsets[j][1]])
    if best[0] == -np.inf:  # no valid span in any window (utils_qa answers "empty")
        best = (null, "")
    return best, null


def check_scorable(spec: SpanSpec, examples: QAExamples, path) -> None:
    """Scoring needs gold answers: a question without any is an error unless unanswerable questions are the task's
    (squad_v2); the v1.1 script would take a max over nothing."""
    unanswered = next((qid for qid, gold in zip(examples.ids, examples.answers) if not gold), None)
    if unanswered is not None and not spec.version_2:
        raise UsageError(f"{path}: question {unanswered} has no gold answer, which {spec.name} cannot score: give "
                         "its answers, use squad_v2 for unanswerable questions, or --predictions-only")  # fmt: skip


def span_metrics(examples: QAExamples, answers: SpanAnswers, spec: SpanSpec) -> dict[str, float]:
    """The official scripts' scores (fractions); squad_v2 adds HasAns/NoAns and the best null threshold on this
    file (best_f1_thresh: set task.null_score_diff_threshold to it), as run_squad.py reports."""
    from bertcli.metrics.squad import find_best_threshold, question_scores, squad_scores

    refs = {qid: [t for t, _ in a] for qid, a in zip(examples.ids, examples.answers)}
    check_scorable(spec, examples, "the file")
    scores = squad_scores(answers.texts, refs, spec.name)
    if spec.version_2:
        exact, f1 = {}, {}
        for qid, gold in refs.items():
            exact[qid], f1[qid] = question_scores(answers.best_spans[qid], gold, spec.name)
        has = {qid: bool(gold) for qid, gold in refs.items()}
        scores.update(find_best_threshold(answers.best_spans, exact, f1, answers.null_diffs, has))
    return scores
