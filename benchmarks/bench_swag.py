"""SWAG: `bertcli finetune swag` against Hugging Face `Trainer` + `AutoModelForMultipleChoice` set up as
`run_swag.py` sets it up, on the same checkpoint for the same number of optimizer steps; prints the dev accuracy
(and the training seconds) of both.

    python benchmarks/bench_swag.py [--model DIR] [--train swag/train.csv --dev swag/val.csv] [--max-steps N]
                                    [--questions 400] [--learning-rate 2e-5] [--max-seq-length 128] [--threads 2]

Model (--model): any local BERT-family checkpoint folder with its tokenizer (a released bert-base-uncased, our
pretrain's final/), or by default a toy: BERT 2 layers x 64 wide, RANDOMLY INITIALISED from one seed, a word-level
vocabulary of the synthetic words, saved as a bare `BertModel`. Each contender loads it with a fresh
multiple-choice head.
Data (--train/--dev): SWAG's csv files (github.com/rowanz/swagaf data/train.csv, val.csv: sent1, sent2,
ending0..3, label), or by default a synthetic set in that layout: the right ending holds one of a few "good"
words, the three others "bad" ones, amid filler. Both contenders read the same questions (bertcli's reader) and pair
them as run_swag.py does: (sent1, sent2 + " " + ending).
Same for both: batch 16 questions (BERT's SWAG run), lr 2e-5 (10% warmup, linear decay), weight decay 0.01,
clipping 1.0, max_seq_length 128, fp32, seed 42, `--max-steps` optimizer steps (default: one epoch).

    Trainer: run_swag.py's preprocessing (truncation=True, i.e. longest_first) with pad_to_max_length false:
             `DataCollatorForMultipleChoice` (dynamic padding), shuffled batches; dev accuracy from
             `trainer.predict` (argmax over the four endings).
    ours:    `run_finetune` with task.name swag (the context truncated first, length-grouped batches, the shared
             loop); dev accuracy from its final evaluation.

Accuracies within a point or two of each other (on a real checkpoint and SWAG) show both trained the same model the
same way; on the toy both should be far above chance (0.25).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import tempfile
import time
from pathlib import Path

BATCH, WARMUP, DECAY, SEED = 16, 0.1, 0.01, 42
GOOD = ["good", "great", "fine", "lovely", "nice", "bright"]
BAD = ["bad", "awful", "poor", "dull", "grim", "sad"]
FILLER = "the a cat dog sat ran on mat film movie was is very quite this that it and man woman then".split()


def write_synthetic(path: Path, n: int, seed: int) -> Path:
    """A SWAG-layout csv: ending `label` holds a good word, the others bad ones."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "sent1", "sent2", "ending0", "ending1", "ending2", "ending3", "label"])
        for i in range(n):
            label = rng.randrange(4)
            endings = []
            for k in range(4):
                words = [rng.choice(FILLER) for _ in range(rng.randint(2, 8))]
                words.insert(rng.randint(0, len(words)), rng.choice(GOOD if k == label else BAD))
                endings.append(" ".join(words))
            sent1 = " ".join(rng.choice(FILLER) for _ in range(rng.randint(4, 20)))
            writer.writerow([i, sent1, rng.choice(FILLER), *endings, label])
    return path


def build_toy(folder: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *GOOD, *BAD, *FILLER]
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(dict.fromkeys(vocab))})
    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=512)  # fmt: skip
    BertModel(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))


def run_ours(model_dir: Path, train: Path, dev: Path, out: Path, args) -> tuple[float, float]:
    from bertcli.config import load_config
    from bertcli.pipelines.finetune import run_finetune
    from bertcli.schema.finetune import FinetuneConfig

    values = {
        "task.name": "swag", "model.path": str(model_dir), "data.train_file": str(train),
        "data.validation_files": [str(dev)], "output.dir": str(out), "data.batch_size": BATCH,
        "data.max_seq_length": args.max_seq_length, "train.learning_rate": args.learning_rate,
        "train.warmup_ratio": WARMUP, "train.weight_decay": DECAY, "train.max_steps": args.steps,
        "train.eval_every": args.steps, "train.seed": SEED, "train.log_every": 100000,
    }  # fmt: skip
    result = run_finetune(load_config(FinetuneConfig, values=values), overwrite=True)
    run = result["runs"][0]
    final = run["evaluations"][-1]["metrics"]["validation"]["accuracy"]  # after the last step, as Trainer's
    return run["train_seconds"] - run["eval_seconds"], final


