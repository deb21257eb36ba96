"""Batches of any task family's encoded split: length-grouped for training, sorted by length for evaluation.

Length-grouped batches follow the idea of transformers' `LengthGroupedSampler`: shuffle, cut into chunks of
`group` batches, sort each chunk by length, cut it into batches, shuffle the batches. The family's collate_fn
(`TaskFamily.collator`) turns each list of row indices into padded tensors.
"""

from __future__ import annotations

import numpy as np
import torch


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, seed: int, group: int = 50, shuffle: bool = True, by_tokens: bool = False
) -> list[list[int]]:
    """Batches of example indices. shuffle=False: in order (evaluation). group=0: no length grouping. by_tokens
    (with grouping): each sorted chunk is cut into batches of about `batch_size` x the mean length pieces, padding
    counted (`_cut_by_tokens`; as many batches), rather than of `batch_size` examples.

    Deterministic for (lengths, batch_size, seed): the loop passes seed + epoch, so a resumed run sees the same
    batches, and every process computes the same list before Accelerate shards it."""
    n = len(lengths)
    if not shuffle:
        order = np.arange(n)
        return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if group <= 0:
        return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
    chunk = batch_size * group
    batches = []
    for start in range(0, n, chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]  # longest first within the chunk
        if by_tokens:
            batches.extend(_cut_by_tokens(part, lengths, -(-len(part) // batch_size)))
        else:
            batches.extend(part[i : i + batch_size].tolist() for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _cut_by_tokens(part: np.ndarray, lengths: np.ndarray, count: int) -> list[list[int]]:
    """`part` (sorted longest first) cut into `count` consecutive batches (as many as of batch_size rows) of about
    the same count of pieces: each takes the rows, at least one, whose padded size (rows x its first row's length)
    comes nearest to the pieces left divided by the batches left; the last takes the rest. Random batches of a set
    hold about the same count of pieces each; sorted batches of a fixed row count do not (32 one-word sentences
    against 32 of 128 pieces), and a tagger's per-batch mean loss then gives a piece in a short batch many times
    the weight of one in a long batch."""
    left_pieces = np.cumsum(lengths[part][::-1])[::-1]  # pieces from each position to the chunk's end
    batches, start = [], 0
    for left in range(count, 1, -1):
        rows = max(1, round(left_pieces[start] / left / lengths[part[start]]))
        rows = min(rows, len(part) - start - (left - 1))  # one row at least for each batch still to come
        batches.append(part[start : start + rows].tolist())
        start += rows
    batches.append(part[start:].tolist())
    return batches


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Evaluation batches sorted by length (least padding); predictions are put back in file order after."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


class IndexBatches(torch.utils.data.Sampler):
    """A batch sampler over precomputed batches, re-drawn each epoch with `set_epoch` (as Accelerate calls it)."""

    def __init__(self, lengths, batch_size, seed, group_by_length: bool, shuffle: bool = True, by_tokens=False):
        self.lengths, self.rows, self.seed = lengths, batch_size, seed
        # Accelerate's BatchSamplerShard reads `batch_size`: None tells it the batches vary in size (by_tokens), so
        # evening out the processes' last batches repeats whole batches instead of filling one up to batch_size.
        self.batch_size = None if by_tokens and group_by_length and shuffle else batch_size
        self.group = 50 if group_by_length else 0
        self.shuffle, self.by_tokens = shuffle, by_tokens
        self.epoch = 0
        self._batches = self._draw()

    def _draw(self) -> list[list[int]]:
        if not self.shuffle:
            return eval_batches(self.lengths, self.rows)
        return length_grouped_batches(self.lengths, self.rows, self.seed + self.epoch, self.group,
                                      by_tokens=self.by_tokens)  # fmt: skip

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._batches = self._draw()

    def __iter__(self):
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def make_loader(split, batch_size: int, seed: int, group_by_length: bool, train: bool, workers=0, collate=None,
                by_tokens: bool = False):  # fmt: skip
    """A DataLoader of padded batches of any task family's encoded split (its `lengths`, one per row, order the
    batches); `collate` (the family's collate_fn) pads them. Training batches are reshuffled per epoch via the
    sampler's set_epoch; by_tokens: length-grouped batches of about the same count of pieces."""
    sampler = IndexBatches(split.lengths, batch_size, seed, group_by_length, shuffle=train, by_tokens=by_tokens)
    return torch.utils.data.DataLoader(
        range(len(split)),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),  # page-locked batches: the copy to the GPU runs without a wait
        # Each new iterator draws a base seed from this generator: from the global one it would shift the dropout
        # stream of a resumed run (which opens one more iterator) against the uninterrupted run.
        generator=torch.Generator().manual_seed(seed),
    )
