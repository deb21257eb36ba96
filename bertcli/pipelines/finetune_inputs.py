"""The inputs of `run_finetune`: the task, its files, the model folder and the tokenizer, read and checked before
anything is written, then tokenized once for all seeds. The task's family (`bertcli.tasks.registry`) reads and
encodes its own files (`TaskFamily.load_data`)."""

from __future__ import annotations

from pathlib import Path

from bertcli.distill.layers import cut_layers
from bertcli.distill.teacher import attach_teacher
from bertcli.errors import UsageError
from bertcli.model_dir import check_checkpoint_dir, is_pretrain_checkpoint, materialize_pretrain_checkpoint
from bertcli.schema.finetune import FinetuneConfig
from bertcli.tasks.base import FinetuneData
from bertcli.tasks.registry import family_for, family_of
from bertcli.training.adapters import check_adapter
from bertcli.training.layers import check_layer_options


def resolve_task(cfg: FinetuneConfig):
    """The task spec, the training file and the evaluation files (split name -> path)."""
    spec, found = family_for(cfg.task.name).finetune_spec(cfg)
    train = Path(cfg.data.train_file) if cfg.data.train_file else found.get("train")
    if train is None:
        raise UsageError(f"no training file: {cfg.data.dir} has no {spec.files.get('train')}; set data.train_file")
    if cfg.data.validation_files:
        evals = {_split_name(p, i, len(cfg.data.validation_files)): Path(p)
                 for i, p in enumerate(cfg.data.validation_files)}  # fmt: skip
    else:
        evals = {s: found[s] for s in spec.validation_splits if s in found}
    if not evals:
        raise UsageError("no evaluation file: set data.validation_files (or data.dir with the GLUE dev file)")
    return spec, train, evals


def _split_name(path: str, i: int, n: int) -> str:
    return "validation" if n == 1 else f"validation_{Path(path).stem}"


def load_finetune_data(cfg: FinetuneConfig, work: Path) -> FinetuneData:
    """Read and check every file, load and check the tokenizer, tokenize once for all seeds. A pretrain
    checkpoints/step-N folder is first written as a save_pretrained folder under `work`, as is a student cut to
    model.init_layers; distill.teacher is checked and loaded (`bertcli.distill.teacher`)."""
    spec, train_path, eval_paths = resolve_task(cfg)
    model_dir = Path(cfg.model.path)
    tok_dir = Path(cfg.model.tokenizer_path) if cfg.model.tokenizer_path else None
    if is_pretrain_checkpoint(model_dir):
        model_dir = materialize_pretrain_checkpoint(model_dir, work, tok_dir)
    if cfg.model.init_layers is not None:  # a smaller student: some of the checkpoint's layers (distill.layers)
        model_dir = cut_layers(model_dir, cfg.model.init_layers, work)
    raw = check_checkpoint_dir(model_dir)
    check_layer_options(cfg.model, raw, cfg.model.path)
    check_adapter(cfg.model, model_dir, family_of(spec).auto_class)  # model.adapter's target layers, say
    family = family_of(spec)
    data = family.load_data(cfg, spec, train_path, eval_paths, model_dir, raw, tok_dir)
    if cfg.data.holdout_fraction and data.holdout is None:  # a family that does not carve one yet
        raise UsageError(f"data.holdout_fraction: task {spec.name} cannot hold out a split of its training file; "
                         "set it to 0")  # fmt: skip
    return attach_teacher(cfg, data, family)
