"""TinyBERT's data augmentation for task distillation (Jiao et al. 2020, Algorithm 1), offline (`distill.augment`).

TinyBERT makes N copies of each training example, each word replaced with probability p by one of K candidates
(a masked LM's predictions for a one-piece word, GloVe's neighbours for the others), and the student learns the
teacher's outputs on them: without it, its ablation loses much of the student's CoLA score. Here the candidates of
a one-piece word are its K nearest neighbours among the vocabulary's whole words by the cosine of the teacher's own
input embeddings (other forms and related words: MiniLM's "walk" -> "walks", "walked", "strolled"; "himself" ->
"herself", "themselves"; "is" -> "are", "was"), so nothing beyond the teacher is needed; words of several pieces,
punctuation and numbers stay as they are. The copies are made on the token ids of the encoded training rows (a
replaced word keeps its one piece, so a row keeps its length and a tagging row its labels' places) and follow the
training rows, learnt with the soft loss only, as the rows of `distill.unlabelled_file` are.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

CHUNK = 2048  # source words per similarity product: 2048 x 30k floats, about 250 MB


def whole_words(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(the ids of the vocabulary's whole alphabetic words, a mask over the ids of the pieces that continue a word:
    "##s"). Special tokens and [unused] slots are neither."""
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_tokens)
    continuation = np.zeros(max(vocab.values()) + 1, dtype=bool)
    words = []
    for token, i in vocab.items():
        if token.startswith("##"):
            continuation[i] = True
        elif token.isalpha() and token not in special:
            words.append(i)
    return np.asarray(sorted(words), dtype=np.int64), continuation


def neighbour_table(embeddings: torch.Tensor, words: np.ndarray, sources: Iterable[int], k: int) -> np.ndarray:
    """(vocabulary size, k) ids: row i holds the k whole words nearest to word i by the cosine of `embeddings`
    (the input embeddings, one row per id), nearest first; -1 in the rows of ids that are not in `sources` or not
    whole words (they are never replaced)."""
    table = np.full((embeddings.shape[0], k), -1, dtype=np.int64)
    wanted = np.intersect1d(np.fromiter(sources, dtype=np.int64), words)
    if len(wanted) == 0 or len(words) <= k:
        return table
    with torch.no_grad():
        normed = torch.nn.functional.normalize(embeddings.detach().float(), dim=-1)
        candidates = normed[torch.from_numpy(words)]
        for start in range(0, len(wanted), CHUNK):
            ids = torch.from_numpy(wanted[start : start + CHUNK])
            similarity = normed[ids] @ candidates.T
            similarity[similarity >= 1 - 1e-6] = -2.0  # the word itself (and exact duplicates) is no replacement
            table[ids.numpy()] = words[similarity.topk(k, dim=-1).indices.numpy()]
    return table


class Augmenter:
    """Copies of rows of token ids: in each copy, each position whose id has candidates and whose next piece does
    not continue it (a one-piece word) is replaced with probability `prob` by one of its candidates, drawn
    uniformly. Copies equal to their row (no word drawn) are dropped, so a row gets at most `copies` copies."""

    def __init__(self, embeddings: torch.Tensor, tokenizer, copies: int, prob: float, candidates: int, seed: int):
        self.embeddings, self.copies, self.prob, self.candidates = embeddings, copies, prob, candidates
        self.words, self.continuation = whole_words(tokenizer)
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_teacher(cls, model, tokenizer, settings, seed: int) -> Augmenter:
        """The augmenter of `settings` (distill: augment, augment_prob, augment_candidates), its candidates from
        the teacher's input embeddings."""
        embeddings = model.get_input_embeddings().weight
        return cls(embeddings, tokenizer, settings.augment, settings.augment_prob, settings.augment_candidates, seed)

    def __call__(self, rows: list) -> list[list[np.ndarray]]:
        """The copies of each row (a sequence of token ids), in the rows' order."""
        rows = [np.asarray(r, dtype=np.int64) for r in rows]
        if not rows:
            return []
        seen = np.unique(np.concatenate(rows))
        table = neighbour_table(self.embeddings, self.words, seen, self.candidates)
        continuation = np.zeros(len(table), dtype=bool)  # ids past the tokenizer's (padded embeddings) continue nothing
        n = min(len(table), len(self.continuation))
        continuation[:n] = self.continuation[:n]
        return [self._copies(ids, table, continuation) for ids in rows]

    def _copies(self, ids: np.ndarray, table: np.ndarray, continuation: np.ndarray) -> list[np.ndarray]:
        next_continues = np.zeros(len(ids), dtype=bool)
        next_continues[:-1] = continuation[ids[1:]]
        replaceable = (table[ids, 0] >= 0) & ~next_continues
        out = []
        for _ in range(self.copies):
            drawn = replaceable & (self.rng.random(len(ids)) < self.prob)
            if not drawn.any():
                continue
            copy = ids.copy()
            copy[drawn] = table[ids[drawn], self.rng.integers(0, table.shape[1], int(drawn.sum()))]
            out.append(copy)
        return out
