"""The one training loop, on Accelerate, shared by `pretrain` and `finetune`.

It knows nothing of what is trained: a `forward(model, batch) -> (loss, sums)` hook gives the loss to minimise
and per-example sums (loss sums, correct predictions, counts, each a tensor of shape [batch]);
`summarize(totals)` turns summed totals into the reported metrics; `evaluate(model)` and `save(state)` are
called on schedule; `log(record)` receives every record. Resume = `accelerator.load_state` + the `LoopState`
saved beside it: the loop re-enters the same epoch (same shuffled order) and skips the batches already trained
on."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, skip_first_batches
from accelerate.utils import DistributedType
from tqdm.auto import tqdm

from bertcli.errors import RunFailure
from bertcli.outputs import write_failure

Forward = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict[str, torch.Tensor]]]
Summarize = Callable[[dict[str, float]], dict[str, float]]


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of the current epoch already trained on (per process)
    samples: int = 0  # sequences seen, all processes
    tokens: int = 0  # non-padding tokens seen, all processes


@dataclass
class LoopSettings:
    max_steps: int
    log_every: int
    eval_every: int  # 0: only at the end
    save_every: int  # 0: only at the end
    max_grad_norm: float | None


@dataclass
class LoopHooks:
    forward: Forward
    summarize: Summarize
    log: Callable[[dict[str, Any]], None]
    save: Callable[[LoopState], None]
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None


def train_loop(
    acc: Accelerator,
    model,
    optimizer,
    scheduler,
    loader,
    cfg: LoopSettings,
    hooks: LoopHooks,
    state: LoopState,
) -> str:
    """Train from `state` to `cfg.max_steps`. Returns "completed", or "interrupted" after SIGINT/SIGTERM (a
    checkpoint is saved first). A NaN or infinite loss raises RunFailure naming the step; nothing is saved.

    On the CPU the loss is checked every step. Elsewhere (`defers_loss_checks`) reading it would make the host wait
    for the device every step, so a device-side flag is read at log, eval and save steps and at the last one only
    (the error then names the steps between two checks); a stop signal with several processes, which they must
    agree on, is acted on at those steps too."""
    meter, deferred, checked = _Meter(), defers_loss_checks(acc), state.step
    bar = tqdm(total=cfg.max_steps, initial=state.step, desc="train", disable=not acc.is_local_main_process)
    model.train()
    with _StopSignals() as stop, bar:  # the bar is closed however the loop ends: an error prints on its own line
        while state.step < cfg.max_steps:
            _set_epoch(loader, state.epoch)
            batches = skip_first_batches(loader, state.batches_in_epoch) if state.batches_in_epoch else loader
            for batch in batches:
                with acc.accumulate(model):
                    loss, sums = hooks.forward(model, batch)
                    acc.backward(loss)
                    meter.add(loss, sums, batch)
                    if acc.sync_gradients:
                        meter.grad_norm += clip_grad_norm(acc, model, cfg.max_grad_norm or math.inf)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                state.batches_in_epoch += 1
                if not acc.sync_gradients:
                    continue
                state.step += 1
                bar.update()
                meter.end_step()
                last = state.step >= cfg.max_steps
                evaluate = hooks.evaluate is not None and (last or _every(state.step, cfg.eval_every))
                scheduled = last or evaluate or _every(state.step, cfg.log_every) or _every(state.step, cfg.save_every)
                if deferred and not scheduled and not (stop.requested and acc.num_processes == 1):
                    continue
                nonfinite, stop_now = _agree(acc, meter.nonfinite_since_check(), stop.requested)
                if nonfinite:
                    raise RunFailure(
                        f"the loss became NaN or infinite {_steps(checked + 1, state.step)}; stopped without saving "
                        "(the last checkpoint is kept). Lower train.learning_rate or set max_grad_norm"
                    )
                checked = state.step
                if state.step % cfg.log_every == 0 or last:
                    hooks.log(meter.record(acc, state, hooks.summarize, scheduler.get_last_lr()[0]))
                if evaluate:
                    with meter.paused():  # throughput is of training: evaluation and saving take no part
                        hooks.log({"step": state.step, "split": "eval", **hooks.evaluate(model)})
                    model.train()
                if last or stop_now or _every(state.step, cfg.save_every):
                    with meter.paused():
                        hooks.save(state)
                if stop_now:
                    return "interrupted"
                if last:
                    break
            else:
                state.epoch += 1
                state.batches_in_epoch = 0
    return "completed"


def defers_loss_checks(acc: Accelerator) -> bool:
    """Whether the loop reads the loss's finiteness only at log, eval, save and last steps: off the CPU, where a
    read on the host waits for the device to finish the step (on the CPU it is free, so every step)."""
    return acc.device.type != "cpu"


def _every(step: int, period: int) -> bool:
    return period > 0 and step % period == 0


def _steps(first: int, last: int) -> str:
    return f"at step {last}" if first >= last else f"between step {first} and step {last}"


def clip_grad_norm(acc: Accelerator, model, max_norm: float) -> torch.Tensor:
    """The gradients' total norm before clipping; gradients above `max_norm` are scaled down to it.

    Accelerate's `clip_grad_norm_` always rescales every gradient, by 1 when the norm is within `max_norm`. On the
    CPU, without sharding or a loss scaler, this skips that pass when the factor would be 1: the same gradients,
    one read and write of each fewer on every step that clips nothing. Elsewhere, Accelerate's does it (it knows
    FSDP and DeepSpeed).
    """
    plain = acc.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU) and acc.scaler is None
    if not plain or acc.device.type != "cpu":
        return acc.clip_grad_norm_(model.parameters(), max_norm)
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if max_norm / (norm + 1e-6) < 1.0:  # clip_grads_with_norm_'s own factor, before it is clamped to 1
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def evaluate_sums(
    acc: Accelerator, model, loader, forward: Forward, summarize: Summarize, max_batches: int | None = None
) -> dict[str, float]:
    """Run `forward` over `loader` without gradients; per-example sums are gathered from every process
    (`gather_for_metrics` drops the samples repeated to even out the last batch) and summarised."""
    model.eval()
    totals: dict[str, float] = defaultdict(float)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            _, sums = forward(model, batch)
            for name, value in acc.gather_for_metrics(sums).items():
                totals[name] += float(value.sum())
    return summarize(dict(totals))


class MetricsLog:
    """Every record to metrics.jsonl and to Accelerate's trackers (TensorBoard); a line on the console."""

    def __init__(self, acc: Accelerator, path: Path):
        self.acc, self.path = acc, Path(path)

    def __call__(self, record: dict[str, Any]) -> None:
        if not self.acc.is_main_process:
            return
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as err:  # a full disk: name the file, in one line
            raise (write_failure(err, self.path) or err) from None
        numbers = {f"{record['split']}/{k}": v for k, v in record.items() if isinstance(v, (int, float))}
        self.acc.log(numbers, step=record["step"])
        shown = "  ".join(f"{k} {_fmt(v)}" for k, v in record.items() if k not in ("split", "epoch"))
        tqdm.write(f"[{record['split']}] {shown}")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class _Meter:
    """Sums since the last log line, kept on the device so logging costs one reduction per log, not per
    step; counts known on the host (micro-batches, samples) stay host numbers, so no step copies one over."""

    def __init__(self):
        self.nonfinite: torch.Tensor | None = None  # on the device: a step's loss was NaN/inf since the last check
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = defaultdict(int)
        self.step_loss: torch.Tensor | None = None
        self.grad_norm = 0.0
        self.steps = 0
        self.restart_clock()

    def add(self, loss: torch.Tensor, sums: dict[str, torch.Tensor], batch: dict) -> None:
        loss = loss.detach().float()
        self.step_loss = loss if self.step_loss is None else self.step_loss + loss
        self.counts["_micro_batches"] += 1
        self.counts["_samples"] += len(batch.get("example_index", batch["input_ids"]))  # a packed row holds several
        mask = batch.get("attention_mask")
        if mask is None:
            self.counts["_tokens"] += batch["input_ids"].numel()
        else:
            sums = {**sums, "_tokens": mask.sum()}
        for name, value in {**sums, "_loss": loss}.items():
            value = torch.as_tensor(value, device=loss.device).float().sum()
            self.sums[name] = self.sums[name] + value if name in self.sums else value

    def end_step(self) -> None:
        """Close one optimizer step: fold its loss (summed over micro-batches) into the non-finite flag, on the
        device, without reading it."""
        bad = ~torch.isfinite(self.step_loss)
        self.nonfinite = bad if self.nonfinite is None else self.nonfinite | bad
        self.step_loss, self.steps = None, self.steps + 1

    def nonfinite_since_check(self) -> bool:
        """Read (on the host: a wait for the device off the CPU) and clear the non-finite flag."""
        bad, self.nonfinite = self.nonfinite, None
        return bad is not None and bool(bad)

    def record(self, acc: Accelerator, state: LoopState, summarize: Summarize, lr: float) -> dict[str, Any]:
        names, counted = sorted(self.sums), sorted(self.counts)
        values = [self.sums[n].to(acc.device) for n in names]
        values.append(torch.tensor([float(self.counts[n]) for n in counted], device=acc.device))
        reduced = acc.reduce(torch.cat([torch.stack(values[:-1]), values[-1]]), reduction="sum").tolist()
        totals: dict[str, float] = defaultdict(float)
        for name, value in zip(names + counted, reduced, strict=True):
            totals[name] += value
        seconds = max(time.perf_counter() - self.clock, 1e-9)
        state.samples += int(totals["_samples"])
        state.tokens += int(totals["_tokens"])
        record = {
            "step": state.step,
            "epoch": state.epoch,
            "split": "train",
            "loss": totals["_loss"] / totals["_micro_batches"],
            **summarize(dict(totals)),
            "lr": lr,
            "grad_norm": float(self.grad_norm) / self.steps,
            "samples_per_s": totals["_samples"] / seconds,
            "tokens_per_s": totals["_tokens"] / seconds,
        }
        self._reset()
        return record

    def restart_clock(self) -> None:
        self.clock = time.perf_counter()

    @contextlib.contextmanager
    def paused(self):
        """Time spent inside is left out of samples_per_s and tokens_per_s: the clock's start moves on by it. (A
        restart would drop the training time since the last log line while keeping its samples, and inflate the
        next rate.)"""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.clock += time.perf_counter() - start


def _set_epoch(loader, epoch: int) -> None:
    """Accelerate's loader re-seeds its sampler per epoch; a dataset with `set_epoch` (new masks) is told
    too."""
    loader.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


def _agree(acc: Accelerator, nonfinite: bool, stop: bool) -> tuple[bool, bool]:
    """Every process must take the same branch (or collective calls hang): true on one is true on all."""
    if acc.num_processes == 1:
        return nonfinite, stop
    flags = acc.reduce(torch.tensor([float(nonfinite), float(stop)], device=acc.device), reduction="sum")
    return bool(flags[0] > 0), bool(flags[1] > 0)


class _StopSignals:
    """SIGINT / SIGTERM set a flag; the loop saves a checkpoint at the end of the current step and returns."""

    def __enter__(self) -> _StopSignals:
        self.requested, self._old = False, {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write(f"received {signal.Signals(signum).name}: saving a checkpoint after this step, then stopping")

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
