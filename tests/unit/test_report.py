"""Reports: table, Markdown, JUnit, metrics.json, predictions and GLUE submission files."""

from __future__ import annotations

import hashlib
import json
import math
import xml.etree.ElementTree as ET

import pytest

from bertcli.errors import UsageError
from bertcli.gates import build_gates, check_gates, read_baseline
from bertcli.report import (
    EvalResult,
    console_table,
    file_sha256,
    junit_report,
    markdown_report,
    metrics_document,
    submission_name,
    write_predictions,
    write_submission,
)
from bertcli.tasks import glue_task


def _result(model="runs/a", acc=0.9, f1=0.8):
    return EvalResult(model, "mrpc", {"f1": f1, "accuracy": acc}, 408, {"total_s": 1.5})


def _gates(results):
    gates = build_gates(["f1", "accuracy"], fail_under={"accuracy": 0.85, "f1": 0.75})
    return [g for r in results for g in check_gates(gates, r.model, r.metrics)]


def test_two_models_give_one_comparison_table():
    results = [_result("runs/a", 0.9, 0.8), _result("runs/b", 0.7, 0.6)]
    lines = console_table(results).splitlines()
    assert lines[0] == "task: mrpc"
    assert lines[1].split() == ["model", "f1", "accuracy", "examples", "seconds"]
    assert lines[3].split()[:3] == ["runs/a", "0.8000", "0.9000"]
    assert lines[4].split()[:3] == ["runs/b", "0.6000", "0.7000"]
    assert len(lines) == 5


def test_the_runtime_column_names_what_ran_each_model_once_one_did_not_run_on_torch_fp32():
    torch_run, onnx_run = _result("runs/a"), _result("runs/b", 0.9, 0.8)
    onnx_run.engine, onnx_run.precision = "onnx", "int8"
    lines = console_table([torch_run, onnx_run]).splitlines()
    assert lines[1].split() == ["model", "runtime", "f1", "accuracy", "examples", "seconds"]
    assert lines[3].split()[:3] == ["runs/a", "torch", "fp32"] and lines[4].split()[:3] == ["runs/b", "onnx", "int8"]
    assert "| runs/b | onnx int8 | 0.8000 |" in markdown_report([torch_run, onnx_run])
    assert "runtime" not in console_table([torch_run])  # today's table, unchanged
    doc = metrics_document([torch_run, onnx_run], None)
    assert [(r["runtime"], r["precision"]) for r in doc["results"]] == [("torch", "fp32"), ("onnx", "int8")]
    one = metrics_document([onnx_run], None)
    assert (one["runtime"], one["precision"]) == ("onnx", "int8")
    props = {p.get("name"): p.get("value") for p in ET.fromstring(junit_report([onnx_run])).iter("property")}
    assert (props["runtime"], props["precision"]) == ("onnx", "int8")


def test_markdown_renders_a_table():
    results = [_result("runs/a"), _result("runs/b", 0.7, 0.6)]
    text = markdown_report(results, _gates(results))
    tables = [line for line in text.splitlines() if line.startswith("|")]
    header, rule, *rows = tables[:4]
    assert [c.strip() for c in header.strip("|").split("|")] == ["model", "f1", "accuracy", "examples", "seconds"]
    assert all(set(c.strip()) <= set("-:") for c in rule.strip("|").split("|"))
    assert len(rows) == 2 and all(r.count("|") == header.count("|") for r in rows)
    assert "**2 of 4 gates failed**" in text
    assert "| accuracy >= 0.8500 | runs/b | 0.7000 | FAIL |" in text


def test_junit_parses_with_one_testcase_per_gate():
    results = [_result("runs/a"), _result("runs/b", 0.7, 0.6)]
    root = ET.fromstring(junit_report(results, _gates(results)))
    assert root.tag == "testsuites" and root.get("tests") == "4" and root.get("failures") == "2"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["runs/a", "runs/b"]
    for suite, failures in zip(suites, [0, 2], strict=True):
        cases = suite.findall("testcase")
        assert [c.get("name") for c in cases] == ["accuracy >= 0.8500", "f1 >= 0.7500"]
        assert len(suite.findall("testcase/failure")) == failures
    failure = suites[1].find("testcase/failure")
    assert "accuracy 0.7000 < 0.8500" in failure.get("message")
    props = {p.get("name"): p.get("value") for p in suites[0].find("properties")}
    assert float(props["accuracy"]) == 0.9 and props["examples"] == "408"


def test_junit_without_gates_is_valid_xml():
    root = ET.fromstring(junit_report([_result()]))
    assert root.get("tests") == "0" and root.find("testsuite") is not None


