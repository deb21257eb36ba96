"""LoRA adapters in `bertcli finetune` (`model.adapter: lora`), through peft.

LoRA (Hu et al. 2021) freezes the pretrained weights and trains, beside chosen linear layers W of the encoder, a
low-rank update B A (rank r), so that the layer computes W x + (alpha / r) B A x; B starts at zero, so training
starts from the checkpoint's function. The task head trains fully: every module outside the base encoder (the child
the task class's `base_model_prefix` names: bert, roberta, deberta, ..., so any family's head on any architecture),
and any module the checkpoint lacked (a fresh pooler: a random frozen layer would be noise). Everything else is
frozen, the word embeddings included, so finetune does not use `tasks.encoder.TrainedRows` with an adapter.

peft changes the task model in place: each target `nn.Linear` becomes a `lora.Linear` module, called as before, and
the head a `ModulesToSaveWrapper` (a trained copy beside the frozen original). The families' forwards call these
modules, whether written out (`modeling.encode` calls `attn.query(...)`, `layer.intermediate(...)`, ...) or the
model's own, so the adapter runs in training and evaluation alike (tested).

Saved (`save_task_model`): best/ holds the merged model (W + (alpha / r) B A, with the trained head): a plain
transformers folder for the `Auto*` classes and `pipeline`. best/adapter/ holds the adapter alone (the LoRA weights
and the head, `PeftModel.save_pretrained`), which `peft.PeftModel.from_pretrained` loads on top of the base
checkpoint. The merge runs on a copy: the model in training keeps its frozen weights bit for bit.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from bertcli.errors import RunFailure, UsageError

ADAPTER_DIR = "adapter"  # best/adapter/: the adapter alone
TARGETS_KEY = "model.lora.target_modules"


@dataclass
class Adapter:
    """A LoRA adapter added to a task model: the `peft.PeftModel` around it (the task model itself, changed in place,
    is `peft_model.base_model.model`) and what trains."""

    peft_model: Any
    rank: int
    alpha: float
    targets: list[str]  # the names the layers were chosen by (model.lora.target_modules or peft's default)
    layers: int  # how many linear layers carry an update
    head: list[str]  # the modules trained fully
    trainable: int
    total: int  # parameters of the task model as saved (merged)

    def describe(self) -> str:
        """One line for the console: what trains, and its share of the model's parameters."""
        share = 100 * self.trainable / self.total
        return (
            f"LoRA r={self.rank} (alpha {self.alpha:g}) on {','.join(self.targets)} ({self.layers} layers), head "
            f"{','.join(self.head)} trained fully: {share:.3g}% of parameters train ({self.trainable:,} of "
            f"{self.total:,}); the rest is frozen"
        )


def check_adapter(model_cfg, model_dir: Path, auto_class: str) -> None:
    """Check the adapter's settings against the task model before anything is written: peft is there, the model has
    a base encoder, the target names match linear layers of it. The model is built from its config on the meta
    device: no weights are read or allocated. `add_adapter` checks the same on the real model."""
    if model_cfg.adapter == "none":
        return
    import torch
    import transformers

    _import_peft()
    config = transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    try:
        with torch.device("meta"):
            model = getattr(transformers, auto_class).from_config(config)
    except Exception:  # noqa: BLE001 - a model that cannot be built this way is checked when it is loaded
        return
    prefix = _base_prefix(model)
    names = model_cfg.lora.target_modules or default_targets(model, prefix)
    target_layers(model, prefix, names, trained_fully(model, prefix, []))


def _import_peft():
    try:
        import peft
    except ImportError:
        raise UsageError("model.adapter lora needs peft: pip install 'bertcli[adapters]'") from None
    return peft


def _base_prefix(model: nn.Module) -> str:
    prefix = model.base_model_prefix
    if not prefix or not isinstance(getattr(model, prefix, None), nn.Module):
        raise UsageError(f"model.adapter lora: {type(model).__name__} has no base encoder to adapt; set it to none")
    return prefix


def add_adapter(model: nn.Module, model_cfg, new_keys: list[str]) -> Adapter | None:
    """Add the adapter `model_cfg.adapter` names to the task `model` in place, and freeze what it does not train.
    None (nothing changes) for `none`. `model_cfg`: finetune's `model` section; `new_keys`: the state-dict keys the
    checkpoint lacked (`LoadReport.new`). UsageError naming the key for target names that match no linear layer."""
    if model_cfg.adapter == "none":
        return None
    peft = _import_peft()
    prefix = _base_prefix(model)
    head = trained_fully(model, prefix, new_keys)
    lora = model_cfg.lora
    names = lora.target_modules or default_targets(model, prefix)
    layers = target_layers(model, prefix, names, head)
    total = sum(p.numel() for p in model.parameters())
    config = peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=layers,
                             modules_to_save=head, bias="none")  # fmt: skip
    with warnings.catch_warnings():  # transformers' deprecation notes on attributes peft reads
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = peft.get_peft_model(model, config)
    # the base a user loads the adapter onto: the folder given, not the temporary one a pretrain step-N was written to
    peft_model.peft_config["default"].base_model_name_or_path = model_cfg.path
    _check_wrapped(model, head)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Adapter(peft_model, lora.rank, lora.alpha, list(names), len(layers), head, trainable, total)


