"""Model folders: check one before anything is written, read its tokenizer, and load it with a fresh task head.

`load_with_head` turns a folder (our pretrain `final/`, a bare `BertModel`, a model with another head, any
Hugging Face BERT-family checkpoint) into the task family's Auto model (`TaskFamily.auto_class`) with the task's
labels, and a `LoadReport` naming the weights loaded, newly initialised (the head) and left unused. A pretrain
checkpoints/step-N folder is first written as a save_pretrained folder (`materialize_pretrain_checkpoint`).
The forward that training runs over these models is `bertcli.tasks.encoder.EncoderForward`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from bertcli.errors import UsageError
from bertcli.files import why_missing

TORCH_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")  # read by torch's weights_only unpickler
# The weights files transformers reads from a model folder, in its order of preference.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", *TORCH_WEIGHTS)


@dataclass
class LoadReport:
    """Which tensors of the checkpoint went into the task model."""

    source: str
    architecture: str
    loaded: int
    new: list[str] = field(default_factory=list)  # initialised fresh: the task head (and a pooler if absent)
    unused: list[str] = field(default_factory=list)  # in the checkpoint, not in the task model (e.g. MLM head)
    weights: str = "model.safetensors"  # the file the tensors came from
    layers: list[str] = field(default_factory=list)  # model.reinit_top_layers and model.freeze (training.layers)
    forward: str = ""  # which forward trains it (`tasks.encoder.EncoderForward.path`); "" before one is built

    def lines(self) -> list[str]:
        out = [f"loaded {self.loaded} tensors from {self.source} ({self.architecture})"]
        if self.weights in TORCH_WEIGHTS:
            shards = " and its shards" if self.weights.endswith(".json") else ""
            out.append(f"weights: {self.weights}{shards}, read by torch's weights_only loader (plain tensors; no code "
                       "runs)")  # fmt: skip
        out.append(f"newly initialised: {', '.join(self.new) if self.new else 'nothing'}")
        if self.unused:
            out.append(f"not used ({len(self.unused)}): {_abbreviate(self.unused)}")
        out += self.layers
        if self.forward:
            out.append(f"forward: {self.forward}")
        return out

    def as_dict(self) -> dict:
        return (
            {
                "source": self.source,
                "architecture": self.architecture,
                "loaded": self.loaded,
                "newly_initialised": self.new,
                "not_used": self.unused,
                "weights": self.weights,
            }
            | ({"layers": self.layers} if self.layers else {})
            | ({"forward": self.forward} if self.forward else {})
        )

    @classmethod
    def from_dict(cls, saved: dict) -> LoadReport:
        """The report `as_dict` wrote."""
        return cls(saved["source"], saved["architecture"], saved["loaded"], saved["newly_initialised"],
                   saved["not_used"], saved.get("weights", "model.safetensors"), saved.get("layers", []),
                   saved.get("forward", ""))  # fmt: skip


def _abbreviate(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... (+{len(names) - limit})" if len(names) > limit else "")


def check_checkpoint_dir(path: Path) -> dict:
    """The folder's config.json as a dict, or a one-line error saying why it is not a model checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"model folder {path} {why_missing(path)}")
    config_file = path / "config.json"
    if not config_file.is_file():
        hint = ""
        if (path / "trainer_state.json").is_file():
            hint = "; a training checkpoint without its config.yaml or model.safetensors"
        raise UsageError(f"{path} is not a model checkpoint (no config.json){hint}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except OSError as err:
        raise UsageError(f"{config_file} cannot be read ({err})") from None
    except ValueError as err:  # JSONDecodeError, and UnicodeDecodeError for a file of bytes that are not text
        raise UsageError(
            f"{config_file} is not JSON ({str(err).splitlines()[0]}): a model folder's config.json is the UTF-8 JSON "
            "text save_pretrained writes; re-save or re-download the model"
        ) from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise UsageError(f"{config_file} has no model_type: not a transformers model checkpoint")
    check_weights(path, config)
    return config


def weights_file(path: Path) -> Path:
    """The weights file transformers reads from a model folder: the first of WEIGHT_FILES that is there."""
    for name in WEIGHT_FILES:
        if (Path(path) / name).is_file():
            return Path(path) / name
    raise UsageError(f"{path} has a config.json but no weights ({' or '.join(WEIGHT_FILES[:2])})")


def check_weights(path: Path, config: dict | None = None) -> Path:
    """The weights file of a model folder, checked before any output is prepared, so that a file that cannot be
    loaded is a one-line error then and not a failure after. A safetensors file's header must parse and its
    tensors must fill the file exactly (a truncated download fails here); no tensor is read. A pytorch_model.bin
    must hold plain tensors (`check_torch_weights`). A sharded checkpoint (model.safetensors.index.json or
    pytorch_model.bin.index.json) has each of its shards checked so. `config`: the folder's config.json, for the
    advice. Returns the file (the index of a sharded one)."""
    found = weights_file(path)
    for file in _shards(found) if found.name.endswith(".index.json") else [found]:
        check_safetensors(file) if file.suffix == ".safetensors" else check_torch_weights(file, config)
    return found


def check_safetensors(file: Path) -> None:
    """Parse the header of a safetensors file (memory-mapped, no tensor is read); a one-line error if it is
    corrupt or truncated. The safetensors library checks that the header's tensors cover the file exactly."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="np"):  # the header only: no tensor read, no torch imported
            pass
    except (SafetensorError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"{file} is corrupt or truncated ({reason}); re-save or re-download it") from None


# torch's weights_only unpickler names what it refused: a global (a class or function) or an object it may not build
_NOT_TENSORS = re.compile(r"GLOBAL|global|Can only (?:create|build)|allowlisted|must be imported")


def check_torch_weights(file: Path, config: dict | None = None) -> None:
    """Read a pytorch_model.bin the way transformers does, with torch's weights_only unpickler (memory-mapped where
    the file allows it): plain tensors load, and a pickle holding other objects, which could run code when
    loaded, is refused before anything in it runs. Torch's refusal advises loading with weights_only=False; this
    says instead how to get safetensors weights, in one line. `config`: the folder's config.json, for that."""
    import pickle
    import zipfile

    import torch

    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
    except pickle.UnpicklingError as err:
        if not _NOT_TENSORS.search(str(err)):
            raise UsageError(
                f"{file} is corrupt or truncated (not a torch weights file); re-save or re-download it"
            ) from None
        refused = re.search(r"GLOBAL (\S+)", str(err))
        what = f" ({refused.group(1)})" if refused else ""
        raise UsageError(
            f"{file} holds objects other than tensors{what}, so it is not loaded (unpickling such a file can run "
            "code); ask its publisher for model.safetensors, or, only if you trust where the file came from, "
            f'convert it once: python -c "{_conversion(file, config or {})}"'
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"{file} is corrupt or truncated ({reason}); re-save or re-download it") from None
    if not isinstance(state, dict):
        raise UsageError(f"{file} holds a {type(state).__name__}, not a dict of tensors; it is not model weights")


