"""Offline metrics: a registry of metric names -> local `evaluate` modules (scikit-learn / scipy inside).

`evaluate.load("accuracy")` or `evaluate.load("glue", ...)` fetch a script from the Hugging Face hub and fail
offline, so every metric here is an `evaluate.Metric` subclass in a file of this package. Two ways to use one:

    from bertcli.metrics import compute_metrics, load_metric
    compute_metrics(["f1", "accuracy"], predictions, references)   # {"f1": ..., "accuracy": ...}
    load_metric("f1").compute(predictions=[1, 0], references=[1, 1])

    import evaluate, bertcli.metrics as m
    evaluate.load(str(m.module_path("f1")))                         # a local path: no hub, no network

Importing this package is cheap: `evaluate`, scikit-learn and scipy load only when a metric is computed, and
`evaluate` then loads without transformers' pipelines (`import_evaluate`).
The pretraining metrics (MLM loss, perplexity, masked-token and NSP accuracy) are sums over tokens that the
pretrained evaluator accumulates itself; they are registered for their names and direction (gates need both).
"""

from __future__ import annotations

import difflib
import importlib
import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertcli.errors import UsageError


@dataclass(frozen=True)
class MetricSpec:
    name: str
    description: str
    higher_is_better: bool = True
    module: str | None = None  # file (stem) of the evaluate module in this package; None: not an evaluate module
    class_name: str | None = None


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in [
        MetricSpec("accuracy", "share of correct predictions", module="accuracy", class_name="Accuracy"),
        MetricSpec("f1", "binary F1 of class 1 (MRPC, QQP)", module="f1", class_name="F1"),
        MetricSpec(
            "matthews_correlation",
            "Matthews correlation (CoLA)",
            module="matthews_correlation",
            class_name="MatthewsCorrelation",
        ),
        MetricSpec("pearson", "Pearson correlation (STS-B)", module="pearson", class_name="Pearson"),
        MetricSpec("spearmanr", "Spearman rank correlation (STS-B)", module="spearmanr", class_name="Spearmanr"),
        MetricSpec("precision", "entity-level micro precision (NER, seqeval)", module="seqeval", class_name="Seqeval"),
        MetricSpec("recall", "entity-level micro recall (NER, seqeval)", module="seqeval", class_name="Seqeval"),
        MetricSpec("seqeval", "entity-level scores and token accuracy (NER)", module="seqeval", class_name="Seqeval"),
        MetricSpec(
            "exact_match",
            "share of answers equal to a gold answer once normalized (QA, SQuAD scripts)",
            module="squad",
            class_name="Squad",
        ),  # fmt: skip
        MetricSpec(
            "squad",
            "exact match and F1 of extractive QA (SQuAD v1.1/v2.0, CMRC 2018)",
            module="squad",
            class_name="Squad",
        ),  # fmt: skip
        MetricSpec("mlm_loss", "masked-LM cross-entropy per masked token", higher_is_better=False),
        MetricSpec("perplexity", "exp(mlm_loss)", higher_is_better=False),
        MetricSpec("mlm_accuracy", "share of masked tokens predicted exactly"),
        MetricSpec("nsp_accuracy", "next-sentence-prediction accuracy"),
        MetricSpec("nsp_loss", "next-sentence-prediction cross-entropy per pair", higher_is_better=False),
    ]
}
# Names other tools use for the same numbers (HF Trainer's eval_* keys, GLUE papers' short names).
ALIASES = {
    "acc": "accuracy",
    "mcc": "matthews_correlation",
    "matthews": "matthews_correlation",
    "pearsonr": "pearson",
    "spearman": "spearmanr",
    "ppl": "perplexity",
    "em": "exact_match",
    "exact": "exact_match",
}
PRETRAINING_METRICS = ["mlm_loss", "perplexity", "mlm_accuracy", "nsp_loss", "nsp_accuracy"]


