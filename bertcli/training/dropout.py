"""Dropout on the CPU, three to five times faster than torch's, with masks in the same distribution.

torch makes a CPU dropout mask with `bernoulli_`, one Mersenne Twister number per element. In a fine-tuning step of a
4-layer, 256-wide BERT on two cores, the masks took a tenth of the step. Here the random bits come from numpy's
SFC64 generator instead, 64 bits per draw, split into two 32-bit numbers. An element is kept when its number is at
least round(p * 2**32): with probability 1 - p, to within 2**-33. A kept element is scaled by 1 / (1 - p), as
`F.dropout` scales it.

Each mask's generator is seeded from torch's global generator (one `torch.randint`). So `set_seed` decides the masks,
and a resumed run, whose torch RNG state Accelerate restores, draws the same masks as a run that never stopped.

On a GPU, and wherever dropout is not training, `F.dropout` runs as it is: its fused kernel is already fast there.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)`, with the mask drawn as the module docstring says when `x` is on the CPU."""
    if not training or p == 0.0:
        return x
    # Under torch.compile (train.compile) too: inductor fuses torch's mask into the kernels, and numpy cannot be traced.
    if x.device.type != "cpu" or p >= 1.0 or torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)
    return x * keep_mask(x.shape, p, x.dtype)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A CPU tensor of `shape`: 1 / (1 - p) where an element is kept (probability 1 - p), 0 where it is dropped."""
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
    bits = np.random.SFC64(seed).random_raw((n + 1) // 2).view(np.uint32)[:n]
    threshold = np.uint32(min(round(p * 2**32), 2**32 - 1))
    mask = np.multiply(bits >= threshold, np.float32(1.0 / (1.0 - p)), dtype=np.float32)
    return torch.from_numpy(mask).view(shape).to(dtype)


class FastDropout(nn.Dropout):
    """`nn.Dropout` whose training forward is `dropout` above. It has no weights, so a model holding it saves and loads
    exactly as one holding `nn.Dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every `nn.Dropout` inside `model` with a `FastDropout` of the same p; returns how many were replaced.
    Dropout applied through `F.dropout` calls or inside attention kernels is not reached by this."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                fast = FastDropout(child.p)
                fast.train(child.training)
                setattr(module, name, fast)
                replaced += 1
    return replaced
