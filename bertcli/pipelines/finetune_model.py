"""Fine-tuning models: load any local BERT-family checkpoint with a fresh task head, report what was loaded.

`load_classifier` turns a folder (our pretrain `final/`, a bare `BertModel`, a model with another head, any
Hugging Face BERT-family checkpoint) into an `AutoModelForSequenceClassification` with the task's labels, plus its
tokenizer, and a `LoadReport` naming the weights loaded, newly initialised (the head) and left unused.

`ClassifierForward` runs a `BertForSequenceClassification` the same way, with three savings:
- The last encoder layer computes only the [CLS] position. The pooler and the classifier read nothing else, so the
  attention queries and the feed-forward of the other positions in that layer are work thrown away. Keys and values
  still see every token, and the logits equal the full forward (tested).
- On the CPU, dropout masks come from `training.dropout` (three to five times faster, same distribution). The encoder
  layers are written out (`modeling.encode`) so that the attention-weights dropout, which SDPA would draw inside
  its kernel, is one of them.
- Given the token ids the training data holds, the optimizer sees only those rows of the word-embedding matrix
  (`TrainedRows`). The other rows never get a gradient, so under AdamW all that happens to them is weight decay,
  p * (1 - lr * weight_decay) per step: that product is kept and applied when the full matrix is read (evaluation,
  saving, `state_dict`). On CoLA, 5,476 of a 30,522-token vocabulary occur: AdamW, the gradient's zero-fill and
  its norm touch 18% of the matrix. The weights equal those of training the whole matrix (tested).
Other architectures run their own forward, with `training.dropout` in place of their `nn.Dropout` modules.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bertcli.errors import UsageError
from bertcli.files import why_missing
from bertcli.modeling import block_diagonal_mask, can_write_out_layers, encode, one_segment
from bertcli.tasks import TaskSpec
from bertcli.training.dropout import use_fast_dropout

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

    def lines(self) -> list[str]:
        out = [f"loaded {self.loaded} tensors from {self.source} ({self.architecture})"]
        if self.weights in TORCH_WEIGHTS:
            shards = " and its shards" if self.weights.endswith(".json") else ""
            out.append(f"weights: {self.weights}{shards}, read by torch's weights_only loader (plain tensors; no code "
                       "runs)")  # fmt: skip
        out.append(f"newly initialised: {', '.join(self.new) if self.new else 'nothing'}")
        if self.unused:
            out.append(f"not used ({len(self.unused)}): {_abbreviate(self.unused)}")
        return out

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "architecture": self.architecture,
            "loaded": self.loaded,
            "newly_initialised": self.new,
            "not_used": self.unused,
            "weights": self.weights,
        }

    @classmethod
    def from_dict(cls, saved: dict) -> LoadReport:
        """The report `as_dict` wrote."""
        return cls(saved["source"], saved["architecture"], saved["loaded"], saved["newly_initialised"],
                   saved["not_used"], saved.get("weights", "model.safetensors"))  # fmt: skip


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
        with safe_open(str(file), framework="pt"):
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


def load_tokenizer_for(model_dir: Path, tokenizer_dir: Path | None, vocab_size: int):
    """The tokenizer beside the model (or in `tokenizer_dir`), checked against the model's vocabulary size."""
    from transformers import AutoTokenizer

    where = Path(tokenizer_dir or model_dir)
    if not has_tokenizer(where):
        raise UsageError(
            f"no tokenizer in {where} (no tokenizer.json or vocab.txt); set model.tokenizer_path to its folder"
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(where), local_files_only=True)
    except (OSError, ValueError) as err:
        raise UsageError(f"{where}: the tokenizer cannot be loaded ({str(err).splitlines()[0]})") from None
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


def has_tokenizer(folder: Path) -> bool:
    return (Path(folder) / "tokenizer.json").is_file() or (Path(folder) / "vocab.txt").is_file()


def check_same_tokens(model: Path, own: Path, given: Path, given_tok=None) -> None:
    """model.tokenizer_path (`given`) must map tokens to the ids the model was trained with, when the model
    carries its own tokenizer (`own`: its folder, or a pretrain run's data dir). Two tokenizers trained on
    different text can have the same size and other tokens; the vocabularies themselves are compared."""
    from transformers import AutoTokenizer

    if not has_tokenizer(own) or own.resolve() == given.resolve():
        return
    try:
        own_vocab = AutoTokenizer.from_pretrained(str(own), local_files_only=True).get_vocab()
        given_vocab = (given_tok or AutoTokenizer.from_pretrained(str(given), local_files_only=True)).get_vocab()
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

