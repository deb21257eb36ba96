"""The classification family in `run_finetune`: the task and its files, read and encoded once; the classifier's
forward (the last encoder layer at [CLS] only), its loss and training scores, and its evaluation (GLUE metrics).

`ClassifierForward` runs a `BertForSequenceClassification` as `bertcli.tasks.encoder.EncoderForward` does (fast
dropout, trained rows), and computes only the [CLS] position in the last encoder layer. The pooler and the
classifier read nothing else, so the attention queries and the feed-forward of the other positions in that layer
are work thrown away. Keys and values still see every token, and the logits equal the full forward (tested).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bertcli.errors import UsageError
from bertcli.metrics import compute_metrics, resolve
from bertcli.model_dir import check_max_seq_length, load_tokenizer_for
from bertcli.tasks import packing
from bertcli.tasks.base import FinetuneData
from bertcli.tasks.classification.data import (
    TaskSpec,
    custom_task,
    glue_task,
    infer_labels,
    read_examples,
    read_label_values,
    task_files,
    with_labels,
)
from bertcli.tasks.classification.features import PACKED_KEYS, EncodedSplit, PackedCollator, encode_examples
from bertcli.tasks.encoder import EncoderForward
from bertcli.tasks.holdout import HOLDOUT, carve_if_asked


def finetune_spec(cfg) -> tuple[TaskSpec, dict[str, Path]]:
    """The spec of a GLUE or custom task, and the GLUE folder's files (data.dir) by split name."""
    if cfg.task.name == "custom":
        for name in cfg.task.metrics or []:
            resolve(name, "metric in task.metrics")
        spec = custom_task(
            cfg.task.text_columns,
            cfg.task.label_column,
            cfg.task.labels,
            cfg.task.regression,
            cfg.task.metrics,
        )
        return spec, {}
    spec = glue_task(cfg.task.name)
    if spec.eval_only:
        raise UsageError(f"task '{spec.name}' is for evaluation only (use `bertcli eval` with an MNLI model)")
    found = task_files(spec, cfg.data.dir) if cfg.data.dir else {}
    if cfg.data.dir and not Path(cfg.data.dir).is_dir():
        raise UsageError(f"data.dir {cfg.data.dir} is not a folder")
    return spec, found


def load_classification_data(cfg, spec: TaskSpec, train_path: Path, eval_paths: dict[str, Path], model_dir: Path,
                             raw: dict, tok_dir: Path | None) -> FinetuneData:  # fmt: skip
    """`TaskFamily.load_data` for classification: labels, examples, the tokenizer (its truncation side set),
    every split tokenized once."""
    if spec.label_names is None and not spec.is_regression:  # custom task without a label list
        spec = with_labels(spec, infer_labels(read_label_values(spec, train_path, cfg.data.format)))
        if len(spec.label_names) < 2:
            raise UsageError(f"{train_path}: only one label ({spec.label_names[0]!r}); a classifier needs two")
    read = dict(fmt=cfg.data.format, empty_text=cfg.data.empty_text, require_labels=True)
    train = read_examples(spec, train_path, **read)
    # a holdout keeps each class's share (stratified); a regression score is drawn at random
    carved = carve_if_asked(cfg, train, train_path, strata=None if spec.is_regression else train.labels)
    train, held = carved.train, carved.holdout
    evals = {name: read_examples(spec, path, **read) for name, path in eval_paths.items()}
    tok = load_tokenizer_for(model_dir, tok_dir, raw.get("vocab_size", -1))
    # init_kwargs is what save_pretrained writes to tokenizer_config.json: best/ keeps the side, so eval and
    # pipeline(truncation=True) cut the same end
    tok.truncation_side = tok.init_kwargs["truncation_side"] = cfg.data.truncation_side
    check_max_seq_length(raw, cfg.data.max_seq_length)
    length = cfg.data.max_seq_length
    encoded = {name: encode_examples(tok, ex, length, spec.is_regression) for name, ex in evals.items()}
    data = FinetuneData(
        spec, tok, encode_examples(tok, train, length, spec.is_regression), encoded,
        {"train": str(train_path), **{k: str(v) for k, v in eval_paths.items()}}, model_dir,
    )  # fmt: skip
    if held is not None:
        data.holdout, data.holdout_how = encode_examples(tok, held, length, spec.is_regression), carved.how
        data.files[HOLDOUT] = str(train_path)
    for name, ex in {"train": train, **({HOLDOUT: held} if held is not None else {}), **evals}.items():
        split = {"train": data.train, HOLDOUT: data.holdout, **data.evals}[name]
        data.counts[name] = {
            "examples": len(ex),
            "truncated": split.truncated,
            "skipped_empty": ex.skipped_empty,
        }
    return data


