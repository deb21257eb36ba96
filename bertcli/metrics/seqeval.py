"""Entity-level precision, recall and F1 and token accuracy for tagging (NER), computed by the `seqeval` package.

An offline `evaluate` module, with the outputs of the hub's `seqeval` metric (which `evaluate.load("seqeval")`
would fetch): per entity type {precision, recall, f1, number}, and overall_precision / overall_recall /
overall_f1 (micro average) / overall_accuracy. strict=False is seqeval's default mode (conlleval's reading: an I-
after O opens an entity); strict=True is its strict mode under the named scheme.
"""

import datasets
from seqeval.metrics import accuracy_score, classification_report
from seqeval.scheme import IOB1, IOB2, IOBES

from bertcli.metrics import import_evaluate

evaluate = import_evaluate()  # without transformers.pipelines, whoever imports this module first

_DESCRIPTION = "seqeval's classification_report (entity level) and accuracy_score (token level)."
_INPUTS = """
Args:
    predictions (list of list of str): predicted tags, one list per sentence.
    references (list of list of str): gold tags, same shape.
    scheme (str): iob1, iob2 or bioes (used by strict mode).
    strict (bool): seqeval's strict mode instead of its default (conlleval) mode.
Returns:
    overall_precision, overall_recall, overall_f1 (micro), overall_accuracy, and per type a dict.
"""
_SCHEMES = {"iob1": IOB1, "iob2": IOB2, "bioes": IOBES}


class Seqeval(evaluate.Metric):
    def _info(self):
        tags = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": tags, "references": tags}),
            reference_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(self, predictions, references, scheme="iob2", strict=False):
        kwargs = {"mode": "strict", "scheme": _SCHEMES[scheme]} if strict else {}
        # zero_division=0: a type never predicted scores 0, not a warning
        report = classification_report(references, predictions, output_dict=True, zero_division=0, **kwargs)
        overall = report.pop("micro avg")
        for key in ("macro avg", "weighted avg"):
            report.pop(key, None)
        scores = {
            kind: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "number": v["support"]}
            for kind, v in report.items()
        }
        scores.update(
            overall_precision=overall["precision"],
            overall_recall=overall["recall"],
            overall_f1=overall["f1-score"],
            overall_accuracy=accuracy_score(references, predictions),
        )
        return scores
