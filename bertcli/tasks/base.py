"""The one interface of a task family, as fairseq's `FairseqTask` is for its tasks, and what it hands around.

A family (classification, tagging, span, multiple_choice) lives in `bertcli/tasks/<family>/` and registers one
`TaskFamily` instance (`bertcli.tasks.registry.register`). `run_finetune` and `run_eval` call only these methods;
they never name a family. What each method takes and returns:

    finetune                                          eval
    finetune_spec(cfg) -> spec, files in data.dir     eval_plan(cfg, name, configs, predictions_only) -> EvalTask
    load_data(...) -> FinetuneData (encoded once)     evaluate(path, plan, cfg, accelerator) -> EvalResult
    describe_data(data, cfg) -> lines to print        write_predictions(path, plan, result)
    build_model(model_dir, spec, dropout)             claims_models(configs): eval with no --task
    forward_module(model, train_token_ids)
    collator / train_collator -> collate_fn           the card and the console summary:
    loss_and_sums(m, batch, spec)  (the hot path)     model_kind, pipeline_tag, usage(spec), loads_in(spec),
    summarize(totals)                                 card_data_line(...)
    score(acc, m, loader, split, spec) -> metrics, predictions
    write_best_predictions(path, predictions)
    distillation (distill.teacher): batch_logits, teacher_rows, soft_loss, unlabelled_rows, augmented_rows
    (defaults given)

A `spec` is the family's own frozen dataclass (`TaskSpec`, `TaggingSpec`, `SpanSpec`, ...). The pipelines read
only these names of it: name, family, metrics, main_metric, label_names, id2label, num_labels, is_regression,
files, validation_splits, eval_only.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # type names only: no import at run time, so no import circle
    import torch

    from bertcli.report import EvalResult
    from bertcli.schema.eval import EvalConfig
    from bertcli.schema.finetune import FinetuneConfig


def lazy_module(name: str):
    """The module `name`, executed on its first attribute access (`importlib.util.LazyLoader`). A family's module
    names its training and distillation code (torch, transformers' model classes) at its top, and an eval on ONNX
    Runtime, which never calls that code, does not import it (torch alone is over a second of start-up)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Collator:
    """A collate_fn over example indices: `arrays(indices)` builds the batch as numpy arrays (what an ONNX eval
    feeds its session), and calling it gives the same batch as torch tensors sharing their memory (what training
    and a torch eval feed the model). Subclasses are picklable, for DataLoader workers."""

    def arrays(self, indices) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __call__(self, indices: list[int]) -> dict:
        import torch

        return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in self.arrays(indices).items()}


@dataclass
class FinetuneData:
    """Everything a fine-tuning run trains and evaluates on, read and checked once for all seeds (`load_data`).

    train / evals: the family's encoded splits; each has `len()` (rows the loader batches), `lengths` (one per
    row, to group batches by length) and `ids` (every token id of the split, flat: the rows of the word
    embeddings training reads). counts: split name -> the counts `describe_data` prints and metrics.json keeps."""

    spec: Any
    tokenizer: Any
    train: Any
    evals: dict[str, Any]
    files: dict[str, str]
    model_dir: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    holdout: Any = None  # data.holdout_fraction: the split carved from train (`tasks.holdout`), encoded as evals
    holdout_how: str = ""  # how it was drawn, for the log ("stratified by label")

    @property
    def selection(self) -> dict[str, Any]:
        """The splits that pick the model (best step, early stopping, seeds, soup): the holdout when there is one,
        else the evaluation files."""
        return {"holdout": self.holdout} if self.holdout is not None else self.evals

    teacher: Any = None  # distill.teacher, checked and loaded (`bertcli.distill.teacher.Teacher`), or None


class WindowedSplit:
    """What the loader and the trained-rows saving read of a token-level split (tagging, QA, ...): its
    `features`, one per window, with `input_ids` rows and `lengths`."""

    def __len__(self) -> int:
        return len(self.features)

    @property
    def lengths(self) -> np.ndarray:
        return self.features.lengths

    @property
    def ids(self) -> np.ndarray:
        """Every token id of every feature, flat (which rows of the word embeddings training reads)."""
        return np.fromiter((t for row in self.features.input_ids for t in row), dtype=np.int64)


