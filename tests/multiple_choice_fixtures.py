"""Small multiple-choice sets made here (no downloads): SWAG-layout csv and JSON lines over the tiny vocabulary of
`finetune_fixtures`, learnable by its 2-layer, 32-wide BERT: the right ending is the one holding a positive word,
the others hold negative ones."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from finetune_fixtures import FILLER, NEGATIVE, POSITIVE

SWAG_HEADER = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
               "ending0", "ending1", "ending2", "ending3", "label"]  # fmt: skip


def choice_rows(n: int, seed: int, n_choices: int = 4) -> list[dict]:
    """Questions as dicts: sent1, sent2, endings (one positive, the rest negative), label."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(n_choices)
        endings = []
        for k in range(n_choices):
            words = [rng.choice(FILLER) for _ in range(rng.randint(1, 3))]
            words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if k == label else NEGATIVE))
            endings.append(" ".join(words))
        sent1 = " ".join(rng.choice(FILLER) for _ in range(rng.randint(3, 8)))
        rows.append({"sent1": sent1, "sent2": rng.choice(FILLER), "endings": endings, "label": label})
    return rows


def write_swag_csv(path: Path, rows: list[dict], labels: bool = True) -> Path:
    """SWAG's own csv layout (an unnamed first column, startphrase = sent1 + sent2, ending0..3, label)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = SWAG_HEADER if labels else SWAG_HEADER[:-1]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, r in enumerate(rows):
            fields = [i, f"v{i}", i, f"{r['sent1']} {r['sent2']}", r["sent1"], r["sent2"], "gold", *r["endings"]]
            writer.writerow(fields + ([r["label"]] if labels else []))
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def swag_task(folder: Path, n_train: int = 160, n_dev: int = 40) -> tuple[Path, Path]:
    train = write_swag_csv(Path(folder) / "train.csv", choice_rows(n_train, seed=1))
    dev = write_swag_csv(Path(folder) / "val.csv", choice_rows(n_dev, seed=2))
    return train, dev


def varying_records(n: int, seed: int) -> list[dict]:
    """JSON-lines questions with 2 to 4 choices each (the right one positive), labels as indices."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        row = choice_rows(1, seed=rng.randrange(10**6), n_choices=rng.randint(2, 4))[0]
        records.append({"id": f"q{i}", "context": row["sent1"], "question": row["sent2"], "choices": row["endings"],
                        "label": row["label"]})  # fmt: skip
    return records
