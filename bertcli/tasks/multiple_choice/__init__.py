"""Multiple choice (SWAG, any JSON-lines question with a list of choices, ChID idiom cloze): pick one of a
question's choices, scored by accuracy; the model is `AutoModelForMultipleChoice`.

    spec = choice_task("swag")                                # or "multiple_choice": the same files (data.py)
    examples = read_choices("swag/val.csv")                   # SWAG csv or JSON lines
    features = encode_choices(tok, examples, 128)             # (context, choice) pairs per question (features.py)
    predicted = predicted_choices(logits); choice_metrics(predicted, examples)
    write_choice_predictions(path, examples, predicted)       # id, chosen index and text per line
training.py: the [batch, choices, pieces] collator, the forward and loss; evaluation.py: `bertcli eval`;
family.py: the `TaskFamily` that finetune and eval call. This module stays light (no torch).
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
