"""The tagging family's batches and scores without torch (`bertcli eval --runtime onnx` imports no torch): a
split's sentences and windows, the padded batches of its windows, and the predicted tags put back on the words and
scored with seqeval. Training's part is `bertcli.tasks.tagging.training`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bertcli.tasks.base import Collator, WindowedSplit
from bertcli.tasks.tagging.data import TaggedSentences, TaggingFeatures, TaggingSpec, tagging_metrics, tags_from_logits


@dataclass
class TaggingSplit(WindowedSplit):
    """A split of a tagging task: its sentences as read, and their features (one per window)."""

    sentences: TaggedSentences
    features: TaggingFeatures

    @property
    def truncated(self) -> int:
        return self.features.cut_words


class TaggingCollator(Collator):
    """Feature indices -> padded tensors (labels padded with -100) plus `example_index` (`arrays`: the same as
    numpy arrays). Picklable."""

    def __init__(self, split: TaggingSplit, tokenizer):
        from transformers import DataCollatorForTokenClassification

        self.features = split.features
        self.pad = DataCollatorForTokenClassification(tokenizer, return_tensors="np")

    def arrays(self, indices) -> dict[str, np.ndarray]:
        f = self.features
        rows = []
        for i in indices:
            row = {"input_ids": f.input_ids[i], "token_type_ids": [0] * len(f.input_ids[i])}
            if f.labels is not None:
                row["labels"] = f.labels[i]
            rows.append(row)
        batch = dict(self.pad(rows))
        batch["example_index"] = np.asarray(indices, dtype=np.int64)
        return batch


def score_split(spec: TaggingSpec, split: TaggingSplit, logits: list[np.ndarray]):
    """(metrics, predicted tags per sentence); metrics are empty when the file has no tags."""
    tags = tags_from_logits(split.features, logits, split.sentences, spec.id2label)
    if split.sentences.tags is None:
        return {}, tags
    return tagging_metrics(split.sentences.tags, tags, spec), tags
