"""Config of `bertcli finetune`, grouped by concern. Each field's description is its documentation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from bertcli.config import PATH, Section, Seed
from bertcli.schema.adapters import ADAPTER_DESCRIPTION, ADAPTERS, LoraSection
from bertcli.schema.distill import DistillSection, InitLayers, init_layers_description
from bertcli.schema.train import TrainSection


class TaggingKeys(Section):
    """The keys of a token-classification task (`task.name: ner`), shared by finetune and eval."""

    scheme: Literal["iob1", "iob2", "bioes"] = Field(
        "iob2",
        description="ner only: the tagging scheme of the files: iob1 (the original CoNLL-2003 release), iob2 (BIO) "
        "or bioes. A tag must be O or one of the scheme's prefixes and a type (B-PER).",
    )
    strict: bool = Field(
        False,
        description="ner only: false reads a tag sequence that breaks the scheme (I- after O in iob2) as seqeval's "
        "default mode does (the I- opens an entity); true makes it an error (file, line) and scores with "
        "seqeval's strict mode.",
    )
    tag_column: int = Field(
        -1, description="ner, conll files: the column (0-based) holding the tag; -1: the last column."
    )
    strip_position_digits: bool = Field(
        False,
        description="ner, conll files: every token is a character followed by its position in its segmented word, "
        "as in Weibo NER's weiboNER_2nd_conll files (口0, p10; 310 is the digit 3 at position 10 of its word); true "
        "reads the character alone (all the digits after it go).",
    )
    nested: Literal["outer", "inner", "error"] = Field(
        "outer",
        description="ner, CLUENER files: spans inside other spans (CLUENER's train.json has a book title holding "
        "two company names) cannot all be tagged: outer keeps the outer span, inner the inner ones (of two spans "
        "that cross, outer keeps the first, inner the shorter); the dropped spans are counted and printed. error "
        "refuses the file at the first overlap.",
    )
    tokens_field: str = Field("tokens", description="ner, jsonl files: the field holding a sentence's tokens.")
    tags_field: str = Field("tags", description="ner, jsonl files: the field holding their tags.")
    label_all_pieces: bool = Field(
        False,
        description="ner only: false: a word's first WordPiece piece carries its label, the others are ignored in "
        "the loss (as HF's run_ner.py); true: every piece is labelled (a B- word's later pieces get its I- tag).",
    )


class SpanKeys(Section):
    """The keys of an extractive QA task (`task.name: squad`, `squad_v2`, `cmrc2018`), shared by finetune and eval."""

    doc_stride: int = Field(
        128,
        ge=1,
        description="QA only: a context longer than a window is cut into windows of data.max_seq_length pieces "
        "that overlap by this many pieces (BERT's SQuAD runs: 128 with 384); must be below max_seq_length.",
    )
    n_best_size: int = Field(
        20, ge=1, description="QA only: the best start and end positions of each window that are paired."
    )
    max_answer_length: int = Field(30, ge=1, description="QA only: the longest answer predicted, in WordPiece pieces.")
    null_score_diff_threshold: float = Field(
        0.0,
        description="squad_v2 only: answer nothing when the null ([CLS]) score beats the best span's score by more "
        "than this; evaluations report the best value on the file (best_f1_thresh).",
    )


SPAN_TASK_NAMES = ("squad", "squad_v2", "cmrc2018")
# Tasks that read their own files (not a GLUE folder). Listed here, not asked of the task registry, because the
# registry imports every family (torch, transformers) and validating a config must stay light.
FILE_TASK_NAMES = ("custom", "ner", *SPAN_TASK_NAMES, "swag", "multiple_choice")


class TaskSection(TaggingKeys, SpanKeys):
    name: str = Field(
        "custom",
        description="A GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli), `custom` (your own files, "
        "described by the data.* keys below), `ner` (token classification: CoNLL, character-per-line, jsonl or "
        "CLUENER files; the task.scheme... keys below) or extractive QA: `squad` (SQuAD v1.1), `squad_v2` (questions "
        "may have no answer) or `cmrc2018` (Chinese; CMRC's character-level scores), from SQuAD-layout JSON or jsonl "
        "with question, context and answers (the task.doc_stride... keys above).",
    )
    text_columns: list[str] = Field(
        default_factory=lambda: ["text"],
        description="custom only: the one or two columns holding the texts, in model input order (A, B).",
    )
    label_column: str = Field("label", description="custom only: the column holding the label.")
    labels: list[str] | None = Field(
        None,
        description="custom and ner: the class names (tags) in id order. null: inferred from the training file in a "
        "stable order (custom: numeric if every label is an integer, else Unicode string order; ner: O, then each "
        "entity type in Unicode order with every prefix of the scheme) and saved with the model as id2label.",
    )
    regression: bool = Field(False, description="custom only: the label is a number (one output, MSE loss).")
    metrics: list[str] | None = Field(
        None,
        description="custom only: metrics to report, the first picks the best checkpoint. null: accuracy and f1 "
        "(classification; macro F1 above two classes) or pearson and spearmanr (regression).",
    )


class ModelSection(Section):
    path: str | None = Field(
        None,
        json_schema_extra=PATH,
        description="A local checkpoint folder of a BERT-family encoder: our pretrain final/, or any Hugging Face "
        "folder (a bare BertModel, or a model with another head). Its tokenizer must be in the same folder "
        "(tokenizer_path overrides). `--model` sets it. null with distill.teacher: the teacher's folder.",
    )
    tokenizer_path: str | None = Field(
        None,
        json_schema_extra=PATH,
        description="Tokenizer folder when it is not beside the model; it must match the model's vocabulary.",
    )
    classifier_dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Dropout before the new task head; null: the model's hidden dropout.",
    )
    reinit_top_layers: int = Field(
        0,
        ge=0,
        description="Re-initialise the top K encoder layers, and the pooler if the model has one, with the model's "
        "own initialisation before training (seeded by train.seed), as Zhang et al. 2021 do for small sets (K 1-6 on "
        "BERT-base); 0: keep every pretrained weight.",
    )
    freeze: Literal["none", "embeddings", "encoder"] | Annotated[int, Field(ge=0)] = Field(
        "none",
        description="Parameters that do not train: none; embeddings; an integer K (the embeddings and the first K "
        "encoder layers); encoder (everything but the task head: a linear probe). The load report says what is "
        "frozen and its share of the parameters.",
    )
    adapter: ADAPTERS = Field("none", description=ADAPTER_DESCRIPTION)
    lora: LoraSection = Field(default_factory=LoraSection)
    init_layers: InitLayers | None = Field(None, description=init_layers_description())


class DataSection(Section):
    dir: str | None = Field(
        None,
        json_schema_extra=PATH,
        description="GLUE: the task's folder as GLUE distributes it (train.tsv, dev.tsv; MNLI dev_matched.tsv and "
        "dev_mismatched.tsv). Files named below take precedence.",
    )
    train_file: str | None = Field(
        None,
        json_schema_extra=PATH,
        description="Training file (tsv, csv, json or jsonl; ner: a CoNLL-layout file, jsonl or CLUENER json).",
    )
    validation_files: list[str] = Field(
        default_factory=list,
        json_schema_extra=PATH,
        description="Evaluation file(s); each is scored separately (MNLI: matched, mismatched).",
    )
    format: Literal["auto", "tsv", "csv", "json", "jsonl", "conll", "cluener"] = Field(
        "auto",
        description="File format; auto: from the extension. tsv is split on tabs only (quotes are text, as in "
        "GLUE); csv uses standard quoting; json is an array of objects; jsonl one object per line. ner: conll "
        "(a token per line, also character-per-line Chinese BIO), jsonl (tokens and tags arrays) or cluener "
        "(CLUENER's spans); auto: a file whose first line is a JSON object is jsonl or cluener by that record, "
        "whatever its name; others conll.",
    )
    empty_text: Literal["error", "skip"] = Field(
        "error",
        description="A row whose text is empty: error (default), or skip it and count it. QA: a question whose "
        "question or context is empty.",
    )
    max_seq_length: int = Field(
        128,
        ge=8,
        le=8192,
        description="Longer inputs are truncated (longest text first) and counted; ner: longer sentences are cut "
        "into windows at word boundaries (counted), so every word is still tagged.",
    )
    truncation_side: Literal["right", "left"] = Field(
        "right",
        description="Classification and regression: which end of a too-long input is cut. right (BERT's) keeps "
        "the start; left keeps the end, where a long review gives its verdict (Sun et al. 2019: the tail beats the "
        "head on IMDb). The fine-tuned tokenizer keeps the side, so eval and pipeline(truncation=True) cut alike.",
    )
    batch_size: int = Field(32, ge=1, description="Training examples per device per micro-batch.")
    eval_batch_size: int | None = Field(None, ge=1, description="Evaluation batch; null: 2 x batch_size.")
    group_by_length: bool | None = Field(
        None,
        description="Batch examples of similar length together (shuffled in chunks of 50 batches), which "
        "removes most padding; false: plain shuffled batches. null: the task's choice: true, except ner: false, "
        "as run_ner.py (on CoNLL-2002 Spanish, batches of similar-length sentences, such as 16 datelines or "
        "headlines, trained MiniLM to 0.31 dev F1 where plain shuffled batches reached 0.40; ~2.5x the time).",
    )
    token_batches: bool | None = Field(
        None,
        description="With group_by_length: cut the sorted examples into training batches of about batch_size x "
        "the mean length in pieces (padding counted; fewer long examples, more short ones per batch, about as many "
        "steps per epoch) rather than of batch_size examples each. null: the task's choice, true for ner (its loss "
        "is a mean over pieces: 32 one-word sentences would weigh as much as 32 long ones; on CoNLL-2002 Spanish "
        "0.345 dev F1 against 0.308 by rows, mean of 3 seeds), false otherwise.",
    )
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes (0: the main process).")
    holdout_fraction: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="Carve this share of the training file (e.g. 0.1) into a held-out split that alone picks the "
        "model: the best step, early stopping, the best seed and the seed soup. The validation files are then "
        "scored once, at the end, with each seed's best model. Stratified by label (classification), random by "
        "sentence (ner) or example (multiple choice), by context (QA: a context's questions stay together); drawn "
        "with a fixed data seed, so it is the same split in every run and for every training seed. 0: off (the "
        "validation files pick the model, and the scores reported are those the choice looked at).",
    )
    pack: bool | None = Field(
        None,
        description="Classification, regression and ner: pack the examples of each training batch (the same ones) "
        "into as few rows of max_seq_length tokens as hold them, without padding (positions restart per example, "
        "attention stays within each example). Same loss and gradients as padded batches; pays off when batches "
        "carry much padding (group_by_length false); with length grouping CoLA's batches are ~3.5% padding, and "
        "each row's attention spans all its examples. Needs a BERT model with sdpa or eager attention (else: "
        "padded batches, with a notice when set true); ner with distill.teacher trains padded. Evaluation batches "
        "stay padded. null: the task's choice: true for ner (on CoNLL-2002 Spanish its shuffled batches of 16 are "
        "50% padding, packed 13%: 60 steps of MiniLM on one thread took 117 s against 200 s padded), false "
        "otherwise; false: always padded.",
    )


class FinetuneTrainSection(TrainSection):
    """The shared `train` section with fine-tuning defaults (BERT paper: 2e-5..5e-5, 3 epochs, 10% warmup)."""

    learning_rate: float = Field(2e-5, gt=0.0, le=1.0, description="Peak learning rate of AdamW.")
    adam_epsilon: float = Field(1e-8, gt=0.0, description="AdamW epsilon.")
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Warmup as a share of the total steps.")
    max_steps: int | None = Field(
        None, ge=1, description="Optimizer steps to train for. null: train for `epochs` instead."
    )
    epochs: float | None = Field(3.0, gt=0.0, description="Passes over the training data (when max_steps null).")
    eval_every: int = Field(
        0,
        ge=0,
        description="Evaluate every N optimizer steps; 0: at the end of every epoch (and at the end).",
    )
    save_every: int = Field(
        0,
        ge=0,
        description="Save a resumable checkpoint (OUTPUT/checkpoints/step-N, with several seeds "
        "OUTPUT/seed-N/checkpoints; for --resume) every N steps and at the end; 0: only when Ctrl-C or SIGTERM stops "
        "the run (best/ is always saved).",
    )
    log_every: int = Field(50, ge=1, description="Log the training loss every N optimizer steps.")
    tensorboard: bool = Field(False, description="Also log to TensorBoard (OUTPUT/logs) through Accelerate.")
    seeds: list[Seed] | None = Field(
        None,
        description="Run once per seed (e.g. [1, 2, 3]) and report mean, median and std of each metric; "
        "`--seeds 1,2,3` sets it. null: one run with `seed`.",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many evaluations without a better main metric; null: never. Evaluations "
        "count only once the main metric has moved off its first value (a model that still predicts one label "
        "everywhere, MCC or F1 0, has not begun to learn).",
    )
    layer_lr_decay: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Layer-wise learning-rate decay: the task head and pooler train at learning_rate, the top encoder "
        "layer at learning_rate x this, each layer below at one more factor, the embeddings lowest (x this^(layers + "
        "1)). 1.0: one rate for all; 0.9-0.95 is the literature's value for small sets (Sun et al. 2019, Zhang et "
        "al. 2021).",
    )
    average_seeds: bool = Field(
        False,
        description="With several seeds: average the weights of the seeds' best models into one uniform model soup "
        "(Wortsman et al. 2022), scored on the split that picks the model (data.holdout_fraction's, else the "
        "validation files); best/ is the soup when it beats the best single seed there, else that seed's model. "
        "The seeds then share one start (the first seed's new head, re-initialised layers and adapter) and differ "
        "in data order and dropout, as the paper's ingredients do. "
        "metrics.json keeps the soup's scores either way.",
    )
    soup_head: Literal["average", "refit"] = Field(
        "average",
        description="The soup's task head (train.average_seeds): average, the mean of the seeds' heads; refit, a "
        "head fitted anew on the training rows with the soup's encoder frozen and dropout off (3 epochs of AdamW "
        "from the mean head at 1e-2 falling linearly to 0, gold labels, batches of data.batch_size; about a "
        "forward pass over the training rows per epoch), before "
        "the soup is scored and kept or not. The mean of the seeds' heads does not fit the mean of their encoders: "
        "on CoLA (MiniLM, 5 seeds) the averaged model called 92% of sentences acceptable where each seed called "
        "78-86%, and scored below its seeds; with its head fitted anew it scored above their mean "
        "(benchmarks/README.md). refit needs train.average_seeds and is refused with distill.teacher.",
    )


class OutputSection(Section):
    dir: str = Field("runs/finetune", json_schema_extra=PATH, description="Output directory (`--output` sets it).")
    floor: bool = Field(
        False,
        description="Also fit the task's classical floor on the training file (classification: tf-idf + logistic "
        "or ridge regression; ner: the most frequent tag per word; QA: the best word-overlap sentence; multiple "
        "choice: tf-idf cosine), score it on each evaluation file, and print it beside the best result with how far "
        'the model is above it (metrics.json keeps it under "floor").',
    )
    export_onnx: Literal["none", "fp32", "int8"] = Field(
        "none",
        description="At the end of the run, export best/ to ONNX for `bertcli eval --runtime onnx`: fp32 writes "
        "best/onnx/model.onnx, int8 that and best/onnx/model-int8.onnx (dynamically quantized). Needs "
        "`pip install 'bertcli[onnx]'`; `bertcli export` does the same for an existing best/.",
    )


class FinetuneConfig(Section):
    task: TaskSection = Field(default_factory=TaskSection)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    train: FinetuneTrainSection = Field(default_factory=FinetuneTrainSection)
    output: OutputSection = Field(default_factory=OutputSection)
    distill: DistillSection = Field(default_factory=DistillSection)

    @model_validator(mode="after")
    def _need_inputs(self) -> FinetuneConfig:
        if not self.model.path and self.distill.teacher:  # the student starts from the teacher (model.init_layers)
            self.model.path = self.distill.teacher
        if not self.model.path:
            raise ValueError("no model: give a checkpoint folder with --model or set model.path")
        if not self.data.dir and not self.data.train_file:
            raise ValueError("no training data: set data.dir (a GLUE task folder) or data.train_file")
        if self.task.name in FILE_TASK_NAMES and not self.data.train_file:
            raise ValueError(f"a {self.task.name} task needs data.train_file (and usually data.validation_files)")
        if self.task.name in SPAN_TASK_NAMES and self.task.doc_stride >= self.data.max_seq_length:
            raise ValueError(f"task.doc_stride {self.task.doc_stride} must be smaller than data.max_seq_length "
                             f"{self.data.max_seq_length}: windows overlap by doc_stride pieces")  # fmt: skip
        if self.data.pack and self.task.name in SPAN_TASK_NAMES:
            raise ValueError(f"data.pack packs classification, regression and ner batches only, not "
                             f"{self.task.name}'s: set data.pack false")  # fmt: skip
        if self.data.truncation_side == "left" and self.task.name in ("ner", *SPAN_TASK_NAMES):
            raise ValueError(f"data.truncation_side left is for classification and regression; {self.task.name} "
                             "cuts long inputs into windows, so nothing is lost: set it to right")  # fmt: skip
        if self.model.freeze == "encoder" and self.model.reinit_top_layers:
            raise ValueError("model.freeze encoder trains the head alone, so model.reinit_top_layers would leave "
                             "random layers untrained: set freeze to none or reinit_top_layers to 0")  # fmt: skip
        if self.train.average_seeds and len(self.train.seeds or []) < 2:
            raise ValueError("train.average_seeds averages several seeds' models: set train.seeds (--seeds 1,2,3) "
                             "or train.average_seeds false")  # fmt: skip
        if self.train.soup_head == "refit" and not self.train.average_seeds:
            raise ValueError("train.soup_head refit fits the head of the seeds' soup: set train.average_seeds true "
                             "(with several seeds) or soup_head average")  # fmt: skip
        if self.train.soup_head == "refit" and self.distill.teacher:
            raise ValueError("train.soup_head refit fits the head to the gold labels, and with distill.teacher the "
                             "training rows include rows only the teacher labels: set soup_head average")  # fmt: skip
        if not 1 <= len(self.task.text_columns) <= 2:
            raise ValueError("task.text_columns: one or two columns")
        return self
