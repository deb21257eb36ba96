"""Config of `bertcli pretrain`, grouped by concern. Each field's description is its documentation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bertcli.config import PATH, Section, Seed
from bertcli.schema.train import TrainSection

# Shapes of the BERT family (Devlin et al. 2019; the small ones from Turc et al. 2019, "Well-Read Students").
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512},
    "mini": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
    "small": {
        "num_hidden_layers": 4,
        "hidden_size": 512,
        "num_attention_heads": 8,
        "intermediate_size": 2048,
    },
    "medium": {
        "num_hidden_layers": 8,
        "hidden_size": 512,
        "num_attention_heads": 8,
        "intermediate_size": 2048,
    },
    "base": {
        "num_hidden_layers": 12,
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "large": {
        "num_hidden_layers": 24,
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
}
Preset = Literal["tiny", "mini", "small", "medium", "base", "large"]


class ModelSection(Section):
    init_from: str | None = Field(
        None,
        json_schema_extra=PATH,
        description="Continue pretraining from this local checkpoint folder (`--init-from` sets it): a "
        "BertForPreTraining, BertForMaskedLM or bare BertModel saved by transformers, or a pretrain run's final/ "
        "or checkpoints/step-N. Its config.json gives the shape, max_position_embeddings, type_vocab_size, "
        "hidden_act and layer_norm_eps, whatever model.preset says (values set here or with --set that disagree "
        "are an error); dropout and init come from this section. null: random weights.",
    )
    preset: Preset | None = Field(
        "tiny",
        description="Model shape: tiny 2x128, mini 4x256, small 4x512, medium 8x512, "
        "base 12x768, large 24x1024 (layers x hidden). The shape keys below override it. With init_from the "
        "checkpoint's shape wins and the run's config.yaml records null. null: the shape keys give the shape (tiny's "
        "values for those left null).",
    )
    num_hidden_layers: int | None = Field(None, ge=1, description="Transformer layers; null: from the preset.")
    hidden_size: int | None = Field(None, ge=8, description="Hidden width; null: from the preset.")
    num_attention_heads: int | None = Field(None, ge=1, description="Attention heads; null: from the preset.")
    intermediate_size: int | None = Field(None, ge=8, description="Feed-forward width; null: from the preset.")
    vocab_size: int | None = Field(
        None, ge=8, description="null: taken from the tokenizer. A value that disagrees with it is an error."
    )
    max_position_embeddings: int = Field(512, ge=8, description="Longest sequence the model can take.")
    type_vocab_size: int = Field(
        2,
        ge=1,
        description="Segment ids (2: A and B). 1: one segment embedding, as RoBERTa-style checkpoints have; every "
        "segment id is then read as 0, and objective must be mlm (NSP needs 2).",
    )
    hidden_act: Literal["gelu", "relu", "gelu_new", "silu"] = Field("gelu", description="Activation function.")
    hidden_dropout_prob: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on hidden states.")
    attention_probs_dropout_prob: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on attention weights.")
    initializer_range: float = Field(0.02, gt=0.0, description="Std of the truncated-normal weight init.")
    layer_norm_eps: float = Field(1e-12, gt=0.0, description="LayerNorm epsilon.")
    attn_implementation: Literal["sdpa", "eager"] = Field(
        "sdpa",
        description="sdpa: torch scaled_dot_product_attention (fused kernels); eager: the reference code.",
    )

    def shape(self) -> dict[str, int]:
        """The preset's shape (tiny's for no preset) with explicit keys applied on top."""
        shape = dict(PRESETS[self.preset or "tiny"])
        for key in shape:
            if getattr(self, key) is not None:
                shape[key] = getattr(self, key)
        return shape

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelSection:
        shape = self.shape()
        if shape["hidden_size"] % shape["num_attention_heads"]:
            raise ValueError(
                f"hidden_size {shape['hidden_size']} is not a multiple of num_attention_heads "
                f"{shape['num_attention_heads']}"
            )
        return self


class DataSection(Section):
    dirs: list[str] = Field(
        default_factory=list,
        json_schema_extra=PATH,
        description="Output directories of `bertcli tokenize` (one or more; their datasets are concatenated)."
        " "
        "Positional arguments set this.",
    )
    batch_size: int = Field(32, ge=1, description="Sequences per device per micro-batch.")
    eval_batch_size: int | None = Field(None, ge=1, description="Per-device eval batch; null: batch_size.")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes (0: mask in the main one).")


class MaskingSection(Section):
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0, description="Share of eligible tokens chosen for MLM.")
    mask_replace_prob: float = Field(0.8, ge=0.0, le=1.0, description="Of the chosen: replaced by [MASK].")
    random_replace_prob: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Of the chosen: replaced by a random token (the rest stay unchanged).",
    )
    whole_word_mask: bool = Field(
        False,
        description="Choose whole words together, as BERT's whole-word masking: words in random order until "
        "mlm_probability of the tokens are chosen, then mask_replace_prob / random_replace_prob per token. Words "
        "come from the data's word_starts (a token and its ## pieces; Chinese words from tokenize's "
        "input.segment_words).",
    )
    eval_seed: Seed = Field(1234, description="Seed of the evaluation masks: the same masks at every evaluation.")

    @model_validator(mode="after")
    def _probabilities(self) -> MaskingSection:
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise ValueError("mask_replace_prob + random_replace_prob must not exceed 1")
        return self


class OutputSection(Section):
    dir: str = Field("runs/pretrain", json_schema_extra=PATH, description="Output directory (`--output` sets it).")


class PretrainConfig(Section):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    masking: MaskingSection = Field(default_factory=MaskingSection)
    objective: Literal["mlm+nsp", "mlm"] = Field(
        "mlm+nsp", description="mlm+nsp: masked LM plus next-sentence prediction (BERT); mlm: masked LM only."
    )
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection = Field(default_factory=OutputSection)

    @model_validator(mode="after")
    def _need_data(self) -> PretrainConfig:
        if not self.data.dirs:
            raise ValueError("no data: give tokenize output directories as arguments or set data.dirs")
        return self


# Sections whose change makes a checkpoint a different run: resuming across such a change is refused.
# "model" includes model.init_from: a resumed continued-pretraining run must name the checkpoint it began from.
RESUME_MUST_MATCH = ("model", "model.init_from", "data.dirs", "data.batch_size", "masking", "objective")
