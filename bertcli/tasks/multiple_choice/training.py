"""Multiple choice in `bertcli finetune`: files read and encoded once, [batch, choices, pieces] batches, the
model's forward and loss (run_swag's: cross-entropy over a question's choices) and the scores of an evaluation.

Batches come from the shared length-grouped sampler (`training.batches`), one row per question, its length that of
its longest choice. A batch carries `example_index`, the questions it holds, so the logits find their question.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bertcli.model_dir import check_max_seq_length, load_tokenizer_for
from bertcli.tasks.base import FinetuneData
from bertcli.tasks.encoder import EncoderForward
from bertcli.tasks.holdout import HOLDOUT, carve_if_asked
from bertcli.tasks.multiple_choice.data import ChoiceExamples, ChoiceSpec, describe_counts, read_choices
from bertcli.tasks.multiple_choice.features import (
    ChoiceFeatures,
    choice_metrics,
    encode_choices,
    predict_choices,
    predicted_choices,
)


@dataclass
class ChoiceSplit:
    """A split of a multiple-choice task: its questions as read and their features (one row per question)."""

    examples: ChoiceExamples
    features: ChoiceFeatures

    def __len__(self) -> int:
        return len(self.features)

    @property
    def lengths(self) -> np.ndarray:
        return self.features.lengths

    @property
    def ids(self) -> np.ndarray:
        return self.features.ids

    def counts(self) -> dict[str, int]:
        f = self.features
        return {**self.examples.counts(), "truncated": f.truncated, "choices_cut": f.choices_cut}


def load_choice_data(cfg, spec: ChoiceSpec, train_path: Path, eval_paths: dict[str, Path], model_dir: Path,
                     raw: dict, tok_dir: Path | None) -> FinetuneData:  # fmt: skip
    """`TaskFamily.load_data` for multiple choice: read and check every file (labels required), load the
    tokenizer, encode once for all seeds."""
    read = dict(fmt=cfg.data.format, require_labels=True, empty_text=cfg.data.empty_text)
    carved = carve_if_asked(cfg, read_choices(train_path, **read), train_path, "questions")  # random by question
    train = carved.train
    evals = {name: read_choices(path, **read) for name, path in eval_paths.items()}
    tok = load_tokenizer_for(model_dir, tok_dir, raw.get("vocab_size", -1))
    length = cfg.data.max_seq_length
    check_max_seq_length(raw, length)
    train_split = ChoiceSplit(train, encode_choices(tok, train, length))
    splits = {name: ChoiceSplit(ex, encode_choices(tok, ex, length)) for name, ex in evals.items()}
    files = {"train": str(train_path), **{k: str(v) for k, v in eval_paths.items()}}
    data = FinetuneData(spec, tok, train_split, splits, files, model_dir)
    held = {}
    if carved.holdout is not None:
        data.holdout = held[HOLDOUT] = ChoiceSplit(carved.holdout, encode_choices(tok, carved.holdout, length))
        data.holdout_how, data.files[HOLDOUT] = f"{carved.how}, by question", str(train_path)
    for name, split in {"train": train_split, **held, **splits}.items():
        data.counts[name] = split.counts()
    return data


def describe_choice_data(data: FinetuneData) -> list[str]:
    return [f"  {name}: {describe_counts(counts)} from {data.files[name]}" for name, counts in data.counts.items()]


def masked_logits(logits: torch.Tensor, choice_mask: torch.Tensor | None) -> torch.Tensor:
    """Logits [batch, choices] with padded choices at the dtype's lowest value: never the argmax, and no weight in
    the softmax of the cross-entropy."""
    if choice_mask is None:
        return logits
    return logits.masked_fill(~choice_mask.bool(), torch.finfo(logits.dtype).min)


class ChoiceForward(EncoderForward):
    """Logits [batch, choices] of a multiple-choice model, padded choices masked; `model` is the model saved as
    best/. A `BertForMultipleChoice` with SDPA or eager attention runs written out (`tasks.encoder`): each choice
    is a row of the encoder, whose last layer computes [CLS] only (the pooler and the classifier read nothing
    else), with trained rows when given the training ids. The logits equal the model's own forward (tested)."""

    WRITES_OUT = ("BertForMultipleChoice",)

    @classmethod
    def writes_out(cls, model) -> bool:
        return super().writes_out(model) and getattr(model.bert, "pooler", None) is not None

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, choice_mask=None) -> torch.Tensor:
        if not self.written_out:
            out = self.stock(input_ids, token_type_ids, attention_mask)
            return masked_logits(out.logits.float(), choice_mask)
        shape = input_ids.shape[:2]
        rows = [None if x is None else x.flatten(0, 1) for x in (input_ids, token_type_ids, attention_mask)]
        cls = self.encoded(*rows, cls_only=True)  # (batch * choices, 1, hidden)
        pooled = self.model.bert.pooler(cls)
        logits = self.model.classifier(self.model.dropout(pooled)).view(shape)
        return masked_logits(logits.float(), choice_mask)


def choice_export_inputs(config):
    """`TaskFamily.export_inputs`: [batch, choices, pieces] input_ids, token_type_ids and attention_mask, and
    choice_mask [batch, choices] with a padded choice in the second question (the masking is exported too)."""
    from bertcli.export import example_batch

    inputs, axes = example_batch(config, ("batch", "choices", "sequence"))
    choice_mask = torch.ones(inputs["input_ids"].shape[:2], dtype=torch.bool)
    choice_mask[1, -1] = False
    return {**inputs, "choice_mask": choice_mask}, {**axes, "choice_mask": ("batch", "choices")}


def choice_loss_and_sums(m, batch: dict):
    """run_swag's loss (cross-entropy over a question's choices) and each question's hit, for the training log."""
    logits = m(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"), batch.get("choice_mask"))
    loss = F.cross_entropy(logits, batch["labels"])
    return loss, {"correct": (logits.detach().argmax(-1) == batch["labels"]).float()}


def summarize_choices(totals: dict[str, float]) -> dict[str, float]:
    return {"accuracy": totals.get("correct", 0.0) / max(totals.get("_samples", 0.0), 1.0)}


def score_choice_split(acc, m, loader, split: ChoiceSplit):
    """(metrics, predictions): accuracy of the chosen indices, and (the split's questions, the indices)."""
    predicted = predicted_choices(predict_choices(acc, m, loader, len(split)))
    return choice_metrics(predicted, split.examples), (split.examples, predicted)
