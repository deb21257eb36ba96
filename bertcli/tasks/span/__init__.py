"""The span family: extractive QA (SQuAD v1.1/v2.0, CMRC 2018).

    data           the spec, SQuAD-layout and jsonl readers, sliding windows with character offsets, n-best
                   answers back to context text, the official scripts' exact match and F1
    features       a split's questions and windows, padded batches, answers scored (no torch: what an ONNX eval runs)
    training       questions read and windowed once for finetune, the QA model's forward and loss
    evaluation     `bertcli eval --task squad`: plan, answers, predictions.json
    family         the `TaskFamily` that ties them together (registered as "span")

Every name of `data` is importable from here, as when the family was one module (`bertcli.tasks.span`).
"""

from bertcli.tasks.span.data import *  # noqa: F403 - the family's data names, at their old import path
