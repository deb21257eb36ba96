"""The loop's gradient clipping: Accelerate's numbers, without rescaling gradients by 1."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator

from bertcli.training.loop import clip_grad_norm


def _model_with_grads(scale: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 2))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * scale
    model[1].bias.grad = None  # a parameter without a gradient is left out, as torch leaves it out
    return model


@pytest.mark.parametrize(("scale", "max_norm"), [(10.0, 1.0), (0.01, 1.0), (10.0, math.inf)])
def test_clipping_gives_torchs_norm_and_gradients(scale, max_norm):
    ours, reference = _model_with_grads(scale), _model_with_grads(scale)
    norm = clip_grad_norm(Accelerator(cpu=True), ours, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm)
    assert torch.equal(norm, expected)
    for mine, theirs in zip(ours.parameters(), reference.parameters()):
        assert (mine.grad is None and theirs.grad is None) or torch.equal(mine.grad, theirs.grad)
    clipped = torch.nn.utils.get_total_norm([p.grad for p in ours.parameters() if p.grad is not None])
    assert clipped.item() == pytest.approx(min(expected.item(), max_norm), rel=1e-5)


def test_gradients_within_the_bound_are_not_rewritten():
    model = _model_with_grads(0.01)
    versions = [p.grad._version for p in model.parameters() if p.grad is not None]
    clip_grad_norm(Accelerator(cpu=True), model, 1.0)
    assert [p.grad._version for p in model.parameters() if p.grad is not None] == versions
    big = _model_with_grads(10.0)
    versions = [p.grad._version for p in big.parameters() if p.grad is not None]
    clip_grad_norm(Accelerator(cpu=True), big, 1.0)
    assert all(p.grad._version > v for p, v in zip([p for p in big.parameters() if p.grad is not None], versions))
