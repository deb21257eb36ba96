"""Padding-free training batches (`data.pack`), shared by the families that pack (classification, tagging).

A batch's examples (the same ones the padded batch holds) are packed into as few rows of max_seq_length as hold
them (`pack_rows`). Each keeps its own token ids, token types and positions from 0; `seq_idx` tells which example
each position belongs to, from which the forward builds a block-diagonal attention mask
(`bertcli.modeling.block_diagonal_mask`), so attention stays within each example and the loss and gradients are
those of the padded batch. The family fills its own targets into the rows (`PackedLayout.place`).

Only the written-out BERT encoder reads packed rows (`EncoderForward.packed`); any other forward trains on padded
batches, with a one-line notice where data.pack asked for packing (`packs`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Values = Callable[[int], "Sequence[int] | np.ndarray"]  # example j of the batch -> its values, one per token

# The keys a packed batch adds to the padded batch's, passed on to the family's forward by name.
PACKED_KEYS = ("position_ids", "seq_idx")


def pack_rows(lengths: np.ndarray, width: int) -> list[list[int]]:
    """The positions (into `lengths`) of the examples packed into each row: as few rows as hold them in `width`
    tokens each, filled evenly (longest first, each into the emptiest row), since the batch is as long as its
    fullest row: first-fit would leave one short row and pad it to the others. An example longer than `width`
    (never, after truncation to max_seq_length) is a row of its own."""
    order = np.argsort(-lengths, kind="stable").tolist()
    count = max(1, -(-int(lengths.sum()) // width))  # the fewest rows that could hold every token
    while True:
        rows: list[list[int]] = [[] for _ in range(count)]
        fill = [(0, r) for r in range(count)]  # a heap of (tokens, row)
        for i in order:
            tokens, r = heapq.heappop(fill)
            rows[r].append(i)
            heapq.heappush(fill, (tokens + int(lengths[i]), r))
        if max(fill)[0] <= width or count >= len(order):
            return [r for r in rows if r]
        count += 1


@dataclass
class PackedLayout:
    """Where a batch's examples sit in its packed rows. `start[j]`: the flat position (row * length + column) of
    example j's first token; `seq_idx` (rows, length): the example (0..n-1, the batch's order) at each position,
    -1 for padding; `positions`: each example's positions from 0."""

    lengths: np.ndarray
    start: np.ndarray
    seq_idx: np.ndarray
    positions: np.ndarray

    @classmethod
    def of(cls, lengths: np.ndarray, width: int) -> PackedLayout:
        rows = pack_rows(lengths, width)
        length = max(int(lengths[r].sum()) for r in rows)
        start = np.empty(len(lengths), dtype=np.int64)
        seq_idx = np.full((len(rows), length), -1, dtype=np.int64)
        positions = np.zeros((len(rows), length), dtype=np.int64)
        for row, members in enumerate(rows):
            col = row * length
            for j in members:
                n = int(lengths[j])
                start[j] = col
                seq_idx.reshape(-1)[col : col + n] = j
                positions.reshape(-1)[col : col + n] = np.arange(n)
                col += n
        return cls(lengths, start, seq_idx, positions)

    def place(self, values: Values, fill: int) -> np.ndarray:
        """(rows, length) int64: example j's `values(j)` (as long as the example) at its positions, `fill` elsewhere."""
        out = np.full(self.seq_idx.shape, fill, dtype=np.int64)
        flat = out.reshape(-1)
        for j, (a, n) in enumerate(zip(self.start, self.lengths)):
            flat[a : a + n] = values(j)
        return out

    def inputs(self, ids: Values, pad_id: int, segments: Values | None = None) -> dict:
        """The model inputs of the packed rows: input_ids, token_type_ids (0 where `segments` is None),
        attention_mask (real tokens: the loop counts them as in a padded batch), position_ids, seq_idx."""
        import torch  # training batches only: the module stays importable without torch

        types = self.place(segments, 0) if segments is not None else np.zeros(self.seq_idx.shape, dtype=np.int64)
        real = (self.seq_idx >= 0).astype(np.int64)
        return {"input_ids": torch.from_numpy(self.place(ids, pad_id)), "token_type_ids": torch.from_numpy(types),
                "attention_mask": torch.from_numpy(real), "position_ids": torch.from_numpy(self.positions),
                "seq_idx": torch.from_numpy(self.seq_idx)}  # fmt: skip


def packs(cfg, default: bool, can_pack: bool, model, say: Callable[[str], None]) -> bool:
    """Whether a family's training batches are packed: data.pack (null: the family's `default`) where the forward
    can read packed rows (`can_pack`); else padded, with a notice when data.pack asked for packing explicitly."""
    wanted = default if cfg.data.pack is None else cfg.data.pack
    if cfg.data.pack and not can_pack:
        say(
            f"data.pack: {type(model).__name__} with {model.config._attn_implementation} attention "
            "cannot be packed (only BERT with sdpa or eager attention); training batches are padded"
        )
    return wanted and can_pack
