"""The BERT encoder that every task family's forward runs in training and evaluation (`EncoderForward`).

A family's forward (`TaskFamily.forward_module`) subclasses `EncoderForward` and turns its `encoded()` hidden
states into the family's logits. For the BERT task models it names (`WRITES_OUT`), with SDPA or eager attention:
- On the CPU, dropout masks come from `training.dropout` (three to five times faster, same distribution). The encoder
  layers are written out (`modeling.encode`) so that the attention-weights dropout, which SDPA would draw inside
  its kernel, is one of them.
- Given the token ids the training data holds, the optimizer sees only those rows of the word-embedding matrix
  (`TrainedRows`). The other rows never get a gradient, so under AdamW all that happens to them is weight decay,
  p * (1 - lr * weight_decay) per step: that product is kept and applied when the full matrix is read (evaluation,
  saving, `state_dict`). On CoLA, 5,476 of a 30,522-token vocabulary occur: AdamW, the gradient's zero-fill and
  its norm touch 18% of the matrix. The weights equal those of training the whole matrix (tested).
- A family may compute less where its head reads less: classification's last layer runs at [CLS] only
  (`bertcli.tasks.classification.training.ClassifierForward`).
Other architectures (RoBERTa, DistilBERT, ELECTRA, ALBERT, DeBERTa-v2, ModernBERT...) and BERT under other
attention kernels run the model's own forward (`stock`), with `training.dropout` in place of their `nn.Dropout`
modules, and segment ids only where that forward takes them. `path()` names which of the two runs; the load report
prints it.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from bertcli.model_dir import NO_SEGMENT_NOTE, ONE_SEGMENT_NOTE
from bertcli.modeling import block_diagonal_mask, can_write_out_layers, encode, one_segment
from bertcli.training.dropout import use_fast_dropout


class EncoderForward(nn.Module):
    """The shared part of the task-family forwards: a BERT encoder run with the module docstring's savings. For
    the task models a subclass names in `WRITES_OUT` (its head reads only `bert`'s last hidden states), with SDPA
    or eager attention (`written_out`), the layers run as `modeling.encode` writes them, and given the token ids
    of the training data the word embeddings train only those rows (`TrainedRows`). Every model's `nn.Dropout`
    modules are swapped for `FastDropout` (no weights). Subclasses turn `encoded()` into their logits."""

    WRITES_OUT: tuple[str, ...] = ()  # the class names of the task models this forward writes out

    def __init__(self, model: nn.Module, train_token_ids: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.written_out = self.writes_out(model)
        use_fast_dropout(model)
        self.one_segment = one_segment(model)  # type_vocab_size 1: a pair's second part reads as segment 0 too
        # DistilBERT and ModernBERT have no segment embeddings: their forward takes no token_type_ids (transformers
        # 5 would pass them on, unread, in its **kwargs); a peft wrapper's forward is read through to its model's
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.takes_segments = "token_type_ids" in inspect.signature(base.forward).parameters
        self.rows: TrainedRows | None = None
        embedding = model.bert.embeddings.word_embeddings if self.written_out else None
        frozen = embedding is not None and not embedding.weight.requires_grad  # model.freeze: no row may train
        if embedding is not None and train_token_ids is not None and not frozen:
            ids = torch.unique(torch.as_tensor(train_token_ids, dtype=torch.long))
            if embedding.padding_idx is not None:
                ids = torch.unique(torch.cat([ids, torch.tensor([embedding.padding_idx])]))
            if len(ids) < embedding.num_embeddings:  # all rows in use: nothing to save
                self.rows = TrainedRows(embedding, ids)

    @classmethod
    def writes_out(cls, model: nn.Module) -> bool:
        return type(model).__name__ in cls.WRITES_OUT and can_write_out_layers(model.config)

    def path(self) -> str:
        """Which forward runs, as the load report says it."""
        if self.written_out:
            return "bertcli's written-out BERT encoder" + (" with trained rows" if self.rows is not None else "")
        return f"the model's own ({type(self.model).__name__})"

    def segment_note(self) -> str | None:
        """What finetune says of how the model reads a pair of texts, when it cannot read segment ids 0 and 1."""
        if self.one_segment:
            return ONE_SEGMENT_NOTE
        if not self.takes_segments or getattr(self.model.config, "type_vocab_size", None) == 0:  # DeBERTa-v2's 0
            return NO_SEGMENT_NOTE.format(model=type(self.model).__name__)
        return None

    def stock(self, input_ids, token_type_ids=None, attention_mask=None):
        """The model's own forward (its output object), given segment ids only where it takes them."""
        segments = {"token_type_ids": token_type_ids} if self.takes_segments else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **segments)

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

    def packed(self, input_ids, token_type_ids, seq_idx, position_ids, at=None) -> torch.Tensor:
        """`encoded()` of a packed batch (`bertcli.tasks.packing`): attention within each example (`seq_idx`),
        positions from 0 per example; `at`: the last layer at those flat positions only."""
        if not self.written_out:
            raise ValueError("packed batches need the written-out encoder (finetune checks `written_out` first)")
        return self.encoded(input_ids, token_type_ids, block_diagonal_mask(seq_idx), position_ids=position_ids, at=at)


class TrainedRows(nn.Module):
    """The rows `ids` of an `nn.Embedding` as a parameter of their own, trained in its place (module docstring).

    The embedding's own weight stops requiring a gradient. `track(optimizer)` follows the optimizer's steps: each
    multiplies the weight decay still owed by the other rows by (1 - lr * weight_decay) of this parameter's group.
    `sync()` writes the trained rows back and applies that decay; it runs before the embedding's `state_dict` (any
    save) and when the forward turns to evaluation. Training batches must hold only ids among `ids`."""

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
