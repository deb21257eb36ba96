"""One SQuAD epoch: `bertcli finetune squad` against Hugging Face `Trainer` set up as `run_qa.py` sets it up.

    python benchmarks/bench_qa.py [--train train-v1.1.json --dev dev-v1.1.json] [--questions 2000] [--threads 2]
                                  [--repeats 2]

Data: SQuAD-layout files given with --train/--dev, or (default) a synthetic set the script writes: paragraphs of
filler words, 20 to 450 long (so some need several windows), with "marker ANSWER" somewhere; the question asks for
the word after the marker.
Model: BERT 4 layers x 256 wide, RANDOMLY INITIALISED from one seed, a word-level vocabulary of the synthetic
words (with --train: bertcli's WordPiece trained on the training contexts), saved as a bare `BertModel` that each
contender loads with a fresh QA head. Same data, batch 32, lr 3e-5 (or --learning-rate; 10% warmup, linear decay),
weight decay 0.01, clipping 1.0, max_seq_length 384, doc_stride 128, one epoch, fp32.

    Trainer: run_qa.py's prepare_train_features (windows, offsets, [CLS] for answers outside a window), with
             --pad_to_max_length false: DataCollatorWithPadding (dynamic padding), and length-grouped sampling.
    ours:    `run_finetune` with task.name squad (the same windows, length-grouped batches, the shared loop).

Printed: seconds of the training epoch (evaluation excluded), the ratio, and the dev F1 of each (both through the
same n-best post-processing and the official SQuAD scoring), which shows both trained the same model the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

BATCH, WARMUP, DECAY, LENGTH, STRIDE, SEED = 32, 0.1, 0.01, 384, 128, 42
ANSWERS = ["red", "blue", "green", "gold", "pink", "gray", "white", "black"]
FILLER = "the cat sat on a mat and dog ran in park today with sun river hill stone road".split()
QUESTION = "what follows the marker ?"


def write_synthetic(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        words = [rng.choice(FILLER + ANSWERS[:2]) for _ in range(rng.randint(20, 450))]
        at, answer = rng.randint(0, len(words)), rng.choice(ANSWERS)
        words[at:at] = ["marker", answer]
        qa = {"id": f"{seed}-{i}", "question": QUESTION,
              "answers": [{"text": answer, "answer_start": len(" ".join(words[: at + 1])) + 1}]}  # fmt: skip
        paragraphs.append({"context": " ".join(words), "qas": [qa]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "synthetic", "paragraphs": paragraphs}]}))
    return path


def build_model(folder: Path, train: Path, synthetic: bool) -> None:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    if synthetic:
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "marker", "what", "follows", "?", *ANSWERS, *FILLER]
        tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(dict.fromkeys(vocab))})
    else:
        from bertcli.schema.tokenize import TokenizerSection
        from bertcli.tokenizer import train_tokenizer

        doc = json.loads(train.read_text(encoding="utf-8"))
        texts = [p["context"] for a in doc["data"] for p in a["paragraphs"]]
        tok = train_tokenizer(iter([texts]), TokenizerSection(vocab_size=8000), LENGTH)
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
        "task.name": "squad", "task.doc_stride": STRIDE, "model.path": str(model_dir),
        "data.train_file": str(train), "data.validation_files": [str(dev)], "output.dir": str(out),
        "data.batch_size": BATCH, "data.max_seq_length": LENGTH, "train.learning_rate": lr,
        "train.warmup_ratio": WARMUP, "train.weight_decay": DECAY, "train.epochs": 1, "train.seed": SEED,
        "train.log_every": 100000,
    }  # fmt: skip
    result = run_finetune(load_config(FinetuneConfig, values=values), overwrite=True)
    run = result["runs"][0]
    return run["train_seconds"] - run["eval_seconds"], result["best"]["metrics"]["validation"]["f1"]


def run_trainer(model_dir: Path, train: Path, dev: Path, out: Path, lr: float) -> tuple[float, float]:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from bertcli.tasks.span import answers_from_logits, encode_qa, read_qa, span_metrics, span_task

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    spec = span_task("squad", doc_stride=STRIDE)
    train_q, dev_q = read_qa(spec, train), read_qa(spec, dev)

    def prepare_train_features(batch):  # run_qa.py's, with pad_to_max_length=False
        enc = tok(batch["question"], batch["context"], truncation="only_second", max_length=LENGTH, stride=STRIDE,
                  return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)  # fmt: skip
        enc["start_positions"], enc["end_positions"] = [], []
        for i, offsets in enumerate(enc.pop("offset_mapping")):
            sample, sequence = enc["overflow_to_sample_mapping"][i], enc.sequence_ids(i)
            start_char, text = batch["answer_start"][sample], batch["answer"][sample]
            end_char = start_char + len(text)
            first = sequence.index(1)
            last = len(sequence) - 1 - sequence[::-1].index(1)
            if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
                enc["start_positions"].append(0)
                enc["end_positions"].append(0)
                continue
            while first < len(offsets) and sequence[first] == 1 and offsets[first][0] <= start_char:
                first += 1
            while offsets[last][1] >= end_char:
                last -= 1
            enc["start_positions"].append(first - 1)
            enc["end_positions"].append(last + 1)
        enc.pop("overflow_to_sample_mapping")
        return enc

    raw = Dataset.from_dict({"question": train_q.questions, "context": train_q.contexts,
                             "answer": [a[0][0] for a in train_q.answers],
                             "answer_start": [a[0][1] for a in train_q.answers]})  # fmt: skip
    train_ds = raw.map(prepare_train_features, batched=True, remove_columns=raw.column_names)
    torch.manual_seed(SEED)
    model = AutoModelForQuestionAnswering.from_pretrained(str(model_dir))
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=BATCH, learning_rate=lr, warmup_steps=WARMUP,
        weight_decay=DECAY, max_grad_norm=1.0, num_train_epochs=1, seed=SEED, report_to="none",
        save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        train_sampling_strategy="group_by_length",
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=DataCollatorWithPadding(tok))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    feats = encode_qa(tok, dev_q, spec, LENGTH)  # the same windows as run_qa's prepare_validation_features
    model = trainer.model.eval()
    starts, ends = [], []
    with torch.no_grad():
        for ids, types in zip(feats.input_ids, feats.token_type_ids):
            out_ = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types]))
            starts.append(out_.start_logits[0].numpy())
            ends.append(out_.end_logits[0].numpy())
    answers = answers_from_logits(feats, starts, ends, dev_q, spec)
    return seconds, span_metrics(dev_q, answers, spec)["f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, help="SQuAD-layout training file (default: synthetic)")
    parser.add_argument("--dev", type=Path, help="SQuAD-layout dev file (default: synthetic)")
    parser.add_argument("--questions", type=int, default=2000, help="synthetic training questions (dev: a quarter)")
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each contender; the best epoch counts")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-qa-") as tmp:
        tmp = Path(tmp)
        train = args.train or write_synthetic(tmp / "train.json", args.questions, 1)
        dev = args.dev or write_synthetic(tmp / "dev.json", max(args.questions // 4, 1), 2)
        build_model(tmp / "model", train, synthetic=args.train is None)
        print(f"model: BERT 4x256, random init (seed {SEED}); torch threads {torch.get_num_threads()}; "
              f"train {train}, dev {dev}")  # fmt: skip
        results: dict[str, tuple[float, float]] = {}
        rounds: dict[str, list[float]] = {}
        for _ in range(args.repeats):  # interleaved, so a machine that slows down mid-run hurts both alike
            for name, fn in {"ours": run_ours, "trainer": run_trainer}.items():
                seconds, f1 = fn(tmp / "model", train, dev, tmp / name, args.learning_rate)
                print(f"  {name}: epoch {seconds:.1f} s, dev f1 {f1:.4f}", flush=True)
                results[name] = min(results.get(name, (seconds, f1)), (seconds, f1))
                rounds.setdefault(name, []).append(seconds)
    labels = {"ours": "bertcli finetune squad", "trainer": "Trainer (run_qa.py set-up)"}
    print(f"\n{'set-up':30} {'epoch s':>8} {'dev f1':>8}   (best of {args.repeats})")
    for name, (seconds, f1) in results.items():
        print(f"{labels[name]:30} {seconds:8.1f} {f1:8.4f}")
    by_round = sorted(t / o for t, o in zip(rounds["trainer"], rounds["ours"]))
    print(
        f"speed-up vs Trainer: {results['trainer'][0] / results['ours'][0]:.2f}x best of each (goal: at least 1x); "
        f"round by round: {by_round[0]:.2f} to {by_round[-1]:.2f}x"
    )


if __name__ == "__main__":
    main()
