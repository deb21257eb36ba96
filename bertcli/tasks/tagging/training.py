"""The tagging family (NER) in `run_finetune` and `run_eval`: files read and encoded once, padded batches
(transformers' `DataCollatorForTokenClassification`: labels padded with -100), the token classifier's forward and
loss, and predictions put back on the words and scored with seqeval (`bertcli.tasks.tagging`).

The batches come from the same sampler as classification (`training.batches.IndexBatches`): shuffled by default
(`TaggingFamily.group_by_length`), or grouped by length and then cut by pieces rather than rows
(`data.token_batches`: the loss is a mean over pieces). With data.pack a training batch's windows are packed into
rows without padding (`PackedTaggingCollator`, `bertcli.tasks.packing`): the same windows, the same loss. A batch
carries `example_index`, the features (windows) it holds, so predictions find their sentence and words again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bertcli.errors import UsageError
from bertcli.model_dir import fitting_length, load_tokenizer_for
from bertcli.tasks.base import FinetuneData
from bertcli.tasks.encoder import EncoderForward
from bertcli.tasks.evaluation import predict_features
from bertcli.tasks.holdout import HOLDOUT, carve_if_asked
from bertcli.tasks.packing import PACKED_KEYS, PackedLayout, packs
from bertcli.tasks.tagging.data import (
    IGNORED,
    TaggingSpec,
    encode_sentences,
    infer_tags,
    read_tagged,
    reading_notes,
    tagging_task,
    with_tag_labels,
)
from bertcli.tasks.tagging.features import TaggingCollator, TaggingSplit, score_split


def finetune_spec(cfg) -> tuple[TaggingSpec, dict[str, Path]]:
    """The spec of `bertcli finetune ner` from the task.scheme... keys (labels None: read from the training file)."""
    t = cfg.task
    spec = tagging_task(t.scheme, t.labels, strict=t.strict, tag_column=t.tag_column, tokens_field=t.tokens_field,
                        tags_field=t.tags_field, label_all_pieces=t.label_all_pieces,
                        strip_position_digits=t.strip_position_digits, nested=t.nested)  # fmt: skip
    return spec, {}


def read_tagging_files(spec: TaggingSpec, train_path: Path, eval_paths: dict[str, Path], fmt: str):
    """(spec with its labels, training sentences, evaluation sentences by split), every tag checked."""
    train = read_tagged(spec, train_path, fmt, require_labels=True)
    if spec.label_names is None:
        spec = with_tag_labels(spec, infer_tags(train, spec.scheme))
        if spec.num_labels < 2:
            raise UsageError(f"{train_path}: every tag is O; a tagger needs at least one entity type to learn")
    evals = {name: read_tagged(spec, path, fmt, require_labels=True) for name, path in eval_paths.items()}
    return spec, train, evals


def load_tagging_data(cfg, spec: TaggingSpec, train_path: Path, eval_paths: dict[str, Path], model_dir: Path,
                      raw: dict, tok_dir: Path | None) -> FinetuneData:  # fmt: skip
    """`TaskFamily.load_data` for a tagging task: read and check the files, load the tokenizer, encode once."""
    spec, train, evals = read_tagging_files(spec, train_path, eval_paths, cfg.data.format)
    carved = carve_if_asked(cfg, train, train_path, "sentences")  # random by sentence: its windows stay together
    train = carved.train
    tok = load_tokenizer_for(model_dir, tok_dir, raw.get("vocab_size", -1), words_pre_split=True)
    if not getattr(tok, "is_fast", False):
        raise UsageError(f"the tokenizer of {model_dir} is not a fast tokenizer; tagging needs its word_ids()")
    length = fitting_length(raw, cfg.data.max_seq_length)
    splits = {name: TaggingSplit(s, encode_sentences(tok, s, spec, length)) for name, s in evals.items()}
    train_split = TaggingSplit(train, encode_sentences(tok, train, spec, length))
    files = {"train": str(train_path), **{k: str(v) for k, v in eval_paths.items()}}
    data = FinetuneData(spec, tok, train_split, splits, files, model_dir)
    if carved.holdout is not None:
        data.holdout = TaggingSplit(carved.holdout, encode_sentences(tok, carved.holdout, spec, length))
        data.holdout_how, data.files[HOLDOUT] = f"{carved.how}, by sentence", str(train_path)
    for name, split in {"train": train_split, **_held(data), **splits}.items():
        data.counts[name] = tagging_counts(split)
    return data


def _held(data: FinetuneData) -> dict:
    return {} if data.holdout is None else {HOLDOUT: data.holdout}


def tagging_counts(split: TaggingSplit) -> dict[str, int]:
    f = split.features
    return {"examples": len(split.sentences), "words": split.sentences.word_count, "windows": len(f),
            "windowed": f.windowed, "truncated": f.cut_words, "skipped_empty": 0,
            "dropped_nested_spans": split.sentences.dropped_spans}  # fmt: skip


def describe_reading(data: FinetuneData) -> list[str]:
    """The reading notes of every file of a tagging run (nested spans dropped, IOB1 tags read as IOB2...)."""
    splits = [data.train, *data.evals.values()]  # a holdout's sentences are the training file's: noted with it
    return [line for split in splits for line in reading_notes(data.spec, split.sentences)]


def describe_data(data: FinetuneData, max_seq_length: int) -> list[str]:
    """The scheme, a line of each split's counts, then what reading the files noted, for the run's log."""
    spec = data.spec
    lines = [f"  scheme {spec.scheme}{' (strict)' if spec.strict else ''}; per-type scores in metrics.json"]
    for name, counts in data.counts.items():
        lines.append(f"  {name}: {describe_counts(counts, max_seq_length)} from {data.files[name]}")
    return lines + [f"  {line}" for line in describe_reading(data)]


def describe_counts(counts: dict[str, int], max_seq_length: int) -> str:
    """One line of a split's counts, for the run's log."""
    line = f"{counts['examples']} sentences ({counts['words']} words)"
    if counts["windowed"]:
        line += f"; {counts['windowed']} longer than {max_seq_length} pieces, cut into windows ({counts['windows']})"
    if counts["truncated"]:
        line += f"; {counts['truncated']} words with more pieces than a window: later pieces dropped"
    return line


class PackedTaggingCollator:
    """Feature indices -> padding-free rows (`data.pack`, `bertcli.tasks.packing`): the batch's windows packed into
    as few rows of at most `width` pieces as hold them, their labels (-100 where ignored) at their pieces and -100
    at the padding, so the loss, a mean over the labelled pieces, is the padded batch's. Picklable."""

    def __init__(self, split: TaggingSplit, width: int, pad_id: int):
        self.features, self.width, self.pad_id = split.features, width, pad_id

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        f = self.features
        layout = PackedLayout.of(np.fromiter((len(f.input_ids[i]) for i in indices), dtype=np.int64), self.width)
        batch = layout.inputs(lambda j: f.input_ids[indices[j]], self.pad_id)
        if f.labels is not None:
            batch["labels"] = torch.from_numpy(layout.place(lambda j: f.labels[indices[j]], IGNORED))
        batch["example_index"] = torch.tensor(indices, dtype=torch.long)
        return batch


