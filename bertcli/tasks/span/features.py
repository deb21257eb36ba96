"""The span family's batches and answers without torch (`bertcli eval --runtime onnx` imports no torch): a split's
questions and windows, the padded batches of its windows, and the n-best answers put back into the context and
scored. Training's part is `bertcli.tasks.span.training`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.model_dir import load_tokenizer_for
from bertcli.tasks.base import Collator, WindowedSplit
from bertcli.tasks.span.data import QAExamples, QAFeatures, SpanSpec, answers_from_logits, span_metrics


@dataclass
class SpanSplit(WindowedSplit):
    """A split of a QA task: its questions as read, and their features (one per window)."""

    examples: QAExamples
    features: QAFeatures


def fast_tokenizer(model_dir: Path, tok_dir: Path | None, vocab_size: int, use_only: bool = False):
    tok = load_tokenizer_for(model_dir, tok_dir, vocab_size, use_only=use_only)
    if not getattr(tok, "is_fast", False):
        raise UsageError(f"the tokenizer of {model_dir} is not a fast tokenizer; QA needs its character offsets")
    return tok


class SpanCollator(Collator):
    """Feature indices -> padded tensors with start/end positions, plus `example_index` (`arrays`: the same as
    numpy arrays). Picklable."""

    def __init__(self, split: SpanSplit, tokenizer):
        from transformers import DataCollatorWithPadding

        self.features = split.features
        self.pad = DataCollatorWithPadding(tokenizer, return_tensors="np")

    def arrays(self, indices) -> dict[str, np.ndarray]:
        f = self.features
        rows = [{"input_ids": f.input_ids[i], "token_type_ids": f.token_type_ids[i]} for i in indices]
        batch = dict(self.pad(rows))
        batch["start_positions"] = np.asarray([f.starts[i] for i in indices], dtype=np.int64)
        batch["end_positions"] = np.asarray([f.ends[i] for i in indices], dtype=np.int64)
        batch["example_index"] = np.asarray(indices, dtype=np.int64)
        return batch


def score_span_split(spec: SpanSpec, split: SpanSplit, logits: list[np.ndarray], score: bool = True):
    """(metrics, answers): the official scores ({} when not `score`: questions without gold answers)."""
    starts = [x[:, 0] for x in logits]
    ends = [x[:, 1] for x in logits]
    answers = answers_from_logits(split.features, starts, ends, split.examples, spec)
    return (span_metrics(split.examples, answers, spec) if score else {}), answers
