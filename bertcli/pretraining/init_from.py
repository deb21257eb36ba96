"""`pretrain --init-from DIR`: continue pretraining a saved BERT instead of starting from random weights.

DIR is a folder transformers saved (`BertForPreTraining`, `BertForMaskedLM`, a bare `BertModel` such as a
sentence-transformers export) or one of our own `final/` or `checkpoints/step-N`. Everything here runs before any
output is written: the folder and its weights are checked (`model_dir.check_checkpoint_dir`), the config's
model section is resolved against the checkpoint's config.json (its shape wins over a preset; a shape key the user set
that disagrees is an error),
and the data must have been tokenized with the checkpoint's tokenizer (or one that extends it with new words at the
end, for which the embedding matrix grows). Heads the checkpoint lacks start fresh; `LoadReport` says which.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertcli.errors import UsageError
from bertcli.model_dir import (
    LoadReport,
    check_checkpoint_dir,
    has_tokenizer,
    is_pretrain_checkpoint,
    materialize_pretrain_checkpoint,
    weights_file,
)
from bertcli.schema.pretrain import PRESETS, PretrainConfig

SHAPE_KEYS = tuple(PRESETS["base"])  # num_hidden_layers, hidden_size, num_attention_heads, intermediate_size
# Keys that define the architecture: taken from the checkpoint, an explicit different value is an error.
ARCHITECTURE_KEYS = (*SHAPE_KEYS, "max_position_embeddings", "type_vocab_size", "hidden_act", "layer_norm_eps")
NSP_HEAD = "cls.seq_relationship"


@dataclass
class InitSource:
    """A checkpoint to continue from: the folder from_pretrained reads (a step-N is written out as one first),
    its config.json and its tokenizer."""

    given: str  # what the user named
    dir: Path
    config: dict[str, Any]
    tokenizer: Any
    workdir: Any = field(default=None, repr=False)  # keeps a written-out step-N alive for the run
    grows: bool = False  # the data's tokenizer extends the checkpoint's: the embedding matrix grows


def open_init_source(path: str) -> InitSource:
    """Check the folder and read its config and tokenizer; a one-line UsageError says what is wrong."""
    from transformers import AutoTokenizer

    folder, workdir = Path(path), None
    if is_pretrain_checkpoint(folder):  # checkpoints/step-N: Accelerate state, written out as save_pretrained
        workdir = tempfile.TemporaryDirectory(prefix="bertcli-init-")
        folder = materialize_pretrain_checkpoint(folder, Path(workdir.name))
    config = check_checkpoint_dir(folder)
    if config.get("model_type") != "bert":
        raise UsageError(
            f"model.init_from {path} holds a {config.get('model_type')!r} model; pretrain continues BERT checkpoints "
            "(model_type 'bert') only"
        )
    if not has_tokenizer(folder):
        raise UsageError(
            f"model.init_from {path} has no tokenizer (tokenizer.json or vocab.txt), so the data's token ids cannot be "
            "checked against the model's; save the tokenizer the model was trained with into that folder"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: the tokenizer cannot be loaded ({str(err).splitlines()[0]})") from None
    return InitSource(str(path), folder, config, tokenizer, workdir)


def resolve_model(cfg: PretrainConfig, source: InitSource) -> PretrainConfig:
    """`cfg` with the architecture keys of the model section filled from the checkpoint, so that config.yaml and
    the resume check record the real shape. The checkpoint is the user's explicit choice: its shape wins over
    model.preset (a default, recorded as null once the checkpoint gives the whole shape); only a key the user set
    in the config file or with --set that disagrees with the checkpoint is an error naming both values."""
    model = cfg.model
    explicit = model.model_fields_set
    for key in ARCHITECTURE_KEYS:
        have, value = source.config.get(key), getattr(model, key)
        if key in explicit and value is not None and have is not None and value != have:
            raise UsageError(
                f"model.{key} is {value} but the checkpoint {source.given} has {key} {have}: the shape comes from the "
                f"checkpoint; remove model.{key} or set it to {have}"
            )
    filled = {k: source.config[k] for k in ARCHITECTURE_KEYS if k in source.config}
    if filled.get("hidden_act") not in ("gelu", "relu", "gelu_new", "silu"):
        filled.pop("hidden_act", None)  # not a value the schema takes; the model still uses the checkpoint's
    if all(key in filled for key in SHAPE_KEYS):
        filled["preset"] = None  # the checkpoint gave the shape: config.yaml must not name a preset it ignored
    return cfg.model_copy(update={"model": model.model_copy(update=filled)})


SEGMENT_NOTE = (
    "the model has one segment embedding (type_vocab_size 1): every segment id is read as 0 "
    "(masked-LM training does not need them)"
)


def check_segments(cfg: PretrainConfig, source: InitSource | None) -> None:
    """A model with one segment embedding (type_vocab_size: the checkpoint's, resolved into `cfg`) cannot learn NSP,
    whose pairs need segment ids 0 and 1; under objective mlm the pairs' segment ids are read as 0
    (`modeling.one_segment`), as RoBERTa reads its inputs."""
    if cfg.model.type_vocab_size == 1 and cfg.objective == "mlm+nsp":
        model = f"the checkpoint {source.given}" if source is not None else "the model (model.type_vocab_size)"
        raise UsageError(
            f"{model} has one segment embedding (type_vocab_size 1); NSP pairs need 2: set objective=mlm "
            "(--set objective=mlm), which reads every segment id as 0"
        )


def check_data_fits(source: InitSource, data_tokenizer, data_dir: str, stats: list[dict]) -> bool:
    """The data's tokenizer must be the checkpoint's, or extend it (its tokens at the same ids, new ones after);
    its sequences must fit the checkpoint's positions. Returns True when the vocabulary must grow."""
    old, new = source.tokenizer.get_vocab(), data_tokenizer.get_vocab()
    rows = int(source.config.get("vocab_size", len(old)))
    grows = new != old and _extends(old, new)
    if new != old and not grows:
        old_ids, new_ids = {i: t for t, i in old.items()}, {i: t for t, i in new.items()}
        first = min(i for i in set(old_ids) | set(new_ids) if old_ids.get(i) != new_ids.get(i))
        raise UsageError(
            f"{data_dir} was tokenized with another tokenizer than the checkpoint {source.given} (id {first} is "
            f"{new_ids.get(first)!r} in the data's, {old_ids.get(first)!r} in the checkpoint's); tokenize again "
            f"with --set tokenizer.path={source.given}"
        )
    if (grows and len(old) != rows) or (not grows and len(new) > rows):
        raise UsageError(
            f"the tokenizer of {source.given} has {len(old)} tokens but its model has {rows} embedding rows; "
            "they do not belong together"
        )
    positions = int(source.config.get("max_position_embeddings", 512))
    for info in stats:
        length = int(info.get("max_seq_length", 0))
        if length > positions:
            raise UsageError(
                f"{info['dir']} has sequences of up to {length} tokens but the checkpoint {source.given} takes at most "
                f"{positions} positions (max_position_embeddings); tokenize with --set nsp.max_seq_length={positions}"
            )
    return grows


def _extends(old: dict[str, int], new: dict[str, int]) -> bool:
    """`new` keeps every token of `old` at its id and adds tokens only after them."""
    return all(new.get(token) == i for token, i in old.items()) and all(
        i >= len(old) for token, i in new.items() if token not in old
    )


def load_pretraining_model(cfg: PretrainConfig, source: InitSource, data_tokenizer, grows: bool):
    """(BertForPreTraining, LoadReport, embeddings growth report or None). Seed first
    (`accelerate.utils.set_seed`): the heads the checkpoint lacks are initialised from the global RNG."""
    from transformers import BertConfig, BertForPreTraining
    from transformers.utils import logging as hf_logging

    config = BertConfig.from_pretrained(str(source.dir), local_files_only=True)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range"):
        setattr(config, key, getattr(cfg.model, key))  # training choices of this run, not of the checkpoint's
    config.architectures = ["BertForPreTraining"]
    config.tie_word_embeddings = True  # the MLM decoder is the word embeddings, as in BERT
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # our LoadReport says what transformers' load report says, once
    hf_logging.disable_progress_bar()
    try:
        model, info = BertForPreTraining.from_pretrained(
            str(source.dir), config=config, local_files_only=True, output_loading_info=True,
            attn_implementation=cfg.model.attn_implementation,
        )  # fmt: skip
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    # The decoder's bias is the head's bias (tied): one tensor, reported once.
    new = sorted(set(info["missing_keys"]) - {"cls.predictions.decoder.bias"})
    arch = ",".join(source.config.get("architectures") or ["BertModel"])
    total = len({t.data_ptr() for t in model.state_dict().values()})  # tied decoder weight and bias count once
    report = LoadReport(source.given, arch, total - len(new), new, sorted(info["unexpected_keys"]))
    report.weights = weights_file(source.dir).name
    growth = None
    if grows:
        from bertcli.vocab import grow_embeddings  # section 3 of issue 13: new words' rows from their pieces

        growth = grow_embeddings(model, source.tokenizer, data_tokenizer)
    return model, report, growth


def report_lines(report: LoadReport, growth: dict | None, objective: str) -> list[str]:
    """The load report as printed, with the embedding growth and advice on the objective."""
    lines = report.lines()
    if growth:
        lines.append("embeddings grown: " + ", ".join(f"{k} {v}" for k, v in growth.items()))
    if any(name.startswith(NSP_HEAD) for name in report.new):
        advice = "objective mlm is the natural choice" if objective == "mlm+nsp" else "objective mlm suits it"
        lines.append(f"the checkpoint has no NSP head ({NSP_HEAD} starts fresh): {advice}")
    return lines


def report_record(report: LoadReport, growth: dict | None) -> dict[str, Any]:
    """The load report as saved (metrics.jsonl, the result, the model card)."""
    return {**report.as_dict(), **({"embeddings_grown": growth} if growth else {})}
