"""The multiple-choice model, its loss and its scores: any local BERT-family checkpoint (our pretrain `final/`, a
bare encoder, a model with another head) with a fresh `AutoModelForMultipleChoice` head (one logit per choice, read
from each row's pooled [CLS]), saved as such, so `best/` loads with `AutoModelForMultipleChoice.from_pretrained`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bertcli.errors import UsageError
from bertcli.metrics import compute_metrics
from bertcli.outputs import write_text
from bertcli.tasks.multiple_choice.encode import masked_logits
from bertcli.tasks.multiple_choice.read import ChoiceExamples


def load_choice_model(model_dir: Path | str, classifier_dropout: float | None = None):
    """(model, LoadReport): the checkpoint in `model_dir` under a new multiple-choice head, from local files only.
    Seed first (`accelerate.utils.set_seed`): the head's initial weights come from the global RNG."""
    from transformers import AutoConfig, AutoModelForMultipleChoice
    from transformers.utils import logging as hf_logging

    from bertcli.pipelines.finetune_model import _report, check_checkpoint_dir  # pipelines import tasks, not back

    model_dir = Path(model_dir)
    raw = check_checkpoint_dir(model_dir)
    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    if classifier_dropout is not None:
        config.classifier_dropout = classifier_dropout
    config.architectures = None  # save_pretrained records the multiple-choice class
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the LoadReport names the new head once, instead of the library's warning
    hf_logging.disable_progress_bar()
    try:
        model, info = AutoModelForMultipleChoice.from_pretrained(
            str(model_dir), config=config, local_files_only=True, output_loading_info=True,
            ignore_mismatched_sizes=True,  # a checkpoint with a classifier of another size gets a fresh head
        )  # fmt: skip
    except ValueError as err:  # a model type without a multiple-choice class
        raise UsageError(
            f"{model_dir}: cannot build a multiple-choice model from it ({str(err).splitlines()[0]})"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return model, _report(model, info, model_dir, raw)


def choice_logits(model, batch: dict) -> torch.Tensor:
    """Logits [batch, choices] of a multiple-choice model, padded choices masked (`masked_logits`)."""
    out = model(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"),
                attention_mask=batch.get("attention_mask"))  # fmt: skip
    return masked_logits(out.logits.float(), batch.get("choice_mask"))


def choice_loss_and_sums(model, batch: dict):
    """run_swag's loss (cross-entropy over a question's choices) and each question's hit, for the training log."""
    logits = choice_logits(model, batch)
    loss = F.cross_entropy(logits, batch["labels"])
    return loss, {"correct": (logits.detach().argmax(-1) == batch["labels"]).float()}


def summarize_choices(totals: dict[str, float]) -> dict[str, float]:
    return {"accuracy": totals.get("correct", 0.0) / max(totals.get("_samples", 0.0), 1.0)}


def choice_metrics(predicted: list[int], examples: ChoiceExamples) -> dict[str, float]:
    """Accuracy of the chosen indices against the file's labels ({} for an unlabelled file)."""
    if examples.labels is None:
        return {}
    return compute_metrics(["accuracy"], predicted, examples.labels)


def predicted_choices(logits: list[np.ndarray] | np.ndarray) -> list[int]:
    """The chosen index of each question (its logits, padded choices masked, in file order)."""
    return [int(np.argmax(row)) for row in logits]


def write_choice_predictions(path: Path, examples: ChoiceExamples, predicted: list[int]) -> None:
    """predictions JSON lines, one per question in file order: its id, the chosen index and that choice's text,
    and the right index (`label`) when the file has labels. Written whole or not at all."""
    lines = []
    for i, choice in enumerate(predicted):
        row = {"id": examples.ids[i], "prediction": choice, "text": examples.choices[i][choice]}
        if examples.labels is not None:
            row["label"] = examples.labels[i]
        lines.append(json.dumps(row, ensure_ascii=False))
    write_text(path, "\n".join(lines) + "\n")