def run_trainer(model_dir: Path, train: Path, dev: Path, out: Path, args) -> tuple[float, float]:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForMultipleChoice,
        AutoTokenizer,
        DataCollatorForMultipleChoice,
        Trainer,
        TrainingArguments,
    )

    from bertcli.tasks.multiple_choice import read_choices

    tok = AutoTokenizer.from_pretrained(str(model_dir))

    def encoded(path: Path) -> Dataset:  # run_swag.py's preprocess_function, on the same pairs
        ex = read_choices(path, require_labels=True)
        pairs = [ex.pairs(i) for i in range(len(ex))]
        enc = tok([a for p in pairs for a, _ in p], [b for p in pairs for _, b in p], truncation=True,
                  max_length=args.max_seq_length)  # fmt: skip
        rows = {k: [v[i : i + 4] for i in range(0, len(v), 4)] for k, v in enc.items()}
        return Dataset.from_dict({**rows, "label": ex.labels})

    train_ds, dev_ds = encoded(train), encoded(dev)
    torch.manual_seed(SEED)
    model = AutoModelForMultipleChoice.from_pretrained(str(model_dir))
    targs = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=BATCH, per_device_eval_batch_size=2 * BATCH,
        learning_rate=args.learning_rate, warmup_steps=WARMUP, weight_decay=DECAY, max_grad_norm=1.0,
        max_steps=args.steps, seed=SEED, report_to="none", save_strategy="no", eval_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    collator = DataCollatorForMultipleChoice(tok)
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    predicted = trainer.predict(dev_ds)
    accuracy = float((np.argmax(predicted.predictions, -1) == np.asarray(dev_ds["label"])).mean())
    return seconds, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="local checkpoint folder with its tokenizer (default: the toy)")
    parser.add_argument("--train", type=Path, help="SWAG csv training file (default: synthetic)")
    parser.add_argument("--dev", type=Path, help="SWAG csv dev file (default: synthetic)")
    parser.add_argument("--questions", type=int, default=400, help="synthetic training questions (dev: a quarter)")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps (default: one epoch)")
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from bertcli.tasks.multiple_choice import read_choices

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-swag-") as tmp:
        tmp = Path(tmp)
        train = args.train or write_synthetic(tmp / "train.csv", args.questions, 1)
        dev = args.dev or write_synthetic(tmp / "val.csv", max(args.questions // 4, 1), 2)
        model = args.model
        if model is None:
            build_toy(tmp / "model")
            model = tmp / "model"
        args.steps = args.max_steps or -(-len(read_choices(train)) // BATCH)
        what = f"checkpoint {model}" if args.model else f"toy BERT 2x64, random init (seed {SEED})"
        print(f"model: {what}; torch threads {torch.get_num_threads()}; train {train}, dev {dev}; "
              f"{args.steps} steps of {BATCH} questions, lr {args.learning_rate}")  # fmt: skip
        results = {}
        for name, fn in {"ours": run_ours, "trainer": run_trainer}.items():
            results[name] = fn(model, train, dev, tmp / name, args)
            print(f"  {name}: train {results[name][0]:.1f} s, dev accuracy {results[name][1]:.4f}", flush=True)
    labels = {"ours": "bertcli finetune swag", "trainer": "Trainer + AutoModelForMultipleChoice"}
    print(f"\n{'set-up':38} {'train s':>8} {'dev acc':>8}")
    for name, (seconds, accuracy) in results.items():
        print(f"{labels[name]:38} {seconds:8.1f} {accuracy:8.4f}")
    print(f"dev accuracy, ours - Trainer's: {results['ours'][1] - results['trainer'][1]:+.4f}; "
          f"speed-up vs Trainer: {results['trainer'][0] / results['ours'][0]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
