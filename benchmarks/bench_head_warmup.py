"""Measure the head warm-up of `pretrain --init-from` a checkpoint without an MLM head (`train.head_warmup_steps`).

    python benchmarks/bench_head_warmup.py --cache /work/cache/minilm/x       # 300 reviews, 60 steps, batch 16
    python benchmarks/bench_head_warmup.py --reviews 20 --steps 4 --head-warmup 2   # does it run?

Checkpoint: all-MiniLM-L6-v2 (a bare BertModel: no MLM head), found or fetched as bench_continued_pretraining.py
does. Data: the first --reviews movie reviews of the shared data (movie_reviews/train.tsv, one review a document),
tokenized MLM-only (`nsp.mode none`, configs/tokenize/mlm.yaml) with the checkpoint's tokenizer, 10% held out.

Two runs of the same step budget (--steps optimizer steps of --batch sequences, MLM only, lr --lr with a linear
decay): without the warm-up (head_warmup_steps 0: head and encoder from step 1), and with --head-warmup steps of
the head alone at --head-lr, then --steps minus that of everything. Prints for each: wall time, the held-out MLM
loss and accuracy at the end (fixed masks, --eval-batches batches), and the encoder's relative weight change
(L2 norm of the change of every BertModel tensor over their L2 norm, against the checkpoint).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_continued_pretraining import fetch_checkpoint  # noqa: E402

REVIEWS = Path(__file__).resolve().parents[2] / "shared" / "data" / "movie_reviews" / "train.tsv"


def prepare_data(args, checkpoint: Path, work: Path) -> Path:
    from bertcli.config import load_config
    from bertcli.pipelines.tokenize import run_tokenize
    from bertcli.schema.tokenize import TokenizeConfig

    csv.field_size_limit(1 << 24)
    with open(args.reviews_file, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[: args.reviews]
    text = work / "reviews.txt"
    text.write_text("".join(row["text"] + "\n\n" for row in rows), encoding="utf-8")  # a review per document
    overrides = [f"input.paths=[{text}]", "input.format=paragraphs", f"output.dir={work / 'tok'}",
                 f"tokenizer.path={checkpoint}", f"nsp.max_seq_length={args.seq}",
                 "split.validation_fraction=0.1"]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    run_tokenize(load_config(TokenizeConfig, root / "configs" / "tokenize" / "mlm.yaml", overrides), overwrite=True)
    return work / "tok"


def encoder_change(checkpoint: Path, final: Path) -> float:
    """Relative L2 change of the BertModel's tensors (the pooler, which final/ of objective mlm drops, aside)."""
    from safetensors.torch import load_file

    before = load_file(str(checkpoint / "model.safetensors"))
    after = {k.removeprefix("bert."): v for k, v in load_file(str(final / "model.safetensors")).items()}
    names = [k for k in before if k in after]
    diff = sum(float((after[k].float() - before[k].float()).pow(2).sum()) for k in names)
    norm = sum(float(before[k].float().pow(2).sum()) for k in names)
    return (diff / norm) ** 0.5


def run(data: Path, checkpoint: Path, args, out: Path, warmup: int) -> dict:
    from bertcli.config import load_config
    from bertcli.pipelines.pretrain import run_pretrain
    from bertcli.schema.pretrain import PretrainConfig

    overrides = [
        f"model.init_from={checkpoint}", "objective=mlm", f"data.dirs=[{data}]", f"data.batch_size={args.batch}",
        f"train.max_steps={args.steps - warmup}", f"train.learning_rate={args.lr}", "train.warmup_steps=0",
        f"train.head_warmup_steps={warmup}", f"train.head_warmup_learning_rate={args.head_lr}",
        "train.mixed_precision='no'", "train.log_every=10", "train.eval_every=0",
        f"train.eval_max_batches={args.eval_batches}", "train.save_every=0", "train.keep_last=0",
        "train.tensorboard=false", f"output.dir={out}",
    ]  # fmt: skip
    start = time.perf_counter()
    result = run_pretrain(load_config(PretrainConfig, overrides=overrides), overwrite=True)
    seconds = time.perf_counter() - start
    return {
        "head_warmup_steps": warmup,
        "wall_s": round(seconds, 1),
        "eval_mlm_loss": round(result["eval_mlm_loss"], 4),
        "eval_mlm_accuracy": round(result["eval_mlm_accuracy"], 4),
        "perplexity_before": round(result["held_out_perplexity_before"], 1),
        "perplexity_after": round(result["held_out_perplexity_after"], 1),
        "encoder_relative_change": round(encoder_change(checkpoint, out / "final"), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews-file", default=str(REVIEWS))
    parser.add_argument("--reviews", type=int, default=300)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps of each run, the warm-up's included")
    parser.add_argument("--head-warmup", type=int, default=30, help="of them, the head warm-up's")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--head-lr", type=float, default=5e-3)
    parser.add_argument("--eval-batches", type=int, default=4)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "bertcli-bench"))
    parser.add_argument("--work", default=None, help="working folder (default: a folder in --cache)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    checkpoint = fetch_checkpoint(Path(args.cache))
    work = Path(args.work or Path(args.cache) / "head-warmup")
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(args, checkpoint, work)
    stats = json.loads((data / "stats.json").read_text())
    print(f"data: {stats['instances_per_split']} sequences of {args.seq}, padding {stats['padding_share']:.1%}")
    rows = [run(data, checkpoint, args, work / f"run-{w}", w) for w in (0, args.head_warmup)]
    print(json.dumps(rows, indent=1))
    print("| head warm-up | wall s | held-out MLM loss | accuracy | perplexity before → after | encoder change |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['head_warmup_steps']} | {r['wall_s']} | {r['eval_mlm_loss']} | {r['eval_mlm_accuracy']:.1%} "
              f"| {r['perplexity_before']:,} → {r['perplexity_after']:,} "
              f"| {r['encoder_relative_change']:.3%} |")  # fmt: skip


if __name__ == "__main__":
    main()
