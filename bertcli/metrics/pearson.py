"""Pearson correlation, one of GLUE's two metrics for STS-B (scipy.stats.pearsonr).

An offline `evaluate` module: `evaluate.load("<path to this file>")` loads it without the hub.
"""

import warnings

import datasets
from scipy.stats import pearsonr

from bertcli.metrics import import_evaluate

evaluate = import_evaluate()  # without transformers.pipelines, whoever imports this module first

_DESCRIPTION = "Pearson linear correlation between predicted and reference scores, from -1 to +1."
_INPUTS = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): reference scores.
Returns:
    pearson (float): between -1 and 1; NaN when either side is constant.
"""


class Pearson(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            # float64, not GLUE-hub's float32: the score must equal scipy's on the caller's numbers exactly
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://gluebenchmark.com/"],
        )

    def _compute(self, predictions, references):
        with warnings.catch_warnings():  # constant input: the value is NaN, and the report says so
            warnings.simplefilter("ignore")
            return {"pearson": float(pearsonr(predictions, references)[0])}