# The head of each task family (`spec.family`): the Auto class that builds it.
AUTO_CLASSES = {"classification": "AutoModelForSequenceClassification", "tagging": "AutoModelForTokenClassification",
                "span": "AutoModelForQuestionAnswering"}  # fmt: skip


def load_classifier(model_dir: Path | str, spec: TaskSpec, classifier_dropout: float | None = None):
    """(model, LoadReport): the checkpoint with a fresh head for `spec`'s labels, from local files only: a
    sequence classifier, a token classifier for a tagging task (`spec.family == "tagging"`), or a span (QA) model.
    Seed first (`accelerate.utils.set_seed`): the new head's initial weights come from the global RNG."""
    import transformers
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    model_dir = Path(model_dir)
    raw = check_checkpoint_dir(model_dir)
    labels = spec.id2label
    family = getattr(spec, "family", "classification")
    tagging = family != "classification"  # token-level heads: no problem_type
    auto_class = getattr(transformers, AUTO_CLASSES[family])
    config = AutoConfig.from_pretrained(
        str(model_dir),
        local_files_only=True,
        num_labels=spec.num_labels,
        id2label=labels,
        label2id={name: i for i, name in labels.items()},
        problem_type=None if tagging else "regression" if spec.is_regression else "single_label_classification",
    )
    if classifier_dropout is not None:
        config.classifier_dropout = classifier_dropout
    config.architectures = None  # save_pretrained records the task model's own class
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # our LoadReport says what the "newly initialized" warning says, once
    hf_logging.disable_progress_bar()
    try:
        model, info = auto_class.from_pretrained(
            str(model_dir), config=config, local_files_only=True, output_loading_info=True,
            ignore_mismatched_sizes=True,  # a checkpoint with another classifier head gets a fresh one
        )  # fmt: skip
    except ValueError as err:  # e.g. a model type without a sequence-classification class
        raise UsageError(f"{model_dir}: cannot build a classifier from it ({str(err).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return model, _report(model, info, model_dir, raw)


def _report(model: nn.Module, info: dict, model_dir: Path, raw: dict) -> LoadReport:
    mismatched = [m[0] if isinstance(m, (tuple, list)) else m for m in info.get("mismatched_keys", [])]
    new = sorted(set(info.get("missing_keys", [])) | set(mismatched))
    total = len(model.state_dict())
    arch = ",".join(raw.get("architectures") or [raw.get("model_type", "?")])
    unused = sorted(info.get("unexpected_keys", []))
    return LoadReport(str(model_dir), arch, total - len(new), new, unused, weights_file(model_dir).name)


# --- the forward used in training and evaluation ---------------------------------------------------------------


class EncoderForward(nn.Module):
    """The shared part of the task-family forwards (classification, tagging, QA): a BERT encoder run with the
    module docstring's savings. For `BertFor{SequenceClassification,TokenClassification,QuestionAnswering}` with
    SDPA or eager attention (`written_out`), the layers run as `modeling.encode` writes them, and given the token
    ids of the training data the word embeddings train only those rows (`TrainedRows`). Every model's `nn.Dropout`
    modules are swapped for `FastDropout` (no weights). Subclasses turn `encoded()` into their logits."""

    def __init__(self, model: nn.Module, train_token_ids: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.written_out = self.writes_out(model)
        use_fast_dropout(model)
        self.one_segment = one_segment(model)  # type_vocab_size 1: a pair's second part reads as segment 0 too
        self.rows: TrainedRows | None = None
        if self.written_out and train_token_ids is not None:
            embedding = model.bert.embeddings.word_embeddings
            ids = torch.unique(torch.as_tensor(train_token_ids, dtype=torch.long))
            if embedding.padding_idx is not None:
                ids = torch.unique(torch.cat([ids, torch.tensor([embedding.padding_idx])]))
            if len(ids) < embedding.num_embeddings:  # all rows in use: nothing to save
                self.rows = TrainedRows(embedding, ids)

    @staticmethod
    def writes_out(model: nn.Module) -> bool:
        return type(model).__name__ in WRITTEN_OUT and can_write_out_layers(model.config)

    def train(self, mode: bool = True):
        if not mode and self.rows is not None:
            self.rows.sync()  # evaluation reads the full matrix
        return super().train(mode)

    def encoded(self, input_ids, token_type_ids, attention_mask, cls_only: bool = False, position_ids=None,
                at=None) -> torch.Tensor:  # fmt: skip
        """The encoder's last hidden states, (batch, pieces, hidden); cls_only: (batch, 1, hidden) at [CLS]; at:
        (n, 1, hidden) at those flat positions (a packed batch: `modeling.encode`)."""
        bert = self.model.bert
        if self.rows is not None and self.training:
            hidden = bert.embeddings(inputs_embeds=self.rows(input_ids), token_type_ids=token_type_ids,
                                     position_ids=position_ids)  # fmt: skip
        else:
            hidden = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
        return encode(bert, hidden, attention_mask, cls_only=cls_only, at=at)


# The task models whose encoder `EncoderForward` writes out: their heads read only `bert`'s last hidden states.
WRITTEN_OUT = ("BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering")


class ClassifierForward(EncoderForward):
    """Logits of a sequence-classification model; written out, the last encoder layer runs on [CLS] only (see the
    module docstring). `model` is the saved model."""

    @staticmethod
    def writes_out(model: nn.Module) -> bool:
        return EncoderForward.writes_out(model) and getattr(model.bert, "pooler", None) is not None

    @property
    def cls_only(self) -> bool:
        return self.written_out

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, seq_idx=None,
                cls_positions=None) -> torch.Tensor:  # fmt: skip
        """Logits, one row per example. A packed batch (`finetune_data.PackedCollator`: `position_ids`, `seq_idx`,
        `cls_positions`) runs with a block-diagonal mask, and its last layer at each example's [CLS] only."""
        if seq_idx is not None:
            if not self.cls_only:
                raise ValueError("packed batches need the written-out encoder (finetune checks `cls_only` first)")
            cls = self.encoded(input_ids, token_type_ids, block_diagonal_mask(seq_idx), position_ids=position_ids,
                               at=cls_positions)  # fmt: skip
        elif not self.cls_only:
            return self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask).logits
        else:
            cls = self.encoded(input_ids, token_type_ids, attention_mask, cls_only=True)  # (batch, 1, hidden)
        pooled = self.model.bert.pooler(cls)
        return self.model.classifier(self.model.dropout(pooled))


