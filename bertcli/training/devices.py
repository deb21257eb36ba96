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


def resolve_precision(requested: str, cpu: bool = False) -> str:
    """The precision a run trains in: `requested` itself, except "auto", which is bf16 on a CUDA GPU that has it
    (Ampere and later: the same range as fp32, so no loss scaler) and "no" (fp32) anywhere else: the CPU, where
    bf16 autocast is slower than fp32 on most processors, an older GPU, MPS. `cpu`: the run is told to use the
    CPU although a GPU may be present (as `accelerate launch --cpu` tells it, through ACCELERATE_USE_CPU)."""
    from accelerate.utils import parse_flag_from_env

    if requested != "auto":
        return requested
    on_cuda = not (cpu or parse_flag_from_env("ACCELERATE_USE_CPU")) and torch.cuda.is_available()
    return "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "no"


def make_accelerator(train, project_dir: str, **kwargs):
    """The Accelerator of a training run (pretrain, finetune) from its `train` section, with the precision checks
    Accelerate itself does not make: bf16 on a device without it, and fp16 on the CPU, where Accelerate would
    silently train in fp32. `kwargs` go to Accelerator as they are.

    `train.mixed_precision: auto` is replaced in `train` by what it resolved to (`resolve_precision`), so the
    config.yaml, checkpoints and model cards written afterwards record the precision the run trained in."""
    from accelerate import Accelerator
    from accelerate.utils import is_bf16_available

    from bertcli.errors import UsageError

    cpu = distributed_without_accelerator()
    precision = train.mixed_precision = resolve_precision(train.mixed_precision, cpu)
    if precision == "bf16" and not is_bf16_available(ignore_tpu=True):
        raise UsageError("train.mixed_precision=bf16: this device does not support bf16; use fp16 on a GPU, or no")
    if precision == "fp16" and not has_accelerator_device():
        raise UsageError("train.mixed_precision=fp16 needs a GPU and this machine has none; use bf16 or no")
    if torch.cuda.is_available() and not cpu:
        kwargs["dataloader_config"] = _non_blocking(kwargs.get("dataloader_config"))
    try:
        acc = Accelerator(
            cpu=cpu,
            mixed_precision=precision,
            gradient_accumulation_steps=train.gradient_accumulation_steps,
            log_with="tensorboard" if train.tensorboard else None,
            project_dir=project_dir,
            **kwargs,
        )
    except ValueError as err:  # Accelerate's own refusal of a precision/device combination
        raise UsageError(f"train.mixed_precision={precision}: {err}") from None
    if precision == "fp16" and acc.device.type == "cpu":
        raise UsageError("train.mixed_precision=fp16 needs a GPU and this run is on the CPU; use bf16 or no")
    return acc


def _non_blocking(config):
    """`config` (a DataLoaderConfiguration, or None for the default one) with non-blocking copies to the device:
    a blocking copy of a batch waits until the GPU has finished every step queued before it, a wait every step.
    The loaders pin their batches on CUDA machines, so the copy can overlap the previous step."""
    from dataclasses import replace

    from accelerate.utils import DataLoaderConfiguration

    return replace(config or DataLoaderConfiguration(), non_blocking=True)