@dataclass
class EvalTask:
    """What a family's `eval_plan` decided before any model is loaded: the spec (with the models' labels), the
    examples read from the data file, and the metric names to report ([] with --predictions-only)."""

    spec: Any
    examples: Any
    metrics: list[str]


@dataclass
class EvalPlan:
    """Everything `run_eval` decided before a model is loaded. kind: the family's name, or "pretraining"."""

    kind: str
    task: str
    spec: Any
    metrics: list[str]
    gates: list
    predictions_only: bool
    data: Path | str
    examples: Any = None
    configs: dict[str, dict] = field(default_factory=dict)  # model path -> its config.json


class TaskFamily:
    """A task family: everything `run_finetune` and `run_eval` need to know of it. Subclass, set the class
    attributes, implement the methods that raise NotImplementedError, and `register` one instance."""

    name: str = ""  # equal to its specs' `family`
    task_names: tuple[str, ...] = ()  # the task.name values it serves (as written in a config; eval: lower case)
    auto_class: str = ""  # the transformers Auto class of its head, e.g. "AutoModelForTokenClassification"
    model_kind: str = "model"  # the model card's title: "# {task} {model_kind} fine-tuned with bertcli"
    pipeline_tag: str = ""  # the card's pipeline_tag (the Hub's task name)
    eval_predictions_ext: str = "tsv"  # `bertcli eval --predictions` writes predictions.{ext}
    reads_text_pairs: bool = True  # an input may be two texts (segment ids 0 and 1): a one-segment model is noted
    head_per_label: bool = True  # one output per label (id2label): a teacher's labels must be the task's
    # data.group_by_length null: length-grouped training batches (True), or plain shuffled ones
    group_by_length: bool = True
    # data.token_batches null: length-grouped training batches of about the same count of pieces (True) or of
    # data.batch_size examples; True where the loss is a mean over pieces (tagging), whose weights that keeps even
    token_batches: bool = False
    # data.pack null: pack each training batch's examples into rows without padding (True) where the family's
    # forward can read packed rows (`bertcli.tasks.packing`), or pad them
    pack: bool = False

    # --- fine-tuning: the task and its data (before anything is written) ---------------------------------------

    def finetune_spec(self, cfg: FinetuneConfig) -> tuple[Any, dict[str, Path]]:
        """(spec, files found in cfg.data.dir by split name) for `bertcli finetune` from cfg.task; {} when the
        family has no standard folder layout. Raise UsageError for a task that cannot be fine-tuned."""
        raise NotImplementedError

    def load_data(self, cfg: FinetuneConfig, spec, train_path: Path, eval_paths: dict[str, Path], model_dir: Path,
                  raw: dict, tok_dir: Path | None) -> FinetuneData:  # fmt: skip
        """Read and check the training file and the evaluation files (split name -> path), load the tokenizer
        (`bertcli.model_dir.load_tokenizer_for(model_dir, tok_dir, raw["vocab_size"])`), encode every split once
        (windows for long inputs) and fill `FinetuneData.counts`. With data.holdout_fraction, carve the held-out
        split from the training examples before encoding (`bertcli.tasks.holdout.carve_if_asked`) and encode it
        as an evaluation split into `FinetuneData.holdout` (counts and files under "holdout"). `raw`: the model's
        config.json. The spec in the result may differ from `spec` (labels read from the training file)."""
        raise NotImplementedError

    def describe_data(self, data: FinetuneData, cfg: FinetuneConfig) -> list[str]:
        """Lines printed under "task NAME: labels ...; metrics ..." before training: one per split, with its
        counts and file (indented by two spaces)."""
        raise NotImplementedError

    # --- the model ---------------------------------------------------------------------------------------------

    def problem_type(self, spec) -> str | None:
        """The config's problem_type for a fresh head (None: the head's default)."""
        return None

    def build_model(self, model_dir: Path, spec, classifier_dropout: float | None = None):
        """(model, LoadReport): the checkpoint in `model_dir` with a fresh head for `spec` (`auto_class`, the
        spec's id2label). The caller has seeded the RNG (the head's initial weights come from it)."""
        from bertcli.model_dir import load_with_head

        return load_with_head(model_dir, spec, self.auto_class, self.problem_type(spec), classifier_dropout)

    def forward_module(self, model, train_token_ids: torch.Tensor | None = None) -> torch.nn.Module:
        """The module that training and evaluation call: `m(input_ids, token_type_ids, attention_mask, ...)` ->
        logits as float-able tensor; `model` (the saved model) is its `.model`, `.rows` the trained-rows saving or
        None, `.path()` the forward the load report names, `.segment_note()` what finetune says of how it reads a
        pair of texts (`bertcli.tasks.encoder.EncoderForward`). train_token_ids: every token id of the training data, or
        None (evaluation, or a distributed type that cannot train a subset of rows)."""
        raise NotImplementedError

    def export_inputs(self, config) -> tuple[dict[str, torch.Tensor], dict[str, tuple[str, ...]]]:
        """An example batch of what evaluation feeds `forward_module(model)` (argument name -> tensor, in the
        forward's order) for its ONNX export (`bertcli.export`), and each input's axis names: every axis is
        dynamic, axes of one name have one size. Default: input_ids, token_type_ids, attention_mask of (batch,
        sequence). `config`: the model's config."""
        from bertcli.export import example_batch

        return example_batch(config, ("batch", "sequence"))

    # --- batches -----------------------------------------------------------------------------------------------

    def collator(self, split, tokenizer) -> Callable[[list[int]], dict[str, torch.Tensor]]:
        """A picklable collate_fn: a list of row indices of `split` -> a batch of tensors with `input_ids`,
        `token_type_ids`, `attention_mask` where padded, the training targets, and `example_index` (the rows). A
        `Collator` (its `arrays` builds the batch in numpy) lets an ONNX eval run without torch; any other
        collate_fn works there too, with torch imported."""
        raise NotImplementedError

    def train_collator(self, split, tokenizer, net, cfg: FinetuneConfig, say: Callable[[str], None]):
        """The training batches' collate_fn (default: `collator`); `say` prints a line for the user."""
        return self.collator(split, tokenizer)

    # --- the hot path: one call per training step ---------------------------------------------------------------

    def loss_and_sums(self, m, batch: dict, spec) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, sums): the loss of one batch and per-example tensors the loop adds up between logs."""
        raise NotImplementedError

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        """The training log's scores from the added-up sums (`_samples`: the examples counted)."""
        raise NotImplementedError

    # --- evaluation during fine-tuning -------------------------------------------------------------------------

    def score(self, acc, m, loader, split, spec) -> tuple[dict[str, float], Any]:
        """(metrics, predictions): every batch of `loader` through `m` (gathered from every process exactly once),
        turned back into the user's units and scored. predictions: what `write_best_predictions` writes when this
        evaluation is the best, or None for nothing."""
        raise NotImplementedError

    def write_best_predictions(self, path: Path, predictions: Any) -> None:
        """Write `score`'s predictions beside best/, as `bertcli eval --predictions` writes them (the pipeline
        names the file predictions.{eval_predictions_ext})."""
        raise NotImplementedError

    # --- distillation (distill.teacher: `bertcli.distill.teacher`) ---------------------------------------------

    def batch_logits(self, m, batch: dict) -> torch.Tensor:
        """The logits of a batch of `collator`'s through `m` (the teacher, before training)."""
        return m(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"))

    def teacher_rows(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        """Each row's teacher logits from one batch of `collator`'s, cut to the row's own extent (the distillation
        collator pads them back to each training batch's shape, with NaN), NaN where the student has nothing to
        learn (`bertcli.distill.losses`). Default: one row of logits per example, as it is."""
        return list(logits.float().cpu().numpy())

    def soft_loss(self, student: torch.Tensor, teacher: torch.Tensor, batch: dict, spec, settings) -> torch.Tensor:
        """The soft loss of one training batch: `settings.soft_loss` (kl at `settings.temperature`, or mse) over
        the logits' last dimension, every distribution whose teacher row is not NaN; regression: mse to the
        teacher's score."""
        from bertcli.distill.losses import soft_loss

        kind = "mse" if spec.is_regression else settings.soft_loss
        return soft_loss(kind, student, teacher, settings.temperature)

    def unlabelled_rows(self, cfg: FinetuneConfig, data: FinetuneData, path: Path) -> tuple[Any, dict[str, int]]:
        """(the training split with the texts of `path` (distill.unlabelled_file) as rows after its own, their
        counts as `describe_data` prints them). The new rows' targets are placeholders: the distillation collator
        sets their `labels` to -100. Default: refused."""
        from bertcli.errors import UsageError

        raise UsageError(f"distill.unlabelled_file: {self.name} tasks cannot learn from unlabelled text (only "
                         "classification and ner can); unset it")  # fmt: skip

    def augmented_rows(self, cfg: FinetuneConfig, data: FinetuneData, augment: Callable) -> tuple[Any, int]:
        """(the training split with augmented copies of its rows after its own, how many) for distill.augment:
        `augment(ids)` gives the copies of one row's token ids, each of the same length (`bertcli.distill.augment`).
        The new rows' targets are placeholders: the distillation collator sets their `labels` to -100. Default:
        refused."""
        from bertcli.errors import UsageError

        raise UsageError(f"distill.augment: {self.name} tasks cannot learn from augmented copies (only "
                         "classification and ner can); set it to 0")  # fmt: skip

    # --- the card and the console summary ----------------------------------------------------------------------

    def usage(self, spec) -> list[str]:
        """Python lines of the card's "Use" section (loading best/)."""
        return ["from transformers import pipeline", f'model = pipeline("{self.pipeline_tag}", model="path/to/best")']

    def loads_in(self, spec) -> str:
        """How the summary says best/ loads: "saved OUT/best (loads in ...)"."""
        return f"pipeline('{self.pipeline_tag}')"

    def card_data_line(self, name: str, path: str, counts: dict, max_seq_length: int) -> str:
        """The card's line of one split's data (`counts`: `FinetuneData.counts[name]`)."""
        truncated = f"{counts['truncated']} truncated to {max_seq_length} tokens"
        return f"- {name}: `{path}`, {counts['examples']} examples, {truncated}"

    # --- bertcli eval ------------------------------------------------------------------------------------------

    def claims_models(self, configs: dict[str, dict]) -> bool:
        """Whether models given without --task are this family's (model path -> config.json)."""
        return False

    def eval_plan(self, cfg: EvalConfig, name: str, configs: dict[str, dict], predictions_only: bool) -> EvalTask:
        """Check every model's head and labels against task `name`, the task's options and metrics, read the data
        file (cfg.data.path) and check it can be scored; nothing is loaded or written. Raise UsageError."""
        raise NotImplementedError

    def eval_reading(self, plan: EvalPlan) -> tuple[dict[str, int], list[str]]:
        """(counts of what reading the data file located, fixed or skipped, kept in metrics.json's `data`; lines
        saying so, printed once before the models run). Default: nothing to say."""
        return {}, []

    def evaluate(self, path: str, plan: EvalPlan, cfg: EvalConfig, accelerator) -> EvalResult:
        """One model's predictions (in the user's units, in file order) and metrics on `plan.examples`, with its
        runtime split into import_s, load_s, compute_s, metrics_s and total_s."""
        raise NotImplementedError

    def write_predictions(self, path: Path, plan: EvalPlan, result: EvalResult) -> None:
        """Write one model's predictions as `bertcli eval --predictions` does (predictions.{eval_predictions_ext})."""
        raise NotImplementedError

    def floor(self, train_path: Path, plan: EvalPlan, cfg) -> EvalResult | None:
        """The family's classical floor (`bertcli.tasks.floor`): a cheap model fitted on `train_path` alone, never
        on the evaluated file, predicting `plan.examples` (None: read from `plan.data` with `cfg`'s reading
        options, finetune's evaluation files) and scored with `plan.metrics`; its `model` is its name. `cfg`: an
        EvalConfig or a FinetuneConfig. None: the family has no floor."""
        return None

    def write_submission(self, path: Path, plan: EvalPlan, result: EvalResult) -> None:
        """Write the file a leaderboard's server takes (`--submission-dir`: GLUE's TSV). Families without one
        refuse --submission-dir in `eval_plan`."""
        raise NotImplementedError
