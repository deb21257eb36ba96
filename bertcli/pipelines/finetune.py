"""`run_finetune`: any task of a task family (GLUE-style classification, NER, QA, ...) on any local BERT-family
checkpoint, on the shared Accelerate loop.

The task's family (`bertcli.tasks.base.TaskFamily`, found by `bertcli.tasks.registry`) decides the inputs
(`finetune_inputs`), the model head and its forward, the batches, the loss, the scores and any predictions file;
this module calls that interface and names no family, and the loop knows none of them.

Output layout:
    OUTPUT/config.yaml        the resolved config (re-run with `bertcli finetune --config OUTPUT/config.yaml`)
    OUTPUT/best/              save_pretrained model + tokenizer (id2label/label2id) + README.md card + config.yaml:
                              the best evaluation by the task's main metric (the best seed's, with several seeds;
                              the seeds' soup where train.average_seeds and it scores better: finetune_selection)
    OUTPUT/metrics.json       every evaluation of every seed, each seed's best, the mean/median/std over seeds
    OUTPUT/metrics.jsonl      the training log (loss, lr, grad norm, throughput) and evaluations, as logged
    OUTPUT/seed-N/best/       with several seeds: each seed's best model
    OUTPUT/seed-N/result.json with several seeds: a finished seed's results, read back by --resume
    OUTPUT/checkpoints/       resumable checkpoints (OUTPUT/seed-N/checkpoints with several seeds)
Everything the user can get wrong (task, files, labels, model folder, tokenizer) is checked before anything is
written. Over an earlier run (--overwrite) the new one is written in a staging folder and replaces the earlier one
only when it completes (`RunOutput`).
"""

from __future__ import annotations

import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed

from bertcli.cards import rewind_metrics, write_card
from bertcli.config import absolute_paths, dump_config, load_config
from bertcli.distill.layers import describe_source
from bertcli.distill.teacher import start_distillation
from bertcli.errors import UsageError
from bertcli.outputs import atomic_dir, write_json, write_text
from bertcli.pipelines.finetune_inputs import load_finetune_data
from bertcli.pipelines.finetune_results import (
    SEED_RESULT,
    SeedRun,
    finetune_card,
    print_summary,
    read_seed_run,
    result_document,
    write_seed_run,
)
from bertcli.pipelines.finetune_selection import save_predictions, score_reported, soup_seeds
from bertcli.pipelines.floor import add_floor, finetune_floor
from bertcli.run_output import RunOutput, check_apart
from bertcli.schema.finetune import FinetuneConfig
from bertcli.tasks.base import FinetuneData
from bertcli.tasks.holdout import describe as describe_holdout
from bertcli.tasks.registry import family_of
from bertcli.training.adapters import add_adapter, save_task_model
from bertcli.training.batches import make_loader
from bertcli.training.checkpoint import (
    config_differences,
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint_state,
    remove_checkpoints,
    save_checkpoint,
)
from bertcli.training.compile import compile_forward
from bertcli.training.devices import make_accelerator
from bertcli.training.layers import apply_layer_options, layerwise_groups
from bertcli.training.loop import LoopHooks, LoopSettings, LoopState, MetricsLog, train_loop
from bertcli.training.memory import keep_freed_memory
from bertcli.training.optim import build_scheduler


class _EarlyStop(Exception):
    """Raised by the evaluate hook when the main metric has not improved for `early_stopping_patience`."""


