"""Config of `bertcli eval`, grouped by concern. Each field's description is its documentation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bertcli.config import Section, Seed
from bertcli.schema.finetune import SpanKeys, TaggingKeys


class TaskSection(TaggingKeys, SpanKeys):
    name: str | None = Field(
        None,
        description="A GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, ax), `custom` (your own "
        "files, described by the keys below), `ner` (a token-classification model's tags; the scheme... keys), "
        "squad / squad_v2 / cmrc2018 (a QA model's answers, scored as the official scripts do; the doc_stride... "
        "keys; data.max_seq_length must exceed doc_stride: BERT's SQuAD runs use 384 and 128), or "
        "`pretraining` (MLM and NSP of a BertForPreTraining model; MLM only of a BertForMaskedLM). null: "
        "pretraining when the model is a BertForPreTraining or BertForMaskedLM, else an error. `--task` sets it.",
    )
    text_columns: list[str] = Field(
        default_factory=lambda: ["text"],
        description="custom only: the one or two columns holding the texts, in model input order (A, B).",
    )
    label_column: str = Field("label", description="custom only: the column holding the label.")
    labels: list[str] | None = Field(
        None,
        description="custom only: the class names in id order. null: the model's own (id2label, saved by finetune); "
        "given: must equal the model's.",
    )
    regression: bool | None = Field(
        None, description="custom only: the label is a number. null: as the model was trained (problem_type)."
    )
    metrics: list[str] | None = Field(
        None,
        description="Metrics to report (accuracy, f1, matthews_correlation, pearson, spearmanr). null: the task's "
        "own (GLUE's definitions; custom: accuracy and f1, or pearson and spearmanr).",
    )


class ModelSection(Section):
    paths: list[str] = Field(
        default_factory=list,
        description="Model folders (save_pretrained layout with the tokenizer), e.g. a finetune run's best/ or a "
        "pretrain run's final/. Several give one comparison table. `--model` (repeatable) sets it.",
    )
    tokenizer_path: str | None = Field(
        None, description="Tokenizer folder when it is not beside the model; null: the model's folder."
    )
    runtime: Literal["torch", "onnx"] = Field(
        "torch",
        description="What runs the fine-tuned model: torch (PyTorch), or onnx (ONNX Runtime on the CPU, often "
        "faster on a CI runner: the model folder's onnx/ export from `bertcli export` or finetune's "
        "output.export_onnx, else one made for the run in a temporary folder). Same tokenization, batches and "
        "metrics. Needs `pip install 'bertcli[onnx]'`. `--runtime` sets it.",
    )
    precision: Literal["fp32", "int8"] = Field(
        "fp32",
        description="fp32, or int8 (model.runtime onnx only: ONNX Runtime's dynamically quantized copy, "
        "onnx/model-int8.onnx; faster, the metric usually within a point). `--precision` sets it.",
    )


class DataSection(Section):
    path: str | None = Field(
        None,
        description="Task: a labelled file of any layout finetune reads (GLUE tsv, csv, json, jsonl), or a test "
        "file with --predictions-only. Pretraining: a `bertcli tokenize` output folder, or raw text files (a glob "
        "works), tokenized with the model's tokenizer. `--data` sets it.",
    )
    format: Literal["auto", "tsv", "csv", "json", "jsonl", "conll", "cluener"] = Field(
        "auto",
        description="Task file format; auto: from the extension. tsv is split on tabs only, as in GLUE. ner: conll, "
        "jsonl or cluener, as finetune reads them (auto: JSON lines recognised by their first line's content).",
    )
    empty_text: Literal["error", "skip"] = Field(
        "error",
        description="A row whose text is empty: error (default), or skip it and count it. QA: a question whose "
        "question or context is empty.",
    )
    max_seq_length: int = Field(
        128, ge=8, le=8192, description="Longer inputs are truncated (longest text first) and counted."
    )
    batch_size: int = Field(64, ge=1, description="Examples per forward pass per device.")
    split: str = Field("validation", description="Pretraining on a tokenize output folder: the split to evaluate.")
    text_format: Literal["auto", "sentences", "paragraphs", "jsonl"] = Field(
        "auto",
        description="Pretraining on raw text: the layout, as `bertcli tokenize` reads it (input.format); auto: "
        "jsonl for .jsonl and .json files, else paragraphs when the lines average 300+ characters or 3+ sentences, "
        "else sentences. Sentences longer than data.max_seq_length are cut, whatever share of the text that drops.",
    )
    text_field: str = Field("text", description="Pretraining on raw jsonl text: the field holding the text.")
    language: str = Field(
        "auto",
        description="Pretraining on raw text: its language, as `bertcli tokenize` reads it (input.language: the "
        "sentence rules, and with masking.whole_word_mask the word segmentation: jieba for zh, as "
        "configs/tokenize/chinese.yaml pretrains). auto: zh when most letters of the text's first documents are "
        "Chinese characters, else en.",
    )


class MaskingSection(Section):
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0, description="Share of eligible tokens chosen for MLM.")
    mask_replace_prob: float = Field(0.8, ge=0.0, le=1.0, description="Of the chosen: replaced by [MASK].")
    random_replace_prob: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Of the chosen: replaced by a random token (the rest stay unchanged).",
    )
    whole_word_mask: bool = Field(False, description="Choose whole words (a token and its ## pieces) together.")
    seed: Seed = Field(
        1234,
        description="Seed of the masks (and of the NSP pairs built from raw text): the same seed gives the same "
        "numbers, run after run. 1234 is pretrain's masking.eval_seed, so the numbers match its evaluation.",
    )

    @model_validator(mode="after")
    def _probabilities(self) -> MaskingSection:
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise ValueError("mask_replace_prob + random_replace_prob must not exceed 1")
        return self


class GatesSection(Section):
    fail_under: dict[str, float] = Field(
        default_factory=dict,
        description="metric -> lowest passing value, e.g. {accuracy: 0.8}; below it: exit code 3. `--fail-under "
        "accuracy=0.8` (repeatable) adds one.",
    )
    fail_over: dict[str, float] = Field(
        default_factory=dict,
        description="metric -> highest passing value, for lower-is-better metrics (mlm_loss, perplexity). "
        "`--fail-over perplexity=40` adds one.",
    )
    baseline: str | None = Field(
        None,
        description="A metrics.json of an earlier eval: every metric it shares with this run may drop by at most "
        "max_drop (rise, for losses). `--baseline` sets it.",
    )
    max_drop: float = Field(0.01, ge=0.0, description="Largest allowed drop below the baseline (absolute).")


class OutputSection(Section):
    dir: str | None = Field(
        None,
        description="Folder for metrics.json, predictions and the report; null: print only. `--output` sets it.",
    )
    format: Literal["table", "markdown", "junit", "json"] = Field(
        "table",
        description="What is printed on stdout (and saved as report.md / report.xml / report.json in dir): an "
        "aligned table, a Markdown table (CI job summaries), JUnit XML (one test case per gate), or JSON.",
    )
    predictions: bool = Field(
        False,
        description="Write predictions.tsv (index, prediction, label, one probability per class, reference).",
    )
    predictions_only: bool = Field(
        False, description="Predict without labels or metrics (a test file); needs dir or submission_dir."
    )
    submission_dir: str | None = Field(
        None,
        description="Write the GLUE server's file for this task here (CoLA.tsv, SST-2.tsv, MNLI-m.tsv, MNLI-mm.tsv, "
        "STS-B.tsv, AX.tsv...): header `index<TAB>prediction`. Implies predictions_only.",
    )


class FloorSection(Section):
    train_file: str | None = Field(
        None,
        description="A training file of the task (the one the models were fine-tuned on): a classical floor is "
        "fitted on it alone and scored on data.path like the models, as the last row of the comparison, with each "
        "model's distance above it on the main metric (classification: tf-idf + logistic or ridge regression, C or "
        "alpha by 5-fold cross-validation on this file; ner: the most frequent tag per word; QA: the best "
        "word-overlap sentence; multiple choice: tf-idf cosine). Gates never read it. `--floor` sets it.",
    )


class RunSection(Section):
    device: Literal["auto", "cpu"] = Field(
        "auto", description="auto: the accelerator Accelerate finds (GPU when there is one); cpu: force CPU."
    )


class EvalConfig(Section):
    task: TaskSection = Field(default_factory=TaskSection)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    masking: MaskingSection = Field(default_factory=MaskingSection)
    gates: GatesSection = Field(default_factory=GatesSection)
    output: OutputSection = Field(default_factory=OutputSection)
    floor: FloorSection = Field(default_factory=FloorSection)
    run: RunSection = Field(default_factory=RunSection)

    @model_validator(mode="after")
    def _need_inputs(self) -> EvalConfig:
        if not self.model.paths:
            raise ValueError("no model: give a model folder with --model (repeatable) or set model.paths")
        if not self.data.path:
            raise ValueError("no data: give a file (or a tokenize output folder) with --data or set data.path")
        if not 1 <= len(self.task.text_columns) <= 2:
            raise ValueError("task.text_columns: one or two columns")
        if self.model.precision == "int8" and self.model.runtime != "onnx":
            raise ValueError("model.precision int8 runs on ONNX Runtime: set model.runtime onnx (--runtime onnx)")
        return self
