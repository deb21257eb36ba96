"""What every family's evaluation shares (`bertcli eval`, and the evaluations during `bertcli finetune`): timing
the model code's import, loading quietly, batches in length order, and predictions gathered from every process.
`bertcli.pipelines.evaluate` and the families import it; it imports neither.

Two ways through, the same code in the families: on torch, a DataLoader sharded by Accelerate, the forward under
`torch.no_grad`, tensors gathered from every process; with `--runtime onnx` in one process (`OneProcess`
in place of the Accelerator), numpy batches straight from the collator's `arrays` into ONNX Runtime, and neither
torch nor Accelerate is imported: on short inputs their import is most of a CI eval's start-up."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # type names only: torch is imported where it runs
    import torch


def import_modeling(runtime: str = "torch") -> None:
    """Import transformers' model code (most of a CI eval's start-up) at a point where it can be timed; not for
    `--runtime onnx`, which runs the exported graph (and imports the model code only to export one first)."""
    if runtime == "onnx":
        return
    import transformers.modeling_utils  # noqa: F401
    from transformers.models.bert import modeling_bert  # noqa: F401 - the architecture this tool is about


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No transformers warnings or progress bars while loading: stderr keeps one line per problem."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class OneProcess:
    """What evaluation asks of an `accelerate.Accelerator`, for `--runtime onnx` in one process: every batch is
    this process's, gathering returns what it is given, and nothing is waited for. Nothing here imports torch."""

    is_main_process = True
    num_processes = 1
    process_index = 0

    def wait_for_everyone(self) -> None:
        pass

    def gather_for_metrics(self, values):
        return values

    def pad_across_processes(self, values, dim: int = 0, pad_index=0):
        return values


def eval_accelerator(cfg):
    """The Accelerator evaluation runs under, or `OneProcess` for an ONNX Runtime eval started without a launcher
    (Accelerate would import torch for nothing). Made before anything else touches Accelerate's process state."""
    if cfg.model.runtime == "onnx" and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return OneProcess()
    from accelerate import Accelerator

    from bertcli.training.devices import distributed_without_accelerator

    return Accelerator(cpu=cfg.run.device == "cpu" or distributed_without_accelerator())


def eval_batches(accelerator, order: np.ndarray, batch_size: int, collate):
    """Batches of `collate` over the example indices in `order`, `batch_size` at a time: numpy arrays from
    `collate.arrays` in one process without torch (`OneProcess`; a collate_fn that is no `Collator` gives its
    tensors there, which ONNX Runtime's forward takes too), else tensors from a plain sequential DataLoader that
    Accelerate shards across processes (it counts the last batch's remainder like any dataset's)."""
    if isinstance(accelerator, OneProcess):
        make = getattr(collate, "arrays", collate)
        return (make(order[i : i + batch_size]) for i in range(0, len(order), batch_size))
    from torch.utils.data import DataLoader

    loader = DataLoader(Positions(order), batch_size=batch_size, collate_fn=collate)
    return accelerator.prepare_data_loader(loader)


class Positions:
    """Example indices in evaluation order (longest first), a map-style dataset: a plain sequential DataLoader
    over it batches by length, and Accelerate can shard it and count its remainder like any dataset."""

    def __init__(self, order: np.ndarray):
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> int:
        return int(self.order[i])


def no_grad(accelerator):
    """`torch.no_grad()` around a torch evaluation's forwards; nothing around ONNX Runtime's."""
    if isinstance(accelerator, OneProcess):
        return nullcontext()
    import torch

    return torch.no_grad()


def as_numpy(value) -> np.ndarray:
    """A batch's array or tensor (on any device) as a numpy array: logits as float32 or wider."""
    if isinstance(value, np.ndarray):
        return value
    if value.is_floating_point() and value.element_size() < 4:
        value = value.float()
    return value.cpu().numpy()


def load_trained_head(path: str, auto_class, model_name: str, head_name: str, head_key: str):
    """The model in `path` through `auto_class` (in eval mode), or a one-line error: it cannot be loaded as a
    `model_name`, or its head (parameters named `head_key`) is missing, so a fresh one would score at random."""
    from bertcli.errors import UsageError

    try:
        with quiet_loading():
            model, info = auto_class.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: cannot load a {model_name} ({str(err).splitlines()[0]})") from None
    missing = [k for k in info.get("missing_keys", []) if head_key in k]
    if missing:
        raise UsageError(f"{path} has no trained {head_name} head (missing {', '.join(sorted(missing))})")
    return model.eval()


def eval_forward(family, path: str, cfg, accelerator, load_model: Callable[[], torch.nn.Module]):
    """The forward that evaluation calls per batch, `m(input_ids, token_type_ids, attention_mask, ...)` -> logits,
    on the runtime `cfg.model.runtime` names. torch: `load_model()` (the trained model, in eval mode) prepared by
    Accelerate, in the family's `forward_module`. onnx: an ONNX Runtime session of the model's onnx/ export at
    `cfg.model.precision`, called the same way (`bertcli.export.onnx_forward`: when the folder has none, one made
    now in a temporary folder, with a note)."""
    if cfg.model.runtime == "onnx":
        from bertcli.export import onnx_forward

        return onnx_forward(family, Path(path), cfg.model.precision, load_model, note)
    return family.forward_module(accelerator.prepare_model(load_model(), evaluation_mode=True))


def max_length_of(cfg, raw: dict) -> int:
    """data.max_seq_length, or fewer: the model cannot take more positions than it has embeddings for (RoBERTa-style
    models: `bertcli.model_dir.max_positions`)."""
    from bertcli.model_dir import fitting_length

    return fitting_length(raw, cfg.data.max_seq_length)


def note(message: str) -> None:
    """A line for the user on stderr (stdout carries the report)."""
    print(message, file=sys.stderr, flush=True)


def predict_features(acc, forward, loader, n: int) -> list[np.ndarray]:
    """Logits of every feature (a token-level family's window), in feature order, gathered from every process
    exactly once."""
    forward.eval()
    out: list[np.ndarray | None] = [None] * n
    with no_grad(acc):
        for batch in loader:
            index = batch.pop("example_index")
            batch.pop("labels", None)
            logits = forward(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"))
            logits = acc.pad_across_processes(logits, dim=1)  # processes pad their batches to different widths
            index, logits = acc.gather_for_metrics((index, logits))
            for i, row in zip(as_numpy(index).tolist(), as_numpy(logits)):
                out[i] = row
    if any(x is None for x in out):
        raise RuntimeError(f"{sum(x is None for x in out)} windows got no prediction")
    return out
