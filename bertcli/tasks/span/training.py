"""The span family (extractive QA) in `run_finetune` and `run_eval`: questions read and cut into windows once,
padded batches with start/end positions, the QA model's forward and loss (run_qa's: the mean of the start and end
cross-entropies), and predictions put back into context text and scored (`bertcli.tasks.span`).

Batches come from the same length-grouped sampler as the other families (`training.batches.IndexBatches`); a batch
carries `example_index`, the feature (window) it holds, so the logits of every window find their question again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bertcli.errors import UsageError
from bertcli.model_dir import fitting_length
from bertcli.outputs import write_json
from bertcli.tasks.base import FinetuneData
from bertcli.tasks.encoder import EncoderForward
from bertcli.tasks.evaluation import predict_features
from bertcli.tasks.holdout import HOLDOUT, carve_if_asked
from bertcli.tasks.span.data import (
    SpanAnswers,
    SpanSpec,
    check_scorable,
    describe_reading,
    encode_qa,
    read_qa,
    span_task,
    trainable,
)
from bertcli.tasks.span.features import SpanSplit, fast_tokenizer, score_span_split


def finetune_spec(cfg) -> tuple[SpanSpec, dict[str, Path]]:
    """The spec of `bertcli finetune squad` (squad_v2, cmrc2018) from the task.doc_stride... keys."""
    t = cfg.task
    spec = span_task(t.name, doc_stride=t.doc_stride, n_best_size=t.n_best_size,
                     max_answer_length=t.max_answer_length,
                     null_score_diff_threshold=t.null_score_diff_threshold)  # fmt: skip
    return spec, {}


def load_span_data(cfg, spec: SpanSpec, train_path: Path, eval_paths: dict[str, Path], model_dir: Path,
                   raw: dict, tok_dir: Path | None) -> FinetuneData:  # fmt: skip
    """`TaskFamily.load_data` for a QA task: read and check the files, load the tokenizer, encode once. Training
    uses the answers that were located (`trainable`); evaluation scores against every answer's text."""
    empty_text = cfg.data.empty_text
    train = trainable(read_qa(spec, train_path, empty_text))
    if not any(train.answers):
        unlocatable = train.counts["skipped_unlocatable"]
        why = f" ({unlocatable} with answers that are not in their context)" if unlocatable else ""
        raise UsageError(f"{train_path}: no question has an answer{why}; a QA model needs answers to learn from")
    # a context's questions all stay on one side: its windows never straddle, nor does its text
    carved = carve_if_asked(cfg, train, train_path, "questions", groups=train.contexts)
    train = carved.train
    evals = {name: read_qa(spec, path, empty_text) for name, path in eval_paths.items()}
    for name, path in eval_paths.items():
        check_scorable(spec, evals[name], path)
    tok = fast_tokenizer(model_dir, tok_dir, raw.get("vocab_size", -1))
    length = fitting_length(raw, cfg.data.max_seq_length)
    splits = {name: SpanSplit(ex, encode_qa(tok, ex, spec, length)) for name, ex in evals.items()}
    train_split = SpanSplit(train, encode_qa(tok, train, spec, length))
    files = {"train": str(train_path), **{k: str(v) for k, v in eval_paths.items()}}
    data = FinetuneData(spec, tok, train_split, splits, files, model_dir)
    held = {}
    if carved.holdout is not None:
        data.holdout = held[HOLDOUT] = SpanSplit(carved.holdout, encode_qa(tok, carved.holdout, spec, length))
        data.holdout_how, data.files[HOLDOUT] = carved.how.replace("groups", "contexts"), str(train_path)
    for name, split in {"train": train_split, **held, **splits}.items():
        no_answer = sum(1 for a in split.examples.answers if not a)
        data.counts[name] = {"examples": len(split.examples), "windows": len(split), "unanswerable": no_answer,
                             **split.examples.counts}  # fmt: skip
    return data


def describe_data(data: FinetuneData) -> list[str]:
    return [f"  {name}: {describe_span_counts(counts, data.files[name])}" for name, counts in data.counts.items()]


def describe_span_counts(counts: dict[str, int], path: str) -> str:
    """One line per split: questions, windows and what reading the file located, fixed and skipped."""
    line = f"{counts['examples']} questions in {counts['windows']} windows"
    line += f" ({counts['unanswerable']} unanswerable)" if counts["unanswerable"] else ""
    return f"{line} from {path}; {describe_reading(counts)}"


class SpanForward(EncoderForward):
    """Start and end logits of a QA model as one tensor (batch, pieces, 2); `model` is the model saved as best/. A
    `BertForQuestionAnswering` runs written out, with trained rows when given the training ids
    (`tasks.encoder.EncoderForward`); the logits equal the model's own forward (tested)."""

    WRITES_OUT = ("BertForQuestionAnswering",)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        # padded pieces are never read back: a window's offsets end where its pieces do
        if self.written_out:
            return self.model.qa_outputs(self.encoded(input_ids, token_type_ids, attention_mask))
        out = self.stock(input_ids, token_type_ids, attention_mask)
        return torch.stack([out.start_logits, out.end_logits], dim=-1)


def span_loss_and_sums(m, batch):
    """run_qa's loss: the mean of the start and end cross-entropies; per-window hits of both positions."""
    logits = m(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask")).float()
    start, end = batch["start_positions"], batch["end_positions"]
    loss = (F.cross_entropy(logits[..., 0], start) + F.cross_entropy(logits[..., 1], end)) / 2
    best = logits.detach().argmax(1)
    return loss, {"span_correct": ((best[:, 0] == start) & (best[:, 1] == end)).float()}


def teacher_rows(logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
    """Each window's (pieces, 2) start and end logits, its padding cut off (distillation's teacher outputs)."""
    lengths = batch["attention_mask"].sum(1).tolist()
    return [row[:n] for row, n in zip(logits.float().cpu().numpy(), lengths)]


def summarize_span(totals: dict[str, float]) -> dict[str, float]:
    return {"span_accuracy": totals.get("span_correct", 0.0) / max(totals.get("_samples", 0.0), 1.0)}


def score(acc, m, loader, split: SpanSplit, spec: SpanSpec) -> tuple[dict[str, float], SpanAnswers]:
    """(scores, answers) of a split during fine-tuning."""
    return score_span_split(spec, split, predict_features(acc, m, loader, len(split)))


def write_span_predictions(path: Path, answers: SpanAnswers) -> None:
    """predictions.json as the SQuAD scripts read it: question id -> answer text ("" for no answer)."""
    write_json(path, answers.texts)
