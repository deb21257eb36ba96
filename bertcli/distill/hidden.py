"""Intermediate-layer distillation (`distill.hidden_weight`): the student's encoder layers also learn the hidden
states of the teacher's layers they stand for, as in TinyBERT's Transformer-layer loss (Jiao et al. 2020, its
hidden-state part) and TextBrewer's `hidden_mse` intermediate matches, on top of the soft loss over the outputs.

The layer map is TinyBERT's uniform one: of a student of M layers and a teacher of N, the student's layer j
(0-based) learns the output of the teacher's layer (j + 1) * N // M - 1. A student cut by model.init_layers 3 of a
6-layer teacher ([0, 2, 4]) learns, at its layers 0 and 1, the outputs of the teacher's layers 1 and 3: each student
layer does the work of two. The last layer is left to the soft loss over the outputs (classification computes its
last layer at [CLS] only). The loss is the mean over those layers of the mean squared difference over the real
pieces (attention_mask 1) and hidden units, with no projection: the two models have one width (model.init_layers
of the teacher gives that; a student of another width is refused before anything is written).

Hidden states are not kept per row, as the outputs are (a row of 64 pieces at width 384 is 96 KiB per layer): the
teacher runs beside the student on each training batch (evaluation mode, no gradient), so a step costs one forward
of the teacher more. Both models' layer outputs are caught by forward hooks on each layer's `output` submodule
(BERT-style `encoder.layer[i].output`: BERT, RoBERTa, ELECTRA, XLM-R), which run in bertcli's written-out encoder
and in transformers' own forward alike."""

from __future__ import annotations

import torch
from torch import nn

from bertcli.errors import UsageError


def encoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The encoder layers of a task model (a peft wrapper read through), or None where they are not BERT-style
    `encoder.layer[i]` with an `output` submodule."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if isinstance(layers, nn.ModuleList) and len(layers) and all(hasattr(x, "output") for x in layers):
        return layers
    return None


def layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs, 0-based, of every student layer but the last."""
    return [(j, (j + 1) * teacher_layers // student_layers - 1) for j in range(student_layers - 1)]


def check_hidden_match(student_config: dict, teacher_config: dict, student_model: nn.Module, teacher_model: nn.Module,
                       teacher_path) -> None:  # fmt: skip
    """One-line UsageErrors for a student and teacher whose layers cannot be matched."""
    width, teacher_width = student_config.get("hidden_size"), teacher_config.get("hidden_size")
    if width != teacher_width:
        raise UsageError(f"distill.hidden_weight: the student's hidden size is {width}, the teacher's ({teacher_path}) "
                         f"{teacher_width}; hidden states are matched without a projection, so cut the student from "
                         "the teacher (model.init_layers) or set distill.hidden_weight to 0")  # fmt: skip
    m, n = student_config.get("num_hidden_layers", 0), teacher_config.get("num_hidden_layers", 0)
    if not 2 <= m <= n:
        raise UsageError(f"distill.hidden_weight: a student of {m} layers and a teacher of {n}: the student needs at "
                         "least 2 layers (its last learns from the outputs) and at most the teacher's; set "
                         "distill.hidden_weight to 0 or choose other layers (model.init_layers)")  # fmt: skip
    for who, model in (("student", student_model), ("teacher", teacher_model)):
        if encoder_layers(model) is None:
            raise UsageError(f"distill.hidden_weight: the {who} ({type(model).__name__}) has no BERT-style encoder "
                             "layers (encoder.layer[i].output) to match; set distill.hidden_weight to 0")  # fmt: skip


class LayerTaps:
    """Forward hooks that keep the outputs of some encoder layers of one model, while `on`."""

    def __init__(self, model: nn.Module, chosen: list[int]):
        self.out: dict[int, torch.Tensor] = {}
        self.on = False
        layers = encoder_layers(model)
        self.handles = [layers[i].output.register_forward_hook(self._keep(i)) for i in chosen]

    def _keep(self, i: int):
        def hook(module, args, output):
            if self.on:
                self.out[i] = output

        return hook

    def take(self) -> dict[int, torch.Tensor]:
        out, self.out = self.out, {}
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def hidden_mse(student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
    """The mean over layer pairs of the mean squared difference over the real pieces and hidden units. `mask`:
    the batch's attention_mask (any shape whose size is the hidden states' rows x pieces), None: every piece."""
    losses = []
    for s, t in zip(student, teacher):
        diff = (s.float() - t.float()) ** 2
        if mask is None:
            losses.append(diff.mean())
            continue
        real = mask.reshape(diff.shape[:-1]).to(diff.dtype).unsqueeze(-1)
        losses.append((diff * real).sum() / (real.sum() * diff.shape[-1]).clamp(min=1))
    return torch.stack(losses).mean()


class HiddenMatch:
    """The teacher's forward module kept for training, with taps on its mapped layers, and the student's taps
    (placed on the first step of each seed's model)."""

    def __init__(self, teacher_net: nn.Module, student_layers: int, teacher_layers: int, weight: float):
        self.pairs = layer_map(student_layers, teacher_layers)
        self.weight = weight
        self.teacher = teacher_net
        self.teacher_taps = LayerTaps(teacher_net.model, [t for _, t in self.pairs])
        self.student_taps: LayerTaps | None = None
        self._student = None

    def student(self, m: nn.Module) -> LayerTaps:
        """The taps on `m`'s model (the prepared forward module, maybe wrapped by DDP), placed once per model."""
        model = getattr(m, "module", m).model
        if model is not self._student:
            if self.student_taps is not None:
                self.student_taps.remove()
            self.student_taps, self._student = LayerTaps(model, [s for s, _ in self.pairs]), model
        return self.student_taps

    def loss(self, family, spec, batch: dict, taps: LayerTaps) -> torch.Tensor:
        """The hidden-state loss of one batch: the student's layers (caught by `taps` during its forward) against
        the teacher's on the same batch."""
        caught = taps.take()
        self.teacher_taps.on = True
        try:
            with torch.no_grad():
                family.loss_and_sums(self.teacher, dict(batch), spec)
        finally:
            self.teacher_taps.on = False
        theirs = self.teacher_taps.take()
        return hidden_mse([caught[s] for s, _ in self.pairs], [theirs[t] for _, t in self.pairs],
                          batch.get("attention_mask"))  # fmt: skip