def _conversion(file: Path, config: dict) -> str:
    """Python that loads `file` with the full unpickler (the caller says: only a file from a trusted source) and
    saves its tensors beside it as model.safetensors. transformers 5 reads a .bin with weights_only=True whatever
    from_pretrained is told, so the snippet unpickles it itself and hands the tensors over as a state dict."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    model_class = (config.get("architectures") or [MODEL_MAPPING_NAMES.get(config.get("model_type"), "BertModel")])[0]
    return (
        f"import torch, transformers as t; d = {str(file.parent)!r}; s = torch.load(d + '/{file.name}', "
        f"weights_only=False); t.{model_class}.from_pretrained(None, config=t.AutoConfig.from_pretrained(d), "
        "state_dict={k: v for k, v in s.items() if torch.is_tensor(v)}).save_pretrained(d)"
    )


def _shards(index: Path) -> list[Path]:
    """The shard files a sharded checkpoint's index (model.safetensors.index.json or pytorch_model.bin.index.json)
    names, each checked to exist."""
    kind = "safetensors" if index.name.startswith("model.safetensors") else "pytorch_model.bin"
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UsageError(f"{index} cannot be read as a {kind} index ({err}); re-save or re-download it") from None
    missing = [name for name in names if not (index.parent / name).is_file()]
    if missing:
        raise UsageError(f"{index} names shards that are not in {index.parent}: {', '.join(missing)}; download them")
    return [index.parent / name for name in names]


def is_pretrain_checkpoint(path: Path) -> bool:
    """A `bertcli pretrain` checkpoints/step-N folder (Accelerate state, no config.json)."""
    path = Path(path)
    names = ("trainer_state.json", "config.yaml", "model.safetensors")
    return not (path / "config.json").is_file() and all((path / n).is_file() for n in names)


def materialize_pretrain_checkpoint(path: Path, work: Path, tokenizer_dir: Path | None = None) -> Path:
    """Turn a pretrain checkpoints/step-N folder into a `save_pretrained` folder (BertForPreTraining plus the
    tokenizer of the tokenize run it trained on, or `tokenizer_dir`) under `work`; returns that folder."""
    import yaml
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertForPreTraining

    from bertcli.modeling import bert_config
    from bertcli.schema.pretrain import PretrainConfig

    try:
        cfg = PretrainConfig.model_validate(yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValueError) as err:
        raise UsageError(f"{path}/config.yaml is not a pretrain config ({str(err).splitlines()[0]})") from None
    check_safetensors(path / "model.safetensors")
    # The loop saved the wrapper (PretrainingModel.model = BertForPreTraining): drop its "model." prefix.
    state = {k.removeprefix("model."): v for k, v in load_file(str(path / "model.safetensors")).items()}
    vocab_size = state["bert.embeddings.word_embeddings.weight"].shape[0]
    model = BertForPreTraining(bert_config(cfg.model, vocab_size))
    missing, unexpected = model.load_state_dict(state, strict=False)
    untied = [k for k in missing if not k.startswith("cls.predictions.decoder")]  # tied to the embeddings
    if untied or unexpected:
        raise UsageError(
            f"{path}: the weights do not fit the model its config.yaml describes ({(untied + unexpected)[0]})"
        )
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else Path(cfg.data.dirs[0]) / "tokenizer"
    if not tok_dir.is_dir():
        raise UsageError(
            f"{path} is a pretrain checkpoint whose tokenizer ({tok_dir}) is not there; set model.tokenizer_path"
        )
    if tokenizer_dir:
        check_same_tokens(path, Path(cfg.data.dirs[0]) / "tokenizer", tok_dir)
    target = Path(work) / path.name
    model.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True).save_pretrained(str(target))
    return target


def load_tokenizer_for(model_dir: Path, tokenizer_dir: Path | None, vocab_size: int, words_pre_split: bool = False,
                       use_only: bool = False, light: bool = False):  # fmt: skip
    """The tokenizer beside the model (or in `tokenizer_dir`), checked against the model's vocabulary size.
    words_pre_split: the inputs are words given one by one (tagging), so a byte-level BPE tokenizer (RoBERTa's,
    ModernBERT's) reads each with the space before it, as words inside running text read (`prefix_space_for_words`);
    best/ saves it so. use_only: evaluation, which never saves the tokenizer; light: the caller needs only the calls
    of `bertcli.tokenizer.JsonBertTokenizer` (`tokenizer_class`)."""
    from bertcli.tokenizer import tokenizer_class

    where = Path(tokenizer_dir or model_dir)
    if not has_tokenizer(where):
        raise UsageError(
            f"no tokenizer in {where} (no tokenizer.json or vocab.txt); set model.tokenizer_path to its folder"
        )
    options = {"add_prefix_space": True} if words_pre_split else {}
    try:
        tok = tokenizer_class(where, use_only, light).from_pretrained(str(where), local_files_only=True, **options)
    except (OSError, ValueError) as err:
        raise UsageError(f"{where}: the tokenizer cannot be loaded ({str(err).splitlines()[0]})") from None
    if words_pre_split:
        prefix_space_for_words(tok)
    if len(tok) != vocab_size:
        raise UsageError(
            f"the tokenizer in {where} has {len(tok)} tokens but the model in {model_dir} has a vocabulary of "
            f"{vocab_size}: they do not belong together (set model.tokenizer_path to the model's own tokenizer)"
        )
    if tok.pad_token_id is None:
        raise UsageError(f"the tokenizer in {where} has no padding token ([PAD]); batches cannot be padded")
    if tokenizer_dir is not None:
        check_same_tokens(Path(model_dir), Path(model_dir), where, tok)
    return tok


def prefix_space_for_words(tok) -> None:
    """A byte-level pre-tokenizer reads a word given alone without the space that precedes it in running text
    ("went" -> w ent, not Ġwent), so words given pre-split would read unlike the text the model was trained on.
    RoBERTa's tokenizer class takes add_prefix_space=True for that (`load_tokenizer_for` passes it); a generic
    fast tokenizer (ModernBERT's) keeps the option unread, so its ByteLevel pre-tokenizer is set here."""
    from tokenizers import pre_tokenizers

    backend = getattr(tok, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    if isinstance(pre, pre_tokenizers.ByteLevel) and not pre.add_prefix_space:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=pre.use_regex,
                                                         trim_offsets=pre.trim_offsets)  # fmt: skip


def max_positions(config) -> int | None:
    """The longest input (pieces, special tokens included) the model's position embeddings take, from its
    config.json (a dict) or config; None if it names no limit. RoBERTa-style models number positions from
    pad_token_id + 1 (their max_position_embeddings is 514 for 512 pieces)."""
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    limit = get("max_position_embeddings")
    if not limit:
        return None
    if get("model_type") in POSITIONS_AFTER_PAD:
        limit -= (get("pad_token_id") or 0) + 1
    return limit


def fitting_length(config, max_seq_length: int) -> int:
    """data.max_seq_length, or the model's own limit (`max_positions`) where that is lower."""
    limit = max_positions(config)
    return min(max_seq_length, limit) if limit else max_seq_length


def check_max_seq_length(config: dict, max_seq_length: int) -> None:
    """A one-line error when data.max_seq_length is more than the model (its config.json) takes."""
    limit = max_positions(config)
    if limit and max_seq_length > limit:
        table = config["max_position_embeddings"]
        after_pad = f" ({limit} pieces: its positions start after pad_token_id + 1)" if limit != table else ""
        raise UsageError(f"data.max_seq_length {max_seq_length} exceeds the model's max_position_embeddings "
                         f"{table}{after_pad}; lower it")  # fmt: skip


# The model types whose position ids start after the padding id (transformers' create_position_ids_from_input_ids).
POSITIONS_AFTER_PAD = ("roberta", "xlm-roberta", "camembert", "roberta-prelayernorm", "data2vec-text", "longformer",
                       "xlm-roberta-xl", "xmod", "ibert", "luke", "mpnet", "markuplm", "esm")  # fmt: skip


def has_tokenizer(folder: Path) -> bool:
    return (Path(folder) / "tokenizer.json").is_file() or (Path(folder) / "vocab.txt").is_file()


def check_same_tokens(model: Path, own: Path, given: Path, given_tok=None) -> None:
    """model.tokenizer_path (`given`) must map tokens to the ids the model was trained with, when the model
    carries its own tokenizer (`own`: its folder, or a pretrain run's data dir). Two tokenizers trained on
    different text can have the same size and other tokens; the vocabularies themselves are compared."""
    from bertcli.tokenizer import tokenizer_class

    if not has_tokenizer(own) or own.resolve() == given.resolve():
        return
    try:
        own_vocab = tokenizer_class(own).from_pretrained(str(own), local_files_only=True).get_vocab()
        given_vocab = (
            given_tok or tokenizer_class(given).from_pretrained(str(given), local_files_only=True)
        ).get_vocab()
    except (OSError, ValueError):
        return  # an unreadable tokenizer is reported where it is loaded; the model's own may be replaced on purpose
    if given_vocab == own_vocab:
        return
    own_ids, given_ids = {i: t for t, i in own_vocab.items()}, {i: t for t, i in given_vocab.items()}
    where = f"in the model folder {own}" if own == model else f"{model} was trained with ({own})"
    first = min(i for i in set(own_ids) | set(given_ids) if own_ids.get(i) != given_ids.get(i))
    raise UsageError(
        f"the tokenizer in {given} (model.tokenizer_path) has other tokens than the one {where} (id {first} is "
        f"{given_ids.get(first)!r} there, {own_ids.get(first)!r} in the model's): the model would read the wrong "
        "ids; unset model.tokenizer_path to use the model's own tokenizer"
    )


ONE_SEGMENT_NOTE = (
    "the model has one segment embedding (type_vocab_size 1): the second text of a pair is read with "
    "segment id 0 like the first, as RoBERTa reads pairs"
)
NO_SEGMENT_NOTE = (
    "the model has no segment embeddings ({model}): the two texts of a pair are told apart by the separator token alone"
)


def load_with_head(model_dir: Path | str, spec, auto_class: str, problem_type: str | None,
                   classifier_dropout: float | None = None):  # fmt: skip
    """(model, LoadReport): the checkpoint with a fresh head for `spec`'s labels (its id2label), from local files
    only, built by transformers' `auto_class` (a task family's: `TaskFamily.auto_class`). Seed first
    (`accelerate.utils.set_seed`): the new head's initial weights come from the global RNG."""
    import transformers
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    model_dir = Path(model_dir)
    raw = check_checkpoint_dir(model_dir)
    labels = spec.id2label
    auto_model = getattr(transformers, auto_class)
    config = AutoConfig.from_pretrained(
        str(model_dir),
        local_files_only=True,
        num_labels=spec.num_labels,
        id2label=labels,
        label2id={name: i for i, name in labels.items()},
        problem_type=problem_type,
    )
    if classifier_dropout is not None:
        config.classifier_dropout = classifier_dropout
    config.architectures = None  # save_pretrained records the task model's own class
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # our LoadReport says what the "newly initialized" warning says, once
    hf_logging.disable_progress_bar()
    try:
        model, info = auto_model.from_pretrained(
            str(model_dir), config=config, local_files_only=True, output_loading_info=True,
            ignore_mismatched_sizes=True,  # a checkpoint with another classifier head gets a fresh one
        )  # fmt: skip
    except ValueError as err:  # e.g. a model type without a sequence-classification class
        raise UsageError(f"{model_dir}: cannot build a classifier from it ({str(err).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return model, _report(model, info, model_dir, raw)


def _report(model, info: dict, model_dir: Path, raw: dict) -> LoadReport:
    mismatched = [m[0] if isinstance(m, (tuple, list)) else m for m in info.get("mismatched_keys", [])]
    new = sorted(set(info.get("missing_keys", [])) | set(mismatched))
    total = len(model.state_dict())
    arch = ",".join(raw.get("architectures") or [raw.get("model_type", "?")])
    unused = sorted(info.get("unexpected_keys", []))
    return LoadReport(str(model_dir), arch, total - len(new), new, unused, weights_file(model_dir).name)
