"""The multiple-choice family: SWAG, any JSON-lines question with a list of choices, ChID idiom cloze; one of a
question's choices is picked, scored by accuracy, with `AutoModelForMultipleChoice`.

    data           the spec, SWAG csv and JSON-lines readers (#idiom# blanks), one-line errors, counts
    features       (context, choice) pairs per question as flat token ids, [batch, choices, pieces] batches,
                   chosen indices, accuracy, predictions records (no torch: what an ONNX eval runs)
    training       files read and encoded once for finetune, forward, loss, scores
    evaluation     `bertcli eval --task swag`: plan, chosen indices, predictions.jsonl
    family         the `TaskFamily` that ties them together (registered as "multiple_choice")

    examples = read_choices("swag/val.csv")                   # SWAG csv or JSON lines
    features = encode_choices(tok, examples, 128)
    predicted = predicted_choices(logits); choice_metrics(predicted, examples)

This module stays light (no torch): the names of `data` and `features`.
"""

from bertcli.tasks.multiple_choice.data import (
    BLANK,
    CHOICE_TASKS,
    ChoiceExamples,
    ChoiceSpec,
    choice_task,
    describe_counts,
    read_choices,
)
from bertcli.tasks.multiple_choice.features import (
    ChoiceFeatures,
    choice_metrics,
    encode_choices,
    predicted_choices,
    prediction_records,
    write_choice_predictions,
)

__all__ = [
    "BLANK",
    "CHOICE_TASKS",
    "ChoiceExamples",
    "ChoiceFeatures",
    "ChoiceSpec",
    "choice_metrics",
    "choice_task",
    "describe_counts",
    "encode_choices",
    "predicted_choices",
    "prediction_records",
    "read_choices",
    "write_choice_predictions",
]
