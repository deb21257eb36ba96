"""The next-sentence-prediction pair builder.

`plan_nsp_pairs` follows ``create_instances_from_document`` of google-research/bert's ``create_pretraining_data.py``
step for step (the same random draws in the same order), with two changes of shape, neither of which changes the
result:
- the original holds every document of the corpus in a Python list; here another document is looked up on demand,
  from the memory-mapped Arrow data, so memory does not grow with the corpus;
- the algorithm only needs sentence *lengths*: it returns token ranges, and tokens are copied once, with numpy, when
  the instances are written (`build_nsp_batch`). `build_nsp_pairs` gives the same pairs as token lists.

Each document gets its own random generator, seeded from (seed, pass, document index), so the output depends on
the seed alone, not on how the documents are shared out between worker processes. Masking is not done here: the
pretraining collator masks anew every epoch.

One departure, so that no label is ever wrong: where the original, after ten draws that all hit the current
document, takes a "random" B from that very document, we draw once more among the other documents (with two
documents this happens once in 1024 random pairs; with the corpora of the reference test, never). A split of
fewer than two documents has no other document at all: `plan_nsp_pairs` refuses it.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

MIN_DOCUMENTS = 2  # a random B comes from another document of the same split


@dataclass(frozen=True)
class PairSpans:
    a: tuple[int, int]  # token range [start, end) of segment A in the current document
    b_doc: int  # the document segment B comes from (the current one when B follows A)
    b: tuple[int, int]  # token range of segment B in document b_doc
    is_random_next: bool  # the label BertForPreTraining expects: 1 = B is random, 0 = B follows A


@dataclass(frozen=True)
class NspPair:
    tokens_a: list[int]
    tokens_b: list[int]
    is_random_next: bool


def document_rng(seed: int, dupe_pass: int, doc_index: int) -> random.Random:
    """A generator for one document in one pass, the same in every process (integer seeds are not hashed
    with the per-process salt); one integer packs the three numbers without collisions."""
    return random.Random(((seed & 0xFFFFFFFF) << 64) | ((dupe_pass & 0xFFFF) << 48) | doc_index)


def plan_nsp_pairs(
    starts: Sequence[int],
    doc_index: int,
    num_docs: int,
    starts_of: Callable[[int], Sequence[int]],
    rng: random.Random,
    max_seq_length: int = 128,
    short_seq_prob: float = 0.1,
    nsp_probability: float = 0.5,
) -> list[PairSpans]:
    """Cut one document into (A, B) pairs of whole sentences; the document is given as the token offsets at which
    its sentences start, followed by its length (``[0, len(s0), len(s0) + len(s1), ..., n_tokens]``).

    Chunks of consecutive sentences are gathered up to a target length (max_seq_length - 3, or, with probability
    `short_seq_prob`, a random shorter one, drawn once per document as in the original); A takes a random number of
    the chunk's first sentences. With probability `nsp_probability` (always, if the chunk has one sentence) B is
    taken from a random other document (`starts_of(j)`, j in [0, num_docs)) and the chunk's unused sentences are
    put back; otherwise B is the rest of the chunk. Too-long pairs are trimmed one token at a time from the longer
    side, front or back at random. `num_docs` must be at least 2: a random B always comes from another document.
    """
    if num_docs < MIN_DOCUMENTS:
        raise ValueError(f"NSP needs at least {MIN_DOCUMENTS} documents to draw B from another one, got {num_docs}")
    max_num_tokens = max_seq_length - 3  # room for [CLS], [SEP], [SEP]
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    n_sentences = len(starts) - 1
    pairs: list[PairSpans] = []
    first, i = 0, 0  # the chunk is sentences first..i
    while i < n_sentences:
        if i == n_sentences - 1 or starts[i + 1] - starts[first] >= target_seq_length:
            n_chunk = i - first + 1
            a_end = rng.randint(1, n_chunk - 1) if n_chunk >= 2 else 1
            a = (starts[first], starts[first + a_end])
            if n_chunk == 1 or rng.random() < nsp_probability:
                b_doc, b = _random_segment(starts_of, doc_index, num_docs, target_seq_length - (a[1] - a[0]), rng)
                i -= n_chunk - a_end  # put the unused sentences back for the next chunk
                is_random_next = True
            else:
                b_doc, b, is_random_next = doc_index, (starts[first + a_end], starts[i + 1]), False
            a, b = truncate_pair(a, b, max_num_tokens, rng)
            pairs.append(PairSpans(a, b_doc, b, is_random_next))
            first = i + 1
        i += 1
    return pairs


def _random_segment(
    starts_of: Callable[[int], Sequence[int]], doc_index: int, num_docs: int, target: int, rng: random.Random
) -> tuple[int, tuple[int, int]]:
    """Consecutive sentences of a random other document, from a random sentence on, until `target` tokens."""
    other = doc_index
    for _ in range(10):  # as the original: 10 tries to avoid the same document...
        other = rng.randint(0, num_docs - 1)
        if other != doc_index:
            break
    else:  # ...which then accepts it under the label "random"; we draw among the others instead
        other = rng.randint(0, num_docs - 2)
        other += other >= doc_index
    starts = starts_of(other)
    start = rng.randint(0, len(starts) - 2)
    begin = end = starts[start]
    for end in starts[start + 1 :]:
        if end - begin >= target:
            break
    return other, (begin, end)


def truncate_pair(
    a: tuple[int, int], b: tuple[int, int], max_num_tokens: int, rng: random.Random
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Trim the longer of two token ranges one token at a time, front or back at random, until both fit."""
    (a0, a1), (b0, b1) = a, b
    excess = (a1 - a0) + (b1 - b0) - max_num_tokens
    for _ in range(excess):
        front = rng.random() < 0.5
        if a1 - a0 > b1 - b0:
            if front:
                a0 += 1
            else:
                a1 -= 1
        elif front:
            b0 += 1
        else:
            b1 -= 1
    return (a0, a1), (b0, b1)


