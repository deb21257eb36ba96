"""A smaller student cut from a checkpoint's encoder layers (`model.init_layers`), as DistilBERT initialises its
student from every other layer of its teacher (Sanh et al. 2019).

The checkpoint is loaded with its own class (its head comes along: a fine-tuned teacher's classifier, QA or
tagging head, which the fine-tuning keeps when its labels are the task's), the encoder keeps the chosen layers in
their order, `num_hidden_layers` says how many, and the result is saved with the tokenizer as a plain
`save_pretrained` folder: fine-tuning loads it like any other, and best/ loads with transformers' Auto classes.
"""

from __future__ import annotations

import json
from pathlib import Path

from bertcli.errors import UsageError
from bertcli.model_dir import check_checkpoint_dir, has_tokenizer


def chosen_layers(init_layers: list[int] | int, n: int, path: Path) -> list[int]:
    """The 0-based layers model.init_layers keeps of a model with `n`: the list as given, or k spread evenly
    from the first (i * n // k: 3 of 6 -> [0, 2, 4])."""
    if isinstance(init_layers, int):
        if init_layers > n:
            raise UsageError(f"model.init_layers {init_layers}: {path} has {n} encoder layers; keep at most {n}")
        return [i * n // init_layers for i in range(init_layers)]
    beyond = [i for i in init_layers if i >= n]
    if beyond:
        raise UsageError(f"model.init_layers: {path} has {n} encoder layers (0 to {n - 1}), no layer {beyond[0]}")
    if list(init_layers) != sorted(set(init_layers)):
        raise UsageError(f"model.init_layers {list(init_layers)}: give distinct layers in increasing order")
    return list(init_layers)


def describe_source(model_path: str, init_layers: list[int] | int | None) -> str:
    """How the run's LoadReport names where the student came from."""
    if init_layers is None:
        return model_path
    try:
        n = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"]
        return f"{model_path}, encoder layers {chosen_layers(init_layers, n, Path(model_path))} of {n}"
    except (OSError, ValueError, KeyError, UsageError):  # checked where it was cut; this is a caption only
        return model_path


def cut_layers(model_dir: Path, init_layers: list[int] | int, work: Path) -> Path:
    """Save the checkpoint in `model_dir` with only the encoder layers model.init_layers chooses under `work`;
    returns that folder."""
    import torch
    import transformers

    from bertcli.tasks.evaluation import quiet_loading

    raw = check_checkpoint_dir(model_dir)
    arch = (raw.get("architectures") or ["AutoModel"])[0]
    model_class = getattr(transformers, arch, transformers.AutoModel)
    with quiet_loading():
        model = model_class.from_pretrained(str(model_dir), local_files_only=True)
    encoder = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not isinstance(encoder, torch.nn.ModuleList):
        raise UsageError(f"model.init_layers: {model_dir} ({arch}) has no list of encoder layers (encoder.layer) to "
                         "choose from; BERT-family encoders have one")  # fmt: skip
    keep = chosen_layers(init_layers, len(encoder), Path(model_dir))
    layers = torch.nn.ModuleList(encoder[i] for i in keep)
    for new_index, layer in enumerate(layers):  # where a layer records its place (a key-value cache's index)
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    model.base_model.encoder.layer = layers
    model.config.num_hidden_layers = len(keep)
    target = Path(work) / "student"
    with quiet_loading():
        model.save_pretrained(str(target))
        if has_tokenizer(model_dir):
            transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True).save_pretrained(
                str(target)
            )
    return target