def describe_counts(data: FinetuneData, max_seq_length: int) -> list[str]:
    lines = []
    for name, counts in data.counts.items():
        extra = f", {counts['skipped_empty']} skipped (empty text)" if counts["skipped_empty"] else ""
        lines.append(
            f"  {name}: {counts['examples']} examples from {data.files[name]}; {counts['truncated']} truncated to "
            f"{max_seq_length} tokens{extra}"
        )
    return lines


def packed_collator(split: EncodedSplit, net, cfg, say, default: bool) -> PackedCollator | None:
    """Padding-free training batches with data.pack (null: `default`, the family's choice) where the forward can
    read them; None: padded ones."""
    if packing.packs(cfg, default, net.cls_only, net.model, say):  # evaluation's batches stay padded
        return PackedCollator(split, cfg.data.max_seq_length)
    return None


# --- the forward used in training and evaluation ---------------------------------------------------------------


class ClassifierForward(EncoderForward):
    """Logits of a sequence-classification model; written out, the last encoder layer runs on [CLS] only (see the
    module docstring). `model` is the saved model."""

    WRITES_OUT = ("BertForSequenceClassification",)

    @classmethod
    def writes_out(cls, model: nn.Module) -> bool:
        return super().writes_out(model) and getattr(model.bert, "pooler", None) is not None

    @property
    def cls_only(self) -> bool:
        return self.written_out

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, seq_idx=None,
                cls_positions=None) -> torch.Tensor:  # fmt: skip
        """Logits, one row per example. A packed batch (`features.PackedCollator`: `position_ids`, `seq_idx`,
        `cls_positions`) runs with a block-diagonal mask, and its last layer at each example's [CLS] only."""
        if seq_idx is not None:
            cls = self.packed(input_ids, token_type_ids, seq_idx, position_ids, at=cls_positions)
        elif not self.cls_only:
            return self.stock(input_ids, token_type_ids, attention_mask).logits
        else:
            cls = self.encoded(input_ids, token_type_ids, attention_mask, cls_only=True)  # (batch, 1, hidden)
        pooled = self.model.bert.pooler(cls)
        return self.model.classifier(self.model.dropout(pooled))


def _logits(m, batch) -> torch.Tensor:
    packed = {key: batch[key] for key in PACKED_KEYS if key in batch}  # a packed batch's (data.pack)
    return m(batch["input_ids"], batch["token_type_ids"], batch.get("attention_mask"), **packed)


def _loss_and_sums(m, batch, regression: bool):
    logits = _logits(m, batch).float()
    labels = batch["labels"]
    if regression:
        scores = logits.squeeze(-1)
        loss = F.mse_loss(scores, labels)
        return loss, {"squared_error": (scores.detach() - labels) ** 2}
    loss = F.cross_entropy(logits, labels)
    return loss, {"correct": (logits.detach().argmax(-1) == labels).float()}


def _summarize(totals: dict[str, float]) -> dict[str, float]:
    n = max(totals.get("_samples", 0.0), 1.0)
    if "correct" in totals:
        return {"accuracy": totals["correct"] / n}
    return {"mse": totals.get("squared_error", 0.0) / n}


# --- evaluation during fine-tuning -----------------------------------------------------------------------------


def predict(acc, m, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, example indices) over a loader, gathered from every process without duplicates."""
    m.eval()
    outputs, indices = [], []
    with torch.no_grad():
        for batch in loader:
            logits = _logits(m, batch).float()
            logits, index = acc.gather_for_metrics((logits, batch["example_index"]))
            outputs.append(logits.cpu())
            indices.append(index.cpu())
    return torch.cat(outputs), torch.cat(indices)


def one_class_note(spec: TaskSpec, logits: torch.Tensor, split: EncodedSplit) -> str | None:
    """A warning line when a classifier predicts one label for every example of a split whose labels are not all
    that one: the collapse of a run whose loss never fell (too low a learning rate, a LoRA run at fine-tuning's
    budget, an early epoch of CoLA), which a score such as MCC 0 or the majority's accuracy does not name. None
    otherwise, and for regression and splits of fewer than 10 examples."""
    if spec.is_regression or len(logits) < 10:
        return None
    predicted = logits.argmax(-1).unique()
    if len(predicted) > 1 or split.labels is None or len(set(split.labels.tolist())) < 2:
        return None
    names = spec.label_names or []
    label = predicted.item()
    shown = names[label] if label < len(names) else label
    return (
        f"[warning] every one of the {len(logits)} evaluated examples is predicted {shown!r}: the model has not "
        "learnt the task yet (often the training loss has not fallen: raise train.learning_rate, train longer, "
        "or check the labels)"
    )


def split_metrics(spec: TaskSpec, logits: torch.Tensor, index: torch.Tensor, split: EncodedSplit) -> dict:
    order = torch.argsort(index)  # back to file order: batches were sorted by length
    logits, index = logits[order], index[order]
    refs = split.labels[index.numpy()].tolist()
    preds = logits.squeeze(-1).tolist() if spec.is_regression else logits.argmax(-1).tolist()
    return compute_metrics(spec.metrics, preds, refs, num_labels=spec.num_labels)
