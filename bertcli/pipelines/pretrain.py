"""`run_pretrain`: tokenize output -> BertForPreTraining trained with MLM (+ NSP) on the shared Accelerate
loop, from random weights or continued from a checkpoint (`model.init_from`: `pretraining.init_from` checks and
loads it, and the run evaluates the held-out MLM perplexity before its first step as well).

Output layout (one place decides it, `RunPaths`):
    OUTPUT/config.yaml            the resolved config (re-run: `bertcli pretrain --config OUTPUT/config.yaml`)
    OUTPUT/checkpoints/step-N/    resumable Accelerate state + trainer_state.json
    OUTPUT/final/                 save_pretrained model (BertForPreTraining; BertForMaskedLM for objective mlm)
                                  + tokenizer + README.md model card
    OUTPUT/metrics.jsonl          every logged record; OUTPUT/loss.png the curves; OUTPUT/logs/ TensorBoard
Everything the user can get wrong is checked before the first byte is written. Over an earlier run (--overwrite)
the new one is written in a staging folder and replaces the earlier one only when it completes (`RunOutput`).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader

from bertcli.cards import perplexity_line, plot_loss_curves, pretrain_card, read_metrics, rewind_metrics, write_card
from bertcli.config import absolute_paths, dump_config
from bertcli.errors import UsageError
from bertcli.masking import COLUMNS, NSP_LABEL, EpochIndexed, PretrainingCollator, masking_columns
from bertcli.modeling import PretrainingModel, bert_config, build_pretraining_model
from bertcli.outputs import TMP_PREFIX, atomic_dir, write_failure, write_text
from bertcli.pretraining.head_warmup import (
    HeadWarmup,
    check_resumed_warmup,
    head_warmup_steps,
    warmup_line,
    warmup_schedule,
)
from bertcli.pretraining.init_from import (
    SEGMENT_NOTE,
    InitSource,
    check_data_fits,
    check_segments,
    load_pretraining_model,
    open_init_source,
    report_lines,
    report_record,
    resolve_model,
)
from bertcli.run_output import RunOutput, check_apart
from bertcli.schema.pretrain import PRESETS, RESUME_MUST_MATCH, PretrainConfig
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
from bertcli.training.loop import LoopHooks, LoopSettings, LoopState, MetricsLog, evaluate_sums, train_loop
from bertcli.training.memory import keep_freed_memory
from bertcli.training.optim import build_optimizer, build_scheduler


@dataclass
class RunPaths:
    root: Path  # where this run writes: the output directory, or its staging folder (see RunOutput)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.config = self.root / "config.yaml"
        self.checkpoints = self.root / "checkpoints"
        self.final = self.root / "final"
        self.metrics = self.root / "metrics.jsonl"
        self.plot = self.root / "loss.png"
        self.logs = self.root / "logs"


OUTPUTS = ("config.yaml", "checkpoints", "final", "metrics.jsonl", "loss.png", "logs")  # what --overwrite replaces


@dataclass
class PretrainData:
    tokenizer: Any
    train: Any  # datasets.Dataset
    validation: Any
    stats: list[dict[str, Any]] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)


def run_pretrain(cfg: PretrainConfig, overwrite: bool = False, resume: bool | str | None = None) -> dict[str, Any]:
    """Pretrain and save; returns {"status": "completed" | "interrupted", "step", "output", final metrics...}.

    `resume`: True for the latest complete checkpoint in the output directory, a path for that checkpoint.
    """
    if resume and overwrite:
        raise UsageError("--resume continues the run in the output directory and --overwrite replaces it: pass one")
    cfg = absolute_paths(cfg)  # as config.yaml has them: the checkpoints' records match a resume from anywhere
    with _plan_output(cfg, overwrite, resume) as output:  # one run at a time in the folder
        return _pretrain(cfg, output, resume)


def _pretrain(cfg: PretrainConfig, output: RunOutput, resume: bool | str | None) -> dict[str, Any]:
    keep_freed_memory()  # each step's large temporaries reuse the heap's pages (training.memory)
    data = load_pretrain_data(cfg)
    init = open_init_source(cfg.model.init_from) if cfg.model.init_from else None
    if init is not None:  # the shape comes from the checkpoint; config.yaml and the resume check record it
        cfg = resolve_model(cfg, init)
        init.grows = check_data_fits(init, data.tokenizer, cfg.data.dirs[0], data.stats)
    check_segments(cfg, init)
    vocab_size = _check_model_fits(cfg, data)
    checkpoint, saved = _find_resume_point(cfg, RunPaths(output.out), resume, data)
    paths = RunPaths(output.work)
    acc = _make_accelerator(cfg, paths)
    _prepare_output(acc, cfg, output, resumed=saved is not None)
    try:
        result = _train(acc, cfg, paths, data, vocab_size, checkpoint, saved, init)
    except BaseException:
        if acc.is_main_process:
            output.discard()
        raise
    if acc.is_main_process:
        output.commit() if result["status"] == "completed" else output.discard()
    acc.end_training()  # after the commit (every process has written: _finish waits), as it ends the process group
    if output.staged and result["status"] != "completed":
        result["note"] = output.kept_note()
    return {**result, "output": str(output.out)}


def _train(acc, cfg: PretrainConfig, paths: RunPaths, data: PretrainData, vocab_size: int, checkpoint, saved,
           init: InitSource | None = None):  # fmt: skip
    """Build (or load, `init`) the model, optimizer and loaders, restore a checkpoint, train and write final/
    under `paths`."""
    set_seed(cfg.train.seed)  # the same initial weights on every process and every run with this seed
    loaded = None
    if init is None:
        bert = build_pretraining_model(cfg.model, vocab_size, data.tokenizer.pad_token_id)
    else:
        bert, report, growth = load_pretraining_model(cfg, init, data.tokenizer, init.grows)
        loaded = report_record(report, growth)
        for line in report_lines(report, growth, cfg.objective):
            acc.print(line)
    warmup_steps = head_warmup_steps(cfg.train, loaded)
    if loaded is not None:
        loaded["head_warmup_steps"] = warmup_steps
        acc.print(warmup_line(loaded, warmup_steps, cfg.train.head_warmup_learning_rate))
    model = PretrainingModel(bert, with_nsp=cfg.objective == "mlm+nsp")
    if model.one_segment:
        acc.print(SEGMENT_NOTE)
    if note := pair_data_note(cfg, data):
        acc.print(note)
    if cfg.train.compile:  # the forward only: the module, its state_dict and checkpoints stay as they are
        compile_forward(model, acc.print)
    optimizer = build_optimizer(model, cfg.train)
    train_dl, eval_dl = _dataloaders(cfg, data)
    model, optimizer, train_dl, eval_dl = acc.prepare(model, optimizer, train_dl, eval_dl)
    main_steps = _total_steps(cfg, len(train_dl))
    total = warmup_steps + main_steps
    scheduler = _schedule(cfg, optimizer, main_steps, warmup_steps)
    warmup = HeadWarmup(bert.bert, warmup_steps, use_autograd=acc.num_processes == 1)

    state = LoopState()
    if checkpoint is not None:
        check_resumed_warmup(saved, warmup_steps, cfg.train.head_warmup_learning_rate, checkpoint)
        load_checkpoint(acc, checkpoint, scheduler)
        state = LoopState(**saved["loop"])
        _rewind_output(acc, cfg, paths, state.step)
        acc.print(f"resumed from {checkpoint} at step {state.step}")
    warmup.start(state.step)
    if cfg.train.tensorboard:
        acc.init_trackers("logs", config=_hparams(cfg))

    config_yaml = dump_config(cfg, "pretrain")
    extra = {
        "data_fingerprints": data.fingerprints,
        "processes": acc.num_processes,
        "head_warmup": {"steps": warmup_steps, "learning_rate": cfg.train.head_warmup_learning_rate},
    }

    def save(loop_state: LoopState) -> None:
        if cfg.train.keep_last == 0 and loop_state.step >= total:  # final/ is written next; nothing to resume
            return
        record = {"loop": asdict(loop_state), "config": cfg.model_dump(mode="json"), **extra}
        save_checkpoint(acc, paths.checkpoints, loop_state.step, record, config_yaml, cfg.train.keep_last, scheduler)

    def forward(m, batch):
        out = m(**batch)
        return out.pop("loss"), out

    evaluate = None
    if eval_dl is not None:

        def evaluate(m):
            return with_perplexity(evaluate_sums(acc, m, eval_dl, forward, summarize, cfg.train.eval_max_batches))

    settings = LoopSettings(
        total, cfg.train.log_every, cfg.train.eval_every, cfg.train.save_every, cfg.train.max_grad_norm
    )

    def after_step(step: int) -> list[dict[str, Any]]:
        if not warmup.after_step(step) or evaluate is None:
            return []
        # the continued run's "before": the checkpoint's encoder with the warmed-up head
        return [{"step": step, "split": "eval", "after_head_warmup": True, **evaluate(model)}]

    hooks = LoopHooks(forward, summarize, MetricsLog(acc, paths.metrics), save, evaluate,
                      before_update=warmup.before_update if warmup_steps else None,
                      after_step=after_step if warmup_steps else None)  # fmt: skip
    steps = f"{total} steps" + (f" ({warmup_steps} of head warm-up, then {main_steps})" if warmup_steps else "")
    acc.print(f"pretraining {_describe(bert, data, acc, cfg)}; {steps} -> {cfg.output.dir}")
    if loaded is not None and state.step == 0:  # a resumed run has these records already
        _append_record(acc, paths.metrics, {"step": 0, "split": "init", "load_report": loaded})
        if evaluate is not None and not warmup_steps:  # the checkpoint's held-out loss: the "before"
            hooks.log({"step": 0, "split": "eval", **evaluate(model)})
    status = train_loop(acc, model, optimizer, scheduler, train_dl, settings, hooks, state)
    return _finish(acc, cfg, paths, model, data, state, status)


def with_perplexity(metrics: dict[str, float]) -> dict[str, float]:
    """Evaluation metrics plus the MLM perplexity, exp(mean masked-token loss)."""
    if "mlm_loss" in metrics:
        metrics["mlm_perplexity"] = math.exp(min(metrics["mlm_loss"], 50.0))  # a diverged run: large, not inf
    return metrics


def _append_record(acc: Accelerator, path: Path, record: dict[str, Any]) -> None:
    """One record to metrics.jsonl without the console line and trackers (the load report is printed as lines)."""
    if not acc.is_main_process:
        return
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    except OSError as err:
        raise (write_failure(err, path) or err) from None


def summarize(totals: dict[str, float]) -> dict[str, float]:
    """Per-example sums -> MLM/NSP loss and accuracy (means over masked tokens / over pairs)."""
    out = {}
    for task in ("mlm", "nsp"):
        count = totals.get(f"{task}_count", 0.0)
        if count:
            out[f"{task}_loss"] = totals[f"{task}_loss_sum"] / count
            out[f"{task}_accuracy"] = totals[f"{task}_correct"] / count
    return out


# --- data and checks (nothing written yet) -----------------------------------------------------------------


def load_pretrain_data(cfg: PretrainConfig) -> PretrainData:
    """Open every tokenize output directory, check it is complete and that all share one tokenizer, and
    concatenate their train and validation splits."""
    import datasets
    from transformers import AutoTokenizer

    tokenizer, trains, validations, stats, prints = None, [], [], [], []
    for raw in cfg.data.dirs:
        root = Path(raw)
        missing = [p for p in ("tokenizer", "dataset", "stats.json") if not (root / p).exists()]
        if missing:
            raise UsageError(
                f"{root} is not a complete `bertcli tokenize` output (missing {', '.join(missing)}); "
                "run `bertcli tokenize` into it first, or fix data.dirs"
            )
        try:
            here = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
            splits = datasets.load_from_disk(str(root / "dataset"))
            info = json.loads((root / "stats.json").read_text(encoding="utf-8"))
        except Exception as err:  # noqa: BLE001 - any unreadable part is the same user problem
            raise UsageError(f"{root} cannot be read as tokenize output ({type(err).__name__}: {err})") from None
        _check_splits(root, splits, cfg.objective)
        if tokenizer is not None and here.get_vocab() != tokenizer.get_vocab():
            raise UsageError(
                f"{root}/tokenizer differs from {cfg.data.dirs[0]}/tokenizer; "
                "data dirs must share one tokenizer "
                "(tokenize them with tokenizer.path set to the same folder)"
            )
        tokenizer = tokenizer or here
        trains.append(splits["train"])
        validations.append(splits["validation"])
        stats.append({"dir": str(root), **{k: v for k, v in info.items() if not isinstance(v, (dict, list))}})
        prints.append(splits["train"]._fingerprint)
    wwm, with_nsp = cfg.masking.whole_word_mask, cfg.objective == "mlm+nsp"
    train = datasets.concatenate_datasets(masking_columns(trains, wwm, cfg.data.dirs, with_nsp))
    validation = datasets.concatenate_datasets(masking_columns(validations, wwm, cfg.data.dirs, with_nsp))
    if len(train) == 0:
        raise UsageError(f"the train split of {', '.join(cfg.data.dirs)} is empty; tokenize more text")
    return PretrainData(tokenizer, train, validation, stats, prints)


def pair_data_note(cfg: PretrainConfig, data: PretrainData) -> str | None:
    """One line when objective mlm trains on NSP sentence pairs, which MLM-only data would serve better."""
    pairs = [s["dir"] for s in data.stats if s.get("nsp_mode", "pairs") == "pairs"]
    if cfg.objective != "mlm" or not pairs:
        return None
    return (
        f"note: {', '.join(pairs)} holds NSP sentence pairs (often a random document's text after the first segment, "
        "sequences ending at sentence boundaries); for objective mlm, MLM-only data packs running text into full "
        "sequences: tokenize with --set nsp.mode=none (configs/tokenize/mlm.yaml)"
    )


def _check_splits(root: Path, splits, objective: str) -> None:
    """Both splits, with the columns the collator reads; NSP labels for mlm+nsp (MLM-only data has none)."""
    for split in ("train", "validation"):
        if split not in splits:
            raise UsageError(f"{root}/dataset has no '{split}' split; re-run `bertcli tokenize` into {root}")
        if objective == "mlm+nsp" and NSP_LABEL not in splits[split].column_names:
            raise UsageError(
                f"{root} holds MLM-only sequences (tokenized with nsp.mode none), without the sentence pairs "
                "objective mlm+nsp trains on: set objective=mlm, or tokenize again with nsp.mode=pairs"
            )
        absent = [c for c in COLUMNS if c != NSP_LABEL and c not in splits[split].column_names]
        if absent:
            raise UsageError(
                f"{root}/dataset split '{split}' lacks column(s) {', '.join(absent)}; re-run `bertcli tokenize`"
            )


def _check_model_fits(cfg: PretrainConfig, data: PretrainData) -> int:
    """vocab_size from the tokenizer (an explicit different one is an error); sequences within the
    positions."""
    vocab_size = len(data.tokenizer)
    if cfg.model.vocab_size is not None and cfg.model.vocab_size != vocab_size:
        raise UsageError(
            f"model.vocab_size is {cfg.model.vocab_size} but the tokenizer in {cfg.data.dirs[0]} "
            f"has {vocab_size} "
            "tokens; remove model.vocab_size (it is taken from the tokenizer) or set it to match"
        )
    for stats in data.stats:
        length = int(stats.get("max_seq_length", 0))
        if length > cfg.model.max_position_embeddings:
            raise UsageError(
                f"{stats['dir']} has sequences of up to {length} tokens but model.max_position_embeddings is "
                f"{cfg.model.max_position_embeddings}; raise it or tokenize with a smaller nsp.max_seq_length"
            )
    return vocab_size


def _find_resume_point(cfg: PretrainConfig, paths: RunPaths, resume, data: PretrainData):
    """(checkpoint path, its saved state) or (None, None); refuses a checkpoint whose model or data differ."""
    if not resume:
        return None, None
    checkpoint = Path(resume) if isinstance(resume, (str, Path)) else latest_checkpoint(paths.checkpoints)
    if checkpoint is None:
        raise UsageError(
            f"nothing to resume: {paths.checkpoints} has no complete checkpoint; run without --resume to start"
        )
    if not checkpoint.is_dir():
        raise UsageError(f"--resume {checkpoint}: no such checkpoint folder")
    saved = read_checkpoint_state(checkpoint)
    differences = config_differences(
        _with_shape(saved.get("config", {})), _with_shape(cfg.model_dump(mode="json")), RESUME_MUST_MATCH
    )
    if saved.get("data_fingerprints") != data.fingerprints and not differences:
        differences.append("data: the tokenized dataset changed since the checkpoint (fingerprint differs)")
    if differences:
        raise UsageError(
            f"cannot resume from {checkpoint}: the config changed the model or data "
            f"({'; '.join(differences)}); "
            "restore those values or start a new run in another output directory"
        )
    return checkpoint, saved


def _with_shape(config: dict[str, Any]) -> dict[str, Any]:
    """A dumped config with the model's shape keys that are null (the preset's) filled from its preset, so that a
    refused resume names the widths the checkpoint really has, not `hidden_size: was None`."""
    model = config.get("model")
    if not isinstance(model, dict) or model.get("preset") not in PRESETS:
        return config
    shape = {key: value for key, value in PRESETS[model["preset"]].items() if model.get(key) is None}
    return {**config, "model": {**model, **shape}}


def _make_accelerator(cfg: PretrainConfig, paths: RunPaths) -> Accelerator:
    return make_accelerator(
        cfg.train,
        str(paths.root),
        # The shuffled order of epoch e depends on (seed, e) only: a resumed run replays it exactly.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.train.seed),
        # Without NSP the pooler and NSP head get no gradient; DDP must be told, or it waits for them.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.objective == "mlm")],
    )


def _plan_output(cfg: PretrainConfig, overwrite: bool, resume) -> RunOutput:
    """Where the run writes (checked on every process before anything is written). A resumed run continues in
    the output directory itself; the checkpoint it resumes from may lie there."""
    out = Path(cfg.output.dir)
    inputs: dict[str, object] = {"data.dirs": cfg.data.dirs}
    if cfg.model.init_from:  # --overwrite must not remove the checkpoint the run continues from
        inputs["model.init_from"] = cfg.model.init_from
    if isinstance(resume, (str, Path)) and not Path(resume).resolve().is_relative_to(out.resolve()):
        inputs["--resume"] = resume
    if resume:
        check_apart(out, inputs)
        return RunOutput.continuing(out, OUTPUTS)
    return RunOutput.plan(out, overwrite, OUTPUTS, inputs)


def _prepare_output(acc: Accelerator, cfg: PretrainConfig, output: RunOutput, resumed: bool) -> None:
    """Fresh run: create the folder it writes in (the earlier run, if any, stays until this one completes) and
    write config.yaml. A resumed run's folder is left alone until its checkpoint has loaded (_rewind_output)."""
    acc.wait_for_everyone()  # every process has planned (looked at the folder) before the main one writes
    if acc.is_main_process and not resumed:
        output.create()
        write_text(RunPaths(output.work).config, dump_config(cfg, "pretrain"))
    acc.wait_for_everyone()


