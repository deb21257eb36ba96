"""The teacher of a distilled fine-tuning run (`distill.teacher`): checked before anything is written, run once over
the training rows before training, its outputs kept per row and handed to each training batch.

Why once: the teacher runs in evaluation mode (no dropout), so its outputs for a row never change; computed per
step they would cost a forward of the larger model every step (TextBrewer's `is_caching_logits` makes the same
choice). Each batch gets them from `DistillCollator`, which wraps the family's own training collate_fn: the
classification family's packed batches (`data.pack`) keep one row of logits per example in the batch's order, so
they combine with a teacher too. The training forward (`Distillation.forward`) calls the family's
`loss_and_sums` with the student as it is and catches the student's logits on their way through (one forward),
then adds the family's `soft_loss`:

    loss = alpha * soft + (1 - alpha) * gold  [+ hidden_weight * hidden + attention_weight * attention]

With distill.hidden_weight or distill.attention_weight the student's encoder layers also learn the teacher's hidden
states or attention scores (`bertcli.distill.intermediate`): the teacher is then kept and run beside the student on
each batch.

Augmented copies of the training rows (`distill.augment`, `bertcli.distill.augment`) and then the rows of
`distill.unlabelled_file` follow the training file's rows; their `labels` are set to -100 in each batch, which the
gold losses ignore, so they learn from the soft loss only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertcli.distill.augment import Augmenter
from bertcli.distill.intermediate import LayerMatch, check_layer_match
from bertcli.errors import UsageError
from bertcli.model_dir import check_checkpoint_dir, has_tokenizer
from bertcli.tasks.base import FinetuneData

IGNORED = -100  # the label value transformers' losses (and ours) leave out


@dataclass
class Teacher:
    """A checked teacher: its folder, the model loaded from it (until its outputs are computed), its layers, and
    how many training rows have gold labels (the rows after them: `augmented` copies of them (distill.augment), then
    the rows of distill.unlabelled_file)."""

    path: Path
    model: Any
    layers: int
    gold_rows: int
    augmented: int = 0


# --- before anything is written ---------------------------------------------------------------------------------


def attach_teacher(cfg, data: FinetuneData, family) -> FinetuneData:
    """Check distill.teacher against the student's task, labels and vocabulary (one-line UsageErrors), load it,
    and add the rows of distill.unlabelled_file to the training split. `data` unchanged without a teacher."""
    if not cfg.distill.teacher:
        return data
    path = Path(cfg.distill.teacher)
    try:
        raw = check_checkpoint_dir(path)
    except UsageError as err:
        raise UsageError(f"distill.teacher: {err}") from None
    _check_head(path, raw, family, data.spec)
    _check_vocabulary(path, raw, data.tokenizer)
    positions = raw.get("max_position_embeddings")
    if positions and positions < cfg.data.max_seq_length:
        raise UsageError(f"distill.teacher {path} reads at most {positions} positions, below data.max_seq_length "
                         f"{cfg.data.max_seq_length}; lower data.max_seq_length")  # fmt: skip
    model = _load(path, family)
    matched = [k for k in ("hidden_weight", "attention_weight") if getattr(cfg.distill, k)]
    if matched:
        check_layer_match(check_checkpoint_dir(Path(data.model_dir)), raw, _skeleton(data.model_dir, family), model,
                          path, f"distill.{matched[0]}")  # fmt: skip
    gold_rows = len(data.train)
    augmented = 0
    if cfg.distill.augment:
        augment = Augmenter.from_teacher(model, data.tokenizer, cfg.distill, cfg.train.seed)
        data.train, augmented = family.augmented_rows(cfg, data, augment)
    if cfg.distill.unlabelled_file:
        unlabelled = Path(cfg.distill.unlabelled_file)
        data.train, data.counts["unlabelled"] = family.unlabelled_rows(cfg, data, unlabelled)
        data.files["unlabelled"] = str(unlabelled)
    data.teacher = Teacher(path, model, raw.get("num_hidden_layers", 0), gold_rows, augmented)
    return data


def _check_head(path: Path, raw: dict, family, spec) -> None:
    head = family.auto_class.removeprefix("AutoModel")  # "ForSequenceClassification"
    archs = raw.get("architectures") or []
    if not any(a.endswith(head) for a in archs):
        found = ", ".join(archs) or f"a {raw.get('model_type')} model without a task head"
        raise UsageError(f"distill.teacher {path} is {found}, not a fine-tuned {head[3:]} model: give "
                         f"the best/ of a finetune run of the task ({spec.name})")  # fmt: skip
    if not family.head_per_label:
        return
    from transformers import AutoConfig

    # the config's own reading: config.json leaves transformers' default two labels out
    labels = {int(k): v for k, v in AutoConfig.from_pretrained(str(path), local_files_only=True).id2label.items()}
    names = [labels.get(i) for i in range(len(labels))]
    defaults = all(n == f"LABEL_{i}" for i, n in enumerate(names))  # transformers' own names: no names given
    if len(labels) != spec.num_labels or (not defaults and labels != spec.id2label):
        raise UsageError(f"distill.teacher {path} has the labels {names}, the task has {list(spec.id2label.values())}: "
                         "the teacher must be fine-tuned on the same task, with the same labels in the same "
                         "order")  # fmt: skip


def _check_vocabulary(path: Path, raw: dict, tokenizer) -> None:
    """The teacher reads the student's token ids: the same vocabulary, token for token."""
    from transformers import AutoTokenizer

    size = raw.get("vocab_size")
    if size != len(tokenizer):
        raise UsageError(f"distill.teacher {path} has a vocabulary of {size} tokens, the student's tokenizer "
                         f"{len(tokenizer)}: the teacher must read the student's token ids (a student with the "
                         "teacher's tokenizer, or model.init_layers)")  # fmt: skip
    if not has_tokenizer(path):
        raise UsageError(f"distill.teacher {path} has no tokenizer (tokenizer.json or vocab.txt): not a fine-tuned "
                         "best/, whose tokenizer is saved beside the model")  # fmt: skip
    theirs = AutoTokenizer.from_pretrained(str(path), local_files_only=True).get_vocab()
    ours = tokenizer.get_vocab()
    if theirs != ours:
        by_id = {i: t for t, i in theirs.items()}
        first = min(i for t, i in ours.items() if by_id.get(i) != t)
        raise UsageError(f"distill.teacher {path} has another vocabulary than the student's tokenizer (id {first} is "
                         f"{by_id.get(first)!r} there, {[t for t, i in ours.items() if i == first][0]!r} in the "
                         "student's): the teacher must read the student's token ids")  # fmt: skip


