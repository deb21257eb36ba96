"""The multiple-choice family behind `TaskFamily`: SWAG csv and JSON-lines questions (ChID cloze too), one
(context, choice) pair per choice, `AutoModelForMultipleChoice`, accuracy."""

from __future__ import annotations

from pathlib import Path

from bertcli.errors import UsageError
from bertcli.tasks.base import TaskFamily, lazy_module
from bertcli.tasks.multiple_choice import evaluation
from bertcli.tasks.multiple_choice.data import CHOICE_TASKS, choice_task, describe_counts
from bertcli.tasks.multiple_choice.features import ChoiceCollator, write_choice_predictions

# executed on first use: an eval on ONNX Runtime never trains, and imports no torch
training = lazy_module("bertcli.tasks.multiple_choice.training")


class MultipleChoiceFamily(TaskFamily):
    name = "multiple_choice"
    task_names = CHOICE_TASKS
    auto_class = "AutoModelForMultipleChoice"
    model_kind = "multiple-choice model"
    pipeline_tag = "multiple-choice"
    eval_predictions_ext = "jsonl"
    head_per_label = False  # one score per choice, whatever a checkpoint's id2label says

    def finetune_spec(self, cfg):
        if cfg.data.pack:
            raise UsageError(f"data.pack packs classification and ner batches only, not {cfg.task.name}'s; unset it")
        if cfg.data.truncation_side == "left":
            raise UsageError(f"data.truncation_side left is for classification; {cfg.task.name} cuts the context "
                             "from its end (a #idiom# passage around its blank)")  # fmt: skip
        return choice_task(cfg.task.name), {}

    def load_data(self, cfg, spec, train_path, eval_paths, model_dir, raw, tok_dir):
        return training.load_choice_data(cfg, spec, train_path, eval_paths, model_dir, raw, tok_dir)

    def describe_data(self, data, cfg):
        return training.describe_choice_data(data)

    def forward_module(self, model, train_token_ids=None):
        return training.ChoiceForward(model, train_token_ids=train_token_ids)

    def export_inputs(self, config):
        return training.choice_export_inputs(config)

    def collator(self, split, tokenizer):
        return ChoiceCollator(split.features)

    def loss_and_sums(self, m, batch, spec):
        return training.choice_loss_and_sums(m, batch)  # looked up per call: tests wrap it

    def summarize(self, totals):
        return training.summarize_choices(totals)

    def score(self, acc, m, loader, split, spec):
        return training.score_choice_split(acc, m, loader, split)

    def batch_logits(self, m, batch):
        return m(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"), batch.get("choice_mask"))

    def teacher_rows(self, logits, batch):
        # each question's real choices; the padded ones come back as NaN, left out of the soft loss's softmax
        return [row[:k] for row, k in zip(logits.float().cpu().numpy(), batch["choice_mask"].sum(1).tolist())]

    def write_best_predictions(self, path: Path, predictions):
        write_choice_predictions(path, *predictions)  # predictions.jsonl, as eval --predictions writes it

    def usage(self, spec):
        return [
            "import torch",
            "from transformers import AutoModelForMultipleChoice, AutoTokenizer",
            'tok = AutoTokenizer.from_pretrained("path/to/best")',
            'model = AutoModelForMultipleChoice.from_pretrained("path/to/best")',
            'context, choices = "She opens the door.", ["She walks in.", "The door eats lunch."]',
            "enc = tok([context] * len(choices), choices, return_tensors='pt', padding=True)",
            "best = model(**{k: v.unsqueeze(0) for k, v in enc.items()}).logits.argmax(-1).item()",
        ]

    def loads_in(self, spec):
        return "AutoModelForMultipleChoice"

    def card_data_line(self, name, path, counts, max_seq_length):
        return f"- {name}: `{path}`, {describe_counts(counts)}"

    def claims_models(self, configs):
        return bool(configs) and all(evaluation.is_choice_model(raw) for raw in configs.values())

    def eval_plan(self, cfg, name, configs, predictions_only):
        return evaluation.choice_plan(cfg, name, configs, predictions_only)

    def eval_reading(self, plan):
        return evaluation.choice_reading(plan)

    def evaluate(self, path, plan, cfg, accelerator):
        return evaluation.evaluate_choice_model(path, plan, cfg, accelerator, self)

    def write_predictions(self, path: Path, plan, result):
        evaluation.write_eval_predictions(path, plan, result)

    def floor(self, train_path, plan, cfg):
        from bertcli.tasks.multiple_choice.floor import choice_floor

        return choice_floor(train_path, plan, cfg)


FAMILY = MultipleChoiceFamily()  # registered by bertcli.tasks.registry
