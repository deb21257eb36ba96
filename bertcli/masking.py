"""Masked-LM batches: each example masked with its own seed, by transformers' `DataCollatorForLanguageModeling`,
or, with whole-word masking, by BERT's own word-level procedure (`mask_whole_words`).

Each example is masked by a generator seeded from (seed, epoch, example index), before padding. So an
example's mask does not depend on the batch it lands in, the number of processes or workers, prefetching, or a
resume in the middle of an epoch (all of which change what a shared generator would have drawn before it), and
a new epoch brings new masks (dynamic masking, as RoBERTa showed is better than BERT's static masks).
Evaluation keeps the epoch at 0 and uses its own seed, so every evaluation sees the same masks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

from bertcli.errors import UsageError

COLUMNS = ["input_ids", "token_type_ids", "special_tokens_mask", "next_sentence_label"]
NSP_LABEL = "next_sentence_label"  # absent from MLM-only data (tokenize nsp.mode none)
WORD_STARTS = "word_starts"  # int8 per token, 1 where a word starts: what whole-word masking reads (see word_starts.py)
IGNORE_INDEX = -100  # the label value torch's cross_entropy and BertForPreTraining skip


class EpochIndexed(Dataset):
    """A map-style dataset whose rows carry (epoch, index), the key of their masks. The training loop calls
    `set_epoch` before each pass (before the DataLoader starts its workers, so they see it).

    `fixed=True` (evaluation): the epoch stays where it was made and `set_epoch` does nothing. Accelerate's
    prepared loader calls `dataset.set_epoch(n)` itself at the start of its n-th complete pass, so without this
    each evaluation would draw new masks, and an evaluation after a resume (a fresh loader) would not repeat the
    one of the unbroken run."""

    def __init__(self, dataset, epoch: int = 0, fixed: bool = False):
        self.dataset = dataset
        self.epoch = epoch
        self.fixed = fixed

    def set_epoch(self, epoch: int) -> None:
        if not self.fixed:
            self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        rows = self.dataset[list(indices)]  # one Arrow read for the batch, column-wise
        names = list(rows)
        return [
            {**{name: rows[name][i] for name in names}, "mask_key": (self.epoch, int(index))}
            for i, index in enumerate(indices)
        ]


class PretrainingCollator:
    """list of rows -> padded batch: input_ids (masked), token_type_ids, attention_mask, labels, and
    next_sentence_label when the objective has NSP."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        seed: int,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        whole_word_mask: bool = False,
        with_nsp: bool = True,
    ):
        self.masker = DataCollatorForLanguageModeling(
            tokenizer,
            mlm=True,
            mlm_probability=mlm_probability,
            mask_replace_prob=mask_replace_prob,
            random_replace_prob=random_replace_prob,
            seed=seed,
        )
        self.seed = seed
        self.pad_id = tokenizer.pad_token_id
        self.with_nsp = with_nsp
        self.whole_word_mask = whole_word_mask
        # Rows without a word_starts column (data tokenized before it existed): words from the ## pieces.
        self.continues_word = _continuation_table(tokenizer) if whole_word_mask else None

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        masked, labels = [], []
        for row in rows:
            starts = row.get(WORD_STARTS) if self.whole_word_mask else None
            ids, lab = self.mask_example(row["input_ids"], row["special_tokens_mask"], row["mask_key"], starts)
            masked.append(ids)
            labels.append(lab)
        batch = {
            "input_ids": _pad(masked, self.pad_id),
            "token_type_ids": _pad([torch.as_tensor(r["token_type_ids"]) for r in rows], 0),
            "attention_mask": _pad([torch.ones(len(r["input_ids"]), dtype=torch.long) for r in rows], 0),
            "labels": _pad(labels, IGNORE_INDEX),
        }
        if self.with_nsp:
            batch["next_sentence_label"] = torch.tensor([int(r["next_sentence_label"]) for r in rows])
        return batch

    def mask_example(
        self, input_ids, special_tokens_mask, key: tuple[int, int], word_starts=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask one unpadded example with the generator of `key` = (epoch, index); with whole-word masking, words
        start where `word_starts` is 1 (None: at every token that is not a ## piece)."""
        ids = torch.as_tensor(input_ids, dtype=torch.long)
        special = torch.as_tensor(special_tokens_mask, dtype=torch.bool)
        generator = torch.Generator().manual_seed(_mix(self.seed, *key))
        if self.whole_word_mask:
            starts = ~self.continues_word[ids] if word_starts is None else torch.as_tensor(word_starts).bool()
            m = self.masker
            return mask_whole_words(
                ids, special, starts, generator, m.mlm_probability, m.mask_replace_prob, m.random_replace_prob,
                m.tokenizer.mask_token_id, len(m.tokenizer),
            )  # fmt: skip
        self.masker.generator = generator
        ids, labels = self.masker.torch_mask_tokens(ids.unsqueeze(0), special_tokens_mask=special.unsqueeze(0))
        return ids[0], labels[0]


def mask_whole_words(
    ids: torch.Tensor,
    special: torch.Tensor,
    word_starts: torch.Tensor,
    generator: torch.Generator,
    mlm_probability: float,
    mask_replace_prob: float,
    random_replace_prob: float,
    mask_id: int,
    vocab_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's whole-word masking (``create_masked_lm_predictions`` of google-research/bert): words in random
    order, each taken whole while the count of chosen tokens stays within round(mlm_probability x eligible
    tokens) (a word that would overshoot is skipped, a later shorter one may still fit); then each chosen token
    becomes [MASK] (mask_replace_prob), a random token (random_replace_prob) or stays as it is. Special tokens
    are never chosen, and a word never reaches across one. Returns (input ids, labels with IGNORE_INDEX where
    nothing was chosen)."""
    after_special = torch.cat((torch.ones(1, dtype=torch.bool), special[:-1]))  # a segment starts a word
    word = torch.cumsum(word_starts | special | after_special, 0)
    eligible = ~special
    words, sizes = torch.unique_consecutive(word[eligible], return_counts=True)
    target = max(1, round(int(eligible.sum()) * mlm_probability))
    sizes = sizes.tolist()
    chosen_words, count = [], 0
    for k in torch.randperm(len(sizes), generator=generator).tolist():
        if count >= target:
            break
        if count + sizes[k] <= target:
            chosen_words.append(k)
            count += sizes[k]
    chosen = torch.isin(word, words[chosen_words]) & eligible
    draw = torch.rand(len(ids), generator=generator)
    random_ids = torch.randint(vocab_size, (len(ids),), generator=generator)
    labels = torch.where(chosen, ids, IGNORE_INDEX)
    out = torch.where(chosen & (draw < mask_replace_prob), mask_id, ids)
    as_random = chosen & (draw >= mask_replace_prob) & (draw < mask_replace_prob + random_replace_prob)
    return torch.where(as_random, random_ids, out), labels


def _mix(seed: int, epoch: int, index: int) -> int:
    """A well-spread 63-bit seed for one (seed, epoch, example) triple; neighbouring triples give unrelated
    streams."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _continuation_table(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """True for the vocabulary entries that continue a word (WordPiece's `##` pieces)."""
    prefix = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    prefix = getattr(prefix, "continuing_subword_prefix", None) or "##"
    table = torch.zeros(len(tokenizer), dtype=torch.bool)
    for token, index in tokenizer.get_vocab().items():
        table[index] = token.startswith(prefix)
    return table


def masking_columns(parts: list, whole_word_mask: bool, dirs: list[str], with_nsp: bool = True) -> list:
    """The datasets of the data dirs (one split each), cut to the columns the collator reads: word_starts too
    when whole-word masking reads it. Data tokenized before word_starts existed has words from its ## pieces;
    a mix of the two would give a concatenation error, so it is refused here with what to do. Without NSP
    (`with_nsp` False) the NSP labels are left out, so pair data and MLM-only data concatenate."""
    has = [WORD_STARTS in part.column_names for part in parts]
    if whole_word_mask and any(has) and not all(has):
        old = ", ".join(d for d, h in zip(dirs, has) if not h)
        raise UsageError(
            f"{old}: tokenized without word boundaries (word_starts), unlike the other data dirs; "
            "re-run `bertcli tokenize` into it for masking.whole_word_mask"
        )
    columns = [c for c in COLUMNS if with_nsp or c != NSP_LABEL] + [WORD_STARTS] * (whole_word_mask and all(has))
    return [part.select_columns(columns) for part in parts]
