"""Batches of any task family's encoded split: length-grouped for training, sorted by length for evaluation.

Length-grouped batches follow the idea of transformers' `LengthGroupedSampler`: shuffle, cut into chunks of
`group` batches, sort each chunk by length, cut it into batches, shuffle the batches. The family's collate_fn
(`TaskFamily.collator`) turns each list of row indices into padded tensors.
"""

from __future__ import annotations

import numpy as np
import torch


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, seed: int, group: int = 50, shuffle: bool = True
) -> list[list[int]]:
    """Batches of example indices. shuffle=False: in order (evaluation). group=0: no length grouping.

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
        batches.extend(part[i : i + batch_size].tolist() for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Evaluation batches sorted by length (least padding); predictions are put back in file order after."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


class IndexBatches(torch.utils.data.Sampler):
    """A batch sampler over precomputed batches, re-drawn each epoch with `set_epoch` (as Accelerate calls it)."""

    def __init__(self, lengths, batch_size, seed, group_by_length: bool, shuffle: bool = True):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.group = 50 if group_by_length else 0
        self.shuffle = shuffle
        self.epoch = 0
        self._batches = self._draw()

    def _draw(self) -> list[list[int]]:
        if not self.shuffle:
            return eval_batches(self.lengths, self.batch_size)
        return length_grouped_batches(self.lengths, self.batch_size, self.seed + self.epoch, self.group)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._batches = self._draw()

    def __iter__(self):
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def make_loader(split, batch_size: int, seed: int, group_by_length: bool, train: bool, workers=0, collate=None):
    """A DataLoader of padded batches of any task family's encoded split (its `lengths`, one per row, order the
    batches); `collate` (the family's collate_fn) pads them. Training batches are reshuffled per epoch via the
    sampler's set_epoch."""
    sampler = IndexBatches(split.lengths, batch_size, seed, group_by_length, shuffle=train)
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
