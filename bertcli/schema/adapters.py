"""`bertcli finetune`'s adapter keys (`model.adapter`, `model.lora.rank`, ...): fine-tune a few added weights."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bertcli.config import Section

ADAPTERS = Literal["none", "lora"]


class LoraSection(Section):
    """LoRA (Hu et al. 2021, through peft): beside each target linear layer W of the encoder, a low-rank update
    B A (A: rank x in, B: out x rank) scaled by alpha / rank trains while W stays frozen. Defaults: peft's for BERT."""

    rank: int = Field(
        8,
        ge=1,
        le=4096,
        description="model.adapter lora: the rank r of each update B A (peft's r; 8, as the LoRA paper used on GLUE "
        "with RoBERTa and DeBERTa). Trained weights per layer: rank x (in + out).",
    )
    alpha: float = Field(
        16.0,
        gt=0.0,
        description="model.adapter lora: the update is scaled by alpha / rank (peft's lora_alpha; 16 as in peft's "
        "BERT examples: a scale of 2 at rank 8). Raising the rank at a fixed alpha shrinks each update.",
    )
    dropout: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="model.adapter lora: dropout on the input of each LoRA update (peft's lora_dropout; 0.1 as in "
        "peft's sequence-classification examples).",
    )
    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="model.adapter lora: the linear layers of the encoder that get an update, by name or dotted "
        "suffix (query, value, attention.output.dense); each must name at least one nn.Linear inside the base "
        "encoder. null: peft's default for the model type: query and value for BERT, RoBERTa, ELECTRA (the LoRA "
        "paper's choice), query_proj and value_proj for DeBERTa-v2; other types (DistilBERT: q_lin, v_lin) need "
        "them named.",
    )


ADAPTER_DESCRIPTION = (
    "none: every weight trains (full fine-tuning). lora: the encoder's weights are frozen (embeddings included) and "
    "only low-rank updates of its linear layers train (model.lora.rank, model.lora.alpha, model.lora.dropout, "
    "model.lora.target_modules), with the task head trained fully: every module outside the base encoder, and any "
    "the checkpoint lacked (a fresh pooler). Needs peft (the `adapters` extra). LoRA usually wants a higher "
    "train.learning_rate than full fine-tuning (1e-4 to 5e-4). best/ holds the merged model (plain transformers: "
    "Auto* classes, pipeline) and best/adapter/ the adapter alone, for peft.PeftModel.from_pretrained on the base "
    "checkpoint."
)
