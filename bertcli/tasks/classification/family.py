"""The classification family behind `TaskFamily`: GLUE tasks and custom (sentence-pair) classification and
regression, with a sequence-classification head."""

from __future__ import annotations

from pathlib import Path

from bertcli.report import write_predictions, write_submission
from bertcli.tasks.base import TaskFamily, lazy_module
from bertcli.tasks.classification import evaluation
from bertcli.tasks.classification.data import GLUE_TASKS
from bertcli.tasks.classification.features import BatchCollator

# executed on first use: an eval on ONNX Runtime never trains, and imports no torch
distill = lazy_module("bertcli.tasks.classification.distill")
training = lazy_module("bertcli.tasks.classification.training")


class ClassificationFamily(TaskFamily):
    name = "classification"
    task_names = (*GLUE_TASKS, "custom")
    auto_class = "AutoModelForSequenceClassification"
    model_kind = "classifier"
    pipeline_tag = "text-classification"
    eval_predictions_ext = "tsv"

    def finetune_spec(self, cfg):
        return training.finetune_spec(cfg)

    def load_data(self, cfg, spec, train_path, eval_paths, model_dir, raw, tok_dir):
        return training.load_classification_data(cfg, spec, train_path, eval_paths, model_dir, raw, tok_dir)

    def describe_data(self, data, cfg):
        return training.describe_counts(data, cfg.data.max_seq_length)

    def problem_type(self, spec):
        return "regression" if spec.is_regression else "single_label_classification"

    def forward_module(self, model, train_token_ids=None):
        return training.ClassifierForward(model, train_token_ids=train_token_ids)

    def collator(self, split, tokenizer):
        return BatchCollator(split)

    def train_collator(self, split, tokenizer, net, cfg, say):
        return training.packed_collator(split, net, cfg, say, self.pack) or BatchCollator(split)

    def loss_and_sums(self, m, batch, spec):
        return training._loss_and_sums(m, batch, spec.is_regression)  # looked up per call: tests wrap it

    def summarize(self, totals):
        return training._summarize(totals)

    def score(self, acc, m, loader, split, spec):
        logits, index = training.predict(acc, m, loader)
        note = training.one_class_note(spec, logits, split)
        if note:
            acc.print(note)
        return training.split_metrics(spec, logits, index, split), None

    def unlabelled_rows(self, cfg, data, path):
        return distill.unlabelled_rows(cfg, data, path)

    def augmented_rows(self, cfg, data, augment):
        return distill.augmented_rows(cfg, data, augment)

    def usage(self, spec):
        return ["from transformers import pipeline",
                f'classify = pipeline("{self.pipeline_tag}", model="path/to/best")',
                'classify("A sentence to classify.")']  # fmt: skip

    def eval_plan(self, cfg, name, configs, predictions_only):
        return evaluation.classification_plan(cfg, name, configs, predictions_only)

    def evaluate(self, path, plan, cfg, accelerator):
        return evaluation.evaluate_classifier(path, plan, cfg, accelerator, self)

    def write_predictions(self, path: Path, plan, result):
        write_predictions(path, result)

    def write_submission(self, path: Path, plan, result):
        values = None if plan.spec.is_regression else list(plan.spec.label_values)  # the GLUE server's label values
        write_submission(path, result.predictions, result.index, values)

    def floor(self, train_path, plan, cfg):
        from bertcli.tasks.classification.floor import classification_floor

        return classification_floor(train_path, plan, cfg)


FAMILY = ClassificationFamily()  # registered by bertcli.tasks.registry