def _load(path: Path, family):
    """The teacher through the family's Auto class, every weight from the folder (a fresh head would teach noise)."""
    import transformers

    from bertcli.tasks.evaluation import quiet_loading

    with quiet_loading():
        model, info = getattr(transformers, family.auto_class).from_pretrained(
            str(path), local_files_only=True, output_loading_info=True
        )
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise UsageError(f"distill.teacher {path} lacks weights its head needs ({', '.join(missing[:4])}): not a "
                         "fine-tuned model of the task")  # fmt: skip
    return model.eval()


def _skeleton(model_dir, family):
    """The student's task model without weights (on the meta device): its layers' structure only."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    with torch.device("meta"):
        return getattr(transformers, family.auto_class).from_config(config)


def card_lines(distill) -> list[str]:
    """The model card's line on the teacher (none without one)."""
    if not distill.teacher:
        return []
    extra = f"; unlabelled text `{distill.unlabelled_file}`" if distill.unlabelled_file else ""
    if distill.augment:
        extra += (
            f"; up to {distill.augment} augmented copies of each training row (distill.augment_prob "
            f"{distill.augment_prob}, distill.augment_candidates {distill.augment_candidates})"
        )
    if distill.hidden_weight:
        extra += f"; hidden states of its layers, distill.hidden_weight {distill.hidden_weight}"
    if distill.attention_weight:
        extra += f"; attention scores of its layers, distill.attention_weight {distill.attention_weight}"
    return [f"- distilled from `{distill.teacher}` (distill.alpha {distill.alpha}, distill.temperature "
            f"{distill.temperature}, distill.soft_loss {distill.soft_loss}){extra}"]  # fmt: skip


# --- before training: the teacher's outputs, once ---------------------------------------------------------------


