"""The span family's floor: the context sentence that shares the most question words, weighted by how rare each
word is in the training file's contexts (idf), is the answer. Words are lower-cased runs of letters and digits,
and each Chinese character is a word of its own (CMRC 2018). squad_v2: a question that shares no word with its
context gets no answer. Scored with the official scripts' exact match and F1, as the models are."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from pathlib import Path

from bertcli.report import EvalResult
from bertcli.tasks.base import EvalPlan
from bertcli.tasks.floor import check_train_file, evaluated_examples, floor_result
from bertcli.tasks.span.data import QAExamples, SpanAnswers, read_qa, span_metrics

NAME = "word overlap (the context sentence sharing most question words)"
_WORD = re.compile(r"[\u4e00-\u9fff]|[^\W_]+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])")


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def sentences(context: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(context) if s.strip()] or [context]


def idf_weights(train: QAExamples) -> tuple[dict[str, float], float]:
    """(word -> idf over the training file's distinct contexts, the weight of a word they never have)."""
    contexts = list(dict.fromkeys(train.contexts))
    df = Counter(w for c in contexts for w in words(c))
    n = len(contexts)
    return {w: math.log((1 + n) / (1 + k)) + 1 for w, k in df.items()}, math.log(1 + n) + 1


def best_sentence(question: str, context: str, idf: dict[str, float], unseen: float) -> tuple[float, str]:
    """(overlap score, sentence) of the context sentence sharing the most idf-weighted question words."""
    asked = words(question)
    scored = [(sum(idf.get(w, unseen) for w in asked & words(s)), -i, s) for i, s in enumerate(sentences(context))]
    score, _, sentence = max(scored)  # the first sentence among equals
    return score, sentence


def span_floor(train_path: Path, plan: EvalPlan, cfg) -> EvalResult:
    """`TaskFamily.floor`: the best-overlapping sentence of each question's context, idf from `train_path`."""
    started = time.perf_counter()
    spec = plan.spec
    train = read_qa(spec, check_train_file(train_path), cfg.data.empty_text)
    questions = evaluated_examples(plan, lambda path: read_qa(spec, path, cfg.data.empty_text))
    idf, unseen = idf_weights(train)
    texts, spans, diffs = {}, {}, {}
    for qid, question, context in zip(questions.ids, questions.questions, questions.contexts):
        score, sentence = best_sentence(question, context, idf, unseen)
        spans[qid], diffs[qid] = sentence, -score  # null minus answer score: more overlap, surer answer
        texts[qid] = "" if spec.version_2 and score == 0 else sentence
    metrics = span_metrics(questions, SpanAnswers(texts, spans, diffs), spec)
    predictions = [texts[q] for q in questions.ids]
    return floor_result(NAME, plan, metrics, len(questions), started, predictions)
