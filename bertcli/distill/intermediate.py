"""Intermediate-layer distillation (`distill.hidden_weight`, `distill.attention_weight`): the student's encoder
layers also learn the hidden states and the attention scores of the teacher's layers they stand for, as in
TinyBERT's Transformer-layer loss (Jiao et al. 2020) and TextBrewer's `hidden_mse` and `attention_mse` intermediate
matches, on top of the soft loss over the outputs.

The layer map is TinyBERT's uniform one: of a student of M layers and a teacher of N, the student's layer j
(0-based) learns the output of the teacher's layer (j + 1) * N // M - 1. A student cut by model.init_layers 3 of a
6-layer teacher ([0, 2, 4]) learns, at its layers 0 and 1, the outputs of the teacher's layers 1 and 3: each student
layer does the work of two. The last layer is left to the soft loss over the outputs (classification computes its
last layer at [CLS] only). Each loss is the mean over those layers of a mean squared difference, with no projection:
the two models have one width and one head count (model.init_layers of the teacher gives that; a student of another
shape is refused before anything is written):
- hidden states: over the real pieces (attention_mask 1) and the hidden units of the layer's output;
- attention: TinyBERT's, over the scores before the softmax (query . key / sqrt(head size)) of every head, for
  every pair of real pieces that attend to each other (in a packed row, pieces of one example).

Hidden states are not kept per row, as the outputs are (a row of 64 pieces at width 384 is 96 KiB per layer): the
teacher runs beside the student on each training batch (evaluation mode, no gradient), so a step costs one forward
of the teacher more. Both models' layer outputs, queries and keys are caught by forward hooks on each layer's
`output`, `attention.self.query` and `attention.self.key` submodules (BERT-style `encoder.layer[i]`: BERT, RoBERTa,
ELECTRA, XLM-R), which run in bertcli's written-out encoder and in transformers' own forward alike."""

from __future__ import annotations

import torch
from torch import nn

from bertcli.errors import UsageError


def encoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The encoder layers of a task model (a peft wrapper read through), or None where they are not BERT-style
    `encoder.layer[i]` with `output` and `attention.self.query`/`key` submodules."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if isinstance(layers, nn.ModuleList) and len(layers) and all(_bert_style(x) for x in layers):
        return layers
    return None


def _bert_style(layer: nn.Module) -> bool:
    attn = getattr(getattr(layer, "attention", None), "self", None)
    return hasattr(layer, "output") and hasattr(attn, "query") and hasattr(attn, "key")


def layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs, 0-based, of every student layer but the last."""
    return [(j, (j + 1) * teacher_layers // student_layers - 1) for j in range(student_layers - 1)]


def check_layer_match(student_config: dict, teacher_config: dict, student_model: nn.Module, teacher_model: nn.Module,
                      teacher_path, key: str) -> None:  # fmt: skip
    """One-line UsageErrors for a student and teacher whose layers cannot be matched (`key`: the setting asked)."""
    for name in ("hidden_size", "num_attention_heads"):
        ours, theirs = student_config.get(name), teacher_config.get(name)
        if ours != theirs:
            raise UsageError(f"{key}: the student's {name} is {ours}, the teacher's ({teacher_path}) {theirs}; layers "
                             "are matched without a projection, so cut the student from the teacher "
                             f"(model.init_layers) or set {key} to 0")  # fmt: skip
    m, n = student_config.get("num_hidden_layers", 0), teacher_config.get("num_hidden_layers", 0)
    if not 2 <= m <= n:
        raise UsageError(f"{key}: a student of {m} layers and a teacher of {n}: the student needs at least 2 layers "
                         f"(its last learns from the outputs) and at most the teacher's; set {key} to 0 or choose "
                         "other layers (model.init_layers)")  # fmt: skip
    for who, model in (("student", student_model), ("teacher", teacher_model)):
        if encoder_layers(model) is None:
            raise UsageError(f"{key}: the {who} ({type(model).__name__}) has no BERT-style encoder layers "
                             f"(encoder.layer[i] with attention.self.query and key, and output) to match; set {key} "
                             "to 0")  # fmt: skip


class LayerTaps:
    """Forward hooks that keep, while `on`, the output, the queries and the keys of some encoder layers of one
    model: `out[(i, "output" | "query" | "key")]`."""

    def __init__(self, model: nn.Module, chosen: list[int], attention: bool):
        self.out: dict[tuple[int, str], torch.Tensor] = {}
        self.on = False
        layers = encoder_layers(model)
        self.scaling = {i: _scaling(layers[i].attention.self) for i in chosen}
        parts = [(i, "output", layers[i].output) for i in chosen]
        if attention:
            parts += [(i, kind, getattr(layers[i].attention.self, kind)) for i in chosen for kind in ("query", "key")]
        self.heads = layers[0].attention.self.num_attention_heads if attention else 0
        self.handles = [module.register_forward_hook(self._keep((i, kind))) for i, kind, module in parts]

    def _keep(self, key: tuple[int, str]):
        def hook(module, args, output):
            if self.on:
                self.out[key] = output

        return hook

    def take(self) -> dict[tuple[int, str], torch.Tensor]:
        out, self.out = self.out, {}
        return out

    def scores(self, out: dict, i: int) -> torch.Tensor:
        """Layer i's attention scores before the softmax, (rows, heads, pieces, pieces)."""
        query, key = out[(i, "query")], out[(i, "key")]
        rows, length, width = query.shape
        q = query.view(rows, length, self.heads, width // self.heads).transpose(1, 2)
        k = key.view(rows, length, self.heads, width // self.heads).transpose(1, 2)
        return torch.matmul(q.float(), k.float().transpose(-1, -2)) * self.scaling[i]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _scaling(attn: nn.Module) -> float:
    return getattr(attn, "scaling", None) or attn.attention_head_size**-0.5


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


def attention_mse(student: list[torch.Tensor], teacher: list[torch.Tensor], pairs: torch.Tensor | None) -> torch.Tensor:
    """The mean over layer pairs of the mean squared difference of the scores (rows, heads, pieces, pieces) over
    every head and every (query, key) pair that counts. `pairs`: (rows, pieces, pieces) booleans, None: all."""
    losses = []
    for s, t in zip(student, teacher):
        diff = (s - t) ** 2
        if pairs is None:
            losses.append(diff.mean())
            continue
        counted = pairs.unsqueeze(1).to(diff.dtype)
        losses.append((diff * counted).sum() / (counted.sum() * diff.shape[1]).clamp(min=1))
    return torch.stack(losses).mean()


def attending_pairs(batch: dict, rows: int, length: int) -> torch.Tensor | None:
    """(rows, pieces, pieces): the (query, key) pairs of real pieces that attend to each other: both real
    (attention_mask 1) and, in a packed row, of one example (`seq_idx`)."""
    if "seq_idx" in batch:
        seq = batch["seq_idx"].reshape(rows, length)
        return (seq[:, :, None] == seq[:, None, :]) & (seq >= 0)[:, :, None]
    mask = batch.get("attention_mask")
    if mask is None:
        return None
    real = mask.reshape(rows, length).bool()
    return real[:, :, None] & real[:, None, :]


class LayerMatch:
    """The teacher's forward module kept for training, with taps on its mapped layers, and the student's taps
    (placed on the first step of each seed's model); `hidden_weight` and `attention_weight` weigh the two losses."""

    def __init__(self, teacher_net: nn.Module, student_layers: int, teacher_layers: int, hidden_weight: float,
                 attention_weight: float):  # fmt: skip
        self.pairs = layer_map(student_layers, teacher_layers)
        self.hidden_weight, self.attention_weight = hidden_weight, attention_weight
        self.teacher = teacher_net
        self.teacher_taps = LayerTaps(teacher_net.model, [t for _, t in self.pairs], attention_weight > 0)
        self.student_taps: LayerTaps | None = None
        self._student = None

    def student(self, m: nn.Module) -> LayerTaps:
        """The taps on `m`'s model (the prepared forward module, maybe wrapped by DDP), placed once per model."""
        model = getattr(m, "module", m).model
        if model is not self._student:
            if self.student_taps is not None:
                self.student_taps.remove()
            chosen = [s for s, _ in self.pairs]
            self.student_taps, self._student = LayerTaps(model, chosen, self.attention_weight > 0), model
        return self.student_taps

    def losses(self, family, spec, batch: dict, taps: LayerTaps) -> dict[str, torch.Tensor]:
        """The batch's hidden-state loss ("hidden_loss") and attention loss ("attention_loss"), those with a weight:
        the student's layers (caught by `taps` during its forward) against the teacher's on the same batch."""
        ours = taps.take()
        self.teacher_taps.on = True
        try:
            with torch.no_grad():
                family.loss_and_sums(self.teacher, dict(batch), spec)
        finally:
            self.teacher_taps.on = False
        theirs = self.teacher_taps.take()
        out = {}
        if self.hidden_weight:
            out["hidden_loss"] = hidden_mse([ours[(s, "output")] for s, _ in self.pairs],
                                            [theirs[(t, "output")] for _, t in self.pairs],
                                            batch.get("attention_mask"))  # fmt: skip
        if self.attention_weight:
            student = [taps.scores(ours, s) for s, _ in self.pairs]
            teacher = [self.teacher_taps.scores(theirs, t) for _, t in self.pairs]
            rows, _, length, _ = student[0].shape
            out["attention_loss"] = attention_mse(student, teacher, attending_pairs(batch, rows, length))
        return out

    def weighted(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = {"hidden_loss": self.hidden_weight, "attention_loss": self.attention_weight}
        return sum(weights[k] * v for k, v in losses.items())
