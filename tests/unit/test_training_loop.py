"""The loop's gradient clipping: Accelerate's numbers, without rescaling gradients by 1; its throughput figures."""

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


class _FakeClock:
    """time for the loop module: each training forward takes 1 s, an evaluation 100 s, a save 50 s."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_samples_per_s_leaves_out_evaluation_and_saving(monkeypatch):
    # Issue 28: the rate logged after an evaluation was inflated (the clock restarted at the evaluation but the
    # samples of the steps before it still counted). With a fake clock, every logged rate is exactly the training's.
    from bertcli.training import loop

    clock = _FakeClock()
    monkeypatch.setattr(loop, "time", clock)
    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    rows = [{"input_ids": torch.ones(4, dtype=torch.long)} for _ in range(64)]
    loader = torch.utils.data.DataLoader(rows, batch_size=2)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def forward(m, batch):
        clock.now += 1.0
        return m(batch["input_ids"].float()).mean(), {}

    def evaluate(m):
        clock.now += 100.0
        return {"eval_loss": 0.0}

    def save(state):
        clock.now += 50.0

    records = []
    hooks = loop.LoopHooks(forward, lambda totals: {}, records.append, save, evaluate)
    settings = loop.LoopSettings(max_steps=10, log_every=4, eval_every=3, save_every=5, max_grad_norm=None)
    assert loop.train_loop(acc, model, optimizer, scheduler, loader, settings, hooks, loop.LoopState()) == "completed"
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [4, 8, 10]
    assert [r["samples_per_s"] for r in train] == [2.0, 2.0, 2.0]  # 2 samples per 1-second step
    assert [r["tokens_per_s"] for r in train] == [8.0, 8.0, 8.0]
