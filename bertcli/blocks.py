"""MLM-only sequences (`tokenize --set nsp.mode=none`): the documents of a split as one token stream, cut into full
sequences, as RoBERTa's FULL-SENTENCES inputs and `group_texts` of transformers' run_mlm.py.

The stream of a split is its documents in corpus order with one [SEP] between neighbours (RoBERTa's "extra
separator token between documents"; it tells the model where one text ends and an unrelated one begins, and is never
masked). Sequence k is ``[CLS]`` + stream[k·L : (k+1)·L] + ``[SEP]`` with L = max_seq_length - 2, one segment
(token_type_ids 0), no NSP label. Every sequence is full but the stream's last, which run_mlm.py drops and we keep
(shorter, padded by the collator), so no token of the text is lost. Long sentences are not cut either.

A stream per split rather than per document: documents shorter than a sequence (reviews, abstracts) would otherwise
leave most of each sequence as padding. A sequence depends on its index alone, never on how the blocks are batched
or shared out between worker processes.
"""

from __future__ import annotations

import numpy as np

from bertcli.nsp import DocumentStore


def stream_offsets(num_tokens: np.ndarray) -> np.ndarray:
    """Where each document starts in its split's stream (documents of `num_tokens` tokens, one [SEP] between
    neighbours), then the stream's length."""
    sizes = np.asarray(num_tokens, dtype=np.int64) + 1
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    offsets[-1] -= 1 if len(sizes) else 0  # no separator after the last document
    return offsets


def count_blocks(stream_length: int, max_seq_length: int) -> int:
    """Sequences of the stream: all full but the last."""
    return -(-int(stream_length) // (max_seq_length - 2))


def build_block_batch(
    batch,
    *,
    documents,
    split_rows: np.ndarray,
    offsets: np.ndarray,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
):
    """`datasets.map(batched=True)` over one split's ``block`` column (Arrow format): sequences k of the split's
    stream (`offsets` from `stream_offsets`, `split_rows` the documents' rows in `documents`). Returns a
    ``pyarrow.Table`` with input_ids, token_type_ids, special_tokens_mask and, where `documents` has them,
    word_starts (a sequence that starts in the middle of a word starts with what is left of it)."""
    import pyarrow as pa

    store = DocumentStore(documents.data.column("ids"))
    words = DocumentStore(documents.data.column("word_starts")) if "word_starts" in documents.column_names else None
    width = max_seq_length - 2
    blocks = np.asarray(batch["block"].to_numpy(), dtype=np.int64)
    begin, end = int(blocks[0]) * width, min((int(blocks[-1]) + 1) * width, int(offsets[-1]))
    ids, flags, special = _stream_slice(begin, end, store, words, split_rows, offsets, sep_id)
    cuts = np.clip(np.concatenate((blocks * width, [end])) - begin, 0, end - begin)  # blocks are consecutive
    lengths = np.diff(cuts) + 2
    row_offsets = np.concatenate(([0], np.cumsum(lengths)))
    n = int(row_offsets[-1])
    input_ids, specials = np.empty(n, dtype=np.int32), np.zeros(n, dtype=np.int8)
    starts = np.ones(n, dtype=np.int8)
    for k in range(len(blocks)):
        a, b, o = int(cuts[k]), int(cuts[k + 1]), int(row_offsets[k])
        input_ids[o + 1 : o + 1 + b - a] = ids[a:b]
        specials[o + 1 : o + 1 + b - a] = special[a:b]
        starts[o + 2 : o + 1 + b - a] = flags[a + 1 : b]  # the first token of a sequence starts a word
    input_ids[row_offsets[:-1]] = cls_id
    input_ids[row_offsets[1:] - 1] = sep_id
    specials[row_offsets[:-1]] = 1
    specials[row_offsets[1:] - 1] = 1
    pa_offsets = pa.array(row_offsets.astype(np.int32))
    columns = {
        "input_ids": pa.ListArray.from_arrays(pa_offsets, pa.array(input_ids)),
        "token_type_ids": pa.ListArray.from_arrays(pa_offsets, pa.array(np.zeros(n, dtype=np.int8))),
        "special_tokens_mask": pa.ListArray.from_arrays(pa_offsets, pa.array(specials)),
    }
    if words is not None:
        columns["word_starts"] = pa.ListArray.from_arrays(pa_offsets, pa.array(starts))
    return pa.table(columns)


def _stream_slice(begin: int, end: int, store, words, split_rows, offsets, sep_id: int):
    """stream[begin:end] as (ids, word-start flags, special-token flags): the documents it crosses and the [SEP]
    between them (flagged special, so never masked, and a word start)."""
    first = int(np.searchsorted(offsets, begin, side="right")) - 1
    ids, flags, special = [], [], []
    position = int(offsets[first])
    for doc in range(first, len(split_rows)):
        if position >= end:
            break
        row = int(split_rows[doc])
        tokens = store.tokens(row)
        ids.append(tokens)
        flags.append(words.tokens(row) if words is not None else np.ones(len(tokens), dtype=np.int8))
        special.append(np.zeros(len(tokens), dtype=np.int8))
        if doc + 1 < len(split_rows):
            ids.append(np.array([sep_id], dtype=np.int32))
            flags.append(np.ones(1, dtype=np.int8))
            special.append(np.ones(1, dtype=np.int8))
        position = int(offsets[doc + 1])
    lo, hi = begin - int(offsets[first]), end - int(offsets[first])
    return tuple(np.concatenate(parts)[lo:hi] if parts else np.zeros(0, np.int32) for parts in (ids, flags, special))
