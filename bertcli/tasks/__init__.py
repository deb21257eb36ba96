"""Task families, one folder each, behind one interface (`base.TaskFamily`), over the one training loop (which
knows none of them); `registry` maps a task name to its family:

    classification   GLUE and custom sentence(-pair) classification/regression: registry, readers, labels
    tagging          token classification (NER): CoNLL / character-BIO / JSON-lines / CLUENER readers, tagging
                     schemes, windows over long sentences, predictions back to words, seqeval metrics
    span             extractive QA: SQuAD v1.1/v2.0, CMRC 2018 and jsonl readers, sliding windows with character
                     offsets, n-best answers back to context text, the official scripts' exact match and F1

Each family owns how its files are read, how examples become features, its model head, forward and loss, how
predictions map back to the user's units, how they are scored and written. Shared by the families: `encoder`
(the written-out BERT encoder), `packing` (padding-free training batches, data.pack) and `evaluation` (helpers of
`bertcli eval`). The names of the classification
family's data module are re-exported here, as before the split: `from bertcli.tasks import glue_task` still works.
"""

from bertcli.tasks.classification import (
    ACCURACY,
    F1,
    FORMATS,
    GLUE_TASKS,
    MCC,
    PEARSON,
    SPEARMAN,
    TaskExamples,
    TaskSpec,
    custom_task,
    file_format,
    glue_task,
    infer_labels,
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
    "custom_task",
    "file_format",
    "glue_task",
    "infer_labels",
    "read_examples",
    "read_label_values",
    "task_files",
    "with_labels",
]
