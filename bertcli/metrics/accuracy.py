"""Accuracy, GLUE's definition: the share of predictions equal to the reference label.

An offline `evaluate` module: `evaluate.load("<path to this file>")` loads it without the hub, and
`bertcli.metrics.load_metric("accuracy")` instantiates it directly.
"""

import datasets
from sklearn.metrics import accuracy_score

from bertcli.metrics import import_evaluate

evaluate = import_evaluate()  # without transformers.pipelines, whoever imports this module first

_DESCRIPTION = "Accuracy: (number of correct predictions) / (number of examples), scikit-learn's accuracy_score."
_INPUTS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): reference class ids.
Returns:
    accuracy (float): between 0 and 1.
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            reference_urls=["https://gluebenchmark.com/"],
        )

    def _compute(self, predictions, references):
        return {"accuracy": float(accuracy_score(references, predictions))}
