"""Masked-LM batches: transformers' `DataCollatorForLanguageModeling` applied to each example, own seed each.

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

COLUMNS = ["input_ids", "token_type_ids", "special_tokens_mask", "next_sentence_label"]
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
        if whole_word_mask:  # transformers supports only [MASK] replacement there (and warns otherwise)
            mask_replace_prob, random_replace_prob = 1.0, 0.0
        self.masker = DataCollatorForLanguageModeling(
            tokenizer,
            mlm=True,
            mlm_probability=mlm_probability,
            mask_replace_prob=mask_replace_prob,
            random_replace_prob=random_replace_prob,
            whole_word_mask=whole_word_mask,
            seed=seed,
        )
        self.seed = seed
        self.pad_id = tokenizer.pad_token_id
        self.with_nsp = with_nsp
        self.continues_word = _continuation_table(tokenizer) if whole_word_mask else None

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        masked, labels = [], []
        for row in rows:
            ids, lab = self.mask_example(row["input_ids"], row["special_tokens_mask"], row["mask_key"])
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

    def mask_example(self, input_ids, special_tokens_mask, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask one unpadded example with the generator of `key` = (epoch, index)."""
        ids = torch.as_tensor(input_ids, dtype=torch.long).unsqueeze(0)
        special = torch.as_tensor(special_tokens_mask, dtype=torch.bool).unsqueeze(0)
        offsets = _word_offsets(ids, self.continues_word) if self.continues_word is not None else None
        self.masker.generator = torch.Generator().manual_seed(_mix(self.seed, *key))
        ids, labels = self.masker.torch_mask_tokens(ids, special_tokens_mask=special, offset_mapping=offsets)
        return ids[0], labels[0]


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


def _word_offsets(ids: torch.Tensor, continues_word: torch.Tensor) -> torch.Tensor:
    """Character-like offsets from which the collator's whole-word logic finds word starts: a `##` piece
    starts where the previous token ended, any other token one step later (our data carries ids, not character
    offsets)."""
    step = 1 + (~continues_word[ids]).long()  # 1 inside a word, 2 at a word start
    starts = torch.cumsum(step, dim=1)
    return torch.stack([starts, starts + 1], dim=-1)
