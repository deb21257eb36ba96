"""Span extraction (extractive QA): readers, features over sliding windows, n-best answers back to context text.

    spec = span_task("squad_v2")                              # squad, squad_v2 or cmrc2018
    examples = read_qa(spec, "squad/dev-v2.0.json")           # questions, contexts, gold answers, file order
    features = encode_qa(tok, examples, spec, 384, train=False)  # windows with character offsets
    answers = answers_from_logits(features, starts, ends, examples, spec)  # id -> text, null scores
    span_metrics(examples, answers, spec)                     # the official scripts' exact match and F1

Formats: SQuAD v1.1 / v2.0 JSON (`data` -> `paragraphs` -> `qas`, each answer with `text` and `answer_start`,
`is_impossible` in v2) and CMRC 2018 (the same layout, Chinese); JSON lines with `question`, `context`, `answers`
(a list of {text, answer_start}, or the datasets library's {text: [...], answer_start: [...]}) and an optional `id`.
An answer whose `answer_start` does not point at its text is an error naming the file and the question id.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.tasks.classification import _data_file

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


@dataclass
class QAExamples:
    """Questions in file order; `answers[i]` is a list of (text, answer_start), empty when unanswerable."""

    ids: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)
    answers: list[list[tuple[str, int]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, path: Path, qid: str, question: str, context: str, answers: list[tuple[str, int]]) -> None:
        if qid in self._seen:
            raise UsageError(f"{path}: question id {qid!r} appears twice; ids must be unique (predictions use them)")
        if not str(question).strip():
            raise UsageError(f"{path}: question {qid} is empty")
        for text, start in answers:
            if not isinstance(start, int) or context[start : start + len(text)] != text:
                found = context.find(text)
                hint = f" (the text is at {found})" if found >= 0 else " (the text is not in the context)"
                raise UsageError(f"{path}: question {qid}: answer_start {start} does not point at its answer "
                                 f"{text!r}{hint}; fix answer_start")  # fmt: skip
        self._seen.add(qid)
        self.ids.append(qid)
        self.questions.append(question)
        self.contexts.append(context)
        self.answers.append(answers)

    def __post_init__(self):
        self._seen: set[str] = set(self.ids)


def read_qa(spec: SpanSpec, path: Path | str) -> QAExamples:
    """Every question of a SQuAD-layout JSON file (SQuAD v1.1/v2.0, CMRC 2018) or of a JSON-lines file."""
    path = _data_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    stripped = text.lstrip()
    if stripped.startswith("{") and '"data"' in stripped[:2000] and _whole_json(text) is not None:
        return _read_squad(path, _whole_json(text), spec)
    return _read_jsonl(path, text)


def _whole_json(text: str):
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) and "data" in doc else None


def _read_squad(path: Path, doc: dict, spec: SpanSpec) -> QAExamples:
    out = QAExamples()
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
                out.add(path, qid, str(qa.get("question", "")).lstrip(), context, answers)
    return out


def _read_jsonl(path: Path, text: str) -> QAExamples:
    out = QAExamples()
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
    if not out.ids:
        raise UsageError(f"{path} holds no question")
    return out


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


def _answer_position(offsets: list, answers: list[tuple[str, int]]) -> tuple[int, int]:
    """(first piece, last piece) of the first gold answer when the window holds all of it, else (0, 0): [CLS]."""
    if not answers:
        return 0, 0
    text, start_char = answers[0]
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
