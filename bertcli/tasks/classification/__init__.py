"""The classification family: GLUE and custom sentence(-pair) classification and regression.

    data           the task registry (GLUE), custom tasks, readers (tsv/csv/json/jsonl), labels
    features       examples -> token ids once; padded and packed batches
    training       loading the files for finetune, the [CLS]-only forward, loss and scores
    evaluation     `bertcli eval` of a sequence classifier: plan, predictions, metrics
    family         the `TaskFamily` that ties them together (registered as "classification")

The names of `data` are re-exported here (the other families' readers share its file helpers).
"""

from bertcli.tasks.classification.data import (
    ACCURACY,
    F1,
    FORMATS,
    GLUE_TASKS,
    MCC,
    PEARSON,
    SPEARMAN,
    TaskExamples,
    TaskSpec,
    _data_file,
    _decode_guard,
    _open_text,
    custom_task,
    file_format,
    glue_task,
    infer_labels,
    json_records,
    not_utf8_error,
    read_examples,
    read_label_values,
    task_files,
    with_labels,
)

__all__ = [
    "ACCURACY",
    "F1",
    "FORMATS",
    "GLUE_TASKS",
    "MCC",
    "PEARSON",
    "SPEARMAN",
    "TaskExamples",
    "TaskSpec",
    "_data_file",
    "_decode_guard",
    "_open_text",
    "custom_task",
    "file_format",
    "glue_task",
    "infer_labels",
    "json_records",
    "not_utf8_error",
    "read_examples",
    "read_label_values",
    "task_files",
    "with_labels",
]