def test_metrics_document_one_model_serves_as_baseline(tmp_path):
    result = _result(acc=math.nan)
    doc = metrics_document([result], {"path": "dev.tsv", "sha256": "ab", "examples": 408}, _gates([result]))
    assert doc["model"] == "runs/a" and doc["examples"] == 408 and doc["task"] == "mrpc"
    assert doc["metrics"] == {"f1": 0.8, "accuracy": None}  # NaN is not JSON: null
    assert {"python", "torch", "transformers", "evaluate", "scikit-learn", "scipy"} <= set(doc["versions"])
    assert doc["runtime_s"]["total_s"] == 1.5
    assert [g["passed"] for g in doc["gates"]] == [False, True]
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(doc, allow_nan=False))  # strict JSON
    assert read_baseline(path) == {"f1": 0.8, "accuracy": None}


def test_metrics_document_several_models():
    doc = metrics_document([_result("a"), _result("b")], None)
    assert [r["model"] for r in doc["results"]] == ["a", "b"] and "metrics" not in doc


def test_predictions_file(tmp_path):
    result = EvalResult(
        "m", "sst2", {}, 2, label_names=["negative", "positive"], index=["7", "8"], predictions=[1, 0],
        probabilities=[[0.25, 0.75], [0.9, 0.1]], references=[1, 1],
    )  # fmt: skip
    write_predictions(tmp_path / "p.tsv", result)
    rows = [line.split("\t") for line in (tmp_path / "p.tsv").read_text().splitlines()]
    assert rows[0] == ["index", "prediction", "label", "prob_negative", "prob_positive", "reference"]
    assert rows[1] == ["7", "1", "positive", "0.250000", "0.750000", "positive"]
    assert rows[2] == ["8", "0", "negative", "0.900000", "0.100000", "positive"]


def test_regression_predictions_file(tmp_path):
    result = EvalResult("m", "stsb", {}, 1, index=["0"], predictions=[3.5], references=[4.0])
    write_predictions(tmp_path / "p.tsv", result)
    assert (tmp_path / "p.tsv").read_text() == "index\tprediction\treference\n0\t3.500000\t4.000000\n"


SUBMISSIONS = {
    ("cola", "test.tsv"): "CoLA.tsv",
    ("sst2", "test.tsv"): "SST-2.tsv",
    ("mrpc", "test.tsv"): "MRPC.tsv",
    ("qqp", "test.tsv"): "QQP.tsv",
    ("stsb", "test.tsv"): "STS-B.tsv",
    ("mnli", "test_matched.tsv"): "MNLI-m.tsv",
    ("mnli", "test_mismatched.tsv"): "MNLI-mm.tsv",
    ("qnli", "test.tsv"): "QNLI.tsv",
    ("rte", "test.tsv"): "RTE.tsv",
    ("wnli", "test.tsv"): "WNLI.tsv",
    ("ax", "AX.tsv"): "AX.tsv",
}


@pytest.mark.parametrize("task, data", sorted(SUBMISSIONS))
def test_submission_file_name_and_header(tmp_path, task, data):
    name = submission_name(task, f"glue/{task}/{data}")
    assert name == SUBMISSIONS[(task, data)]
    spec = glue_task(task)
    values = None if spec.is_regression else list(spec.label_values)
    preds = [7.2, -0.4, 2.25] if spec.is_regression else [1, 0, 1]
    write_submission(tmp_path / name, preds, ["0", "1", "2"], values)
    lines = (tmp_path / name).read_text().splitlines()
    assert lines[0] == "index\tprediction"
    assert [line.split("\t")[0] for line in lines[1:]] == ["0", "1", "2"]
    written = [line.split("\t")[1] for line in lines[1:]]
    expected = {
        "stsb": ["5.000", "0.000", "2.250"],  # clipped to GLUE's 0-5
        "cola": ["1", "0", "1"], "sst2": ["1", "0", "1"], "mrpc": ["1", "0", "1"], "qqp": ["1", "0", "1"],
        "wnli": ["1", "0", "1"],
        "mnli": ["neutral", "entailment", "neutral"], "ax": ["neutral", "entailment", "neutral"],
        "qnli": ["not_entailment", "entailment", "not_entailment"],
        "rte": ["not_entailment", "entailment", "not_entailment"],
    }[task]  # fmt: skip
    assert written == expected


def test_submission_for_a_custom_task_is_a_usage_error():
    with pytest.raises(UsageError, match="not a GLUE task"):
        submission_name("custom", "x.csv")


def test_file_sha256(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"hello\n")
    assert file_sha256(tmp_path / "f.txt") == hashlib.sha256(b"hello\n").hexdigest()
    before = file_sha256(tmp_path)
    (tmp_path / "g.txt").write_bytes(b"more")
    assert file_sha256(tmp_path) != before
