"""`train.compile`: the forward the training loop calls, through `torch.compile` (inductor), falling back to the plain
forward where it cannot compile.

The module's `forward` is replaced, not the module: `torch.compile(module)` would hand the loop an `OptimizedModule`
whose state_dict keys carry an `_orig_mod.` prefix through Accelerate's save_state and get_state_dict. Here the module
stays itself, so checkpoints, `--resume` (compiled or not, either way round) and `save_pretrained` are unchanged.

`dynamic=True`: batches are padded to their longest example, so the length changes from batch to batch, and a
pretraining batch's count of masked positions (the rows its MLM head scores) changes with every batch; traced with
symbolic sizes from the first call, one graph serves them all instead of one compile per size (tested).
Compilation happens at the first training step (the backward's graph at its first backward), and again at the first
evaluation (eval mode without gradients is another graph). Where it fails there (no C++ compiler for inductor's CPU
kernels, an operator inductor cannot lower, a dynamo error), that call and every later one run the plain forward, and
one line says why. A backward that compiled its forward but fails to compile itself is not caught here (it happens
inside the loop's `backward`); none is known.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NOTICE = "train.compile: could not compile ({reason}); running uncompiled"
BACKEND = "inductor"  # torch.compile's default, on the CPU as on the GPU


class CompiledForward:
    """A module's forward compiled by `torch.compile`; the plain forward once compilation has failed.

    `failed`: the reason it fell back, or None while the compiled forward runs."""

    def __init__(self, forward: Callable, notify: Callable[[str], None] = print, backend: str | Callable = BACKEND):
        self.plain = forward
        # The graphs are kept per forward's code, with the weights as their inputs: the next seed of a finetune run,
        # or a resumed run in the same process, reuses them instead of compiling again (tested).
        self.compiled = torch.compile(forward, backend=backend, dynamic=True)
        self.notify = notify
        self.failed: str | None = None

    def __call__(self, *args, **kwargs):
        if self.failed is not None:
            return self.plain(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any failure to compile: the plain forward decides
            # An error of the model itself (wrong inputs) fails the plain forward too, and is raised from there
            # before any notice: only a forward that runs plain but not compiled is a failure to compile.
            out = self.plain(*args, **kwargs)
            self.failed = _reason(err)
            self.notify(NOTICE.format(reason=self.failed))
            return out


def compile_forward(module: nn.Module, notify: Callable[[str], None] = print, backend: str | Callable | None = None):
    """Replace `module.forward` with its compiled form (`CompiledForward`, returned); call before
    `accelerator.prepare`, which wraps the forward for mixed precision. `notify` prints the fallback notice (on the
    main process: `accelerator.print`). `backend`: None for `BACKEND`."""
    compiled = CompiledForward(module.forward, notify, backend or BACKEND)
    module.forward = compiled
    return compiled


def _reason(err: BaseException) -> str:
    """The error's first line, short enough for one console line. Dynamo's wrapper of a backend's failure begins
    "backend='inductor' raised:": the cause is the line after it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith("raised:"):
        lines = lines[1:]
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
