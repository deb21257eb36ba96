"""A uniform model soup (Wortsman et al. 2022, "Model soups"): the element-wise mean of the weights of several
fine-tuned models of one architecture and head, here the best models of the seeds of one run (`train.average_seeds`).

Fine-tuned from the same checkpoint, the seeds' models tend to lie in one basin of the loss, where their mean often
scores better than any of them; it can also fall between basins and score worse, so the caller keeps it only where
it beats the best seed on the split that picks the model. Floating-point tensors are averaged (summed in float64,
then cast back); integer buffers (position ids and the like) are the first model's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch


def soup_of(paths: Sequence[Path | str], load: Callable[[str], torch.nn.Module]) -> torch.nn.Module:
    """The first model of `paths` (loaded by `load`, e.g. an Auto class's from_pretrained) with the soup of all
    their weights in place of its own. Models are loaded one at a time: memory holds two and the running sums."""
    model = load(str(paths[0]))
    first = model.state_dict()
    sums = {k: v.detach().to(torch.float64).clone() for k, v in first.items() if v.is_floating_point()}
    for path in paths[1:]:
        other = load(str(path)).state_dict()
        _check_same_layout(first, other, str(path))
        for key, total in sums.items():
            total += other[key].detach().to(torch.float64)
    with torch.no_grad():
        for key, total in sums.items():
            first[key].copy_((total / len(paths)).to(first[key].dtype))  # state_dict tensors share the weights
    return model


def _check_same_layout(first: dict, other: dict, where: str = "") -> None:
    if first.keys() != other.keys():
        missing = sorted(set(first) ^ set(other))[:3]
        raise ValueError(f"{where or 'a model'}: not the same weights as the first model ({', '.join(missing)})")
    for key, value in first.items():
        if other[key].shape != value.shape:
            raise ValueError(f"{where or 'a model'}: {key} is {tuple(other[key].shape)}, not {tuple(value.shape)}")