class TrainedRows(nn.Module):
    """The rows `ids` of an `nn.Embedding` as a parameter of their own, trained in its place (module docstring).

    The embedding's own weight stops requiring a gradient. `track(optimizer)` follows the optimizer's steps: each
    multiplies the weight decay still owed by the other rows by (1 - lr * weight_decay) of this parameter's group.
    `sync()` writes the trained rows back and applies that decay; it runs before the embedding's `state_dict` (any
    save) and when `ClassifierForward` turns to evaluation. Training batches must hold only ids among `ids`."""

    def __init__(self, embedding: nn.Embedding, ids: torch.Tensor):
        super().__init__()
        object.__setattr__(self, "embedding", embedding)  # not a submodule: its weight is saved by its own model
        self.register_buffer("ids", ids, persistent=False)
        position = torch.full((embedding.num_embeddings,), -1, dtype=torch.long)
        position[ids] = torch.arange(len(ids))
        self.register_buffer("position", position, persistent=False)
        self.weight = nn.Parameter(embedding.weight.detach()[ids].clone())
        self.padding_idx = None if embedding.padding_idx is None else int(position[embedding.padding_idx])
        embedding.weight.requires_grad_(False)
        self.decay, self.stale = 1.0, False
        embedding.register_state_dict_pre_hook(lambda *_: self.sync())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(self.position[input_ids], self.weight, padding_idx=self.padding_idx)

    def track(self, optimizer: torch.optim.Optimizer) -> None:
        group = next(g for g in optimizer.param_groups if any(p is self.weight for p in g["params"]))

        def after_step(*_) -> None:
            self.decay *= 1.0 - group["lr"] * group["weight_decay"]  # AdamW's decoupled decay, as torch applies it
            self.stale = True

        optimizer.register_step_post_hook(after_step)

    def sync(self) -> None:
        if not self.stale:
            return
        with torch.no_grad():
            full = self.embedding.weight
            if self.decay != 1.0:
                full.mul_(self.decay)  # every row; the trained ones are overwritten next
            full.index_copy_(0, self.ids, self.weight.detach().to(full.dtype))
        self.decay, self.stale = 1.0, False
