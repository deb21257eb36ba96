"""Questions -> features: every choice of a question is one (context, choice) pair of token ids, and a batch is
a [batch, choices, pieces] tensor, as `AutoModelForMultipleChoice` reads it (run_swag.py's encoding).

Truncation: the context gives way first (`only_first`), so every choice is read whole: the choices are what the
model compares, the context is the same in each row. (run_swag.py truncates `longest_first`, which cuts whichever
text is longer; for SWAG's short contexts both agree.) A choice too long to fit even with the context cut to
nothing falls back to `longest_first` and is counted (`choices_cut`).

ChID-style cloze: a `#idiom#` blank becomes the tokenizer's mask token, and each candidate idiom is the second text
of its pair ([CLS] passage with [MASK] [SEP] idiom [SEP]), as CLUE's ChID baseline reads it. Putting the
candidate into the blank instead would make the rows differ only inside the passage, where truncation may cut the
blank away, and would tokenize the idiom differently with each neighbour; as the second text the candidate is
read whole and alike in every question. A passage too long for `max_seq_length` is cut to a window of pieces
centred on the blank (not from its end, which could drop the blank).

Questions may have different numbers of choices: the collator (`training.ChoiceCollator`) pads the missing ones
and sends `choice_mask`, and the model's logit of a padded choice is the lowest there is (`masked_logits`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.metrics import compute_metrics
from bertcli.outputs import write_text
from bertcli.tasks.base import Collator
from bertcli.tasks.evaluation import as_numpy, no_grad
from bertcli.tasks.multiple_choice.data import BLANK, ChoiceExamples


@dataclass
class ChoiceFeatures:
    """Token ids of every choice of every question, flat: choice k of question i ([CLS] context [SEP] choice [SEP])
    is pair `starts[i] + k`, whose ids are `token_ids[offsets[p]:offsets[p + 1]]` (`choice(i, k)`); numpy arrays,
    not lists of Python ints, so a SWAG-sized split stays small. `labels`: the right choices' indices, or None.
    `truncated`: questions whose context was cut; `choices_cut`: choices that did not fit whole."""

    token_ids: np.ndarray
    token_types: np.ndarray
    offsets: np.ndarray
    starts: np.ndarray
    labels: np.ndarray | None
    truncated: int
    choices_cut: int
    pad_id: int

    def __len__(self) -> int:
        return len(self.starts) - 1

    def n_choices(self, i: int) -> int:
        return int(self.starts[i + 1] - self.starts[i])

    def choice(self, i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, token types) of choice k of question i."""
        p = self.starts[i] + k
        a, b = self.offsets[p], self.offsets[p + 1]
        return self.token_ids[a:b], self.token_types[a:b]

    @cached_property
    def lengths(self) -> np.ndarray:
        """Per question, its longest choice in pieces (the width it pads its batch to): orders the batches."""
        return np.maximum.reduceat(np.diff(self.offsets), self.starts[:-1]).astype(np.int64)

    @property
    def ids(self) -> np.ndarray:
        """Every token id of every choice, flat."""
        return self.token_ids.astype(np.int64)


def encode_choices(tok, examples: ChoiceExamples, max_seq_length: int) -> ChoiceFeatures:
    """Tokenize every (context, choice) pair of every question within `max_seq_length` pieces (module docstring)."""
    contexts, cut_questions = _centre_blanks(tok, examples, max_seq_length)
    firsts, seconds, owner = [], [], []
    for i in range(len(examples)):
        pairs = examples.pairs(i)
        firsts.extend(contexts[i] for _ in pairs)
        seconds.extend(second for _, second in pairs)
        owner.extend(i for _ in pairs)
    ids, types, cut, choices_cut = _encode_pairs(tok, firsts, seconds, max_seq_length)
    cut_questions.update(owner[j] for j in cut)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum([len(c) for c in examples.choices])]).astype(np.int64)
    labels = None if examples.labels is None else np.asarray(examples.labels, dtype=np.int64)
    return ChoiceFeatures(
        token_ids=np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1])),
        token_types=np.fromiter((t for x in types for t in x), dtype=np.int8, count=int(offsets[-1])),
        offsets=offsets, starts=starts, labels=labels, truncated=len(cut_questions), choices_cut=choices_cut,
        pad_id=tok.pad_token_id,
    )  # fmt: skip


