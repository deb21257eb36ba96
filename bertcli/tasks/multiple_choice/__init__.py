"""Multiple choice (SWAG, any JSON-lines question with a list of choices, ChID idiom cloze): pick one of a
question's choices, scored by accuracy; the model is `AutoModelForMultipleChoice`.

    examples = read_choices("swag/val.csv")                  # SWAG csv or JSON lines (read.py)
    features = encode_choices(tok, examples, 128)             # (context, choice) pairs per question (encode.py)
    batch = ChoiceCollator(features)([0, 1, 2])               # [batch, choices, pieces] + choice_mask
    model, report = load_choice_model("final/")               # any local checkpoint, new head (model.py)
    predicted = predicted_choices(logits); choice_metrics(predicted, examples)
    write_choice_predictions(path, examples, predicted)       # id, chosen index and text per line
"""

from bertcli.tasks.multiple_choice.encode import ChoiceCollator, ChoiceFeatures, encode_choices, masked_logits
from bertcli.tasks.multiple_choice.model import (
    choice_logits,
    choice_loss_and_sums,
    choice_metrics,
    load_choice_model,
    predicted_choices,
    summarize_choices,
    write_choice_predictions,
)
from bertcli.tasks.multiple_choice.read import BLANK, ChoiceExamples, describe_counts, read_choices

__all__ = [
    "BLANK",
    "ChoiceCollator",
    "ChoiceExamples",
    "ChoiceFeatures",
    "choice_logits",
    "choice_loss_and_sums",
    "choice_metrics",
    "describe_counts",
    "encode_choices",
    "load_choice_model",
    "masked_logits",
    "predicted_choices",
    "read_choices",
    "summarize_choices",
    "write_choice_predictions",
]
