"""Build BERT models, and the pretraining forward that runs the MLM head on masked positions only.

`BertForPreTraining` scores every position against the whole vocabulary, although only ~15% of them carry a
label: for a small model with a 30k vocabulary that head costs more than the encoder. `PretrainingModel` wraps
a standard `BertForPreTraining` (the one that is saved) and runs `cls.predictions` on the masked positions
only; its loss equals `BertForPreTraining(...).loss` on the same batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForPreTraining

from bertcli.masking import IGNORE_INDEX
from bertcli.schema.pretrain import ModelSection


def bert_config(model: ModelSection, vocab_size: int, pad_token_id: int = 0) -> BertConfig:
    """A `BertConfig` from the model section (preset + overrides) and the tokenizer's vocabulary size."""
    config = BertConfig(
        vocab_size=vocab_size,
        max_position_embeddings=model.max_position_embeddings,
        type_vocab_size=model.type_vocab_size,
        hidden_act=model.hidden_act,
        hidden_dropout_prob=model.hidden_dropout_prob,
        attention_probs_dropout_prob=model.attention_probs_dropout_prob,
        initializer_range=model.initializer_range,
        layer_norm_eps=model.layer_norm_eps,
        pad_token_id=pad_token_id,
        architectures=["BertForPreTraining"],
        **model.shape(),
    )
    config._attn_implementation = model.attn_implementation
    return config


def build_pretraining_model(model: ModelSection, vocab_size: int, pad_token_id: int = 0) -> BertForPreTraining:
    """A freshly initialised `BertForPreTraining` (call `accelerate.utils.set_seed` first for repeatable
    weights)."""
    return BertForPreTraining(bert_config(model, vocab_size, pad_token_id))


class PretrainingModel(nn.Module):
    """`BertForPreTraining` with the MLM head on masked positions only. `forward` returns the loss and, per
    example, the sums the loop logs and evaluation gathers (loss sums, correct predictions, counts)."""

    def __init__(self, bert: BertForPreTraining, with_nsp: bool = True):
        super().__init__()
        self.model = bert
        self.with_nsp = with_nsp

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        next_sentence_label: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        encoded = self.model.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        masked = labels != IGNORE_INDEX
        rows = masked.nonzero(as_tuple=True)[0]  # which example each masked position belongs to
        targets = labels[masked]
        scores = self.model.cls.predictions(encoded.last_hidden_state[masked])  # (masked positions, vocab)
        token_loss = F.cross_entropy(scores.float(), targets, reduction="none")
        count = masked.sum(dim=1)
        # The mean over masked tokens, as BertForPreTraining computes it; 0 (not NaN) when nothing is masked.
        loss = token_loss.sum() / count.sum().clamp(min=1)
        out = {
            "mlm_loss_sum": _per_row(token_loss.detach(), rows, len(labels)),
            "mlm_correct": _per_row((scores.argmax(-1) == targets).float(), rows, len(labels)),
            "mlm_count": count.float(),
        }
        if self.with_nsp and next_sentence_label is not None:
            nsp_scores = self.model.cls.seq_relationship(encoded.pooler_output).float()
            nsp_loss = F.cross_entropy(nsp_scores, next_sentence_label, reduction="none")
            loss = loss + nsp_loss.mean()
            out["nsp_loss_sum"] = nsp_loss.detach()
            out["nsp_correct"] = (nsp_scores.argmax(-1) == next_sentence_label).float()
            out["nsp_count"] = torch.ones_like(nsp_loss)
        out["loss"] = loss
        return out


def _per_row(values: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.zeros(batch, dtype=torch.float32, device=values.device).index_add_(0, rows, values.float())
