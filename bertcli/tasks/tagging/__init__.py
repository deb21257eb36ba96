"""The tagging family: token classification (NER).

    data           the spec, CoNLL / character-BIO / jsonl / CLUENER readers, tagging schemes, windows over long
                   sentences, predictions back to words, seqeval metrics
    cluener        CLUENER's span labels as character tags (nested spans resolved by task.nested)
    features       a split's sentences and windows, padded batches, tags scored (no torch: what an ONNX eval runs)
    training       files read and encoded once for finetune, packed batches, the token classifier's forward and loss
    evaluation     `bertcli eval --task ner`: plan, tags, CoNLL predictions
    family         the `TaskFamily` that ties them together (registered as "tagging")

Every name of `data` is importable from here, as when the family was one module (`bertcli.tasks.tagging`).
"""

from bertcli.tasks.tagging.data import *  # noqa: F403 - the family's data names, at their old import path
