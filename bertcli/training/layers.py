"""Per-layer fine-tuning options, for any encoder whose layers sit in one list: layer-wise learning-rate decay
(`train.layer_lr_decay`), re-initialising the top layers (`model.reinit_top_layers`) and freezing the bottom of the
model (`model.freeze`).

The parts are found by shape, not by family or architecture (`encoder_parts`): the transformers model's
`base_model` holds the embeddings module (`embeddings`, or the module of `get_input_embeddings()`), one
`nn.ModuleList` of layers named `layer` or `layers` (BERT, RoBERTa, ELECTRA, DeBERTa: `encoder.layer`; DistilBERT:
`transformer.layer`; ModernBERT: `layers`), and maybe a `pooler`. The task head is everything outside `base_model`.

Depth, counted from the top: the head and the pooler 0, the top layer 1, ... the bottom layer L, the embeddings
L + 1, and so is anything else in `base_model` outside the layers (ELECTRA's embeddings projection, DeBERTa's
relative-position embeddings, which every layer reads). With decay d a parameter's learning rate is lr * d**depth
(Howard & Ruder 2018; Sun et al. 2019; Zhang et al. 2021 use d = 0.9-0.95).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bertcli.errors import UsageError
from bertcli.training.optim import parameter_groups

LAYER_LIST_NAMES = ("layer", "layers")


@dataclass
class EncoderParts:
    model: nn.Module  # the transformers model (its `_init_weights` re-initialises)
    base: nn.Module  # model.base_model: everything but the task head
    embeddings: nn.Module
    layers: nn.ModuleList
    pooler: nn.Module | None


def transformers_model(net: nn.Module) -> nn.Module:
    """The outermost transformers model in `net` (a family's forward wraps it; `named_modules` is pre-order)."""
    from transformers import PreTrainedModel

    found = next((m for m in net.modules() if isinstance(m, PreTrainedModel)), None)
    if found is None:
        raise UsageError(f"{type(net).__name__} holds no transformers model: the per-layer options need one")
    return found


def encoder_parts(model: nn.Module) -> EncoderParts:
    """The embeddings, the list of encoder layers and the pooler of a transformers encoder (module docstring)."""
    base = getattr(model, "base_model", model)
    lists = [(name, m) for name, m in base.named_modules()
             if isinstance(m, nn.ModuleList) and name.rsplit(".", 1)[-1] in LAYER_LIST_NAMES and len(m)]  # fmt: skip
    if not lists:
        raise UsageError(
            f"{type(model).__name__} has no list of encoder layers (a module list named layer or layers), so "
            "train.layer_lr_decay, model.reinit_top_layers and model.freeze cannot find its layers; leave them at "
            "their defaults for this model"
        )
    layers = min(lists, key=lambda item: item[0].count("."))[1]  # the outermost: not a list inside a layer
    embeddings = getattr(base, "embeddings", None)
    if not isinstance(embeddings, nn.Module):
        embeddings = base.get_input_embeddings()
    pooler = getattr(base, "pooler", None)
    return EncoderParts(model, base, embeddings, layers, pooler if isinstance(pooler, nn.Module) else None)


def layer_count(config: dict) -> int | None:
    """The number of encoder layers a model folder's config.json declares (None if it names none)."""
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def check_layer_options(model_cfg, config: dict, where: str) -> None:
    """Before anything is written: model.reinit_top_layers and model.freeze's k fit the model's layers (config.json
    of the folder `where`), and do not both touch one layer (a re-initialised layer must train)."""
    n = layer_count(config)
    reinit, freeze = model_cfg.reinit_top_layers, model_cfg.freeze
    if n is None:
        return
    if reinit > n:
        raise UsageError(f"model.reinit_top_layers {reinit}: the model in {where} has {n} encoder layers")
    if isinstance(freeze, int) and freeze > n:
        raise UsageError(f"model.freeze {freeze}: the model in {where} has {n} encoder layers")
    if isinstance(freeze, int) and reinit and freeze + reinit > n:
        raise UsageError(f"model.freeze {freeze} and model.reinit_top_layers {reinit} overlap: the model has {n} "
                         "layers, and a re-initialised layer must train; lower one of them")  # fmt: skip


# --- layer-wise learning-rate decay ------------------------------------------------------------------------------


def parameter_depths(net: nn.Module) -> dict[int, int]:
    """id(parameter) -> depth from the top (module docstring) for every parameter of `net`."""
    parts = encoder_parts(transformers_model(net))
    n = len(parts.layers)
    depth = {id(p): 0 for p in net.parameters()}  # the head (and anything else outside the encoder)
    for p in parts.base.parameters():
        depth[id(p)] = n + 1  # embeddings, and what every layer shares
    for i, layer in enumerate(parts.layers):
        for p in layer.parameters():
            depth[id(p)] = n - i
    for p in parts.pooler.parameters() if parts.pooler is not None else ():
        depth[id(p)] = 0
    for module in net.modules():  # tasks.encoder.TrainedRows: the rows trained in place of an embedding matrix
        source = getattr(module, "embedding", None)
        if isinstance(source, nn.Embedding) and isinstance(getattr(module, "weight", None), nn.Parameter):
            depth[id(module.weight)] = depth[id(source.weight)]
    return depth


def layerwise_groups(net: nn.Module, weight_decay: float, learning_rate: float, decay: float) -> list[dict]:
    """BERT's weight-decay groups (`training.optim.parameter_groups`), each split by depth with its own "lr":
    learning_rate * decay**depth. decay 1.0: the two groups as they are (every group at the optimizer's lr). The
    schedule (LambdaLR) multiplies each group's own initial lr, so the ratios between layers hold at every step."""
    groups = parameter_groups(net, weight_decay)
    if decay == 1.0:
        return groups
    depth = parameter_depths(net)
    split: list[dict] = []
    for group in groups:
        by_depth: dict[int, list[nn.Parameter]] = {}
        for p in group["params"]:
            by_depth.setdefault(depth[id(p)], []).append(p)
        for d in sorted(by_depth):
            split.append({"params": by_depth[d], "weight_decay": group["weight_decay"],
                          "lr": learning_rate * decay**d, "depth": d})  # fmt: skip
    return split


# --- re-initialising and freezing --------------------------------------------------------------------------------


def reinit_top_layers(model: nn.Module, k: int) -> list[str]:
    """Re-initialise the top `k` encoder layers, and the pooler if there is one, with the model's own
    `_init_weights` (Zhang et al. 2021: their pretrained weights specialise to the pretraining task). Draws from
    torch's generator: seed it first. Returns what it re-initialised, for the load report."""
    if k <= 0:
        return []
    parts = encoder_parts(model)
    n = len(parts.layers)
    if k > n:
        raise UsageError(f"model.reinit_top_layers {k}: the model has {n} encoder layers")
    targets = list(parts.layers[n - k :]) + ([parts.pooler] if parts.pooler is not None else [])
    with torch.no_grad():
        for target in targets:
            for module in target.modules():
                _forget_loaded(module)
                model._init_weights(module)
    what = [f"layers {n - k}-{n - 1}" if k > 1 else f"layer {n - 1}"]
    return what + (["the pooler"] if parts.pooler is not None else [])


def _forget_loaded(module: nn.Module) -> None:
    """transformers 5 marks loaded tensors `_is_hf_initialized`, and its init functions leave marked ones alone."""
    for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False), module):
        if getattr(tensor, "_is_hf_initialized", False):
            tensor._is_hf_initialized = False