def _centre_blanks(tok, examples: ChoiceExamples, max_seq_length: int) -> tuple[list[str], set[int]]:
    """(contexts, questions cut): every #idiom# blank written as the mask token, and a context too long beside its
    longest choice cut to the pieces that fit, centred on the blank (character offsets of the fast tokenizer).
    One batched tokenizer call for the choices and one for the contexts."""
    blanked = [i for i, c in enumerate(examples.contexts) if BLANK.search(c)]
    if not blanked:
        return list(examples.contexts), set()
    mask = _mask_token(tok, examples)
    contexts = list(examples.contexts)
    for i in blanked:
        contexts[i] = BLANK.sub(mask, contexts[i])
    seconds = [[second for _, second in examples.pairs(i)] for i in blanked]
    lengths = iter(len(x) for x in tok([s for q in seconds for s in q], add_special_tokens=False)["input_ids"])
    longest = [max(next(lengths) for _ in q) for q in seconds]
    enc = tok([contexts[i] for i in blanked], add_special_tokens=False, return_offsets_mapping=True)
    mask_id, special = tok.convert_tokens_to_ids(mask), tok.num_special_tokens_to_add(pair=True)
    cut = set()
    for n, i in enumerate(blanked):
        ids, offsets = enc["input_ids"][n], enc["offset_mapping"][n]
        budget = max_seq_length - special - longest[n]
        if len(ids) <= budget or budget < 1:  # fits; or the choices leave no room: pair truncation decides
            continue
        start = min(max(0, ids.index(mask_id) - budget // 2), len(ids) - budget)
        contexts[i] = contexts[i][offsets[start][0] : offsets[start + budget - 1][1]]
        cut.add(i)
    return contexts, cut


def _mask_token(tok, examples: ChoiceExamples) -> str:
    """The text a #idiom# blank becomes: the tokenizer's mask token."""
    if tok.mask_token is None:
        raise UsageError(f"{examples.path}: the contexts have #idiom# blanks but the tokenizer has no mask token")
    if not getattr(tok, "is_fast", False):
        raise UsageError(f"{examples.path}: the contexts have #idiom# blanks, and cutting a passage around its blank "
                         "needs a fast tokenizer (tokenizer.json)")  # fmt: skip
    return tok.mask_token


def _encode_pairs(tok, firsts, seconds, max_seq_length):
    """(ids, token types, indices of the pairs whose context was cut, number of choices cut) of every pair."""
    enc = _tokenize(tok, firsts, seconds, None, False)
    ids, types = enc["input_ids"], enc["token_type_ids"]
    too_long = [j for j, x in enumerate(ids) if len(x) > max_seq_length]
    if not too_long:
        return ids, types, [], 0
    room = max_seq_length - tok.num_special_tokens_to_add(pair=True)
    second_len = tok([seconds[j] for j in too_long], add_special_tokens=False)["input_ids"]
    fits = [j for j, s in zip(too_long, second_len) if len(s) < room]  # at least one context piece stays
    whole = set(fits)
    cut = [j for j in too_long if j not in whole]
    for group, mode in ((fits, "only_first"), (cut, "longest_first")):
        if group:
            again = _tokenize(tok, [firsts[j] for j in group], [seconds[j] for j in group], max_seq_length, mode)
            for k, j in enumerate(group):
                ids[j], types[j] = again["input_ids"][k], again["token_type_ids"][k]
    return ids, types, too_long, len(cut)


def _tokenize(tok, firsts, seconds, max_length, truncation):
    return tok(firsts, seconds, truncation=truncation, max_length=max_length, return_attention_mask=False,
               return_token_type_ids=True, verbose=False)  # fmt: skip


# --- predictions and scores ----------------------------------------------------------------------------------


def choice_metrics(predicted: list[int], examples: ChoiceExamples) -> dict[str, float]:
    """Accuracy of the chosen indices against the file's labels ({} for an unlabelled file)."""
    if examples.labels is None:
        return {}
    return compute_metrics(["accuracy"], predicted, examples.labels)


def predicted_choices(logits: list[np.ndarray] | np.ndarray) -> list[int]:
    """The chosen index of each question (its logits, padded choices masked, in file order)."""
    return [int(np.argmax(row)) for row in logits]


def prediction_records(examples: ChoiceExamples, predicted: list[int]) -> list[dict]:
    """One record per question in file order: its id, the chosen index (`prediction`) and that choice's text, and
    the right index (`label`) when the file has labels."""
    records = []
    for i, choice in enumerate(predicted):
        row = {"id": examples.ids[i], "prediction": choice, "text": examples.choices[i][choice]}
        if examples.labels is not None:
            row["label"] = examples.labels[i]
        records.append(row)
    return records


def write_choice_predictions(path: Path, examples: ChoiceExamples, predicted: list[int]) -> None:
    """`prediction_records` as JSON lines (eval's predictions.jsonl), written whole or not at all."""
    lines = [json.dumps(r, ensure_ascii=False) for r in prediction_records(examples, predicted)]
    write_text(path, "\n".join(lines) + "\n")


class ChoiceCollator(Collator):
    """Question indices -> [batch, choices, pieces] tensors (input_ids, token_type_ids, attention_mask),
    `choice_mask` [batch, choices] (False: a padded choice), `labels` when the split has them, and
    `example_index` (`arrays`: the same as numpy arrays). Picklable, for DataLoader workers."""

    def __init__(self, features: ChoiceFeatures):
        self.features = features

    def arrays(self, indices) -> dict[str, np.ndarray]:
        f = self.features
        idx = np.asarray(indices)
        n_choices = int((f.starts[idx + 1] - f.starts[idx]).max())
        width = int(f.lengths[idx].max())
        ids = np.full((len(idx), n_choices, width), f.pad_id, dtype=np.int64)
        types = np.zeros_like(ids)
        attention = np.zeros_like(ids)
        choice_mask = np.zeros((len(idx), n_choices), dtype=bool)
        for row, i in enumerate(indices):
            real = f.n_choices(i)
            choice_mask[row, :real] = True
            for k in range(n_choices):
                piece_ids, piece_types = f.choice(i, k if k < real else 0)  # a padded choice repeats the first
                ids[row, k, : len(piece_ids)] = piece_ids
                types[row, k, : len(piece_types)] = piece_types
                attention[row, k, : len(piece_ids)] = 1
        batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": attention, "choice_mask": choice_mask}
        if f.labels is not None:
            batch["labels"] = f.labels[idx]
        batch["example_index"] = idx.astype(np.int64)
        return batch


def predict_choices(acc, forward, loader, n: int) -> list[np.ndarray]:
    """Each question's logits, one per real choice, in file order, gathered from every process exactly once."""
    forward.eval()
    out: list[np.ndarray | None] = [None] * n
    lowest = float(np.finfo(np.float32).min)  # processes may pad different numbers of choices
    with no_grad(acc):
        for batch in loader:
            logits = forward(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"),
                             batch.get("choice_mask"))  # fmt: skip
            logits = acc.pad_across_processes(logits, dim=1, pad_index=lowest)
            counts = batch["choice_mask"].sum(1)
            index, logits, counts = acc.gather_for_metrics((batch["example_index"], logits, counts))
            for i, row, k in zip(as_numpy(index).tolist(), as_numpy(logits), as_numpy(counts).tolist()):
                out[i] = row[:k]
    if any(x is None for x in out):
        raise RuntimeError(f"{sum(x is None for x in out)} questions got no prediction")
    return out
