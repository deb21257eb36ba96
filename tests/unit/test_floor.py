"""The classical floors of the task families (`TaskFamily.floor`), fitted on a training file the test writes, and
the floor row of the eval reports (`bertcli.report.Floor`)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from finetune_fixtures import regression_rows, sentiment_rows, write_rows

from bertcli.config import load_config
from bertcli.errors import UsageError
from bertcli.report import EvalResult, Floor, render
from bertcli.schema.eval import EvalConfig
from bertcli.tasks.base import EvalPlan
from bertcli.tasks.registry import family_of


def _cfg(**values) -> EvalConfig:
    return load_config(EvalConfig, values={"model.paths": ["unused"], "data.path": "unused", **values})


def _plan(spec, data: Path, metrics=None, examples=None) -> EvalPlan:
    return EvalPlan(spec.family, spec.name, spec, list(metrics or spec.metrics), [], False, data, examples)


def _floor(train: Path, plan: EvalPlan, cfg=None) -> EvalResult:
    return family_of(plan.spec).floor(train, plan, cfg or _cfg())


def _sentiment_spec():
    from bertcli.tasks.classification import custom_task, with_labels

    return with_labels(custom_task(["text"], "label"), ["negative", "positive"])


def _flipped(rows):
    return [(text, "negative" if label == "positive" else "positive") for text, label in rows]


# --- classification ------------------------------------------------------------------------------------------


def test_the_bag_of_words_floor_learns_from_the_training_file_alone(tmp_path):
    # a training file whose sentiment words predict the opposite label of the evaluated file's: a floor that saw
    # the evaluated labels would score high on them; one fitted on the training file alone scores near 0
    dev = write_rows(tmp_path / "dev.csv", sentiment_rows(60, seed=2))
    train = write_rows(tmp_path / "train.csv", sentiment_rows(200, seed=1))
    flipped = write_rows(tmp_path / "flipped.csv", _flipped(sentiment_rows(200, seed=1)))
    plan = _plan(_sentiment_spec(), dev)  # examples None: read from the file, as finetune's evaluation files are
    learnt, opposite = _floor(train, plan), _floor(flipped, plan)
    assert learnt.model == "bag-of-words (tf-idf + logistic regression)"
    assert set(learnt.metrics) == {"accuracy", "f1"} and learnt.examples == 60
    assert learnt.metrics["accuracy"] >= 0.9
    assert opposite.metrics["accuracy"] <= 0.1
    assert learnt.predictions == [1 - p for p in opposite.predictions]


def test_the_floor_scores_the_plans_own_examples_with_the_plans_metrics(tmp_path):
    from bertcli.tasks.classification import read_examples

    spec = _sentiment_spec()
    dev = write_rows(tmp_path / "dev.csv", sentiment_rows(60, seed=2))
    train = write_rows(tmp_path / "train.csv", sentiment_rows(200, seed=1))
    examples = read_examples(spec, dev)
    del examples.text_a[10:], examples.labels[10:], examples.index[10:], examples.lines[10:]  # eval's plan read 10
    result = _floor(train, _plan(spec, dev, ["accuracy"], examples))
    assert result.examples == 10 and len(result.predictions) == 10 and set(result.metrics) == {"accuracy"}


def test_sentence_pairs_and_a_regression_floor(tmp_path):
    from bertcli.tasks.classification import glue_task

    def pairs(seed):  # the score is the number of "good" words; sentence B is filler
        return [(text, "the cat sat", score) for text, score in regression_rows(150, seed)]

    columns = ("sentence1", "sentence2", "score")
    train = write_rows(tmp_path / "train.tsv", pairs(1), columns)
    dev = write_rows(tmp_path / "dev.tsv", pairs(2), columns)
    result = _floor(train, _plan(glue_task("stsb"), dev))
    assert result.model == "bag-of-words (tf-idf + ridge regression)"
    assert result.metrics["pearson"] > 0.8 and result.metrics["spearmanr"] > 0.8
    assert all(isinstance(p, float) for p in result.predictions)


def test_a_training_file_with_one_label_is_a_one_line_error(tmp_path):
    dev = write_rows(tmp_path / "dev.csv", sentiment_rows(20, seed=2))
    train = write_rows(tmp_path / "train.csv", [(t, "positive") for t, _ in sentiment_rows(20, seed=1)])
    with pytest.raises(UsageError, match=r"train\.csv: every example has the label 'positive'"):
        _floor(train, _plan(_sentiment_spec(), dev))


def test_a_missing_training_file_is_a_one_line_error(tmp_path):
    dev = write_rows(tmp_path / "dev.csv", sentiment_rows(20, seed=2))
    with pytest.raises(UsageError, match=r"floor training file .*nope\.csv does not exist \(floor\.train_file\)"):
        _floor(tmp_path / "nope.csv", _plan(_sentiment_spec(), dev))
    with pytest.raises(UsageError, match="is a directory"):
        _floor(tmp_path, _plan(_sentiment_spec(), dev))


# --- tagging ---------------------------------------------------------------------------------------------------

TAGGING_TRAIN = """John B-PER
lives O
in O
Paris B-LOC

