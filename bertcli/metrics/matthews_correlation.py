"""Matthews correlation coefficient, GLUE's metric for CoLA (scikit-learn's matthews_corrcoef).

An offline `evaluate` module: `evaluate.load("<path to this file>")` loads it without the hub.
"""

import datasets
from sklearn.metrics import matthews_corrcoef

from bertcli.metrics import import_evaluate

evaluate = import_evaluate()  # without transformers.pipelines, whoever imports this module first

_DESCRIPTION = "Matthews correlation coefficient between predicted and reference classes, from -1 to +1."
_INPUTS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): reference class ids.
Returns:
    matthews_correlation (float): between -1 and 1; 0 when all predictions are one class.
"""


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            reference_urls=["https://gluebenchmark.com/"],
        )

    def _compute(self, predictions, references):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