def _rewind_output(acc: Accelerator, cfg: PretrainConfig, paths: RunPaths, step: int) -> None:
    """Once the checkpoint has loaded: cut metrics.jsonl back to its step so the killed run's later records do not
    repeat, drop half-written checkpoints and write config.yaml. Not sooner: a checkpoint that does not load
    leaves the run's log as it was."""
    acc.wait_for_everyone()
    if acc.is_main_process:
        rewind_metrics(paths.metrics, step)
        for stale in paths.checkpoints.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        write_text(paths.config, dump_config(cfg, "pretrain"))
    acc.wait_for_everyone()


def _dataloaders(cfg: PretrainConfig, data: PretrainData) -> tuple[DataLoader, DataLoader | None]:
    masking = cfg.masking.model_dump(exclude={"eval_seed"})
    with_nsp = cfg.objective == "mlm+nsp"
    common = {"num_workers": cfg.data.num_workers, "pin_memory": torch.cuda.is_available()}
    train = DataLoader(
        EpochIndexed(data.train),
        batch_size=cfg.data.batch_size,
        shuffle=True,
        collate_fn=PretrainingCollator(data.tokenizer, cfg.train.seed, with_nsp=with_nsp, **masking),
        # Own generators: creating a loader's iterator then draws nothing from the global RNG, which dropout
        # uses; so a resumed run (a new iterator mid-epoch) keeps the same dropout masks as an unbroken one.
        generator=torch.Generator().manual_seed(cfg.train.seed),
        **common,
    )
    if len(data.validation) == 0:
        return train, None
    evaluation = DataLoader(
        EpochIndexed(data.validation, fixed=True),  # the same masks at every evaluation
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        collate_fn=PretrainingCollator(data.tokenizer, cfg.masking.eval_seed, with_nsp=with_nsp, **masking),
        generator=torch.Generator().manual_seed(cfg.masking.eval_seed),
        **common,
    )
    return train, evaluation


