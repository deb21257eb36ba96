"""The span family behind `TaskFamily`: extractive QA with a question-answering head."""

from __future__ import annotations

from bertcli.tasks.base import TaskFamily, lazy_module
from bertcli.tasks.span import evaluation
from bertcli.tasks.span.data import SPAN_TASKS, describe_reading
from bertcli.tasks.span.features import SpanCollator

# executed on first use: an eval on ONNX Runtime never trains, and imports no torch
training = lazy_module("bertcli.tasks.span.training")


class SpanFamily(TaskFamily):
    name = "span"
    task_names = SPAN_TASKS
    auto_class = "AutoModelForQuestionAnswering"
    model_kind = "QA model"
    pipeline_tag = "question-answering"
    eval_predictions_ext = "json"

    def finetune_spec(self, cfg):
        return training.finetune_spec(cfg)

    def load_data(self, cfg, spec, train_path, eval_paths, model_dir, raw, tok_dir):
        return training.load_span_data(cfg, spec, train_path, eval_paths, model_dir, raw, tok_dir)

    def describe_data(self, data, cfg):
        return training.describe_data(data)

    def forward_module(self, model, train_token_ids=None):
        return training.SpanForward(model, train_token_ids=train_token_ids)

    def collator(self, split, tokenizer):
        return SpanCollator(split, tokenizer)

    def loss_and_sums(self, m, batch, spec):
        return training.span_loss_and_sums(m, batch)  # looked up per call: tests wrap it

    def summarize(self, totals):
        return training.summarize_span(totals)

    def score(self, acc, m, loader, split, spec):
        return training.score(acc, m, loader, split, spec)

    def write_best_predictions(self, path, predictions):
        training.write_span_predictions(path, predictions)

    def teacher_rows(self, logits, batch):
        return training.teacher_rows(logits, batch)

    def soft_loss(self, student, teacher, batch, spec, settings):
        # start and end each a distribution over the window's pieces: (batch, 2, pieces)
        return super().soft_loss(student.transpose(1, 2), teacher.transpose(1, 2), batch, spec, settings)

    def usage(self, spec):
        # transformers 5 removed the question-answering pipeline: the model class, and eval
        return ["from transformers import AutoModelForQuestionAnswering, AutoTokenizer",
                'model = AutoModelForQuestionAnswering.from_pretrained("path/to/best")',
                'tokenizer = AutoTokenizer.from_pretrained("path/to/best")',
                "# n-best answers: bertcli eval --task squad --model path/to/best --data dev.json"]  # fmt: skip

    def loads_in(self, spec):
        return "AutoModelForQuestionAnswering"

    def card_data_line(self, name, path, counts, max_seq_length):
        # long contexts are windowed, never truncated
        windows = f"{counts['examples']} questions in {counts['windows']} windows"
        return f"- {name}: `{path}`, {windows}; {describe_reading(counts)}"

    def eval_plan(self, cfg, name, configs, predictions_only):
        return evaluation.span_plan(cfg, name, configs, predictions_only)

    def eval_reading(self, plan):
        return evaluation.span_reading(plan)  # answers located, fixed, skipped

    def evaluate(self, path, plan, cfg, accelerator):
        return evaluation.evaluate_qa(path, plan, cfg, accelerator, self)

    def write_predictions(self, path, plan, result):
        evaluation.write_qa_predictions(path, result)

    def floor(self, train_path, plan, cfg):
        from bertcli.tasks.span.floor import span_floor

        return span_floor(train_path, plan, cfg)


FAMILY = SpanFamily()  # registered by bertcli.tasks.registry
