"""A uniform model soup (Wortsman et al. 2022, "Model soups"): the element-wise mean of the weights of several
fine-tuned models of one architecture and head, here the best models of the seeds of one run (`train.average_seeds`).

Fine-tuned from the same checkpoint, the seeds' models tend to lie in one basin of the loss, where their mean often
scores better than any of them; it can also fall between basins and score worse, so the caller keeps it only where
it beats the best seed on the split that picks the model. Floating-point tensors are averaged (summed in float64,
then cast back); integer buffers (position ids and the like) are the first model's.

`refit_head` fits the soup's task head anew on the training rows with the averaged encoder frozen: the mean of the
seeds' heads is not the head of the mean of their encoders (on CoLA the averaged model called 92% of sentences
acceptable where each seed called 78-86%), and a head fitted to the averaged encoder's own outputs puts the decision
back where the data says (benchmarks/README.md, "A soup with its head fitted anew").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
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


def refit_head(model: torch.nn.Module, epochs: Iterable[Iterable[dict]], loss: Callable[[dict], torch.Tensor],
               total_steps: int, learning_rate: float = 1e-2) -> list[float]:  # fmt: skip
    """Train `model`'s task head alone (everything outside its encoder: `bertcli.training.layers.freeze`'s
    "encoder") with the encoder frozen and dropout off (evaluation mode: the outputs the soup gives when it is
    used), by AdamW without weight decay, its rate falling linearly to 0 over `total_steps`, over `epochs` (an
    iterable of one epoch's batches each, on the model's device) of `loss(batch)`. Every parameter trains again
    afterwards. Returns each epoch's mean loss."""
    from bertcli.training.layers import freeze

    trained = {id(p): p.requires_grad for p in model.parameters()}
    freeze(model, "encoder")
    head = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(head, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max(total_steps, 1)))
    model.eval()
    means = []
    try:
        for batches in epochs:
            total, n = 0.0, 0
            for batch in batches:
                value = loss(batch)
                value.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                total, n = total + float(value.detach()), n + 1
            means.append(total / max(n, 1))
    finally:
        for p in model.parameters():
            p.requires_grad_(trained[id(p)])
    return means