def run_finetune(cfg: FinetuneConfig, overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Fine-tune once per seed and save the best model; returns the content of metrics.json.

    resume: continue the stopped run in OUTPUT. Seeds that finished (OUTPUT/seed-N/result.json) are read back, not
    trained again; every other seed continues from its latest complete checkpoint (OUTPUT/checkpoints with one
    seed, OUTPUT/seed-N/checkpoints with several); with several seeds, a seed without one starts afresh. The config
    must match the run's in RESUME_MUST_MATCH, the list of seeds included.
    Ctrl-C or SIGTERM: the seed in training saves a checkpoint at the end of its step, then KeyboardInterrupt is
    raised (the CLI exits 130)."""
    if resume and overwrite:
        raise UsageError("--resume continues the run in the output directory and --overwrite replaces it: pass one")
    cfg = absolute_paths(cfg)  # as config.yaml has them: the checkpoints' records match a resume from anywhere
    if cfg.output.export_onnx != "none":
        from bertcli.export import require_onnx

        require_onnx("output.export_onnx")  # now, not after the training
    with _plan_output(cfg, overwrite, resume) as output:  # one run at a time in the folder
        point = _find_resume_point(cfg) if resume else None
        keep_freed_memory()  # each step's large temporaries reuse the heap's pages (training.memory)
        with tempfile.TemporaryDirectory(prefix="bertcli-finetune-") as work:  # a pretrain step-N, made loadable
            return _run(cfg, output, load_finetune_data(cfg, Path(work)), point)


# What --overwrite replaces of an earlier run in the output directory.
OUTPUTS = ("config.yaml", "best", "checkpoints", "metrics.json", "metrics.jsonl", "logs", "seed-*", "predictions*.json")


def _plan_output(cfg: FinetuneConfig, overwrite: bool, resume: bool) -> RunOutput:
    """Where the run writes (checked on every process before anything is written); no input may lie in it."""
    inputs = {"model.path": cfg.model.path, "model.tokenizer_path": cfg.model.tokenizer_path, "data.dir": cfg.data.dir,
              "data.train_file": cfg.data.train_file, "data.validation_files": cfg.data.validation_files,
              "distill.teacher": cfg.distill.teacher,
              "distill.unlabelled_file": cfg.distill.unlabelled_file}  # fmt: skip
    if resume:  # continues in the output directory itself
        check_apart(Path(cfg.output.dir), inputs)
        return RunOutput.continuing(cfg.output.dir, OUTPUTS)
    return RunOutput.plan(cfg.output.dir, overwrite, OUTPUTS, inputs)


@dataclass
class ResumePoint:
    """What an interrupted run left: the results of its finished seeds, the latest checkpoint of the others."""

    finished: dict[int, SeedRun]
    checkpoints: dict[int, Path]


def _find_resume_point(cfg: FinetuneConfig) -> ResumePoint:
    out, seeds = Path(cfg.output.dir), _seeds(cfg)
    if (out / "config.yaml").is_file():  # written when the run started: finished seeds were trained with it
        saved = load_config(FinetuneConfig, out / "config.yaml").model_dump(mode="json")
        _check_unchanged(cfg, f"the run in {out}", saved)
    finished, checkpoints = {}, {}
    for seed in seeds:
        run_dir = _run_dir(out, seed, seeds)
        if len(seeds) > 1 and (run_dir / SEED_RESULT).is_file():
            finished[seed] = read_seed_run(run_dir / SEED_RESULT)
        elif (found := latest_checkpoint(run_dir / "checkpoints")) is not None:
            _check_unchanged(cfg, str(found), read_checkpoint_state(found).get("config", {}))
            checkpoints[seed] = found
    if not finished and not checkpoints:
        when = "checkpoints are saved every train.save_every steps and when Ctrl-C or SIGTERM stops a run"
        if len(seeds) == 1:
            raise UsageError(f"nothing to resume: no complete checkpoint in {out / 'checkpoints'} ({when})")
        raise UsageError(f"nothing to resume: no seed in {out} finished (seed-N/{SEED_RESULT}) or left a complete "
                         f"checkpoint (seed-N/checkpoints; {when})")  # fmt: skip
    return ResumePoint(finished, checkpoints)


# A resumed run must train the same model on the same data the same way, with the same seeds.
RESUME_MUST_MATCH = ("task", "model", "data", "train.learning_rate", "train.epochs", "train.max_steps",
                     "train.seed", "train.seeds", "train.gradient_accumulation_steps", "train.scheduler",
                     "train.warmup_ratio", "train.warmup_steps", "train.layer_lr_decay", "distill")  # fmt: skip


def _check_unchanged(cfg: FinetuneConfig, what: str, saved: dict[str, Any]) -> None:
    changed = config_differences(saved, cfg.model_dump(mode="json"), RESUME_MUST_MATCH)
    if changed:
        raise UsageError(f"cannot resume {what} with a changed config: {'; '.join(changed)}")


def _seeds(cfg: FinetuneConfig) -> list[int]:
    return cfg.train.seeds or [cfg.train.seed]


def _run_dir(out: Path, seed: int, seeds: list[int]) -> Path:
    return out if len(seeds) == 1 else out / f"seed-{seed}"


def _run(cfg: FinetuneConfig, output: RunOutput, data: FinetuneData, resume: ResumePoint | None) -> dict[str, Any]:
    acc = make_accelerator(cfg.train, str(output.work))
    floor = finetune_floor(cfg, data) if acc.is_main_process else None  # before training: a bad file costs nothing
    acc.wait_for_everyone()  # every process has planned (looked at the folder) before the main one writes
    if acc.is_main_process and resume is None:  # a resumed run keeps everything, finished seeds first of all
        output.create()
        write_text(output.work / "config.yaml", dump_config(cfg, "finetune"))
    acc.wait_for_everyone()
    try:
        result = _train_seeds(acc, cfg, output, data, resume, floor)
    except BaseException:
        if acc.is_main_process:
            output.discard()
        raise
    if acc.is_main_process:
        output.commit()
        print_summary(result, output.out, family_of(data.spec).loads_in(data.spec))
    acc.end_training()
    return result


def _train_seeds(acc, cfg: FinetuneConfig, output: RunOutput, data: FinetuneData, resume: ResumePoint | None,
                 floor: dict | None = None):  # fmt: skip
    """Train (or read back) every seed in the folder the run writes in, then write best/ and metrics.json there."""
    out = output.work
    _print_data(acc, data, cfg)
    distill = start_distillation(acc, data, cfg, family_of(data.spec), acc.print)  # the teacher's outputs, once
    seeds, resume = _seeds(cfg), resume or ResumePoint({}, {})
    runs = []
    for seed in seeds:
        run_dir = _run_dir(out, seed, seeds)
        if seed in resume.finished:
            acc.print(f"[seed {seed}] finished earlier: results read from {run_dir / SEED_RESULT}, not trained again")
            runs.append(resume.finished[seed])
            continue
        run = _train_seed(acc, cfg, data, seed, output, resume.checkpoints.get(seed), distill)
        if len(seeds) > 1 and acc.is_main_process:
            write_seed_run(run_dir / SEED_RESULT, run)
        if run.stop_requested and seed != seeds[-1]:  # the stop came in the seed's last step: no seed after it
            raise _stopped(acc, cfg, output, f"after seed {seed} (finished)")
        runs.append(run)
    result = result_document(cfg, data, runs)
    if acc.is_main_process and len(seeds) > 1:  # the best seed's model is best/ (and its predictions, if any)
        with atomic_dir(out / "best") as tmp:
            shutil.copytree(out / f"seed-{result['best']['seed']}" / "best", tmp, dirs_exist_ok=True)
        for found in (out / f"seed-{result['best']['seed']}").glob("predictions*.json"):
            shutil.copy2(found, out / found.name)
    acc.wait_for_everyone()
    if cfg.train.average_seeds:  # the seeds' mean weights replace best/ where they score better (every process)
        result["soup"] = soup_seeds(acc, data, cfg, out, runs)
    add_floor(result, floor)  # output.floor: the classical floor and how far the best model is above it
    if acc.is_main_process:
        write_card(out / "best" / "README.md", finetune_card(cfg, data, result))
        write_text(out / "best" / "config.yaml", dump_config(cfg, "finetune"))
        if cfg.output.export_onnx != "none":
            from bertcli.pipelines.export import export_best

            export_best(out / "best", cfg.output.export_onnx, acc.print, output.out / "best")
        write_json(out / "metrics.json", result)
    acc.wait_for_everyone()  # every process has written before the main one commits
    return result


# --- one seed --------------------------------------------------------------------------------------------------


def _train_seed(
    acc, cfg: FinetuneConfig, data: FinetuneData, seed: int, output: RunOutput, checkpoint: Path | None, distill=None
) -> SeedRun:
    run_dir = _run_dir(output.work, seed, _seeds(cfg))
    acc.free_memory()  # forget the previous seed's prepared objects (save_state would save them too)
    # The new head's initial weights (re-initialised layers, an adapter's) depend on the seed alone; a soup's
    # ingredients all start from the first seed's, as Wortsman et al.'s do (one start, then the seed's own data
    # order and dropout). With a head each, the NER soup lost 6.9 F1 to its seeds' mean; with one start it tied it.
    shared_start = cfg.train.average_seeds
    set_seed(_seeds(cfg)[0] if shared_start else seed)
    family, spec = family_of(data.spec), data.spec
    model, report = family.build_model(data.model_dir, spec, cfg.model.classifier_dropout)
    report.source = describe_source(cfg.model.path, cfg.model.init_layers)  # not the temporary folder it came from
    report.layers = apply_layer_options(model, cfg.model)  # seeded: after set_seed; frozen embeddings: no TrainedRows
    run = SeedRun(seed, report)
    adapter = add_adapter(model, cfg.model, report.new)  # model.adapter: lora (None: every weight trains)
    if shared_start:
        set_seed(seed)  # from here on (dropout, data order) the seed's own
    plain = acc.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
    rows = plain and adapter is None  # an adapter freezes the word embeddings: no rows of them train
    net = family.forward_module(model, train_token_ids=torch.from_numpy(data.train.ids) if rows else None)
    net.adapter = adapter  # save_task_model saves the merged model and the adapter
    report.forward = net.path()
    for line in report.lines():
        acc.print(f"[seed {seed}] {line}")
    if adapter is not None:
        acc.print(f"[seed {seed}] {adapter.describe()}")
    if net.segment_note() and family.reads_text_pairs:  # a family that reads one text has nothing to say
        acc.print(f"[seed {seed}] {net.segment_note()}")
    if cfg.train.compile:  # the forward only: the module, its state_dict and checkpoints stay as they are
        compile_forward(net, acc.print)
    optimizer = build_finetune_optimizer(net, cfg)
    if net.rows is not None:
        net.rows.track(optimizer)
    eval_batch = cfg.data.eval_batch_size or 2 * cfg.data.batch_size

    def say(line: str) -> None:
        acc.print(f"[seed {seed}] {line}")

    train_collate = family.train_collator(data.train, data.tokenizer, net, cfg, say)
    if distill is not None:  # the teacher's outputs join each training batch
        train_collate = distill.collator(train_collate)
    grouped = family.group_by_length if cfg.data.group_by_length is None else cfg.data.group_by_length
    by_tokens = family.token_batches if cfg.data.token_batches is None else cfg.data.token_batches
    train_dl = make_loader(data.train, cfg.data.batch_size, seed, grouped, True,
                           cfg.data.num_workers, train_collate, by_tokens)  # fmt: skip
    eval_dls = [make_loader(s, eval_batch, 0, False, False, collate=family.collator(s, data.tokenizer))
                for s in data.selection.values()]  # fmt: skip
    net, optimizer, train_dl, *eval_dls = acc.prepare(net, optimizer, train_dl, *eval_dls)
    per_epoch = math.ceil(len(train_dl) / cfg.train.gradient_accumulation_steps)
    total = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * per_epoch))
    run.steps_per_epoch = per_epoch
    scheduler = build_scheduler(optimizer, cfg.train, total)
    loaders = dict(zip(data.selection, eval_dls))  # the holdout with one: the reported files wait for the end
    state = LoopState()  # the loop advances it in place: the evaluate hook reads the step from it
    if checkpoint is not None:
        _restore(acc, checkpoint, state, run, scheduler, output.work / "metrics.jsonl")

    def evaluate(m) -> dict[str, float]:
        return _evaluate_and_keep_best(acc, m, loaders, data, cfg, run, run_dir, state)

    loss_and_sums = family.loss_and_sums

    def forward(m, batch):
        return loss_and_sums(m, batch, spec)

    summarize = family.summarize
    if distill is not None:  # alpha * soft + (1 - alpha) * gold; the plain forward above stays as it was
        forward, summarize = distill.forward(family, spec), distill.summarize(family.summarize)

    settings = LoopSettings(
        total, cfg.train.log_every, cfg.train.eval_every or per_epoch, cfg.train.save_every, cfg.train.max_grad_norm
    )
    config_yaml = dump_config(cfg, "finetune")

    def save(loop_state: LoopState) -> None:
        # every save_every steps, and when a stop request ends the seed early (--resume continues from it); the loop
        # also calls this at the end, where best/ is the product, not checkpoints
        if cfg.train.save_every or loop_state.step < total:
            best = None if run.best is None else _index_of_best(run)
            record = {"loop": asdict(loop_state), "evaluations": run.evaluations, "best_index": best,
                      "config": cfg.model_dump(mode="json")}  # fmt: skip
            save_checkpoint(acc, run_dir / "checkpoints", loop_state.step, record, config_yaml, cfg.train.keep_last,
                            scheduler)  # fmt: skip

    log = MetricsLog(acc, output.work / "metrics.jsonl")
    hooks = LoopHooks(forward, summarize, lambda record: log({**record, "seed": seed}), save, evaluate)
    acc.print(f"[seed {seed}] {total} steps ({per_epoch} per epoch), evaluating every {settings.eval_every}")
    start = time.perf_counter()
    status = "completed"
    try:
        status = train_loop(acc, net, optimizer, scheduler, train_dl, settings, hooks, state)
    except _EarlyStop:
        run.stopped_early = True
        acc.print(f"[seed {seed}] early stop at step {state.step}: no better {data.spec.main_metric} for "
                  f"{cfg.train.early_stopping_patience} evaluations")  # fmt: skip
    if status == "interrupted" and state.step < total:  # the save hook has just saved step-N
        saved = _run_dir(output.out, seed, _seeds(cfg)) / "checkpoints" / f"step-{state.step}"
        raise _stopped(acc, cfg, output, f"seed {seed} at step {state.step}; saved {saved}")
    if data.holdout is not None and run.best is not None:  # the holdout picked best/: the validation files, once
        run.final = score_reported(acc, data, cfg, run_dir)
    if status == "completed" and cfg.train.keep_last == 0 and acc.is_main_process:  # only best/ stays
        remove_checkpoints(run_dir / "checkpoints")
    run.stop_requested = status == "interrupted"
    run.train_seconds = time.perf_counter() - start
    run.steps = state.step
    return run


def _stopped(acc: Accelerator, cfg: FinetuneConfig, output: RunOutput, what: str) -> KeyboardInterrupt:
    """Say where the run stopped and how to continue it; the caller raises what this returns (the CLI exits 130).
    A staged --overwrite run cannot be continued: it is discarded, and the earlier run kept."""
    if acc.is_main_process:
        if output.staged:
            print(f"stopped {what.split(';')[0]}; {output.kept_note()}", file=sys.stderr, flush=True)
        else:
            again = f"bertcli finetune --resume --config {Path(cfg.output.dir) / 'config.yaml'}"
            print(f"stopped {what}. Continue with: {again}", file=sys.stderr, flush=True)
    return KeyboardInterrupt()


def _restore(acc: Accelerator, checkpoint: Path, state: LoopState, run: SeedRun, scheduler, log: Path) -> None:
    """Weights, optimizer and RNG states from Accelerate, the schedule from scheduler.json; loop position and
    evaluations from trainer_state.json. `state` is updated in place (the hooks hold it). Once all of that has
    loaded, the seed's records after the checkpoint's step leave `log` (metrics.jsonl): they are logged again."""
    load_checkpoint(acc, checkpoint, scheduler)
    saved = read_checkpoint_state(checkpoint)
    for key, value in saved["loop"].items():
        setattr(state, key, value)
    if acc.is_main_process:
        rewind_metrics(log, state.step, run.seed)
    run.evaluations = saved["evaluations"]
    run.best = None if saved["best_index"] is None else run.evaluations[saved["best_index"]]
    acc.print(f"[seed {run.seed}] resumed from {checkpoint} at step {state.step}")


def build_finetune_optimizer(net: torch.nn.Module, cfg: FinetuneConfig) -> torch.optim.AdamW:
    """AdamW with BERT's parameter groups (training.optim), split by layer under train.layer_lr_decay
    (training.layers). The fused kernel where torch has one for the device
    (CPU and CUDA): one pass over each tensor instead of a dozen, which matters when the update of the
    embedding matrix costs as much as the forward of a small model."""
    params = layerwise_groups(net, cfg.train.weight_decay, cfg.train.learning_rate, cfg.train.layer_lr_decay)
    kwargs = dict(lr=cfg.train.learning_rate, betas=(cfg.train.adam_beta1, cfg.train.adam_beta2),
                  eps=cfg.train.adam_epsilon)  # fmt: skip
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # a device without the fused kernel
        return torch.optim.AdamW(params, foreach=True, **kwargs)


# --- evaluation and the best checkpoint ------------------------------------------------------------------------


def _evaluate_and_keep_best(acc, m, loaders, data, cfg, run: SeedRun, run_dir: Path, state) -> dict:
    spec, family = data.spec, family_of(data.spec)
    start = time.perf_counter()
    scores: dict[str, dict[str, float]] = {}
    predictions = {}  # each split's predictions (where the family has any), written when the evaluation is the best
    for name, loader in loaders.items():
        scores[name], found = family.score(acc, m, loader, data.selection[name], spec)
        if found is not None and data.holdout is None:  # a holdout's: the validation files' come at the end
            predictions[name] = found
    main = statistics.fmean(s[spec.main_metric] for s in scores.values())  # MNLI: mean of matched, mismatched
    record = {
        "step": state.step,
        "epoch": round(state.step / run.steps_per_epoch, 3),
        "metrics": scores,
        "main": main,
    }
    run.evaluations.append(record)
    improved = run.best is None or main > run.best["main"] or math.isnan(run.best["main"])
    if improved:
        run.best = record
        if acc.is_main_process:
            _save_best(acc, m, data.tokenizer, run_dir / "best")
            save_predictions(family, run_dir, predictions)
    acc.wait_for_everyone()
    run.eval_seconds += time.perf_counter() - start
    # the log shows the overall scores; per-type ones (keys with a "/", such as PER/f1) are in metrics.json
    flat = {f"{s}/{k}": v for s, vals in scores.items() for k, v in vals.items() if "/" not in k}
    patience = cfg.train.early_stopping_patience
    if patience and _started(run) and len(run.evaluations) - 1 - _index_of_best(run) >= patience:
        raise _EarlyStop
    return {**flat, "main": main, "best_main": run.best["main"]}


def _index_of_best(run: SeedRun) -> int:
    return next(i for i, r in enumerate(run.evaluations) if r is run.best)


def _started(run: SeedRun) -> bool:
    """Whether the main metric has moved off its first value: until it does (MCC or F1 0 while the model still
    predicts one label everywhere, as small sets do for their first epochs) early stopping waits, rather than end
    the run before it has begun to learn."""
    first = run.evaluations[0]["main"]
    return any(r["main"] != first for r in run.evaluations[1:])


def _save_best(acc: Accelerator, m, tokenizer, target: Path) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        with atomic_dir(target) as tmp:
            save_task_model(acc.unwrap_model(m), tmp)
            tokenizer.save_pretrained(str(tmp))
    finally:
        hf_logging.enable_progress_bar()


def _print_data(acc: Accelerator, data: FinetuneData, cfg: FinetuneConfig) -> None:
    spec = data.spec
    labels = "regression" if spec.is_regression else f"labels {list(spec.label_names)}"
    acc.print(f"task {spec.name}: {labels}; metrics {', '.join(spec.metrics)} (best by {spec.main_metric})")
    for line in family_of(spec).describe_data(data, cfg):
        acc.print(line)
    if data.holdout is not None:
        acc.print(describe_holdout(data, cfg.data.holdout_fraction))