def resolve(name: str, where: str = "metric") -> MetricSpec:
    """The spec of a metric name (aliases accepted); UsageError naming the nearest known name otherwise."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in METRICS:
        return METRICS[key]
    known = sorted(METRICS)
    near = difflib.get_close_matches(key, known + sorted(ALIASES), n=1, cutoff=0.6)
    hint = f"did you mean '{ALIASES.get(near[0], near[0])}'? " if near else ""
    raise UsageError(f"unknown {where} '{name}': {hint}known metrics: {', '.join(known)}")


def module_path(name: str) -> Path:
    """The local file of a metric's evaluate module, for `evaluate.load(str(path))`."""
    spec = resolve(name)
    if spec.module is None:
        raise UsageError(f"metric '{spec.name}' is computed by the pretraining evaluator, not an evaluate module")
    return Path(__file__).with_name(f"{spec.module}.py")


def import_evaluate() -> Any:
    """`import evaluate`, without what its `evaluate.evaluator` subpackage imports at the top: transformers and its
    pipelines, and through them transformers' model code and image, audio and video processors (4 of the 6 seconds
    `import evaluate` takes on a 2-core CPU; most of `bertcli eval --runtime onnx`'s start-up on short sentences).

    While evaluate loads, transformers (or, when it is imported already, transformers.pipelines) is marked absent
    (None in sys.modules), so `evaluate.evaluator` records transformers as unavailable: its
    `evaluator("text-classification")` helpers, which bertcli never uses, then refuse in this process. The mark is
    removed afterwards: transformers and `transformers.pipeline` import as usual. Does nothing when evaluate is
    imported already, and blocks nothing when transformers.pipelines is."""
    if "evaluate" in sys.modules:
        return sys.modules["evaluate"]
    block = "transformers" if "transformers" not in sys.modules else "transformers.pipelines"
    if block in sys.modules:
        block = None
    if block:
        sys.modules[block] = None  # type: ignore[assignment] - import raises ImportError
    try:
        import evaluate
    finally:
        if block and sys.modules.get(block, 0) is None:
            del sys.modules[block]
    return evaluate


def import_metric_module(name: str) -> Any:
    """The module of this package that holds the metric's `evaluate.Metric` subclass (after `import_evaluate`)."""
    spec = resolve(name)
    if spec.module is None:
        raise UsageError(f"metric '{spec.name}' is computed by the pretraining evaluator, not an evaluate module")
    import_evaluate()
    return importlib.import_module(f"{__name__}.{spec.module}")


def load_metric(name: str) -> Any:
    """An instance of the metric's `evaluate.Metric` subclass, kept in memory (no cache files, no hub)."""
    spec = resolve(name)
    module = import_metric_module(name)
    cls = getattr(module, spec.class_name)
    # evaluate makes an empty folder under cache_dir even in memory: keep it out of a maybe read-only HOME
    return cls(keep_in_memory=True, cache_dir=str(Path(tempfile.gettempdir()) / "bertcli-evaluate"))


def compute_metrics(
    names: Sequence[str], predictions: Sequence, references: Sequence, num_labels: int | None = None
) -> dict[str, float]:
    """Each named metric of `predictions` against `references`, as floats keyed by canonical name.

    F1 is GLUE's binary F1 of class 1; with more than two labels (a custom task) it is macro-averaged.
    """
    results: dict[str, float] = {}
    for name in names:
        spec = resolve(name)
        if spec.module == "seqeval":  # scores tag sequences: bertcli.tasks.tagging.tagging_metrics computes it
            raise UsageError(f"metric '{spec.name}' scores the entities of a tagging task (ner), not classes")
        if spec.module == "squad":  # scores answer texts: bertcli.tasks.span.span_metrics computes it
            raise UsageError(f"metric '{spec.name}' scores the answers of a QA task (squad), not classes")
        kwargs = {}
        if spec.name == "f1" and num_labels is not None and num_labels > 2:
            kwargs["average"] = "macro"
        value = load_metric(spec.name).compute(predictions=predictions, references=references, **kwargs)
        results[spec.name] = float(value[spec.name])
    return results


def is_better_or_equal(name: str, value: float, bound: float) -> bool:
    """Whether `value` meets `bound` in the metric's direction; NaN never does."""
    if math.isnan(value):
        return False
    return value >= bound if resolve(name).higher_is_better else value <= bound