def freeze(model: nn.Module, what: str | int) -> str | None:
    """Stop training part of the model: "embeddings", an int k (the embeddings and the first k layers) or
    "encoder" (everything but the task head: a linear probe). Frozen parameters get requires_grad False (the
    optimizer never sees them). Returns the load report's line, e.g. "embeddings + layers 0-3: 40% of
    parameters"; None for "none"."""
    if what == "none":
        return None
    parts = encoder_parts(model)
    if what == "encoder":
        frozen, name = [parts.base], "the encoder (everything but the task head)"
    else:
        k = 0 if what == "embeddings" else int(what)
        if k > len(parts.layers):
            raise UsageError(f"model.freeze {k}: the model has {len(parts.layers)} encoder layers")
        frozen = [parts.embeddings, *parts.layers[:k]]
        name = "embeddings" + ("" if k == 0 else " + layer 0" if k == 1 else f" + layers 0-{k - 1}")
    for module in frozen:
        module.requires_grad_(False)
    unique = {id(p): p for p in model.parameters()}.values()  # tied weights counted once
    share = sum(p.numel() for p in unique if not p.requires_grad) / max(1, sum(p.numel() for p in unique))
    shown = f"{share:.1%}" if 0.99 < share < 1 else f"{share:.0%}"  # a linear probe's head is a sliver, not nothing
    return f"{name}: {shown} of parameters"


def apply_layer_options(model: nn.Module, model_cfg) -> list[str]:
    """`model.reinit_top_layers` then `model.freeze` on a freshly loaded task model (after the seed is set);
    returns the load report's lines about them."""
    lines = []
    if model_cfg.reinit_top_layers:
        lines.append(f"re-initialised: {', '.join(reinit_top_layers(model, model_cfg.reinit_top_layers))}")
    frozen = freeze(model, model_cfg.freeze)
    if frozen:
        lines.append(f"frozen: {frozen}")
    return lines
