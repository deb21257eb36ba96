"""The `train` section shared by `pretrain` and `finetune`: optimizer, schedule, length, precision, seed,
logging, evaluation and checkpoint cadence. Each field's description is its documentation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bertcli.config import Section, Seed

# The names transformers.get_scheduler accepts that need nothing beyond warmup and total steps.
Schedule = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
]


class TrainSection(Section):
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0, description="Peak learning rate of AdamW.")
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW beta1.")
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0, description="AdamW beta2 (0.98 is common for large batches).")
    adam_epsilon: float = Field(1e-6, gt=0.0, description="AdamW epsilon.")
    weight_decay: float = Field(
        0.01, ge=0.0, description="Decoupled weight decay; never applied to biases and LayerNorm weights."
    )
    scheduler: Schedule = Field("linear", description="Learning-rate schedule (transformers.get_scheduler name).")
    warmup_steps: int = Field(0, ge=0, description="Warmup optimizer steps; wins over warmup_ratio when > 0.")
    warmup_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Warmup as a share of the total steps.")
    max_steps: int | None = Field(
        1000, ge=1, description="Optimizer steps to train for. null: train for `epochs` instead."
    )
    epochs: float | None = Field(
        None, gt=0.0, description="Passes over the training data; used only when max_steps is null."
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches per optimizer step (global batch = batch x processes x this)."
    )
    max_grad_norm: float | None = Field(
        1.0,
        gt=0.0,
        description="Clip the gradient norm to this; null: no clipping (the norm is still logged).",
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto",
        description="Autocast precision: auto (bf16 on a CUDA GPU that supports it, else no), no (fp32), bf16, "
        "fp16 (GPU only). The run's config.yaml records what auto resolved to.",
    )
    seed: Seed = Field(42, description="Seed of weights init, data order, masking and dropout.")
    log_every: int = Field(10, ge=1, description="Log train metrics every N optimizer steps.")
    eval_every: int = Field(
        200,
        ge=0,
        description="Evaluate on the validation split every N steps (and at the end); 0: only at the end.",
    )
    eval_max_batches: int | None = Field(
        None, ge=1, description="Evaluate on at most this many validation batches per process; null: all."
    )
    save_every: int = Field(
        500,
        ge=0,
        description="Save a resumable checkpoint (weights, optimizer state, schedule, RNG: what --resume needs) "
        "every N steps; 0: only at the end of a pretrain run (and when Ctrl-C or SIGTERM stops a run).",
    )
    keep_last: int = Field(
        2,
        ge=0,
        description="Keep the newest K checkpoints; older ones are deleted. 0: none once the run completes (only "
        "final/ or best/ stays, and no end-of-run checkpoint is written; while the run goes on, and after a stop, "
        "the newest is kept for --resume).",
    )
    tensorboard: bool = Field(True, description="Also log to TensorBoard (OUTPUT/logs) through Accelerate.")
    compile: bool = Field(
        False,
        description="Run the model's forward and backward through torch.compile (inductor, dynamic shapes): compiled "
        "at the first step and the first evaluation (minutes on a CPU), then faster where it wins; off until measured. "
        "Where it cannot compile (no C++ compiler, an unsupported operator), one line says why and training runs "
        "uncompiled.",
    )

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _bare_no(cls, value):
        return "no" if value is False else value  # YAML reads a bare no (--set train.mixed_precision=no) as false

    @model_validator(mode="after")
    def _length(self) -> TrainSection:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set train.max_steps or train.epochs")
        return self
