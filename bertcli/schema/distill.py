"""The `distill` section of `bertcli finetune` (knowledge distillation from a fine-tuned teacher) and the type of
`model.init_layers`. Each field's description is its documentation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from bertcli.config import PATH, Section

# model.init_layers: the 0-based encoder layers to keep, or how many, spread evenly from the first
InitLayers = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | Annotated[int, Field(ge=1)]


def init_layers_description() -> str:
    return (
        "A smaller student cut from model.path (with distill.teacher and no model.path: from the teacher): keep "
        "these 0-based encoder layers, with the embeddings, the pooler and the head (a fine-tuned model.path's head "
        "stays when its labels are the task's), and train that model; best/ is a plain checkpoint of that many "
        "layers. A list ([0, 2, 4]: DistilBERT's every other layer of 6) or a number k: k layers spread evenly from "
        "the first (3 of 6: [0, 2, 4]; 6 of 12: [0, 2, 4, 6, 8, 10]). null: every layer. Measured (CoLA, 3 of "
        "MiniLM's fine-tuned 6, labels only, 3 seeds, benchmarks/README.md): [0, 2, 4] 17.29 +- 0.40 dev MCC, "
        "[0, 2, 5] 16.22 +- 1.16, [1, 3, 5] 15.90 +- 2.45: keeping the top layer did not help."
    )


class DistillSection(Section):
    """Knowledge distillation (Hinton et al. 2015; DistilBERT; TinyBERT's prediction layer): the student learns
    from the teacher's temperature-softened outputs and the gold labels."""

    teacher: str | None = Field(
        None,
        json_schema_extra=PATH,
        description="A fine-tuned model of the same task (a bertcli best/, or any folder with the task's head, "
        "labels and the student's vocabulary): the student learns from its outputs as well as from the gold "
        "labels. The teacher runs once over the training rows before training (evaluation mode) and its outputs "
        "are kept, so an epoch costs what it costs without one. `--teacher` sets it. null: no distillation.",
    )
    alpha: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="The soft loss's share: loss = alpha * soft + (1 - alpha) * gold loss. 0: the gold labels "
        "alone (the teacher's outputs are computed and ignored); 1: the teacher alone. 0.5 as DistilBERT's "
        "task-specific runs.",
    )
    temperature: float = Field(
        2.0,
        gt=0.0,
        description="Both models' logits are divided by it before the softmax of the KL soft loss, which is then "
        "multiplied by temperature^2 so its gradients keep their size (Hinton et al. 2015); above 1 the teacher's "
        "wrong answers carry more of what it knows. DistilBERT: 2.0. Not used by the mse soft loss.",
    )
    soft_loss: Literal["kl", "mse"] = Field(
        "kl",
        description="kl: temperature^2 * KL(softmax(teacher / T) || softmax(student / T)) over the family's "
        "outputs: the labels (classification), each labelled piece's labels (ner), the pieces for start and for end "
        "(QA), the choices (multiple choice). mse: the mean squared difference of the raw logits over the same "
        "outputs (Ba & Caruana 2014; TextBrewer's kd_loss_type mse). Regression always uses the mean squared "
        "difference to the teacher's score.",
    )
    hidden_weight: float = Field(
        0.0,
        ge=0.0,
        description="Also match hidden states (TinyBERT's Transformer-layer loss, its hidden-state part; "
        "TextBrewer's hidden_mse): the student's layer j of M learns the output of the teacher's layer (j + 1) * N "
        "// M - 1 of N (3 of 6: layers 0 and 1 learn the teacher's 1 and 3; the last layer learns from the "
        "outputs), by the mean squared difference over real pieces, and the loss adds hidden_weight times it. "
        "Needs the teacher's width (model.init_layers of the teacher) and BERT-style encoder layers. The teacher "
        "then runs beside the student on every training batch (a step costs one teacher forward more). 0: off. "
        "TinyBERT weighs it 1.",
    )
    attention_weight: float = Field(
        0.0,
        ge=0.0,
        description="Also match attention scores (TinyBERT's attention loss; TextBrewer's attention_mse): the "
        "student's layers, mapped as for distill.hidden_weight, learn the teacher's scores before the softmax "
        "(query . key / sqrt(head size)) of every head, by the mean squared difference over the pairs of real "
        "pieces that attend to each other, and the loss adds attention_weight times it. Needs the teacher's width "
        "and head count (model.init_layers of the teacher); the teacher runs beside the student as with "
        "distill.hidden_weight. 0: off. TinyBERT weighs it 1.",
    )
    unlabelled_file: str | None = Field(
        None,
        json_schema_extra=PATH,
        description="Extra text of the task without labels: the teacher labels it and the student learns from "
        "it with the soft loss only (its rows join the training rows; the training log's accuracy counts them as "
        "misses). Classification (not regression): a .txt file with one text per line (one-text tasks), or a "
        "file of the task's format with its text columns (the label column may be absent); ner: a file of token "
        "sentences in the task's format (CoNLL with one token per line and no tag column, or jsonl tokens). QA "
        "and multiple choice refuse it. Needs distill.teacher.",
    )

    augment: int = Field(
        0,
        ge=0,
        description="TinyBERT's data augmentation (Jiao et al. 2020): up to this many copies of each training row "
        "(after data.holdout_fraction carved its rows out), each one-piece word replaced with probability "
        "distill.augment_prob by one of its distill.augment_candidates nearest whole words by the cosine of the "
        "teacher's input embeddings (no masked LM or GloVe needed: offline); copies where no word was drawn are "
        "dropped. The teacher labels the copies and the student learns from them with the soft loss only, as from "
        "distill.unlabelled_file. Drawn once with train.seed (every seed of train.seeds learns from the same "
        "copies); an epoch then holds (1 + augment) times the rows. Classification (not regression) and ner. "
        "TinyBERT: 20. 0: off.",
    )
    augment_prob: float = Field(
        0.4,
        gt=0.0,
        le=1.0,
        description="distill.augment: the chance that each one-piece word of a copy is replaced. TinyBERT: 0.4.",
    )
    augment_candidates: int = Field(
        15,
        ge=1,
        description="distill.augment: how many nearest words a word's replacement is drawn from (uniformly). "
        "TinyBERT: 15.",
    )

    @model_validator(mode="after")
    def _needs_teacher(self) -> DistillSection:
        if self.unlabelled_file and not self.teacher:
            raise ValueError("distill.unlabelled_file needs distill.teacher: the teacher labels the text")
        if self.augment and not self.teacher:
            raise ValueError("distill.augment needs distill.teacher: the teacher labels the copies")
        for key in ("hidden_weight", "attention_weight"):
            if getattr(self, key) and not self.teacher:
                raise ValueError(f"distill.{key} needs distill.teacher: the student learns from its layers")
        return self
