"""Which device a run may use: shared by pretrain, finetune and eval so that all three launch alike."""

from __future__ import annotations

import os

import torch


def has_accelerator_device() -> bool:
    """A GPU (CUDA, XPU, NPU) or Apple's MPS is present."""
    from accelerate.utils import is_mps_available, is_npu_available, is_xpu_available

    return torch.cuda.is_available() or is_xpu_available() or is_npu_available() or is_mps_available()


def distributed_without_accelerator() -> bool:
    """Under torchrun on a machine without GPUs, Accelerate forms a gloo process group only when told `cpu`
    (`accelerate launch --cpu` tells it through ACCELERATE_USE_CPU; torchrun does not). Without it, every
    process would train alone and write the same output."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator_device()
