"""bertcli.metrics: every GLUE metric equals the scikit-learn / scipy reference; modules load offline."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bertcli.errors import UsageError
from bertcli.metrics import METRICS, compute_metrics, is_better_or_equal, load_metric, module_path, resolve
from bertcli.tasks import GLUE_TASKS

RNG = np.random.default_rng(7)
LABELS = RNG.integers(0, 2, size=500).tolist()
# predictions agreeing with the labels ~70% of the time, so every metric is away from its trivial values
PREDS = [y if r < 0.7 else 1 - y for y, r in zip(LABELS, RNG.random(500), strict=True)]
SCORES_REF = (RNG.random(300) * 5).tolist()
SCORES_PRED = [s + n for s, n in zip(SCORES_REF, RNG.normal(0, 1.2, 300), strict=True)]

REFERENCES = {
    "accuracy": lambda: accuracy_score(LABELS, PREDS),
    "f1": lambda: f1_score(LABELS, PREDS),  # binary, positive class 1: GLUE's MRPC/QQP F1
    "matthews_correlation": lambda: matthews_corrcoef(LABELS, PREDS),
    "pearson": lambda: pearsonr(SCORES_PRED, SCORES_REF)[0],
    "spearmanr": lambda: spearmanr(SCORES_PRED, SCORES_REF)[0],
}


def _inputs(name: str):
    return (SCORES_PRED, SCORES_REF) if name in ("pearson", "spearmanr") else (PREDS, LABELS)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_metric_equals_reference(name):
    preds, refs = _inputs(name)
    expected = float(REFERENCES[name]())
    assert 0.1 < abs(expected) < 0.99  # a non-trivial value, so equality means something
    assert compute_metrics([name], preds, refs) == {name: expected}
    assert load_metric(name).compute(predictions=preds, references=refs) == {name: expected}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_module_loads_offline_through_evaluate_load(name, monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(str(module_path(name)))
    preds, refs = _inputs(name)
    assert metric.compute(predictions=preds, references=refs)[name] == float(REFERENCES[name]())


def test_every_glue_task_metric_is_registered():
    for spec in GLUE_TASKS.values():
        for name in spec.metrics:
            assert resolve(name).name == name
            assert resolve(name).module is not None  # computed by an evaluate module


def test_f1_is_binary_for_class_one_not_macro():
    preds, refs = [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]
    assert compute_metrics(["f1"], preds, refs)["f1"] == pytest.approx(2 / 3)
    # more than two labels (a custom task): macro average
    preds3, refs3 = [0, 1, 2, 2], [0, 1, 1, 2]
    got = compute_metrics(["f1"], preds3, refs3, num_labels=3)["f1"]
    assert got == f1_score(refs3, preds3, average="macro")


def test_constant_predictions_give_nan_correlation_which_never_passes():
    value = compute_metrics(["pearson"], [1.0, 1.0, 1.0], [0.0, 1.0, 2.0])["pearson"]
    assert math.isnan(value)
    assert not is_better_or_equal("pearson", value, -1.0)


def test_aliases_and_direction():
    assert resolve("MCC").name == "matthews_correlation"
    assert resolve("spearman").name == "spearmanr"
    assert resolve("ppl").name == "perplexity"
    assert not METRICS["perplexity"].higher_is_better
    assert is_better_or_equal("perplexity", 9.0, 10.0)
    assert not is_better_or_equal("accuracy", 0.79, 0.8)


def test_unknown_metric_suggests_the_nearest():
    with pytest.raises(UsageError, match="unknown metric 'acuracy': did you mean 'accuracy'"):
        resolve("acuracy")


def test_pretraining_metrics_are_not_evaluate_modules():
    with pytest.raises(UsageError, match="pretraining evaluator"):
        load_metric("perplexity")


@pytest.mark.parametrize("before", ["", "import transformers\n"])
def test_metrics_import_evaluate_without_transformers_pipelines(before):
    """evaluate's evaluator subpackage imports transformers and its pipelines (and transformers' model code) at the
    top: seconds of every eval's start-up. bertcli's metrics load evaluate without them (transformers itself stays
    unimported when nothing imported it before: an ONNX eval never needs it), and leave both importable."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        f"{before}"
        "from bertcli.metrics import compute_metrics\n"
        "print(compute_metrics(['matthews_correlation', 'accuracy'], [1, 0, 1, 1], [1, 0, 0, 1]))\n"
        "print('evaluate' in sys.modules, 'transformers' in sys.modules, 'transformers.pipelines' in sys.modules,"
        " 'transformers.modeling_utils' in sys.modules)\n"
        "from transformers import pipeline\n"
        "print(callable(pipeline), sys.modules['transformers.pipelines'] is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    scores, loaded, later = out.stdout.strip().splitlines()
    assert scores == "{'matthews_correlation': 0.5773502691896258, 'accuracy': 0.75}"
    assert loaded == f"True {bool(before)} False False"
    assert later == "True True"
