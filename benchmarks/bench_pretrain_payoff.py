"""Does pretraining pay off? Fine-tune a pretrained model and the same shape from random weights on CoLA and on the
movie-review polarity set, several seeds each, and print mean +- std of both (issue 16, part 2).

    python benchmarks/bench_pretrain_payoff.py prepare --vocab 8192 --seq 128    # prints the tokenize output
    bertcli pretrain --config configs/pretrain/cpu-1h.yaml DATA -o runs/cpu-1h
    python benchmarks/bench_pretrain_payoff.py probe runs/cpu-1h/final --seeds 1 2 3
    python benchmarks/bench_pretrain_payoff.py diagnose runs/cpu-1h/final DATA

prepare: `../shared/data/corpus_en.txt` without the 400 movie_reviews dev reviews (the corpus holds all 2,000
reviews; the probe's dev set must not have been seen in pretraining, even unlabelled), then `bertcli tokenize` with
a new WordPiece vocabulary of --vocab tokens and NSP pairs of at most --seq tokens (1% of documents held out).
Cached under --cache by (vocab, seq).

probe: for MODEL (a pretrain run's final/) and a random-weight twin (its config.json, its tokenizer, weights drawn
by transformers' BERT init from seed 0), `bertcli finetune` on
  CoLA            8,551 train / 1,043 dev sentences, Matthews correlation (x100), max 64 tokens;
  movie_reviews   1,600 train / 400 dev reviews, accuracy (x100), the first --mr-seq tokens of each review
                  (--mr-side left: the last, where a review gives its verdict); --mr-train N: N of the train
                  reviews (N // 2 of each label, drawn with seed 0), for about as many optimizer steps as all 1,600;
each with the same hyper-parameters for both (--lr, --epochs, batch 32, 10% warmup, linear decay, weight decay
0.01) and --seeds. The score of a seed is its dev score after the last epoch (no picking the best epoch on dev).
Prints a table of mean +- std and the gain (with --json FILE, also every seed's score as JSON), and beside them
the dev score of a bag of words: a tf-idf logistic regression on the same tokens (MODEL's tokenizer, the same length
and end; C by 5-fold cross-validation on train), the floor a fine-tuned encoder should clear. The random arm's
scores are cached under --cache by shape, tokenizer and settings, so recipes with the same ones fine-tune it once.
--no-random fine-tunes MODEL alone (a released checkpoint, whose random twin would take as long again): no gain.

diagnose: what MODEL's pretraining learned, on DATA (the tokenize output it trained on). Prints the MLM loss of a
model that knows word frequencies but ignores context (the unigram entropy of DATA's train tokens); per layer and
head, the attention entropy and the mean weight a token gives its left and right neighbours, against uniform
attention (1/n); and the MLM's top guesses for a few English sentences. Attention near uniform means the encoder
averages its input: a bag of words, which knows a sentence's topic but not which word stands where.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
TASKS = {"cola": "matthews_correlation", "movie_reviews": "accuracy"}  # task -> the dev metric reported
MR_TRAIN = 1600  # movie_reviews train reviews


def filtered_corpus(cache: Path) -> Path:
    """corpus_en.txt without the documents that are movie_reviews dev reviews (the same words, whitespace aside)."""
    out = cache / "corpus_en-minus-mr-dev.txt"
    if out.exists():
        return out
    dev = (SHARED / "movie_reviews" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    reviews = {" ".join(line.split("\t")[2].split()) for line in dev}
    docs = (SHARED / "corpus_en.txt").read_text(encoding="utf-8").split("\n\n")
    kept = [d for d in docs if " ".join(d.split()) not in reviews]
    dropped = len(docs) - len(kept)
    if dropped != len(reviews):
        sys.exit(f"matched {dropped} documents to the {len(reviews)} dev reviews: the corpus layout changed")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n\n".join(kept), encoding="utf-8")
    tmp.replace(out)
    print(f"{out}: {len(kept)} documents ({dropped} dev reviews left out)")
    return out


def prepare(args) -> Path:
    from bertcli.config import load_config
    from bertcli.pipelines.tokenize import run_tokenize
    from bertcli.schema.tokenize import TokenizeConfig

    cache = Path(args.cache)
    out = cache / f"tok-payoff-v{args.vocab}-s{args.seq}"
    if (out / "stats.json").exists():
        return out
    corpus = filtered_corpus(cache)
    overrides = [
        f"input.paths=[{corpus}]", "input.format=paragraphs", f"tokenizer.vocab_size={args.vocab}",
        f"nsp.max_seq_length={args.seq}", "split.validation_fraction=0.01", f"output.dir={out}",
    ]  # fmt: skip
    run_tokenize(load_config(TokenizeConfig, overrides=overrides), overwrite=True)
    return out


def random_twin(model: Path, work: Path) -> Path:
    """MODEL's shape and tokenizer with freshly initialised weights (seed 0)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining

    twin = work / "random-init"
    torch.manual_seed(0)
    BertForPreTraining(BertConfig.from_pretrained(model)).save_pretrained(twin)
    AutoTokenizer.from_pretrained(model).save_pretrained(twin)
    return twin