def _total_steps(cfg: PretrainConfig, batches_per_epoch: int) -> int:
    if cfg.train.max_steps is not None:
        return cfg.train.max_steps
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.train.gradient_accumulation_steps)
    return max(1, math.ceil(cfg.train.epochs * steps_per_epoch))


def _schedule(cfg: PretrainConfig, optimizer, main_steps: int, warmup_steps: int):
    """The configured schedule over `main_steps`, after the head warm-up's constant rate when one runs."""
    scheduler = build_scheduler(optimizer, cfg.train, main_steps)
    if not warmup_steps:
        return scheduler
    lrs = (cfg.train.learning_rate, cfg.train.head_warmup_learning_rate)
    return warmup_schedule(optimizer, scheduler, warmup_steps, *lrs)


def _hparams(cfg: PretrainConfig) -> dict[str, Any]:
    """The config flattened to the scalar values TensorBoard's hparams accept."""
    flat = {}
    for section, values in cfg.model_dump(mode="json").items():
        for key, value in values.items() if isinstance(values, dict) else [("", values)]:
            name = f"{section}.{key}" if key else section
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def _describe(bert, data: PretrainData, acc: Accelerator, cfg: PretrainConfig) -> str:
    params = sum(p.numel() for p in bert.parameters()) / 1e6
    origin = f"from {cfg.model.init_from}," if cfg.model.init_from else (cfg.model.preset or "own")
    return (
        f"{origin} shape {cfg.model.shape()} ({params:.1f}M parameters) "
        f"on {len(data.train)} sequences, "
        f"{acc.num_processes} process(es) on {acc.device.type}, global batch "
        f"{cfg.data.batch_size * acc.num_processes * cfg.train.gradient_accumulation_steps}"
    )


