"""F1 score, GLUE's definition for MRPC and QQP: binary F1 of the positive class 1 (scikit-learn's f1_score).

An offline `evaluate` module: `evaluate.load("<path to this file>")` loads it without the hub.
"""

import datasets
from sklearn.metrics import f1_score

from bertcli.metrics import import_evaluate

evaluate = import_evaluate()  # without transformers.pipelines, whoever imports this module first

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall), scikit-learn's f1_score."
_INPUTS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): reference class ids.
    pos_label (int): the positive class for average="binary" (GLUE: 1).
    average (str): "binary" (GLUE), or "macro"/"micro"/"weighted" for tasks with more than two labels.
Returns:
    f1 (float): between 0 and 1.
"""


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            reference_urls=["https://gluebenchmark.com/"],
        )

    def _compute(self, predictions, references, pos_label=1, average="binary"):
        # zero_division=0: a model that never predicts the positive class scores 0, not a warning and NaN
        score = f1_score(references, predictions, pos_label=pos_label, average=average, zero_division=0)
        return {"f1": float(score)}
