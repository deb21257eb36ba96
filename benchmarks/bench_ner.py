"""NER fine-tuning: `bertcli finetune ner` against Hugging Face `Trainer` set up as `run_ner.py` sets it up, per seed.

    python benchmarks/bench_ner.py [--sentences 4000] [--threads 2] [--seeds 42]      # synthetic set, random model
    python benchmarks/bench_ner.py --model MODEL_DIR --train esp.train --dev esp.testa --test esp.testb \
        --limit 4000 --epochs 2 --seeds 42,43,44 --threads 2                          # a real checkpoint, real data

Data: CoNLL-layout files given with --train/--dev[/--test] (read with --encoding, the first --limit training and
--eval-limit evaluation sentences), or (default) a synthetic set the script writes: sentences of filler words with
people, places and organisations in IOB2 tags, some words split into several pieces.
Model: --model, any checkpoint folder with its tokenizer (a bare BertModel: each contender adds a fresh
token-classification head, seeded alike); default a BERT 4 layers x 256 wide, RANDOMLY INITIALISED from one seed,
its WordPiece vocabulary trained here on the training words.
Same data, batch 32 (or --batch-size), lr 5e-5 (or --learning-rate; 10% warmup, linear decay), weight decay 0.01,
clipping 1.0, max_seq_length 128, --epochs (default 1), fp32, AdamW eps 1e-8; each seed seeds both contenders.

    Trainer: run_ner.py's pipeline: words tokenized with is_split_into_words, the first piece of a word labelled
             and the others -100, DataCollatorForTokenClassification (dynamic padding), random batches (run_ner.py's
             default; --trainer-sampling group_by_length for Trainer's LengthGroupedSampler).
    ours:    `run_finetune` with task.name ner (the same labelling, the defaults of the config, plus any --set).

Both are scored the same way on the final model (no best-epoch pick): every word of every dev/test sentence (a
sentence longer than 128 pieces cut into windows) tagged from its first piece, entity F1 by seqeval's default mode
(bertcli's `tagging_metrics`); so a difference in F1 is a difference in training. Printed per seed: seconds of
training (evaluation excluded) and dev/test F1 of each; then mean +- std over seeds and Trainer's seconds / ours.
"""

from __future__ import annotations

import argparse
import json
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


def subset(source: Path, target: Path, encoding: str, limit: int | None) -> Path:
    """The first `limit` sentences of a CoNLL-layout file, as `word tag` lines in UTF-8 (what both sides read)."""
    from bertcli.tasks.tagging import read_tagged, tagging_task

    utf8 = target.with_suffix(".utf8")
    utf8.write_text(source.read_text(encoding=encoding), encoding="utf-8")
    s = read_tagged(tagging_task(), utf8)
    n = len(s) if limit is None else min(limit, len(s))
    blocks = ["\n".join(f"{w} {t}" for w, t in zip(s.words[i], s.tags[i])) for i in range(n)]
    target.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    utf8.unlink()
    return target


def run_ours(model_dir: Path, files: dict[str, Path], out: Path, args, seed: int) -> dict:
    from bertcli.config import load_config
    from bertcli.pipelines.finetune import run_finetune
    from bertcli.schema.finetune import FinetuneConfig

    values = {
        "task.name": "ner", "model.path": str(model_dir), "data.train_file": str(files["train"]),
        "data.validation_files": [str(files[s]) for s in files if s != "train"], "output.dir": str(out),
        "data.batch_size": args.batch_size, "data.max_seq_length": LENGTH, "train.learning_rate": args.learning_rate,
        "train.warmup_ratio": WARMUP, "train.weight_decay": DECAY, "train.epochs": args.epochs, "train.seed": seed,
        "train.log_every": 100000, "train.eval_every": 10**9,  # the final model only, as Trainer's side
    }  # fmt: skip
    result = run_finetune(load_config(FinetuneConfig, overrides=args.set, values=values), overwrite=True)
    run, metrics = result["runs"][0], result["best"]["metrics"]
    scores = {s: metrics["validation" if len(metrics) == 1 else f"validation_{s}"]["f1"] for s in files if s != "train"}
    return {"seconds": run["train_seconds"] - run["eval_seconds"], **scores}


