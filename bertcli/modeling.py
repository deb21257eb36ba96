"""Build BERT models, and the pretraining forward that runs the MLM head on masked positions only.

`BertForPreTraining` scores every position against the whole vocabulary, although only ~15% of them carry a
label: for a small model with a 30k vocabulary that head costs more than the encoder. `PretrainingModel` wraps
a standard `BertForPreTraining` (the one that is saved) and runs `cls.predictions` on the masked positions
only; its loss equals `BertForPreTraining(...).loss` on the same batch.

`encode` runs a `BertModel`'s encoder layers from their own submodules and weights instead of their forward, for
pretrain and finetune alike: on the CPU its dropout masks, the attention weights' included, come from
`training.dropout`, three to five times faster to draw than torch's (same distribution); and a classifier can ask
for the last layer at the [CLS] position only. Without dropout its output equals the model's own (tested)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from bertcli.masking import IGNORE_INDEX
from bertcli.schema.pretrain import ModelSection
from bertcli.training.dropout import dropout, use_fast_dropout

if TYPE_CHECKING:  # transformers' model code is imported where a model is built: `eval --runtime onnx` never needs it
    from transformers import BertConfig, BertForPreTraining


def bert_config(model: ModelSection, vocab_size: int, pad_token_id: int = 0) -> BertConfig:
    """A `BertConfig` from the model section (preset + overrides) and the tokenizer's vocabulary size."""
    from transformers import BertConfig

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
    from transformers import BertForPreTraining

    return BertForPreTraining(bert_config(model, vocab_size, pad_token_id))


def one_segment(model: nn.Module) -> bool:
    """Whether `model` has a single segment embedding (type_vocab_size 1, as RoBERTa-style BERT variants and some
    converted checkpoints have); if so, its embeddings from now on read every segment id as 0. Sentence pairs
    (NSP instances, a task's text pairs, QA's question and context) carry id 1 for their second part, which such a
    model has no row for (an IndexError); like RoBERTa, it reads a pair as one sequence with [SEP] between the
    parts. A hook on the embeddings module covers every forward that reaches it: ours and transformers' own."""
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    if getattr(model.config, "type_vocab_size", 2) != 1 or not hasattr(embeddings, "token_type_embeddings"):
        return False
    embeddings.register_forward_pre_hook(_segment_zero, with_kwargs=True)
    return True


def _segment_zero(module, args, kwargs):
    if kwargs.get("token_type_ids") is not None:
        kwargs["token_type_ids"] = torch.zeros_like(kwargs["token_type_ids"])
    elif len(args) > 1 and args[1] is not None:  # BertEmbeddings.forward(input_ids, token_type_ids, ...)
        args = (args[0], torch.zeros_like(args[1]), *args[2:])
    return args, kwargs


class PretrainingModel(nn.Module):
    """`BertForPreTraining` with the MLM head on masked positions only. `forward` returns the loss and, per
    example, the sums the loop logs and evaluation gathers (loss sums, correct predictions, counts)."""

    def __init__(self, bert: BertForPreTraining, with_nsp: bool = True):
        super().__init__()
        self.model = bert
        self.with_nsp = with_nsp
        self.written_out = can_write_out_layers(bert.config)
        use_fast_dropout(bert)
        self.one_segment = one_segment(bert)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        next_sentence_label: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        sequence, pooled = self._encode(input_ids, token_type_ids, attention_mask)
        masked = labels != IGNORE_INDEX
        rows = masked.nonzero(as_tuple=True)[0]  # which example each masked position belongs to
        targets = labels[masked]
        scores = self.model.cls.predictions(sequence[masked])  # (masked positions, vocab)
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
            nsp_scores = self.model.cls.seq_relationship(pooled()).float()
            nsp_loss = F.cross_entropy(nsp_scores, next_sentence_label, reduction="none")
            loss = loss + nsp_loss.mean()
            out["nsp_loss_sum"] = nsp_loss.detach()
            out["nsp_correct"] = (nsp_scores.argmax(-1) == next_sentence_label).float()
            out["nsp_count"] = torch.ones_like(nsp_loss)
        out["loss"] = loss
        return out

    def _encode(self, input_ids, token_type_ids, attention_mask):
        """(last hidden states, a function giving the pooled [CLS] output), through `encode` where it applies."""
        bert = self.model.bert
        if not self.written_out:
            encoded = bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return encoded.last_hidden_state, lambda: encoded.pooler_output
        hidden = encode(bert, bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids), attention_mask)
        return hidden, lambda: bert.pooler(hidden)


