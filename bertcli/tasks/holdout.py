"""`data.holdout_fraction`: a validation split carved from the training examples, before they are encoded, so that
picking the model (best step, early stopping, best seed, seed soup) never looks at the data that is reported.

A family's `load_data` calls `carve` on its training examples right after reading them, with what keeps the split
honest for it: the labels to stratify by (classification), or the groups that must not straddle the two sides
(QA: the questions of one context). The split is drawn by scikit-learn with a fixed data seed (`HOLDOUT_SEED`),
never the training seed: every run and every seed of a run hold out the same examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertcli.errors import UsageError

HOLDOUT = "holdout"  # the split's name in metrics.json, the log and FinetuneData.counts
HOLDOUT_SEED = 0  # the data seed of the split: fixed, so the split is one and the same across runs and seeds


@dataclass
class Carved:
    """The training examples kept for training, those held out, and how the split was drawn (for the log)."""

    train: Any
    holdout: Any
    how: str


def carve(examples, fraction: float, path: Path | str, unit: str = "examples", strata: Sequence | None = None,
          groups: Sequence | None = None) -> Carved:  # fmt: skip
    """Hold out `fraction` of `examples` (a family's examples: a dataclass whose list fields hold one item per
    example). strata: one label per example, each label keeps its share on both sides; groups: one key per
    example, a group's examples all land on the same side. `unit` names an example in messages."""
    train_rows, held_rows, how = holdout_rows(len(examples), fraction, strata, groups)
    if len(train_rows) == 0 or len(held_rows) == 0:
        raise UsageError(f"data.holdout_fraction {fraction}: {path} has {len(examples)} {unit}, too few to hold "
                         f"some out and train on the rest; lower data.holdout_fraction or set it to 0")  # fmt: skip
    return Carved(take(examples, train_rows), take(examples, held_rows), how)


def carve_if_asked(cfg, examples, path: Path | str, unit: str = "examples", strata: Sequence | None = None,
                   groups: Sequence | None = None) -> Carved:  # fmt: skip
    """`carve` with cfg.data.holdout_fraction; with 0 (off), every example stays for training (`holdout` None)."""
    fraction = cfg.data.holdout_fraction
    if not fraction:
        return Carved(examples, None, "")
    return carve(examples, fraction, path, unit, strata, groups)


def holdout_rows(n: int, fraction: float, strata: Sequence | None = None, groups: Sequence | None = None,
                 seed: int = HOLDOUT_SEED) -> tuple[np.ndarray, np.ndarray, str]:  # fmt: skip
    """(training rows, held-out rows, how), each sorted in file order."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    rows = np.arange(n)
    if n < 2:
        return rows, rows[:0], "random"
    try:
        if groups is not None:
            split = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
            train, held = next(split.split(rows, groups=np.asarray(groups)))
            how = f"by {len(set(groups))} groups"
        elif strata is not None:
            train, held = train_test_split(rows, test_size=fraction, random_state=seed, stratify=np.asarray(strata))
            how = "stratified by label"
        else:
            train, held = train_test_split(rows, test_size=fraction, random_state=seed)
            how = "random"
    except ValueError as err:  # e.g. a label with a single example cannot be stratified
        raise UsageError(f"data.holdout_fraction {fraction}: cannot hold out a split ({err}); lower it, or set "
                         f"it to 0") from None  # fmt: skip
    return np.sort(train), np.sort(held), how


def take(examples, rows: np.ndarray):
    """A copy of `examples` with only `rows` (in that order): every list field of one item per example is cut."""
    n, picked = len(examples), [int(i) for i in rows]
    cut = {}
    for f in dataclasses.fields(examples):
        value = getattr(examples, f.name)
        if isinstance(value, list) and len(value) == n and f.init:
            cut[f.name] = [value[i] for i in picked]
        elif isinstance(value, dict):  # file-level counts: each side its own copy
            cut[f.name] = dict(value)
    return dataclasses.replace(examples, **cut)


def describe(data, fraction: float) -> str:
    """The log's line on the held-out split of `data` (a FinetuneData with a holdout)."""
    held, trained = data.counts[HOLDOUT]["examples"], data.counts["train"]["examples"]
    return (
        f"  model selection on the {HOLDOUT}: {held} of {held + trained} training examples ({fraction:.0%}, "
        f"{data.holdout_how}; data seed {HOLDOUT_SEED}); the validation files are scored once, at the end"
    )
