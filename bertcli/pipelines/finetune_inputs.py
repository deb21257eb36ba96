"""The inputs of `run_finetune`: the task, its files, the model folder and the tokenizer, read and checked before
anything is written, then tokenized once for all seeds. Each task family reads and encodes its own files
(classification: `finetune_data`; tagging: `finetune_tagging`)."""

from __future__ import annotations

from pathlib import Path

from bertcli.errors import UsageError
from bertcli.metrics import resolve
from bertcli.pipelines.finetune_data import FinetuneData, encode_examples
from bertcli.pipelines.finetune_model import (
    check_checkpoint_dir,
    is_pretrain_checkpoint,
    load_tokenizer_for,
    materialize_pretrain_checkpoint,
)
from bertcli.schema.finetune import FinetuneConfig
from bertcli.tasks import (
    TaskSpec,
    custom_task,
    glue_task,
    infer_labels,
    read_examples,
    read_label_values,
    task_files,
    with_labels,
)
from bertcli.tasks.span import SPAN_TASKS, span_task
from bertcli.tasks.tagging import tagging_task


def resolve_task(cfg: FinetuneConfig) -> tuple[TaskSpec, Path, dict[str, Path]]:
    """The task spec, the training file and the evaluation files (split name -> path)."""
    t = cfg.task
    if t.name in SPAN_TASKS:
        spec = span_task(t.name, doc_stride=t.doc_stride, n_best_size=t.n_best_size,
                         max_answer_length=t.max_answer_length,
                         null_score_diff_threshold=t.null_score_diff_threshold)  # fmt: skip
        found = {}
    elif t.name == "ner":
        spec = tagging_task(t.scheme, t.labels, strict=t.strict, tag_column=t.tag_column, tokens_field=t.tokens_field,
                            tags_field=t.tags_field, label_all_pieces=t.label_all_pieces,
                            strip_position_digits=t.strip_position_digits, nested=t.nested)  # fmt: skip
        found = {}
    elif cfg.task.name == "custom":
        for name in cfg.task.metrics or []:
            resolve(name, "metric in task.metrics")
        spec = custom_task(
            cfg.task.text_columns,
            cfg.task.label_column,
            cfg.task.labels,
            cfg.task.regression,
            cfg.task.metrics,
        )
        found: dict[str, Path] = {}
    else:
        spec = glue_task(cfg.task.name)
        if spec.eval_only:
            raise UsageError(f"task '{spec.name}' is for evaluation only (use `bertcli eval` with an MNLI model)")
        found = task_files(spec, cfg.data.dir) if cfg.data.dir else {}
        if cfg.data.dir and not Path(cfg.data.dir).is_dir():
            raise UsageError(f"data.dir {cfg.data.dir} is not a folder")
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


def is_tagging(spec) -> bool:
    """Whether `spec` is a token-classification task (`tasks.tagging.TaggingSpec`)."""
    return getattr(spec, "family", "classification") == "tagging"


def is_span(spec) -> bool:
    """Whether `spec` is an extractive QA task (`tasks.span.SpanSpec`)."""
    return getattr(spec, "family", "classification") == "span"


def _split_name(path: str, i: int, n: int) -> str:
    return "validation" if n == 1 else f"validation_{Path(path).stem}"


def load_finetune_data(cfg: FinetuneConfig, work: Path) -> FinetuneData:
    """Read and check every file, load and check the tokenizer, tokenize once for all seeds. A pretrain
    checkpoints/step-N folder is first written as a save_pretrained folder under `work`."""
    spec, train_path, eval_paths = resolve_task(cfg)
    model_dir = Path(cfg.model.path)
    tok_dir = Path(cfg.model.tokenizer_path) if cfg.model.tokenizer_path else None
    if is_pretrain_checkpoint(model_dir):
        model_dir = materialize_pretrain_checkpoint(model_dir, work, tok_dir)
    raw = check_checkpoint_dir(model_dir)
    if is_tagging(spec):
        from bertcli.pipelines.finetune_tagging import load_tagging_data  # it imports finetune_data, as this does

        return load_tagging_data(cfg, spec, train_path, eval_paths, model_dir, raw, tok_dir)
    if is_span(spec):
        from bertcli.pipelines.finetune_span import load_span_data

        return load_span_data(cfg, spec, train_path, eval_paths, model_dir, raw, tok_dir)
    if spec.label_names is None and not spec.is_regression:  # custom task without a label list
        spec = with_labels(spec, infer_labels(read_label_values(spec, train_path, cfg.data.format)))
        if len(spec.label_names) < 2:
            raise UsageError(f"{train_path}: only one label ({spec.label_names[0]!r}); a classifier needs two")
    read = dict(fmt=cfg.data.format, empty_text=cfg.data.empty_text, require_labels=True)
    train = read_examples(spec, train_path, **read)
    evals = {name: read_examples(spec, path, **read) for name, path in eval_paths.items()}
    tok = load_tokenizer_for(model_dir, tok_dir, raw.get("vocab_size", -1))
    # init_kwargs is what save_pretrained writes to tokenizer_config.json: best/ keeps the side, so eval and
    # pipeline(truncation=True) cut the same end
    tok.truncation_side = tok.init_kwargs["truncation_side"] = cfg.data.truncation_side
    max_positions = raw.get("max_position_embeddings")
    if max_positions and cfg.data.max_seq_length > max_positions:
        raise UsageError(
            f"data.max_seq_length {cfg.data.max_seq_length} exceeds the model's max_position_embeddings "
            f"{max_positions}; lower it"
        )
    length = cfg.data.max_seq_length
    encoded = {name: encode_examples(tok, ex, length, spec.is_regression) for name, ex in evals.items()}
    data = FinetuneData(
        spec, tok, encode_examples(tok, train, length, spec.is_regression), encoded,
        {"train": str(train_path), **{k: str(v) for k, v in eval_paths.items()}}, model_dir,
    )  # fmt: skip
    for name, ex in {"train": train, **evals}.items():
        split = data.train if name == "train" else data.evals[name]
        data.counts[name] = {
            "examples": len(ex),
            "truncated": split.truncated,
            "skipped_empty": ex.skipped_empty,
        }
    return data