Paris B-LOC
is O
big O

Paris B-PER
sings O
"""
# Mary is unknown (O); Paris is B-LOC twice and B-PER once in the training file (B-LOC)
TAGGING_DEV = """Mary B-PER
visits O
Paris B-LOC

John B-PER
sings O

Paris B-PER
sings O
"""


def test_the_most_frequent_tag_floor_gives_the_hand_computed_scores(tmp_path):
    from bertcli.tasks.tagging.data import tagging_task

    train = tmp_path / "train.conll"
    train.write_text(TAGGING_TRAIN, encoding="utf-8")
    dev = tmp_path / "dev.conll"
    dev.write_text(TAGGING_DEV, encoding="utf-8")
    spec = tagging_task("iob2", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    result = _floor(train, _plan(spec, dev))
    assert result.model == "most frequent tag per word"
    assert result.predictions == [["O", "O", "B-LOC"], ["B-PER", "O"], ["B-LOC", "O"]]
    # gold entities: PER, LOC | PER | PER (4); predicted: LOC | PER | LOC (3); right: LOC and PER (2)
    precision, recall = 2 / 3, 2 / 4
    assert result.metrics["precision"] == pytest.approx(precision)
    assert result.metrics["recall"] == pytest.approx(recall)
    assert result.metrics["f1"] == pytest.approx(2 * precision * recall / (precision + recall))  # 4/7
    assert result.metrics["accuracy"] == pytest.approx(5 / 7)  # words: Mary and the last Paris wrong
    # PER: 3 gold, John found (precision 1, recall 1/3); LOC: 1 gold, found, 2 predicted (precision 1/2)
    assert result.metrics["PER/f1"] == pytest.approx(0.5) and result.metrics["LOC/f1"] == pytest.approx(2 / 3)


# --- QA and multiple choice ------------------------------------------------------------------------------------


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_the_word_overlap_floor_answers_with_the_best_matching_sentence(tmp_path):
    from bertcli.tasks.span.data import span_task

    context = "The river runs north. The baker sells bread in the market."
    train = _jsonl(tmp_path / "train.jsonl", [
        {"id": "t", "question": "What runs?", "context": context, "answers": [{"text": "river", "answer_start": 4}]},
    ])  # fmt: skip
    dev = _jsonl(tmp_path / "dev.jsonl", [
        {"id": "a", "question": "Where does the baker sell bread?", "context": context,
         "answers": [{"text": "The baker sells bread in the market", "answer_start": 22}]},
        {"id": "b", "question": "Which way does the river run?", "context": context,
         "answers": [{"text": "north", "answer_start": 15}]},
    ])  # fmt: skip
    result = _floor(train, _plan(span_task("squad"), dev))
    assert result.predictions == ["The baker sells bread in the market.", "The river runs north."]
    assert result.metrics["exact_match"] == pytest.approx(0.5)  # the first is the whole answer, punctuation aside
    assert result.metrics["f1"] == pytest.approx((1 + 2 * (1 / 3) * 1 / (1 / 3 + 1)) / 2)  # "north" of 3 words


def test_the_choice_floor_picks_the_choice_closest_to_its_context(tmp_path):
    from bertcli.tasks.multiple_choice.data import choice_task

    def question(qid, context, choices, label):
        return {"id": qid, "context": context, "choices": choices, "label": label}

    train = _jsonl(tmp_path / "train.jsonl", [
        question("t", "the cat sat on the mat", ["the dog ran", "a bird sang"], 0),
    ])  # fmt: skip
    dev = _jsonl(tmp_path / "dev.jsonl", [
        question("a", "the cat sat on the mat", ["a bird sang", "the cat sat"], 1),
        question("b", "the dog ran home", ["a bird sang", "the dog ran"], 0),
    ])  # fmt: skip
    result = _floor(train, _plan(choice_task("multiple_choice"), dev))
    assert result.predictions == [1, 1] and result.metrics == {"accuracy": 0.5}


# --- the reports -----------------------------------------------------------------------------------------------


def _results_and_floor() -> tuple[list[EvalResult], Floor]:
    models = [EvalResult("model_a", "sst2", {"accuracy": 0.9}, 10, {"total_s": 1.0}),
              EvalResult("model_b", "sst2", {"accuracy": 0.6}, 10, {"total_s": 1.0})]  # fmt: skip
    floor = EvalResult("bag-of-words (tf-idf + logistic regression)", "sst2", {"accuracy": 0.7}, 10, {"total_s": 0.1})
    return models, Floor(floor, "accuracy", "train.tsv")


def test_the_floor_is_the_last_row_and_each_model_says_how_far_above_it_it_is():
    results, floor = _results_and_floor()
    lines = render("table", results, floor=floor).splitlines()
    assert lines[1].split() == ["model", "accuracy", "above", "floor", "(accuracy)", "examples", "seconds"]
    assert lines[3].split()[:3] == ["model_a", "0.9000", "+0.2000"]
    assert lines[4].split()[:3] == ["model_b", "0.6000", "-0.1000"]
    assert lines[5].startswith("bag-of-words (tf-idf + logistic regression)  0.7000")
    markdown = [line for line in render("markdown", results, floor=floor).splitlines() if line.startswith("|")]
    assert markdown[0] == "| model | accuracy | above floor (accuracy) | examples | seconds |"
    assert markdown[2].startswith("| model_a | 0.9000 | +0.2000 | 10 |")
    assert markdown[4].startswith("| bag-of-words (tf-idf + logistic regression) | 0.7000 |  | 10 |")


def test_the_floor_in_metrics_json_and_junit():
    results, floor = _results_and_floor()
    doc = json.loads(render("json", results, floor=floor))
    assert [r["above_floor"]["accuracy"] for r in doc["results"]] == pytest.approx([0.2, -0.1])
    assert doc["floor"]["model"] == floor.result.model and doc["floor"]["metrics"] == {"accuracy": 0.7}
    assert doc["floor"]["metric"] == "accuracy" and doc["floor"]["train_file"] == "train.tsv"
    one = json.loads(render("json", results[:1], floor=floor))
    assert one["metrics"] == {"accuracy": 0.9} and one["above_floor"]["accuracy"] == pytest.approx(0.2)
    suites = ET.fromstring(render("junit", results, floor=floor)).findall("testsuite")
    assert [s.get("name") for s in suites] == ["model_a", "model_b", floor.result.model]
    above = {p.get("name"): p.get("value") for p in suites[0].find("properties")}
    assert math.isclose(float(above["above_floor/accuracy"]), 0.2)
    assert suites[2].get("tests") == "0" and suites[2].find("testcase") is None  # no gate reads the floor