def task_overrides(task: str, args) -> tuple[str, list[str]]:
    if task == "cola":
        data = SHARED / "CoLA"
        return "configs/finetune/cola.yaml", [
            "data.dir=null", f"data.train_file={data / 'train.tsv'}", f"data.validation_files=[{data / 'dev.tsv'}]",
            "data.max_seq_length=64",
        ]  # fmt: skip
    data = SHARED / "movie_reviews"
    return "configs/finetune/custom.yaml", [
        "task.text_columns=[text]", "task.label_column=label", "task.labels=[neg, pos]",
        f"data.train_file={mr_train_path(args)}", f"data.validation_files=[{data / 'dev.tsv'}]",
        f"data.max_seq_length={args.mr_seq}", f"data.truncation_side={args.mr_side}",
    ]  # fmt: skip


def mr_train_path(args) -> Path:
    """The movie_reviews train file both arms and the bag of words use: --mr-train's subset, or all 1,600."""
    return args.mr_train_file or SHARED / "movie_reviews" / "train.tsv"


def mr_subset(n: int, work: Path) -> Path:
    """n of the movie_reviews train reviews, n // 2 of each label, drawn with seed 0 (the same for both arms)."""
    import random

    header, *rows = (SHARED / "movie_reviews" / "train.tsv").read_text(encoding="utf-8").splitlines()
    rng, picked = random.Random(0), []
    for label in ("neg", "pos"):
        of_label = [row for row in rows if row.split("\t")[1] == label]
        if n // 2 > len(of_label):
            sys.exit(f"--mr-train {n}: only {len(of_label)} {label} reviews; give at most {2 * len(of_label)}")
        picked += rng.sample(of_label, n // 2)
    rng.shuffle(picked)
    out = work / f"mr-train-{n}.tsv"
    out.write_text("\n".join([header, *picked]) + "\n", encoding="utf-8")
    return out


def finetune(model: Path, task: str, args, out: Path) -> list[float]:
    """Each seed's dev score (x100) after the last epoch."""
    from bertcli.config import load_config
    from bertcli.pipelines.finetune import run_finetune
    from bertcli.schema.finetune import FinetuneConfig

    config, overrides = task_overrides(task, args)
    seeds = ",".join(str(s) for s in args.seeds)
    epochs = args.epochs[task] * (MR_TRAIN / args.mr_train if task == "movie_reviews" and args.mr_train else 1)
    cfg = load_config(FinetuneConfig, path=HERE.parent / config, overrides=overrides + [
        f"model.path={model}", f"train.learning_rate={args.lr}", f"train.epochs={epochs}",
        "train.warmup_ratio=0.1", "train.eval_every=0", f"train.seeds=[{seeds}]", "train.log_every=1000",
        "train.tensorboard=false", f"output.dir={out}",
    ])  # fmt: skip
    result = run_finetune(cfg, overwrite=True)
    return [100 * next(iter(run["evaluations"][-1]["metrics"].values()))[TASKS[task]] for run in result["runs"]]


def task_rows(task: str, args) -> dict[str, tuple[list[str], list[int]]]:
    """(texts, labels) of the train and dev files the probe fine-tunes on."""
    if task == "cola":  # no header: source, label, original mark, sentence
        files = {split: SHARED / "CoLA" / f"{split}.tsv" for split in ("train", "dev")}
        pick, skip = (lambda cells: (cells[3], int(cells[1]))), 0
    else:  # header: id, label, text
        files = {"train": mr_train_path(args), "dev": SHARED / "movie_reviews" / "dev.tsv"}
        pick, skip = (lambda cells: (cells[2], int(cells[1] == "pos"))), 1
    rows = {}
    for split, path in files.items():
        cells = [pick(line.split("\t")) for line in path.read_text(encoding="utf-8").splitlines()[skip:]]
        rows[split] = ([text for text, _ in cells], [label for _, label in cells])
    return rows


def bag_of_words(model: Path, task: str, args) -> float:
    """Dev score (x100) of a tf-idf logistic regression on the tokens the encoders see (MODEL's tokenizer, the same
    length and end cut): what a fine-tuned encoder should beat. C is chosen by 5-fold cross-validation on train."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import accuracy_score, matthews_corrcoef
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    keep = (64 if task == "cola" else args.mr_seq) - 2  # [CLS] and [SEP]
    cut = (lambda t: t[-keep:]) if task == "movie_reviews" and args.mr_side == "left" else (lambda t: t[:keep])
    rows = task_rows(task, args)
    words = {split: [cut(tokenizer.tokenize(text)) for text in texts] for split, (texts, _) in rows.items()}
    vectorizer = TfidfVectorizer(analyzer=lambda tokens: tokens)
    train = vectorizer.fit_transform(words["train"])
    scoring = "matthews_corrcoef" if task == "cola" else "accuracy"  # C is chosen by the task's own metric
    classifier = LogisticRegressionCV(Cs=[0.1, 0.3, 1, 3, 10, 30], cv=5, scoring=scoring, max_iter=5000)
    with warnings.catch_warnings():  # scikit-learn's notices of future defaults, none of which this relies on
        warnings.simplefilter("ignore", FutureWarning)
        predicted = classifier.fit(train, rows["train"][1]).predict(vectorizer.transform(words["dev"]))
    metric = matthews_corrcoef if task == "cola" else accuracy_score
    return 100 * metric(rows["dev"][1], predicted)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def random_cache_key(model: Path, task: str, args) -> str:
    """The random arm depends only on the shape, the tokenizer and the fine-tuning settings: recipes that share them
    (the same vocabulary and preset) share its scores."""
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "vocab.txt"):
        if (model / name).exists():
            digest.update((model / name).read_bytes())
    settings = (task, args.seeds, args.lr, args.epochs[task], args.mr_seq, args.mr_side)
    digest.update(repr(settings + ((args.mr_train,) if args.mr_train else ())).encode())
    return digest.hexdigest()[:16]


def mr_tokens(args) -> str:
    reviews = f", {args.mr_train} train reviews" if args.mr_train else ""
    return f"{'first' if args.mr_side == 'right' else 'last'} {args.mr_seq} tokens{reviews}"


def probe(args) -> None:
    if args.mr_train is not None and args.mr_train < 2:
        sys.exit(f"--mr-train {args.mr_train}: give at least 2 reviews (one of each label)")
    model = args.model.resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-payoff-"))
    cache = Path(args.cache) / "payoff-random"
    scores: dict[str, dict[str, list[float]]] = {}
    start = time.perf_counter()
    args.mr_train_file = mr_subset(args.mr_train, work) if args.mr_train else None
    baseline = {task: bag_of_words(model, task, args) for task in args.tasks}  # seconds: before the fine-tuning
    for task in args.tasks:
        scores[task] = {"pretrained": finetune(model, task, args, work / f"{task}-pretrained")}
        if args.no_random:
            continue
        cached = cache / f"{random_cache_key(model, task, args)}.json"
        if cached.exists():
            scores[task]["random init"] = json.loads(cached.read_text())
            continue
        twin = work / "random-init" if (work / "random-init").exists() else random_twin(model, work)
        scores[task]["random init"] = finetune(twin, task, args, work / f"{task}-random")
        cache.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(scores[task]["random init"]))
    print(f"\npayoff of {model} ({time.perf_counter() - start:.0f} s): seeds {args.seeds}, lr {args.lr}, "
          f"epochs {args.epochs}, movie_reviews {mr_tokens(args)}; dev scores x100, mean +- std")  # fmt: skip
    print(f"{'task':<14} | {'pretrained':>15} | {'random init':>15} | {'gain':>6} | {'bag of words':>12}")
    table = {}
    for task, by_arm in scores.items():
        (pm, ps), bow = mean_std(by_arm["pretrained"]), baseline[task]
        random_scores = by_arm.get("random init")  # none with --no-random
        table[task] = {"pretrained": by_arm["pretrained"], "random": random_scores, "gain": None,
                       "bag_of_words": bow}  # fmt: skip
        if random_scores is None:
            print(f"{task:<14} | {pm:7.2f} +- {ps:5.2f} | {'not run':>15} | {'':>6} | {bow:12.2f}")
            continue
        rm, rs = mean_std(random_scores)
        table[task]["gain"] = pm - rm
        print(f"{task:<14} | {pm:7.2f} +- {ps:5.2f} | {rm:7.2f} +- {rs:5.2f} | {pm - rm:+6.2f} | {bow:12.2f}")
    if args.json:
        payoff = {"model": str(model), "seeds": args.seeds, "lr": args.lr, "epochs": args.epochs,
                  "mr_seq": args.mr_seq, "mr_side": args.mr_side, "mr_train": args.mr_train or MR_TRAIN,
                  "scores": table}  # fmt: skip
        args.json.write_text(json.dumps(payoff, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)


FILL_MASK = [
    "the president of the united [MASK] said on tuesday .",
    "the company said net [MASK] rose 12 pct in the first quarter .",
    "this movie is one of the [MASK] films of the year .",
    "she was the youngest of the two [MASK] of a most affectionate father .",
]


def diagnose(args) -> None:
    import datasets
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertForMaskedLM, pipeline
    from transformers.utils import logging

    logging.set_verbosity_error()  # the load reports (heads this model does not use) are not what is asked
    splits = datasets.load_from_disk(str(args.data / "dataset"))
    train = splits["train"].select(range(min(20_000, len(splits["train"]))))
    tokens = np.concatenate([np.asarray(i)[np.asarray(s) == 0] for i, s in
                             zip(train["input_ids"], train["special_tokens_mask"])])  # fmt: skip
    p = np.bincount(tokens).astype(np.float64)
    p = p[p > 0] / p.sum()
    entropy = -(p * np.log(p)).sum()
    print(f"unigram entropy of {args.data} (the MLM loss of a model that ignores context): {entropy:.3f}")

    model = BertForMaskedLM.from_pretrained(args.model, attn_implementation="eager").eval()
    held_out = splits["validation"].select(range(min(args.sequences, len(splits["validation"]))))
    per_sequence = []  # (layers, heads, 3): entropy / its maximum, weight on the left and on the right neighbour
    with torch.no_grad():
        for ids in held_out["input_ids"]:
            att = torch.cat(model.bert(torch.tensor([ids]), output_attentions=True).attentions)  # (layers, heads, n, n)
            spread = -(att * att.clamp_min(1e-12).log()).sum(-1).mean(-1) / np.log(len(ids))
            left = att.diagonal(offset=-1, dim1=2, dim2=3).mean(-1)
            right = att.diagonal(offset=1, dim1=2, dim2=3).mean(-1)
            per_sequence.append(torch.stack([spread, left, right], dim=-1))
    uniform = np.mean([1 / len(ids) for ids in held_out["input_ids"]])
    print(f"attention over {len(per_sequence)} held-out sequences (uniform attention: entropy 1.00 of the maximum, "
          f"weight {uniform:.3f} on each token)")  # fmt: skip
    print(f"{'layer':>5} {'head':>4} | {'entropy / max':>13} | {'left neighbour':>14} | {'right neighbour':>15}")
    for layer, heads in enumerate(torch.stack(per_sequence).mean(0).tolist()):
        for head, (spread, left, right) in enumerate(heads):
            print(f"{layer:>5} {head:>4} | {spread:13.2f} | {left:14.3f} | {right:15.3f}")

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, device=-1, top_k=5)
    for sentence in FILL_MASK:
        guesses = ", ".join(f"{r['token_str']} {r['score']:.2f}" for r in fill(sentence))
        print(f"{sentence}  ->  {guesses}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="corpus minus the probe's dev reviews -> bertcli tokenize")
    prep.add_argument("--vocab", type=int, default=8192)
    prep.add_argument("--seq", type=int, default=128)
    prep.add_argument("--cache", default=str(Path.home() / ".cache" / "bertcli-bench"))
    pr = sub.add_parser("probe", help="fine-tune MODEL and its random-weight twin on CoLA and movie_reviews")
    pr.add_argument("model", type=Path, help="a pretrain run's final/ (or any BERT checkpoint folder)")
    pr.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    pr.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    pr.add_argument("--lr", type=float, default=3e-4)
    pr.add_argument("--cola-epochs", type=float, default=5.0)
    pr.add_argument("--mr-epochs", type=float, default=8.0)
    pr.add_argument("--mr-seq", type=int, default=128)
    side = "which end of a review is cut (finetune's data.truncation_side); left keeps the last --mr-seq tokens"
    pr.add_argument("--mr-side", choices=["right", "left"], default="right", help=side)
    few = "fine-tune on N of the 1,600 train reviews (N // 2 of each label), for about as many steps as all of them"
    pr.add_argument("--mr-train", type=int, metavar="N", help=few)
    pr.add_argument("--cache", default=str(Path.home() / ".cache" / "bertcli-bench"), help="random-arm scores")
    pr.add_argument("--json", type=Path, help="also write the scores of every seed to this file")
    alone = "fine-tune MODEL only, not its random twin (a released checkpoint's twin takes as long as it does)"
    pr.add_argument("--no-random", action="store_true", help=alone)
    diag = sub.add_parser("diagnose", help="MODEL's attention and MLM guesses; the unigram bound of DATA")
    diag.add_argument("model", type=Path, help="a pretrain run's final/")
    diag.add_argument("data", type=Path, help="the tokenize output it trained on")
    diag.add_argument("--sequences", type=int, default=64, help="held-out sequences to average attention over")
    args = parser.parse_args()
    if args.command == "prepare":
        print(prepare(args))
    elif args.command == "diagnose":
        diagnose(args)
    else:
        args.epochs = {"cola": args.cola_epochs, "movie_reviews": args.mr_epochs}
        probe(args)


if __name__ == "__main__":
    main()
