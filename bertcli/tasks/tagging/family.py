"""The tagging family behind `TaskFamily`: token classification (NER) with a token-classification head."""

from __future__ import annotations

from bertcli.tasks.base import TaskFamily, lazy_module
from bertcli.tasks.tagging import evaluation
from bertcli.tasks.tagging.data import reading_notes
from bertcli.tasks.tagging.evaluation import NER
from bertcli.tasks.tagging.features import TaggingCollator

# executed on first use: an eval on ONNX Runtime never trains, and imports no torch
distill = lazy_module("bertcli.tasks.tagging.distill")
training = lazy_module("bertcli.tasks.tagging.training")


class TaggingFamily(TaskFamily):
    name = "tagging"
    task_names = (NER,)
    auto_class = "AutoModelForTokenClassification"
    model_kind = "tagger"
    pipeline_tag = "token-classification"
    eval_predictions_ext = "conll"
    reads_text_pairs = False  # one sentence per input
    group_by_length = False  # data.group_by_length null: shuffled batches; sorted ones trained taggers worse
    token_batches = True  # data.token_batches null: grouped batches of about equal piece counts (loss: mean per piece)
    pack = True  # data.pack null: packed; shuffled batches are ~50% padding (60 MiniLM steps: 117 s, padded 200 s)

    def finetune_spec(self, cfg):
        return training.finetune_spec(cfg)

    def load_data(self, cfg, spec, train_path, eval_paths, model_dir, raw, tok_dir):
        return training.load_tagging_data(cfg, spec, train_path, eval_paths, model_dir, raw, tok_dir)

    def describe_data(self, data, cfg):
        return training.describe_data(data, cfg.data.max_seq_length)

    def forward_module(self, model, train_token_ids=None):
        return training.TaggerForward(model, train_token_ids=train_token_ids)

    def collator(self, split, tokenizer):
        return TaggingCollator(split, tokenizer)

    def train_collator(self, split, tokenizer, net, cfg, say):
        return training.train_collator(split, tokenizer, net, cfg, say, self.pack)

    def loss_and_sums(self, m, batch, spec):
        return training.tagging_loss_and_sums(m, batch)  # looked up per call: tests wrap it

    def summarize(self, totals):
        return training.summarize_tagging(totals)

    def score(self, acc, m, loader, split, spec):
        return training.score(acc, m, loader, split, spec), None

    def teacher_rows(self, logits, batch):
        return distill.teacher_rows(logits, batch)  # the labelled pieces of each window

    def unlabelled_rows(self, cfg, data, path):
        return distill.unlabelled_rows(cfg, data, path)

    def augmented_rows(self, cfg, data, augment):
        return distill.augmented_rows(cfg, data, augment)

    def usage(self, spec):
        return ["from transformers import pipeline",
                f'tag = pipeline("{self.pipeline_tag}", model="path/to/best", aggregation_strategy="simple")',
                'tag("A sentence whose entities to find.")']  # fmt: skip

    def claims_models(self, configs):
        """A token classifier's only task here."""
        return all(any(a.endswith("ForTokenClassification") for a in raw.get("architectures") or [])
                   for raw in configs.values())  # fmt: skip

    def eval_plan(self, cfg, name, configs, predictions_only):
        return evaluation.tagging_plan(cfg, configs, predictions_only)

    def eval_reading(self, plan):
        return {}, reading_notes(plan.spec, plan.examples)  # nested spans dropped, IOB1 tags read as IOB2...

    def evaluate(self, path, plan, cfg, accelerator):
        return evaluation.evaluate_tagger(path, plan, cfg, accelerator, self)

    def write_predictions(self, path, plan, result):
        evaluation.write_conll_predictions(path, plan.examples, result)

    def floor(self, train_path, plan, cfg):
        from bertcli.tasks.tagging.floor import tagging_floor

        return tagging_floor(train_path, plan, cfg)


FAMILY = TaggingFamily()  # registered by bertcli.tasks.registry