def _per_row(values: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.zeros(batch, dtype=torch.float32, device=values.device).index_add_(0, rows, values.float())


# --- the encoder, written out -------------------------------------------------------------------------------------


def can_write_out_layers(config: BertConfig) -> bool:
    """`encode` covers this BERT configuration: SDPA or eager attention, an encoder (not a decoder), no chunking."""
    return (
        config._attn_implementation in ("sdpa", "eager")
        and not config.is_decoder
        and config.chunk_size_feed_forward == 0
    )


def encode(bert: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor | None, cls_only: bool = False,
           at: torch.Tensor | None = None):  # fmt: skip
    """The last hidden states of `bert` (a `BertModel`) over its embeddings output `hidden`, layer by layer with
    `bert_layer`. `attention_mask`: (batch, length) of 1 and 0, or a prepared (batch, 1, length, length) boolean
    mask (True: attend; a packed batch's `block_diagonal_mask`). cls_only: the last layer at [CLS] only, shape
    (batch, 1, hidden size); at: the last layer at these flat positions (row * length + column) only, (n, 1,
    hidden size)."""
    if attention_mask is not None and attention_mask.dim() == 4:
        mask = attention_mask
    else:
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(config=bert.config, inputs_embeds=hidden, attention_mask=attention_mask)
    layers = bert.encoder.layer
    for layer in layers[:-1]:
        hidden = bert_layer(layer, hidden, mask)
    return bert_layer(layers[-1], hidden, mask, cls_only=cls_only, at=at)


def block_diagonal_mask(seq_idx: torch.Tensor) -> torch.Tensor:
    """SDPA's boolean mask (rows, 1, length, length) of a packed batch: a position attends to the positions of its
    own example only. `seq_idx` (rows, length): the example of each position, -1 for padding; padding attends to
    padding, so that no row of the mask is empty (an empty row gives NaN, which would reach the gradients)."""
    return (seq_idx[:, :, None] == seq_idx[:, None, :]).unsqueeze(1)


def bert_layer(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None, cls_only: bool = False,
               at: torch.Tensor | None = None):  # fmt: skip
    """One `BertLayer`, from its own submodules. cls_only: the output is wanted at position 0 only, so queries,
    attention output and feed-forward are computed for that position, keys and values for all. at: the same for
    the flat positions `at` (a packed batch's [CLS] positions), output (n, 1, hidden size)."""
    if at is not None:
        return _layer_at(layer, hidden, mask, at)
    attn = layer.attention.self
    batch, length, _ = hidden.shape
    heads, size = attn.num_attention_heads, attn.attention_head_size
    queried = hidden[:, :1] if cls_only else hidden
    query = attn.query(queried).view(batch, -1, heads, size).transpose(1, 2)
    key = attn.key(hidden).view(batch, length, heads, size).transpose(1, 2)
    value = attn.value(hidden).view(batch, length, heads, size).transpose(1, 2)
    if mask is not None and cls_only:
        mask = mask[..., :1, :]  # the [CLS] row of a (batch, 1, length, length) or (batch, 1, 1, length) mask
    p = attn.dropout.p if attn.training else 0.0
    context = attention(query, key, value, mask, p, attn.scaling)
    context = context.transpose(1, 2).reshape(batch, -1, heads * size)
    attended = layer.attention.output(context, queried)
    return layer.output(layer.intermediate(attended), attended)


def _layer_at(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, at: torch.Tensor):
    """`bert_layer` at the flat positions `at` of a packed batch: each becomes a batch row of its own, a query over
    the keys and values of its row with its own row of the prepared (rows, 1, length, length) mask."""
    attn = layer.attention.self
    batch, length, width = hidden.shape
    heads, size = attn.num_attention_heads, attn.attention_head_size
    n, rows, columns = len(at), at // length, at % length
    queried = hidden.reshape(batch * length, width)[at].unsqueeze(1)  # (n, 1, hidden)
    query = attn.query(queried).view(n, 1, heads, size).transpose(1, 2)
    key = attn.key(hidden).view(batch, length, heads, size).transpose(1, 2)[rows]  # (n, heads, length, size)
    value = attn.value(hidden).view(batch, length, heads, size).transpose(1, 2)[rows]
    p = attn.dropout.p if attn.training else 0.0
    context = attention(query, key, value, mask[rows, 0, columns][:, None, None, :], p, attn.scaling)
    attended = layer.attention.output(context.transpose(1, 2).reshape(n, 1, heads * size), queried)
    return layer.output(layer.intermediate(attended), attended)


def attention(query, key, value, mask: torch.Tensor | None, p: float, scale: float) -> torch.Tensor:
    """Scaled dot-product attention with dropout p on the weights. Without dropout, or off the CPU: SDPA. On the CPU
    with dropout, SDPA runs these same steps (its "math" path) but draws the mask with `bernoulli_`; here the mask
    is `training.dropout`'s."""
    if p == 0.0 or query.device.type != "cpu":
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=p, scale=scale)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if mask is not None and mask.dtype == torch.bool:  # SDPA's mask: True = attend
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    elif mask is not None:  # eager attention's mask: added to the scores
        scores = scores + mask
    return torch.matmul(dropout(scores.softmax(dim=-1), p), value)