def train_collator(split: TaggingSplit, tokenizer, net, cfg, say, default: bool):
    """Packed training batches (data.pack; null: `default`) where the forward reads them; else padded ones. With
    a teacher (distill.teacher) they stay padded: its outputs join each batch window by window."""
    if cfg.distill.teacher:
        if cfg.data.pack:
            say("data.pack: ner batches with distill.teacher are padded (the teacher's outputs are kept per window)")
        return TaggingCollator(split, tokenizer)
    if packs(cfg, default, net.written_out, net.model, say):
        return PackedTaggingCollator(split, cfg.data.max_seq_length, tokenizer.pad_token_id)
    return TaggingCollator(split, tokenizer)


class TaggerForward(EncoderForward):
    """Logits (batch, pieces, labels) of a token classifier; `model` is the model saved as best/. A
    `BertForTokenClassification` runs written out, with trained rows when given the training ids
    (`tasks.encoder.EncoderForward`); the logits equal the model's own forward (tested). A packed batch
    (`PackedTaggingCollator`: `position_ids`, `seq_idx`) gives logits (rows, length, labels) of its packed rows."""

    WRITES_OUT = ("BertForTokenClassification",)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None,
                seq_idx=None) -> torch.Tensor:  # fmt: skip
        if seq_idx is not None:
            hidden = self.packed(input_ids, token_type_ids, seq_idx, position_ids)
        elif not self.written_out:
            return self.stock(input_ids, token_type_ids, attention_mask).logits
        else:
            hidden = self.encoded(input_ids, token_type_ids, attention_mask)
        return self.model.classifier(self.model.dropout(hidden))


def tagging_loss_and_sums(m, batch):
    """Cross-entropy over the labelled pieces (-100 skipped); per-row counts of correct labelled pieces (a packed
    row holds several windows: the loop adds the counts up)."""
    packed = {key: batch[key] for key in PACKED_KEYS if key in batch}  # a packed batch's (data.pack)
    logits = m(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"), **packed).float()
    labels = batch["labels"]
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORED)
    labelled = labels != IGNORED
    correct = ((logits.detach().argmax(-1) == labels) & labelled).sum(1).float()
    return loss, {"correct_pieces": correct, "labelled_pieces": labelled.sum(1).float()}


def summarize_tagging(totals: dict[str, float]) -> dict[str, float]:
    return {"accuracy": totals.get("correct_pieces", 0.0) / max(totals.get("labelled_pieces", 0.0), 1.0)}


def score(acc, m, loader, split: TaggingSplit, spec: TaggingSpec) -> dict[str, float]:
    """The seqeval scores of a split during fine-tuning."""
    return score_split(spec, split, predict_features(acc, m, loader, len(split)))[0]