def start_distillation(acc, data: FinetuneData, cfg, family, say) -> Distillation | None:
    """Run the teacher over every training row (evaluation mode, batches of the evaluation's size) and keep
    each row's outputs; None without a teacher. Every process computes all rows (no gathering)."""
    from accelerate.utils import send_to_device

    from bertcli.training.batches import make_loader

    teacher = data.teacher
    if teacher is None:
        return None
    start = time.perf_counter()
    net = family.forward_module(teacher.model).to(acc.device).eval()
    batch_size = cfg.data.eval_batch_size or 2 * cfg.data.batch_size
    loader = make_loader(data.train, batch_size, 0, False, False, collate=family.collator(data.train, data.tokenizer))
    rows: list[np.ndarray | None] = [None] * len(data.train)
    with torch.no_grad(), acc.autocast():
        for batch in loader:
            index = batch["example_index"].tolist()
            logits = family.batch_logits(net, send_to_device(batch, acc.device)).float()
            for i, row in zip(index, family.teacher_rows(logits, batch)):
                rows[i] = np.asarray(row, dtype=np.float32)
    d = cfg.distill
    layers = None
    if d.hidden_weight or d.attention_weight:  # the teacher runs beside the student: its layers are not kept per row
        net.requires_grad_(False)
        student = json.loads((Path(data.model_dir) / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"]
        layers = LayerMatch(net, student, teacher.layers, d.hidden_weight, d.attention_weight)
    teacher.model = None  # its outputs (and `layers`' forward module) are all training needs of it
    loss = f"mse; alpha {d.alpha}" if d.soft_loss == "mse" or data.spec.is_regression else (
        f"kl at temperature {d.temperature}; alpha {d.alpha}")  # fmt: skip
    if layers is not None:
        pairs = ", ".join(f"{s}<-{t}" for s, t in layers.pairs)
        parts = [f"{what} x {w}" for what, w in (("hidden states", d.hidden_weight),
                                                 ("attention scores", d.attention_weight)) if w]  # fmt: skip
        loss += f"; {' + '.join(parts)} (student<-teacher layer: {pairs})"
    unlabelled = len(rows) - teacher.gold_rows - teacher.augmented
    parts = [f"{teacher.augmented} augmented copies"] if teacher.augmented else []
    parts += [f"{unlabelled} unlabelled"] if unlabelled else []
    # "(30 of them unlabelled)", "(40 of them augmented copies, 30 unlabelled)"
    extra = f" ({parts[0].replace(' ', ' of them ', 1)}{''.join(', ' + p for p in parts[1:])})" if parts else ""
    say(f"distill: teacher {teacher.path} ({teacher.layers} layers) labelled the {len(rows)} training rows{extra} "
        f"in {time.perf_counter() - start:.1f} s; soft loss {loss}")  # fmt: skip
    return Distillation(rows, teacher.gold_rows, d.alpha, d.temperature, d.soft_loss, layers)


class Distillation:
    """The teacher's outputs per training row and how the student learns from them."""

    def __init__(self, rows: list[np.ndarray], gold_rows: int, alpha: float, temperature: float, soft_loss: str,
                 layers: LayerMatch | None = None):  # fmt: skip
        self.rows, self.gold_rows = rows, gold_rows
        self.alpha, self.temperature, self.soft_loss = alpha, temperature, soft_loss
        self.layers = layers

    def collator(self, inner) -> DistillCollator:
        return DistillCollator(inner, self.rows, self.gold_rows)

    def forward(self, family, spec):
        """The loop's forward hook: (alpha * soft + (1 - alpha) * gold [+ the weighted layer losses], the family's
        sums, `soft_loss`, and `hidden_loss` / `attention_loss` where weighted)."""
        alpha, unlabelled, layers = self.alpha, self.gold_rows < len(self.rows), self.layers

        def forward(m, batch):
            teacher = batch.pop("teacher_logits")
            taps = layers.student(m) if layers is not None else None
            seen = []

            def student(*args, **kwargs):  # the family's loss calls the model once: its logits are kept
                seen.append(m(*args, **kwargs))
                return seen[-1]

            if taps is not None:
                taps.on = True
            try:
                gold, sums = family.loss_and_sums(student, batch, spec)
            finally:
                if taps is not None:
                    taps.on = False
            if unlabelled:  # a batch of unlabelled rows alone has no gold loss: 0, not mean-of-nothing NaN
                gold = torch.nan_to_num(gold, nan=0.0, posinf=math.inf, neginf=-math.inf)
            soft = family.soft_loss(seen[-1], teacher, batch, spec, self)
            n = len(batch["example_index"])
            loss, sums = alpha * soft + (1 - alpha) * gold, {**sums, "soft_loss": soft.detach().float().expand(n)}
            if layers is not None:
                matched = layers.losses(family, spec, batch, taps)
                loss = loss + layers.weighted(matched)
                sums.update({k: v.detach().float().expand(n) for k, v in matched.items()})
            return loss, sums

        return forward

    def summarize(self, summarize):
        """The family's training-log scores and the soft loss's mean."""

        def scores(totals: dict[str, float]) -> dict[str, float]:
            n = max(totals.get("_samples", 0), 1)
            out = {**summarize(totals), "soft_loss": totals.get("soft_loss", 0.0) / n}
            for key in ("hidden_loss", "attention_loss"):
                if key in totals:
                    out[key] = totals[key] / n
            return out

        return scores


class DistillCollator:
    """The family's training collate_fn, plus `teacher_logits`: each row's kept outputs, padded with NaN to the
    largest in the batch (the shape of the student's logits: the family's `teacher_rows` cut each row to its own
    extent). Rows from distill.unlabelled_file get `labels` -100. Picklable, for DataLoader workers."""

    def __init__(self, inner, rows: list[np.ndarray], gold_rows: int):
        self.inner, self.rows, self.gold_rows = inner, rows, gold_rows

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = self.inner(indices)
        batch["teacher_logits"] = torch.from_numpy(pad_rows([self.rows[i] for i in indices]))
        if self.gold_rows < len(self.rows):
            unlabelled = torch.from_numpy(np.asarray(indices) >= self.gold_rows)
            batch["labels"][unlabelled] = IGNORED
        return batch


def pad_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Arrays of one rank stacked, each padded with NaN at the end of every axis to the largest."""
    shape = tuple(max(r.shape[d] for r in rows) for d in range(rows[0].ndim))
    out = np.full((len(rows), *shape), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        out[(i, *(slice(0, n) for n in row.shape))] = row
    return out