def run_trainer(model_dir: Path, files: dict[str, Path], out: Path, args, seed: int) -> dict:
    import numpy as np
    from datasets import Dataset
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from bertcli.tasks.tagging import infer_tags, read_tagged, tagging_task
    from bertcli.tasks.tagging.data import encode_sentences, tagging_metrics, tags_from_logits, with_tag_labels

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    train_s = read_tagged(tagging_task(), files["train"])
    labels = infer_tags(train_s, "iob2")
    spec = with_tag_labels(tagging_task(), labels)
    label_id = {name: i for i, name in enumerate(labels)}

    def align(batch):  # run_ner.py's tokenize_and_align_labels, label_all_tokens=False
        enc = tok(batch["tokens"], truncation=True, max_length=LENGTH, is_split_into_words=True)
        enc["labels"] = []
        for i, tags in enumerate(batch["tags"]):
            previous, row = None, []
            for word in enc.word_ids(i):
                row.append(-100 if word is None or word == previous else tags[word])
                previous = word
            enc["labels"].append(row)
        return enc

    ds = Dataset.from_dict({"tokens": train_s.words, "tags": [[label_id[t] for t in ts] for ts in train_s.tags]})
    train_ds = ds.map(align, batched=True, remove_columns=["tokens", "tags"])
    set_seed(seed)  # run_ner.py seeds before it builds the model: the head's initial weights
    model = AutoModelForTokenClassification.from_pretrained(
        str(model_dir), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_id
    )
    targs = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=2 * args.batch_size,
        learning_rate=args.learning_rate, warmup_steps=WARMUP, weight_decay=DECAY, max_grad_norm=1.0,
        num_train_epochs=args.epochs, seed=seed, report_to="none", save_strategy="no", eval_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        train_sampling_strategy=args.trainer_sampling,
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=targs, train_dataset=train_ds, data_collator=DataCollatorForTokenClassification(tok)
    )
    start = time.perf_counter()
    trainer.train()
    result = {"seconds": time.perf_counter() - start}
    for split in (s for s in files if s != "train"):  # scored as bertcli scores: windows, every word, seqeval
        sentences = read_tagged(spec, files[split])
        feats = encode_sentences(tok, sentences, spec, LENGTH)
        rows = Dataset.from_dict({"input_ids": feats.input_ids, "labels": feats.labels})
        logits = trainer.predict(rows).predictions
        per_feature = [np.asarray(logits[f][: len(ids)]) for f, ids in enumerate(feats.input_ids)]
        result[split] = tagging_metrics(sentences.tags, tags_from_logits(feats, per_feature, sentences, spec.id2label),
                                        spec)["f1"]  # fmt: skip
    return result


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} +- {spread:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint folder with its tokenizer (default: a random BERT)")
    parser.add_argument("--train", type=Path, help="CoNLL-layout training file (default: synthetic)")
    parser.add_argument("--dev", type=Path, help="CoNLL-layout dev file (default: synthetic)")
    parser.add_argument("--test", type=Path, help="CoNLL-layout test file, scored too (optional)")
    parser.add_argument("--encoding", default="utf-8", help="encoding of the given files (CoNLL-2002's are UTF-8)")
    parser.add_argument("--limit", type=int, help="the first N training sentences only")
    parser.add_argument("--eval-limit", type=int, help="the first N dev and test sentences only")
    parser.add_argument("--sentences", type=int, default=4000, help="synthetic training sentences (dev: a quarter)")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seeds", default=str(SEED), help="comma-separated; each seed runs both contenders")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--only", choices=("ours", "trainer"), help="run one contender only")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE config override for bertcli's side")
    parser.add_argument("--trainer-sampling", default="random", choices=("random", "group_by_length"),
                        help="Trainer's train_sampling_strategy (run_ner.py's default: random)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="append one JSON line per run to this file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    contenders = {"ours": run_ours, "trainer": run_trainer}
    if args.only:
        contenders = {args.only: contenders[args.only]}
    with tempfile.TemporaryDirectory(prefix="bench-ner-") as tmp:
        tmp = Path(tmp)
        files = prepare_files(tmp, args)
        model = args.model
        if model is None:
            build_model(tmp / "model", files["train"])
            model = tmp / "model"
        print(f"model {model}; torch threads {torch.get_num_threads()}; files {files}; bertcli --set {args.set}; "
              f"Trainer sampling {args.trainer_sampling}", flush=True)  # fmt: skip
        results: dict[str, list[dict]] = {name: [] for name in contenders}
        for seed in seeds:  # interleaved, so a machine that slows down mid-run hurts both alike
            for name, fn in contenders.items():
                found = fn(model, files, tmp / name, args, seed)
                results[name].append(found)
                shown = "  ".join(f"{k} f1 {v:.4f}" for k, v in found.items() if k != "seconds")
                print(f"  seed {seed} {name}: train {found['seconds']:.1f} s  {shown}", flush=True)
                if args.json:
                    record = {"name": name, "seed": seed, "set": args.set, "limit": args.limit, "epochs": args.epochs,
                              "lr": args.learning_rate, "batch": args.batch_size,
                              "trainer_sampling": args.trainer_sampling, **found}  # fmt: skip
                    with args.json.open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(record) + "\n")
    report(results, [s for s in files if s != "train"])


def prepare_files(tmp: Path, args) -> dict[str, Path]:
    if args.train is None:
        return {"train": write_synthetic(tmp / "train.txt", args.sentences, 1),
                "dev": write_synthetic(tmp / "dev.txt", max(args.sentences // 4, 1), 2)}  # fmt: skip
    files = {"train": subset(args.train, tmp / "train.txt", args.encoding, args.limit)}
    for split in ("dev", "test"):
        if getattr(args, split) is not None:
            files[split] = subset(getattr(args, split), tmp / f"{split}.txt", args.encoding, args.eval_limit)
    return files


def report(results: dict[str, list[dict]], splits: list[str]) -> None:
    labels = {"ours": "bertcli finetune ner", "trainer": "Trainer (run_ner.py set-up)"}
    n = len(next(iter(results.values())))
    print(f"\n{'set-up':30} {'train s':>8} " + " ".join(f"{s + ' f1 (mean +- std)':>22}" for s in splits)
          + f"   ({n} seeds)")  # fmt: skip
    for name, runs in results.items():
        seconds = statistics.fmean(r["seconds"] for r in runs)
        print(f"{labels[name]:30} {seconds:8.1f} " + " ".join(f"{mean_std([r[s] for r in runs]):>22}" for s in splits))
    if len(results) == 2:
        ratios = sorted(t["seconds"] / o["seconds"] for t, o in zip(results["trainer"], results["ours"]))
        gaps = " ".join(f"{s} {statistics.fmean(o[s] - t[s] for o, t in zip(results['ours'], results['trainer'])):+.4f}"
                        for s in splits)  # fmt: skip
        print(f"ours - Trainer, mean F1: {gaps}; Trainer's training seconds / ours: median "
              f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f} to {ratios[-1]:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