def build_nsp_pairs(
    document: Sequence[Sequence[int]],
    doc_index: int,
    num_docs: int,
    fetch_document: Callable[[int], Sequence[Sequence[int]]],
    rng: random.Random,
    max_seq_length: int = 128,
    short_seq_prob: float = 0.1,
    nsp_probability: float = 0.5,
) -> list[NspPair]:
    """`plan_nsp_pairs` over documents given as lists of sentences of token ids; returns the pairs' tokens."""

    def flat(doc: Sequence[Sequence[int]]) -> list[int]:
        return [t for sentence in doc for t in sentence]

    def starts_of(doc: Sequence[Sequence[int]]) -> list[int]:
        return [0, *accumulate(len(s) for s in doc)]

    plans = plan_nsp_pairs(
        starts_of(document), doc_index, num_docs, lambda j: starts_of(fetch_document(j)), rng,
        max_seq_length, short_seq_prob, nsp_probability,
    )  # fmt: skip
    tokens = flat(document)
    pairs = []
    for p in plans:
        b_tokens = tokens if p.b_doc == doc_index else flat(fetch_document(p.b_doc))
        pairs.append(NspPair(tokens[p.a[0] : p.a[1]], b_tokens[p.b[0] : p.b[1]], p.is_random_next))
    return pairs


