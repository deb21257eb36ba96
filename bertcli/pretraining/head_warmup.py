"""The head warm-up of `pretrain --init-from` a checkpoint without an MLM head (`train.head_warmup_steps`).

Most sentence-transformers and exported encoders are a bare `BertModel`: the MLM head (transform, LayerNorm, bias)
starts from random weights, and a short continued run at an encoder's learning rate spends itself teaching it
while its gradients shake the encoder. So the run first trains the head alone: for its first W optimizer steps the
encoder, word embeddings included (the MLM decoder stays tied to them, so it stays too), gets no update at all,
at a constant `head_warmup_learning_rate`; then every weight trains with the configured schedule, which begins
there at its own step 0 (warmup included) and runs its own length. The run's steps are W + that length.

How the encoder is held still, bit for bit: its gradients are dropped before each update of the warm-up, so AdamW
neither moves it nor decays it, and starts its moments at the first step after the warm-up. In one process its
parameters are also taken out of autograd (requires_grad False), which spares the backward pass through the
encoder; several processes keep autograd as is, as DDP fixes the parameters it reduces when it wraps the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from bertcli.errors import UsageError

MLM_HEAD = "cls.predictions"


def has_new_mlm_head(load_report: dict[str, Any] | None) -> bool:
    """Whether the MLM head started from random weights (a checkpoint without one)."""
    return any(name.startswith(MLM_HEAD) for name in (load_report or {}).get("newly_initialised", []))


def head_warmup_steps(train, load_report: dict[str, Any] | None) -> int:
    """The warm-up that runs: `train.head_warmup_steps` for a checkpoint without an MLM head, else none (a loaded
    head needs none; a model from random weights has no trained encoder to protect)."""
    return train.head_warmup_steps if has_new_mlm_head(load_report) else 0


@dataclass
class HeadWarmup:
    """Freezes `encoder` (the BertModel under the heads) for the run's first `steps` optimizer steps."""

    encoder: torch.nn.Module
    steps: int
    use_autograd: bool  # one process: requires_grad False during the warm-up (no backward through the encoder)

    def set_frozen(self, frozen: bool) -> None:
        if self.use_autograd:
            for param in self.encoder.parameters():
                param.requires_grad_(not frozen)

    def start(self, step: int) -> None:
        """At the run's start, or its resume at `step`: frozen while the warm-up lasts."""
        self.set_frozen(step < self.steps)

    def before_update(self, step: int) -> None:
        """Before the optimizer takes its step `step + 1`: during the warm-up no encoder gradient reaches it (a
        parameter without a gradient is left alone by AdamW: not moved, not decayed, its moments not begun)."""
        if step < self.steps:
            for param in self.encoder.parameters():
                param.grad = None

    def after_step(self, step: int) -> bool:
        """After optimizer step `step`; True at the warm-up's last, when the encoder is released."""
        if step != self.steps:
            return False
        self.set_frozen(False)
        return True


def warmup_schedule(optimizer, main, steps: int, learning_rate: float, head_learning_rate: float) -> LambdaLR:
    """`steps` of the constant `head_learning_rate`, then the configured schedule `main` (a LambdaLR from
    transformers.get_scheduler, built for the main phase's length) from its own step 0. One scheduler, so the
    checkpoint's scheduler.json (its step) restores both phases."""
    factors = main.lr_lambdas
    ratio = head_learning_rate / learning_rate

    def phase(factor):
        return lambda step: ratio if step < steps else factor(step - steps)

    return LambdaLR(optimizer, [phase(f) for f in factors])


def warmup_line(load_report: dict[str, Any] | None, steps: int, learning_rate: float) -> str | None:
    """What the load report says of the MLM head and the warm-up (nothing for a model from random weights)."""
    if load_report is None:
        return None
    if not has_new_mlm_head(load_report):
        return "MLM head loaded from the checkpoint: no head warm-up"
    if not steps:
        return "MLM head: the checkpoint has none, it starts from random weights (no head warm-up: head_warmup_steps 0)"
    return (
        f"MLM head: the checkpoint has none, it starts from random weights: the first {steps} steps train it alone "
        f"(encoder frozen, learning rate {learning_rate:g}), then every weight with the configured schedule "
        "(train.head_warmup_steps)"
    )


def check_resumed_warmup(saved: dict[str, Any], steps: int, learning_rate: float, checkpoint) -> None:
    """A resumed run must keep the warm-up its checkpoint ran with (earlier checkpoints ran none)."""
    was = saved.get("head_warmup", {"steps": 0, "learning_rate": learning_rate})
    if was["steps"] != steps or (steps and was["learning_rate"] != learning_rate):
        raise UsageError(
            f"cannot resume from {checkpoint}: it ran a head warm-up of {was['steps']} steps at learning rate "
            f"{was['learning_rate']:g}, this config {steps} at {learning_rate:g}; set "
            f"train.head_warmup_steps={was['steps']} and train.head_warmup_learning_rate={was['learning_rate']:g}"
        )
