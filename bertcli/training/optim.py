"""AdamW with BERT's parameter groups, and the learning-rate schedule from `transformers.get_scheduler`."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import get_scheduler

from bertcli.schema.train import TrainSection


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights that decay, and biases / LayerNorm (and other norm) parameters that do not, as BERT
    does.

    A parameter tied to another (the MLM decoder and the word embeddings) is listed once.
    """
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d)
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, norm_types):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay, seen = [], [], set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        is_bias = name.split(".")[-1] == "bias"
        (no_decay if is_bias or id(param) in no_decay_ids else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, train: TrainSection) -> torch.optim.AdamW:
    # fused: one kernel updates every tensor (CPU and CUDA), as HF Trainer's default adamw_torch_fused does.
    return torch.optim.AdamW(
        parameter_groups(model, train.weight_decay),
        lr=train.learning_rate,
        betas=(train.adam_beta1, train.adam_beta2),
        eps=train.adam_epsilon,
        fused=True,
    )


def warmup_steps(train: TrainSection, total_steps: int) -> int:
    """Warmup in optimizer steps: `warmup_steps` when set, else `warmup_ratio` of the total."""
    return train.warmup_steps if train.warmup_steps > 0 else math.ceil(train.warmup_ratio * total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainSection, total_steps: int):
    """The schedule, stepped once per optimizer step (the loop steps it itself, not through Accelerate)."""
    return get_scheduler(
        train.scheduler,
        optimizer,
        num_warmup_steps=warmup_steps(train, total_steps),
        num_training_steps=total_steps,
    )
