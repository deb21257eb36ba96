"""The soft losses of distillation, over logits whose last dimension is one distribution (the labels of an
example or of a piece, a window's pieces, a question's choices).

The teacher's logits arrive as the distillation collator pads them: NaN where the student has nothing to learn. A
distribution whose teacher logits are all NaN (padding, a piece that carries no label) does not count; NaN entries
among real ones (a question's padded choices, a window's padded pieces) are left out of that distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """temperature^2 * KL(softmax(teacher / T) || softmax(student / T)) summed over the last dimension and
    averaged over the distributions that count (Hinton et al. 2015; DistilBERT's loss_ce). 0 when none counts."""
    entries = ~torch.isnan(teacher)
    counted = entries.any(-1)
    lowest = torch.finfo(torch.float32).min
    # left-out entries get no probability in either softmax: the lowest float, not -inf, keeps every value finite
    log_p = F.log_softmax((teacher.float() / temperature).masked_fill(~entries, lowest), dim=-1)
    log_q = F.log_softmax((student.float() / temperature).masked_fill(~entries, lowest), dim=-1)
    kl = torch.where(entries, log_p.exp() * (log_p - log_q), 0.0).sum(-1)
    kl = torch.where(counted, kl, 0.0)
    return temperature**2 * kl.sum() / counted.sum().clamp(min=1)


def soft_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The mean squared difference of the raw logits over the entries that count (regression: the scores)."""
    entries = ~torch.isnan(teacher)
    diff = torch.where(entries, student.float() - teacher.float().nan_to_num(0.0), 0.0)
    return (diff**2).sum() / entries.sum().clamp(min=1)


def soft_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """`distill.soft_loss`: kl (`soft_kl`) or mse (`soft_mse`)."""
    if student.shape != teacher.shape:
        raise RuntimeError(f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ")
    return soft_kl(student, teacher, temperature) if kind == "kl" else soft_mse(student, teacher)
