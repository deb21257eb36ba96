"""One NER epoch: `bertcli finetune ner` against Hugging Face `Trainer` set up as `run_ner.py` sets it up.

    python benchmarks/bench_ner.py [--train eng.train --dev eng.testa] [--sentences 4000] [--threads 2] [--repeats 3]

Data: CoNLL-layout files given with --train/--dev, or (default) a synthetic set the script writes: sentences of
filler words with people, places and organisations in IOB2 tags, some words split into several pieces.
Model: BERT 4 layers x 256 wide, RANDOMLY INITIALISED from one seed, its WordPiece vocabulary trained here on the
training words, saved as a bare `BertModel` that each contender loads with a fresh token-classification head.
Same data, batch 32, lr 5e-5 (or --learning-rate; 10% warmup, linear decay), weight decay 0.01, clipping 1.0,
max_seq_length 128, one epoch, fp32.

    Trainer: run_ner.py's pipeline: words tokenized with is_split_into_words, the first piece of a word labelled
             and the others -100, DataCollatorForTokenClassification (dynamic padding), length-grouped sampling.
    ours:    `run_finetune` with task.name ner (the same labelling, length-grouped batches, the shared loop).

Printed: seconds of the training epoch (evaluation excluded), the ratio (best epoch of each, and round by round),
and the dev entity F1 of each (seqeval), which shows both trained the same model the same way.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

BATCH, WARMUP, DECAY, LENGTH, SEED = 32, 0.1, 0.01, 128, 42
KINDS = {"PER": ["Anna", "Boris", "Chen", "Dana", "Emil"], "LOC": ["Lisbon", "Kyoto", "Quebec", "Tallinn"],
         "ORG": ["Harbourbank", "Northwindrail", "Orionlabs"]}  # fmt: skip
FILLER = "the a met in visited said that with from about and near was opened yesterday".split()


def write_synthetic(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(n):
            rows = [(rng.choice(FILLER), "O") for _ in range(rng.randint(6, 30))]
            for _ in range(rng.randint(1, 3)):
                kind = rng.choice(list(KINDS))
                words = [rng.choice(KINDS[kind]) for _ in range(rng.randint(1, 2))]
                at = rng.randint(0, len(rows))
                rows[at:at] = [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]
            handle.write("\n".join(f"{w} {t}" for w, t in rows) + "\n\n")
    return path


def build_model(folder: Path, train: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    from bertcli.schema.tokenize import TokenizerSection
    from bertcli.tokenizer import train_tokenizer

    lines = [line.split()[0] for line in train.read_text(encoding="utf-8").splitlines() if line.strip()]
    tok = train_tokenizer(iter([lines]), TokenizerSection(vocab_size=300), LENGTH)  # small: names split into pieces
    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=len(tok), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024)  # fmt: skip
    BertModel(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))


def run_ours(model_dir: Path, train: Path, dev: Path, out: Path, lr: float) -> tuple[float, float]:
    from bertcli.config import load_config
    from bertcli.pipelines.finetune import run_finetune
    from bertcli.schema.finetune import FinetuneConfig

    values = {
        "task.name": "ner", "model.path": str(model_dir), "data.train_file": str(train),
        "data.validation_files": [str(dev)], "output.dir": str(out), "data.batch_size": BATCH,
        "data.max_seq_length": LENGTH, "train.learning_rate": lr, "train.warmup_ratio": WARMUP,
        "train.weight_decay": DECAY, "train.epochs": 1, "train.seed": SEED, "train.log_every": 100000,
    }  # fmt: skip
    result = run_finetune(load_config(FinetuneConfig, values=values), overwrite=True)
    run = result["runs"][0]
    return run["train_seconds"] - run["eval_seconds"], result["best"]["metrics"]["validation"]["f1"]


def run_trainer(model_dir: Path, train: Path, dev: Path, out: Path, lr: float) -> tuple[float, float]:
    import numpy as np
    import torch
    from datasets import Dataset
    from seqeval.metrics import f1_score
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    from bertcli.tasks.tagging import infer_tags, read_tagged, tagging_task

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    spec = tagging_task()
    train_s, dev_s = read_tagged(spec, train), read_tagged(spec, dev)
    labels = infer_tags(train_s, "iob2")
    label_id = {name: i for i, name in enumerate(labels)}

    def dataset(s) -> Dataset:  # run_ner.py's tokenize_and_align_labels, label_all_tokens=False
        ds = Dataset.from_dict({"tokens": s.words, "tags": [[label_id[t] for t in ts] for ts in s.tags]})

        def align(batch):
            enc = tok(batch["tokens"], truncation=True, max_length=LENGTH, is_split_into_words=True)
            enc["labels"] = []
            for i, tags in enumerate(batch["tags"]):
                previous, row = None, []
                for word in enc.word_ids(i):
                    row.append(-100 if word is None or word == previous else tags[word])
                    previous = word
                enc["labels"].append(row)
            return enc

        return ds.map(align, batched=True, remove_columns=["tokens", "tags"])

    train_ds, dev_ds = dataset(train_s), dataset(dev_s)
    torch.manual_seed(SEED)
    model = AutoModelForTokenClassification.from_pretrained(
        str(model_dir), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_id
    )
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=BATCH, per_device_eval_batch_size=2 * BATCH,
        learning_rate=lr, warmup_steps=WARMUP, weight_decay=DECAY, max_grad_norm=1.0, num_train_epochs=1,
        seed=SEED, report_to="none", save_strategy="no", eval_strategy="no", logging_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, train_sampling_strategy="group_by_length",
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=args, train_dataset=train_ds, data_collator=DataCollatorForTokenClassification(tok)
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    out_ = trainer.predict(dev_ds)
    preds = np.argmax(out_.predictions, axis=-1)
    gold_tags = [[labels[g] for g in row if g != -100] for row in out_.label_ids]
    pred_tags = [[labels[p] for p, g in zip(prow, grow) if g != -100] for prow, grow in zip(preds, out_.label_ids)]
    return seconds, float(f1_score(gold_tags, pred_tags))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, help="CoNLL-layout training file (default: synthetic)")
    parser.add_argument("--dev", type=Path, help="CoNLL-layout dev file (default: synthetic)")
    parser.add_argument("--sentences", type=int, default=4000, help="synthetic training sentences (dev: a quarter)")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each contender; the best epoch counts")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-ner-") as tmp:
        tmp = Path(tmp)
        train = args.train or write_synthetic(tmp / "train.txt", args.sentences, 1)
        dev = args.dev or write_synthetic(tmp / "dev.txt", max(args.sentences // 4, 1), 2)
        build_model(tmp / "model", train)
        print(f"model: BERT 4x256, random init (seed {SEED}); torch threads {torch.get_num_threads()}; "
              f"train {train}, dev {dev}")  # fmt: skip
        results: dict[str, tuple[float, float]] = {}
        rounds: dict[str, list[float]] = {}
        contenders = {"ours": run_ours, "trainer": run_trainer}
        for _ in range(args.repeats):  # interleaved, so a machine that slows down mid-run hurts both alike
            for name, fn in contenders.items():
                seconds, f1 = fn(tmp / "model", train, dev, tmp / name, args.learning_rate)
                print(f"  {name}: epoch {seconds:.1f} s, dev f1 {f1:.4f}", flush=True)
                results[name] = min(results.get(name, (seconds, f1)), (seconds, f1))
                rounds.setdefault(name, []).append(seconds)
    labels = {"ours": "bertcli finetune ner", "trainer": "Trainer (run_ner.py set-up)"}
    print(f"\n{'set-up':30} {'epoch s':>8} {'dev f1':>8}   (best of {args.repeats})")
    for name, (seconds, f1) in results.items():
        print(f"{labels[name]:30} {seconds:8.1f} {f1:8.4f}")
    ratio = results["trainer"][0] / results["ours"][0]
    by_round = sorted(t / o for t, o in zip(rounds["trainer"], rounds["ours"]))
    print(f"speed-up vs Trainer: {ratio:.2f}x best of each (goal: at least 1x); round by round: median "
          f"{statistics.median(by_round):.2f}x, {by_round[0]:.2f} to {by_round[-1]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
