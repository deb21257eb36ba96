"""CI gates: --fail-under / --fail-over / --baseline with --max-drop, both ways, and their bad inputs."""

from __future__ import annotations

import json
import math

import pytest

from bertcli.errors import GateFailure, UsageError
from bertcli.gates import build_gates, check_gates, parse_bounds, raise_on_failure, read_baseline

GLUE = ["f1", "accuracy"]
PRETRAIN = ["mlm_loss", "perplexity", "mlm_accuracy", "nsp_loss", "nsp_accuracy"]


def _passed(gates, metrics):
    return [r.passed for r in check_gates(gates, "m", metrics)]


def test_parse_bounds():
    assert parse_bounds(["accuracy=0.8", " f1 = 0.75"], "--fail-under") == {"accuracy": 0.8, "f1": 0.75}
    for bad in ["accuracy", "accuracy=", "=0.8", "accuracy=high"]:
        with pytest.raises(UsageError, match="expected METRIC=NUMBER"):
            parse_bounds([bad], "--fail-under")


def test_fail_under_both_ways_and_the_message():
    gates = build_gates(GLUE, fail_under={"accuracy": 0.8, "f1": 0.7})
    assert _passed(gates, {"accuracy": 0.8, "f1": 0.9}) == [True, True]  # the bound itself passes
    results = check_gates(gates, "runs/a", {"accuracy": 0.79, "f1": 0.9})
    assert [r.passed for r in results] == [False, True]
    raise_on_failure([r for r in results if r.passed])  # nothing failed: no exception
    with pytest.raises(GateFailure) as err:
        raise_on_failure(results)
    assert err.value.exit_code == 3
    message = str(err.value)
    assert "accuracy 0.7900 < 0.8000" in message and "--fail-under accuracy=0.8" in message
    assert "\n" not in message and "f1" not in message  # one line, naming only the failed gate


def test_fail_over_for_losses():
    gates = build_gates(PRETRAIN, fail_over={"ppl": 40})
    assert gates[0].metric == "perplexity"
    assert _passed(gates, {"perplexity": 39.0}) == [True]
    assert _passed(gates, {"perplexity": 41.0}) == [False]


def test_wrong_direction_is_a_usage_error():
    with pytest.raises(UsageError, match="lower perplexity is better; use --fail-over perplexity=40"):
        build_gates(PRETRAIN, fail_under={"perplexity": 40})
    with pytest.raises(UsageError, match="use --fail-under accuracy"):
        build_gates(GLUE, fail_over={"accuracy": 0.5})


def test_unknown_or_absent_metric_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown metric in --fail-under 'acc_': did you mean"):
        build_gates(GLUE, fail_under={"acc_": 0.5})
    with pytest.raises(UsageError, match="this evaluation computes f1, accuracy, not matthews_correlation"):
        build_gates(GLUE, fail_under={"mcc": 0.5})


def test_nan_never_passes():
    gates = build_gates(GLUE, fail_under={"accuracy": 0.0})
    assert _passed(gates, {"accuracy": math.nan}) == [False]
    assert _passed(gates, {}) == [False]  # a metric that was not computed


def _baseline(tmp_path, data) -> str:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def test_baseline_max_drop_both_ways(tmp_path):
    base = _baseline(tmp_path, {"metrics": {"accuracy": 0.85, "f1": 0.80, "other_tool_key": 1.0}})
    gates = build_gates(GLUE, baseline=base, max_drop=0.01)
    assert sorted(g.metric for g in gates) == ["accuracy", "f1"]  # unknown keys ignored
    by_metric = {g.metric: g for g in gates}
    assert by_metric["accuracy"].bound == pytest.approx(0.84)
    assert _passed(gates, {"accuracy": 0.845, "f1": 0.80}) == [True, True]
    results = check_gates(gates, "m", {"accuracy": 0.83, "f1": 0.80})
    assert [r.passed for r in results] == [False, True]
    with pytest.raises(GateFailure, match=r"accuracy 0.8300 < 0.8400 \(baseline .*metrics.json: 0.8500 - 0.01\)"):
        raise_on_failure(results)


def test_baseline_of_a_loss_may_rise_by_max_drop(tmp_path):
    base = _baseline(tmp_path, {"metrics": {"mlm_loss": 2.0, "nsp_accuracy": 0.9}})
    gates = build_gates(PRETRAIN, baseline=base, max_drop=0.05)
    assert _passed(gates, {"mlm_loss": 2.04, "nsp_accuracy": 0.86}) == [True, True]
    assert _passed(gates, {"mlm_loss": 2.06, "nsp_accuracy": 0.84}) == [False, False]


def test_baseline_from_a_one_model_results_list(tmp_path):
    base = _baseline(tmp_path, {"results": [{"model": "a", "metrics": {"accuracy": 0.5}}]})
    assert read_baseline(tmp_path / "metrics.json") == {"accuracy": 0.5}
    assert len(build_gates(GLUE, baseline=base)) == 1


def test_baseline_from_a_finetune_run(tmp_path):
    best = {"seed": 1, "step": 100, "metrics": {"validation": {"accuracy": 0.9, "f1": 0.8}}, "main": 0.8}
    base = _baseline(tmp_path, {"task": "mrpc", "metrics": ["f1", "accuracy"], "best": best})
    assert read_baseline(tmp_path / "metrics.json") == {"accuracy": 0.9, "f1": 0.8}
    assert len(build_gates(GLUE, baseline=base)) == 2
    two = {"metrics": {"validation_matched": {"accuracy": 0.8}, "validation_mismatched": {"accuracy": 0.7}}}
    with pytest.raises(UsageError, match="scored on 2 splits"):
        build_gates(["accuracy"], baseline=_baseline(tmp_path, {"metrics": ["accuracy"], "best": two}))


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a JSON file"),
        ({"accuracy": 0.9}, 'no "metrics" object'),
        ({"metrics": [0.9]}, 'no "metrics" object'),
        ({"results": [{"metrics": {}}, {"metrics": {}}]}, 'no "metrics" object'),
        ({"metrics": {"accuracy": "high"}}, "\"metrics.accuracy\" is 'high', not a number"),
        ({"metrics": {"matthews_correlation": 0.5}}, "shares no metric with this evaluation"),
    ],
)
def test_malformed_baseline_is_a_usage_error(tmp_path, content, message):
    with pytest.raises(UsageError, match=message):
        build_gates(GLUE, baseline=_baseline(tmp_path, content))


def test_missing_baseline_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        build_gates(GLUE, baseline=str(tmp_path / "nope.json"))