def trained_fully(model: nn.Module, prefix: str, new_keys: list[str]) -> list[str]:
    """The modules that train whole: the task model's children other than its base encoder that hold parameters (the
    head, whatever a family and an architecture call it), and inside the encoder those the checkpoint lacked."""
    head = [name for name, child in model.named_children() if name != prefix and any(True for _ in child.parameters())]
    params = dict(model.named_parameters())
    for key in new_keys:
        module = key.rpartition(".")[0]
        inside_head = any(module == h or module.startswith(f"{h}.") for h in head)
        if key in params and module.startswith(f"{prefix}.") and not inside_head and module not in head:
            head.append(module)
    return head


def default_targets(model: nn.Module, prefix: str) -> list[str]:
    """peft's default target layers for the model type (query and value for BERT); a UsageError naming the key where
    peft has none."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = getattr(model.config, "model_type", None)
    if model_type not in DEFAULTS:
        raise UsageError(f"{TARGETS_KEY}: peft has no default for model type {model_type}; name the layers to adapt, "
                         f"from its linear layers: {', '.join(linear_names(model, prefix))}")  # fmt: skip
    return list(DEFAULTS[model_type])


def linear_names(model: nn.Module, prefix: str) -> list[str]:
    """The distinct last names of the base encoder's linear layers, in model order."""
    names = [path.rpartition(".")[2] for path, module in model.named_modules()
             if path.startswith(f"{prefix}.") and isinstance(module, nn.Linear)]  # fmt: skip
    return list(dict.fromkeys(names))


def target_layers(model: nn.Module, prefix: str, names: list[str], head: list[str]) -> list[str]:
    """The full paths of the encoder's linear layers that `names` match (a name or dotted suffix, as peft matches),
    outside the modules trained fully. UsageError naming the key for a name that matches none."""
    linear = [path for path, module in model.named_modules()
              if path.startswith(f"{prefix}.") and isinstance(module, nn.Linear)
              and not any(path == h or path.startswith(f"{h}.") for h in head)]  # fmt: skip
    found, unmatched = [], []
    for name in names:
        hits = [path for path in linear if path == name or path.endswith(f".{name}")]
        if not hits:
            unmatched.append(name)
        found += [path for path in hits if path not in found]
    if unmatched:
        raise UsageError(f"{TARGETS_KEY}: {', '.join(map(repr, unmatched))} names no linear layer of the "
                         f"{type(model).__name__} encoder ({prefix}); its linear layers: "
                         f"{', '.join(linear_names(model, prefix))}")  # fmt: skip
    return found


def _check_wrapped(model: nn.Module, head: list[str]) -> None:
    """peft picks the modules to train fully by name suffix: make sure it took exactly the head."""
    from peft.utils import ModulesToSaveWrapper

    wrapped = [path for path, module in model.named_modules() if isinstance(module, ModulesToSaveWrapper)]
    if sorted(wrapped) != sorted(head):
        raise RunFailure(f"model.adapter lora: peft trains {', '.join(wrapped)} fully, not the head "
                         f"{', '.join(head)} alone")  # fmt: skip


def save_task_model(net: nn.Module, folder: Path) -> None:
    """Save the task model of a family's forward `net` in `folder` (save_pretrained). With an adapter (`net.adapter`,
    set by finetune): the merged model, and the adapter alone in folder/adapter (module docstring)."""
    adapter: Adapter | None = getattr(net, "adapter", None)
    if adapter is None:
        net.model.save_pretrained(str(folder))
        return
    merged = copy.deepcopy(adapter.peft_model).merge_and_unload()  # the copy: the model in training stays unmerged
    merged.save_pretrained(str(folder))
    # the embeddings never train: peft would otherwise look up the base checkpoint to decide whether to save them
    adapter.peft_model.save_pretrained(str(Path(folder) / ADAPTER_DIR), save_embedding_layers=False)


def card_lines(cfg, auto_class: str) -> list[str]:
    """The model card's lines on the adapter (none without one)."""
    if cfg.model.adapter == "none":
        return []
    lora = cfg.model.lora
    return [
        f"- LoRA adapter (peft): rank {lora.rank}, alpha {lora.alpha:g}, dropout {lora.dropout}, on "
        f"{', '.join(lora.target_modules or ['peft defaults'])}; the head trained fully, the rest frozen. This "
        f"folder is the merged model; `{ADAPTER_DIR}/` holds the adapter alone: "
        f"`PeftModel.from_pretrained({auto_class}.from_pretrained(BASE, num_labels=...), '{ADAPTER_DIR}')`",
    ]