# --- the end of a run ---------------------------------------------------------------------------------------


def _finish(acc, cfg, paths: RunPaths, model, data: PretrainData, state: LoopState, status: str) -> dict[str, Any]:
    """Write final/ (when completed), the loss plot and the model card; return a summary."""
    acc.wait_for_everyone()
    records = read_metrics(paths.metrics) if acc.is_main_process else []
    final = {"step": state.step, "processes": acc.num_processes}
    for split in ("train", "eval"):
        last = next((r for r in reversed(records) if r.get("split") == split), None)
        final.update({f"{split}_{k}": v for k, v in (last or {}).items() if k.endswith(("loss", "accuracy"))})
    load_report, perplexity = _continued(records) if cfg.model.init_from else (None, {})
    final.update(perplexity)
    if perplexity.get("held_out_perplexity_after") is not None:
        acc.print(perplexity_line(perplexity["held_out_perplexity_before"], perplexity["held_out_perplexity_after"],
                                  load_report))  # fmt: skip
    if status == "completed":
        bert = acc.unwrap_model(model).model
        # The full weights, gathered from FSDP / DeepSpeed ZeRO-3 shards (every process must take part).
        weights = {k.removeprefix("model."): v for k, v in acc.get_state_dict(model).items()}
        if acc.is_main_process:
            if cfg.objective == "mlm":  # the NSP head and pooler never trained: final/ holds what did
                bert, weights = masked_lm_only(bert, weights)
            with atomic_dir(paths.final) as tmp:
                bert.save_pretrained(tmp, state_dict=weights)
                data.tokenizer.save_pretrained(tmp)
                card = pretrain_card(cfg.model_dump(mode="json"), bert.config.to_dict(), data.stats, final, load_report)
                write_card(tmp / "README.md", card)
            if cfg.train.keep_last == 0:  # only final/ stays
                remove_checkpoints(paths.checkpoints)
    if acc.is_main_process and records:
        plot_loss_curves(records, paths.plot)
    acc.wait_for_everyone()
    extra = {"load_report": load_report} if load_report else {}
    return {"status": status, "main_process": acc.is_main_process, **final, **extra}


