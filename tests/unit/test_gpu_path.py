"""The GPU path, checked on the CPU: `mixed_precision: auto`, the loop's deferred loss checks (no host read per step
off the CPU), and the CPU-only tricks (numpy dropout masks, written-out attention, the skipped clipping pass) being
off on any other device. A fake device stands in for the GPU: the `meta` device, or a patched device check."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType

from bertcli import modeling
from bertcli.config import dump_config, load_config
from bertcli.errors import ConfigError, RunFailure
from bertcli.schema.pretrain import PretrainConfig
from bertcli.training import devices, dropout, loop
from bertcli.training.loop import LoopHooks, LoopSettings, LoopState, train_loop

# --- mixed_precision: auto ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cuda", "bf16", "cpu", "env", "expected"),
    [
        (True, True, False, None, "bf16"),  # an Ampere or later GPU
        (True, False, False, None, "no"),  # an older GPU: fp32, not an error
        (False, False, False, None, "no"),  # the CPU
        (True, True, True, None, "no"),  # told to use the CPU (gloo processes)
        (True, True, False, "true", "no"),  # accelerate launch --cpu
    ],
)
def test_auto_precision_is_bf16_only_on_a_cuda_gpu_that_has_it(monkeypatch, cuda, bf16, cpu, env, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    if env:
        monkeypatch.setenv("ACCELERATE_USE_CPU", env)
    assert devices.resolve_precision("auto", cpu=cpu) == expected
    for explicit in ("no", "bf16", "fp16"):  # an explicit value is kept (and checked by make_accelerator)
        assert devices.resolve_precision(explicit, cpu=cpu) == explicit


def test_auto_is_the_default_and_the_resolved_precision_is_what_the_config_records(tmp_path):
    cfg = load_config(PretrainConfig, None, ["data.dirs=[x]", "train.tensorboard=false"])
    assert cfg.train.mixed_precision == "auto"
    acc = devices.make_accelerator(cfg.train, str(tmp_path))
    assert acc.mixed_precision == "no" and cfg.train.mixed_precision == "no"  # this machine has no GPU
    assert "mixed_precision: 'no'" in dump_config(cfg, "pretrain")


def test_a_bare_no_is_fp32_and_other_booleans_are_still_refused():
    cfg = load_config(PretrainConfig, None, ["data.dirs=[x]", "train.mixed_precision=no"])
    assert cfg.train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        load_config(PretrainConfig, None, ["data.dirs=[x]", "train.mixed_precision=yes"])


def test_batches_are_copied_to_the_gpu_without_blocking_and_the_loader_settings_are_kept():
    given = DataLoaderConfiguration(use_seedable_sampler=True, data_seed=7)
    made = devices._non_blocking(given)
    assert made.non_blocking and made.use_seedable_sampler and made.data_seed == 7
    assert not given.non_blocking  # the caller's configuration is not changed
    assert devices._non_blocking(None).non_blocking


# --- the loop: loss checks deferred off the CPU -------------------------------------------------------------------


def _run_loop(tmp_path, nan_at: int | None = None, stop_at: int | None = None, **settings):
    """A linear model trained for `max_steps` one-batch steps; the loss is NaN from step `nan_at` on; SIGINT arrives
    during step `stop_at`. Returns (status or the RunFailure, logged train records, saved steps)."""
    torch.manual_seed(0)
    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    rows = [{"input_ids": torch.randn(3)} for _ in range(64)]
    model, optimizer, loader = acc.prepare(model, optimizer, torch.utils.data.DataLoader(rows, batch_size=4))
    calls, records, saved = [0], [], []

    def forward(model, batch):
        calls[0] += 1
        if calls[0] == stop_at:
            os.kill(os.getpid(), signal.SIGINT)
        loss = model(batch["input_ids"]).pow(2).mean()
        return (loss * float("nan") if nan_at and calls[0] >= nan_at else loss), {}

    hooks = LoopHooks(
        forward=forward,
        summarize=lambda totals: {},
        log=lambda r: records.append(r) if r["split"] == "train" else None,
        save=lambda state: saved.append(state.step),
    )
    cfg = LoopSettings(**{"max_steps": 8, "log_every": 4, "eval_every": 0, "save_every": 0, "max_grad_norm": 1.0,
                          **settings})  # fmt: skip
    try:
        status = train_loop(acc, model, optimizer, scheduler, loader, cfg, hooks, LoopState())
    except RunFailure as err:
        status = err
    return status, records, saved


@pytest.fixture
def deferred(monkeypatch):
    """The loop as it runs on a GPU: the loss is read on the host at scheduled steps only."""
    monkeypatch.setattr(loop, "defers_loss_checks", lambda acc: True)
    reads = []
    original = loop._Meter.nonfinite_since_check
    monkeypatch.setattr(loop._Meter, "nonfinite_since_check", lambda self: reads.append(1) or original(self))
    return reads


def test_off_the_cpu_a_nan_loss_is_reported_at_the_next_log_step_with_the_steps_between_and_nothing_saved(
    tmp_path, deferred
):
    status, records, saved = _run_loop(tmp_path, nan_at=3)
    assert isinstance(status, RunFailure)
    assert "between step 1 and step 4" in str(status) and "without saving" in str(status)
    assert records == [] and saved == []  # the check comes before the log line and any save
    assert len(deferred) == 1  # read once, at step 4, not at steps 1-3


def test_off_the_cpu_a_save_step_checks_the_loss_first(tmp_path, deferred):
    status, _, saved = _run_loop(tmp_path, nan_at=3, save_every=2, log_every=100)
    assert isinstance(status, RunFailure) and "between step 3 and step 4" in str(status)
    assert saved == [2]  # step 2 was checked finite and saved; nothing after the NaN


def test_on_the_cpu_the_loss_is_checked_every_step(tmp_path, monkeypatch):
    reads = []
    original = loop._Meter.nonfinite_since_check
    monkeypatch.setattr(loop._Meter, "nonfinite_since_check", lambda self: reads.append(1) or original(self))
    status, _, saved = _run_loop(tmp_path, nan_at=3)
    assert isinstance(status, RunFailure) and "at step 3;" in str(status) and saved == []
    assert len(reads) == 3


def test_deferred_checks_log_the_same_records_and_read_the_loss_only_at_log_steps(tmp_path, monkeypatch):
    status, every_step, saved = _run_loop(tmp_path)
    reads = []
    original = loop._Meter.nonfinite_since_check
    monkeypatch.setattr(loop._Meter, "nonfinite_since_check", lambda self: reads.append(1) or original(self))
    monkeypatch.setattr(loop, "defers_loss_checks", lambda acc: True)
    status_deferred, deferred_records, saved_deferred = _run_loop(tmp_path)
    assert status == status_deferred == "completed" and saved == saved_deferred == [8]
    assert len(reads) == 2  # steps 4 and 8
    keys = ("step", "loss", "grad_norm", "lr")
    assert [{k: r[k] for k in keys} for r in every_step] == [{k: r[k] for k in keys} for r in deferred_records]
    assert [r["step"] for r in every_step] == [4, 8]


def test_off_the_cpu_one_process_still_stops_at_the_step_a_signal_arrives(tmp_path, deferred):
    status, _, saved = _run_loop(tmp_path, stop_at=2)
    assert status == "interrupted" and saved == [2]


# --- CPU-only tricks are off on other devices ---------------------------------------------------------------------


def test_numpy_dropout_masks_are_drawn_on_the_cpu_only(monkeypatch):
    def no_numpy_mask(*args, **kwargs):
        raise AssertionError("numpy mask drawn for a tensor that is not on the CPU")

    monkeypatch.setattr(dropout, "keep_mask", no_numpy_mask)
    out = dropout.dropout(torch.empty(4, 8, device="meta"), 0.1)  # F.dropout's own kernel
    assert out.device.type == "meta" and out.shape == (4, 8)
    with pytest.raises(AssertionError, match="numpy mask"):  # and on the CPU, the numpy mask
        dropout.dropout(torch.ones(4, 8), 0.1)


def test_attention_runs_sdpa_off_the_cpu_even_with_dropout(monkeypatch):
    seen = []

    def fake_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, scale=None):
        seen.append((query.device.type, dropout_p))
        return query

    monkeypatch.setattr(modeling.F, "scaled_dot_product_attention", fake_sdpa)
    q = torch.empty(2, 4, 8, 16, device="meta")
    modeling.attention(q, q, q, None, 0.1, 0.25)
    assert seen == [("meta", 0.1)]  # SDPA with its own dropout: flash / memory-efficient kernels on a GPU
    cpu = torch.randn(2, 4, 8, 16)
    modeling.attention(cpu, cpu, cpu, None, 0.1, 0.25)
    assert seen == [("meta", 0.1)]  # the CPU with dropout: the written-out steps, numpy masks
    modeling.attention(cpu, cpu, cpu, None, 0.0, 0.25)
    assert seen[-1] == ("cpu", 0.0)  # without dropout SDPA everywhere


def test_the_skipped_clipping_pass_is_cpu_only():
    calls = []
    fake_gpu = SimpleNamespace(
        distributed_type=DistributedType.NO,
        scaler=None,
        device=torch.device("cuda"),
        clip_grad_norm_=lambda params, max_norm: calls.append(max_norm) or torch.tensor(0.0),
    )
    model = torch.nn.Linear(2, 2)
    model.weight.grad = torch.ones(2, 2)
    loop.clip_grad_norm(fake_gpu, model, 1.0)
    assert calls == [1.0]  # Accelerate's clip_grad_norm_ (torch's foreach kernels, no host read)
