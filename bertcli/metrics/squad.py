"""Exact match and F1 of extractive QA, as the official evaluation scripts compute them, offline.

`evaluate.load("squad")` / `("squad_v2")` fetch their scripts from the hub at run time; this file follows the
official scripts' code instead:
  - SQuAD v1.1 (evaluate-v1.1.py): normalize_answer (lower case, punctuation and the articles a/an/the removed,
    white space collapsed), F1 over the bag of normalized tokens, the max over the gold answers.
  - SQuAD v2.0 (evaluate-v2.0.py): the same, except that a question whose gold answers all normalize to nothing
    has the gold answer "" (no answer), and F1 of an empty side is 1 when both are empty, else 0; HasAns_* and
    NoAns_* scores over the answerable and unanswerable questions; `find_best_thresh` over the no-answer scores.
  - CMRC 2018 (cmrc2018_evaluate.py): Chinese characters (and the script's punctuation list) are tokens of their
    own; F1 from the longest common *substring* of the two token lists, punctuation removed; EM on the strings with
    that punctuation removed. The script splits runs of other characters with nltk.word_tokenize, which needs
    nltk's punkt data (a download); here such a run is split into words and single punctuation marks
    (`\\w+|[^\\w\\s]`), which agrees with it on ordinary words and numbers.
Scores are fractions (the scripts' percentages / 100), like every other metric here, so one gate reads all.
"""

from __future__ import annotations

import collections
import re
import string

import datasets

from bertcli.metrics import import_evaluate

evaluate = import_evaluate()  # without transformers.pipelines, whoever imports this module first

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (both SQuAD scripts)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match_score(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str, v2: bool = False) -> float:
    """Token F1 of the normalized strings; v2: an empty side scores 1 only when both are empty (evaluate-v2.0)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if v2 and (not pred or not gold):
        return float(pred == gold)
    same = sum((collections.Counter(pred) & collections.Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: list[str], v2: bool) -> list[str]:
    """v2 keeps the answers that normalize to something, and [""] when none does (an unanswerable question)."""
    if not v2:
        return list(answers)
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


# CMRC 2018's punctuation list (cmrc2018_evaluate.py, sp_char)
_CMRC_PUNCT = ["-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！", "“", "”",
               "；", "’", "《", "》", "……", "·", "、", "「", "」", "（", "）", "－", "～", "『", "』"]  # fmt: skip
_CJK = re.compile(r"[\u4e00-\u9fa5]")
_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def mixed_segmentation(text: str, rm_punc: bool = False) -> list[str]:
    """Each Chinese character and listed punctuation mark a token; runs of other characters split into words."""
    out, run = [], ""
    for char in str(text).lower().strip():
        if rm_punc and char in _CMRC_PUNCT:
            continue
        if _CJK.search(char) or char in _CMRC_PUNCT:
            out.extend(_WORDS.findall(run))
            run = ""
            out.append(char)
        else:
            run += char
    out.extend(_WORDS.findall(run))
    return out


def remove_punctuation(text: str) -> str:
    return "".join(c for c in str(text).lower().strip() if c not in _CMRC_PUNCT)


def _longest_common_substring(a: list[str], b: list[str]) -> int:
    best, row = 0, [0] * (len(b) + 1)
    for x in a:
        prev, row = row, [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                row[j + 1] = prev[j] + 1
                best = max(best, row[j + 1])
    return best


def cmrc_f1(prediction: str, truth: str) -> float:
    pred, gold = mixed_segmentation(prediction, True), mixed_segmentation(truth, True)
    common = _longest_common_substring(gold, pred)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def cmrc_exact(prediction: str, truth: str) -> float:
    return float(remove_punctuation(prediction) == remove_punctuation(truth))


def question_scores(prediction: str, answers: list[str], style: str) -> tuple[float, float]:
    """(exact match, F1) of one question: the max over its gold answers. style: squad, squad_v2 or cmrc2018."""
    if style == "cmrc2018":
        return max(cmrc_exact(prediction, a) for a in answers), max(cmrc_f1(prediction, a) for a in answers)
    v2 = style == "squad_v2"
    golds = gold_answers(answers, v2)
    return max(exact_match_score(prediction, a) for a in golds), max(f1_score(prediction, a, v2) for a in golds)


def find_best_threshold(predictions: dict, exact: dict, f1: dict, null_scores: dict, has_answer: dict) -> dict:
    """evaluate-v2.0's find_all_best_thresh: the no-answer threshold that maximizes EM (and F1), where a question
    is answered "" when its null score exceeds the threshold. `predictions` are the best non-null answers and
    `exact`/`f1` their scores."""
    out = {}
    for name, scores in (("exact", exact), ("f1", f1)):
        current = best = sum(1 for q in scores if not has_answer[q])
        threshold = 0.0
        for q in sorted(null_scores, key=lambda k: null_scores[k]):
            # answering an unanswerable question (with text) loses the point its "" would have scored
            current += scores[q] if has_answer[q] else -1 if predictions[q] else 0
            if current > best:
                best, threshold = current, null_scores[q]
        out[f"best_{name}"], out[f"best_{name}_thresh"] = best / max(len(scores), 1), threshold
    return out


def squad_scores(predictions: dict[str, str], references: dict[str, list[str]], style: str = "squad") -> dict:
    """exact_match and f1 (fractions) over the questions of `references` (id -> gold texts; [] unanswerable);
    squad_v2 adds HasAns_* / NoAns_* and their counts. A question without a prediction scores 0, as the scripts."""
    exact, f1 = {}, {}
    for qid, answers in references.items():
        if qid in predictions:
            exact[qid], f1[qid] = question_scores(predictions[qid], answers, style)
        else:
            exact[qid], f1[qid] = 0.0, 0.0
    n = max(len(references), 1)
    out = {"exact_match": sum(exact.values()) / n, "f1": sum(f1.values()) / n, "total": len(references)}
    if style == "squad_v2":
        for name, keep in (("HasAns", True), ("NoAns", False)):
            ids = [q for q, a in references.items() if bool(gold_answers(a, True) != [""]) == keep]
            if ids:
                out[f"{name}_exact"] = sum(exact[q] for q in ids) / len(ids)
                out[f"{name}_f1"] = sum(f1[q] for q in ids) / len(ids)
            out[f"{name}_total"] = len(ids)
    return out


_TEXT = datasets.Value("string")


class Squad(evaluate.Metric):
    """The same scores as an `evaluate` module: predictions [{id, prediction_text}], references [{id, answers}]."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Exact match and F1 of the official SQuAD v1.1 / v2.0 and CMRC 2018 evaluation scripts.",
            citation="",
            inputs_description="predictions: [{id, prediction_text}]; references: [{id, answers: [text...]}]; "
            "style: squad, squad_v2 or cmrc2018.",
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(datasets.Value("string")),
                    },
                }
            ),
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/", "https://github.com/ymcui/cmrc2018"],
        )

    def _compute(self, predictions, references, style="squad"):
        preds = {p["id"]: p["prediction_text"] for p in predictions}
        refs = {r["id"]: list(r["answers"]) for r in references}
        return squad_scores(preds, refs, style)