def masked_lm_only(bert, weights: dict[str, torch.Tensor]):
    """(BertForMaskedLM, its weights) from a BertForPreTraining trained with MLM only: the same encoder and MLM head,
    without the pooler and NSP head that got no gradient. Built on the meta device, so no weights are copied; it
    loads with AutoModelForMaskedLM and the fill-mask pipeline, and `--init-from` starts a new NSP head for it."""
    from transformers import BertForMaskedLM

    dropped = ("bert.pooler.", "cls.seq_relationship.")
    kept = {k: v for k, v in weights.items() if not k.startswith(dropped)}
    with torch.device("meta"):
        masked = BertForMaskedLM(bert.config)
    masked.load_state_dict(kept, strict=True, assign=True)
    return masked, kept


def _continued(records: list[dict[str, Any]]) -> tuple[dict | None, dict[str, float]]:
    """A continued run's load report and held-out perplexity before its first step and at its last evaluation."""
    report = next((r["load_report"] for r in records if r.get("split") == "init"), None)
    evals = [r for r in records if r.get("split") == "eval" and "mlm_perplexity" in r]
    first = next((r for r in evals if r["step"] == 0 or r.get("after_head_warmup")), None)
    if first is None:
        return report, {}
    before = first["mlm_perplexity"]
    after = evals[-1]["mlm_perplexity"] if evals[-1] is not first else None
    return report, {"held_out_perplexity_before": before, "held_out_perplexity_after": after}


__all__ = ["run_pretrain", "load_pretrain_data", "summarize", "RunPaths", "bert_config"]