class DocumentStore:
    """Zero-copy numpy views of tokenized documents held in an Arrow ``list<list<int32>>`` column.

    Looking a document up costs a few array slices and copies nothing: the buffers stay memory-mapped on disk.
    """

    def __init__(self, column):
        self._chunks = column.chunks
        self._bounds = [0, *accumulate(len(c) for c in self._chunks)]
        self._views: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _locate(self, row: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        k = bisect_right(self._bounds, row) - 1
        if k not in self._views:
            chunk = self._chunks[k]
            sentences = chunk.values  # offsets of a sliced array index the unsliced child
            self._views[k] = (chunk.offsets.to_numpy(), sentences.offsets.to_numpy(), sentences.values.to_numpy())
        return (row - self._bounds[k], *self._views[k])

    def starts(self, row: int) -> list[int]:
        """Token offsets of the document's sentences, then its length: what `plan_nsp_pairs` reads."""
        j, doc_off, sent_off, _ = self._locate(row)
        offsets = sent_off[doc_off[j] : doc_off[j + 1] + 1]
        return (offsets - offsets[0]).tolist()

    def tokens(self, row: int) -> np.ndarray:
        j, doc_off, sent_off, values = self._locate(row)
        return values[sent_off[doc_off[j]] : sent_off[doc_off[j + 1]]]


def build_nsp_batch(
    batch,
    indices: list[int],
    *,
    documents,
    split_rows: np.ndarray,
    seed: int,
    dupe_factor: int,
    max_seq_length: int,
    short_seq_prob: float,
    nsp_probability: float,
    cls_id: int,
    sep_id: int,
):
    """`datasets.map(batched=True, with_indices=True)` over one split's ``row`` column (Arrow format).

    `indices` are the documents' positions in the split (what seeds each one), ``batch["row"]`` their rows in
    `documents`, the memory-mapped tokenized corpus; `split_rows` maps every position of the split to its row, for
    the random B segments. Returns a ``pyarrow.Table`` of model-ready instances, which datasets writes as is;
    where `documents` has a ``word_starts`` column (int8 flags aligned with ``ids``), the instances carry theirs.
    """
    store = DocumentStore(documents.data.column("ids"))
    words = DocumentStore(documents.data.column("word_starts")) if "word_starts" in documents.column_names else None
    planned: list[tuple[int, PairSpans, int]] = []  # (row of A, spans, row of B)
    for position, row in zip(indices, batch["row"].to_pylist()):
        starts = store.starts(row)
        for dupe_pass in range(dupe_factor):
            rng = document_rng(seed, dupe_pass, position)
            for plan in plan_nsp_pairs(
                starts, position, len(split_rows), lambda j: store.starts(int(split_rows[j])), rng,
                max_seq_length, short_seq_prob, nsp_probability,
            ):  # fmt: skip
                planned.append((row, plan, int(split_rows[plan.b_doc])))
    return _instances_table(planned, store, cls_id, sep_id, words)


def _instances_table(
    planned: list[tuple[int, PairSpans, int]],
    store: DocumentStore,
    cls_id: int,
    sep_id: int,
    words: DocumentStore | None = None,
):
    """Write ``[CLS] A [SEP] B [SEP]``, segment ids 0…0 1…1, the special-tokens mask and labels as Arrow lists,
    and the word-start flags when `words` holds the documents' (1 at special tokens and where a segment starts: a
    segment cut in the middle of a word starts with what is left of it)."""
    import pyarrow as pa

    len_a = np.array([p.a[1] - p.a[0] for _, p, _ in planned], dtype=np.int64)
    len_b = np.array([p.b[1] - p.b[0] for _, p, _ in planned], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(len_a + len_b + 3)))
    starts, ends = offsets[:-1], offsets[1:]
    seps = starts + 1 + len_a  # position of the [SEP] after A
    input_ids = np.empty(int(offsets[-1]), dtype=np.int32)
    segment = np.zeros(len(input_ids), dtype=np.int8)
    flags = np.ones(len(input_ids), dtype=np.int8) if words is not None else None
    for (a_row, p, b_row), start, sep, end in zip(planned, starts.tolist(), seps.tolist(), ends.tolist()):
        input_ids[start + 1 : sep] = store.tokens(a_row)[p.a[0] : p.a[1]]
        input_ids[sep + 1 : end - 1] = store.tokens(b_row)[p.b[0] : p.b[1]]
        segment[sep + 1 : end] = 1
        if flags is not None:  # the first token of A and of B keeps its 1
            flags[start + 2 : sep] = words.tokens(a_row)[p.a[0] + 1 : p.a[1]]
            flags[sep + 2 : end - 1] = words.tokens(b_row)[p.b[0] + 1 : p.b[1]]
    input_ids[starts] = cls_id
    input_ids[seps] = sep_id
    input_ids[ends - 1] = sep_id
    special = np.zeros(len(input_ids), dtype=np.int8)
    special[np.concatenate((starts, seps, ends - 1))] = 1
    labels = np.array([p.is_random_next for _, p, _ in planned], dtype=np.int8)
    pa_offsets = pa.array(offsets.astype(np.int32))
    columns = {
        "input_ids": pa.ListArray.from_arrays(pa_offsets, pa.array(input_ids)),
        "token_type_ids": pa.ListArray.from_arrays(pa_offsets, pa.array(segment)),
        "special_tokens_mask": pa.ListArray.from_arrays(pa_offsets, pa.array(special)),
        "next_sentence_label": pa.array(labels),
    }
    if flags is not None:
        columns["word_starts"] = pa.ListArray.from_arrays(pa_offsets, pa.array(flags))
    return pa.table(columns)
