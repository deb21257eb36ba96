"""Why a soup of fine-tuned seeds loses: the straight line between two seeds' best models, and the soup of all of
them with its decision re-centred, scored on bertcli's held-out rows and on dev (issue 33).

    python benchmarks/soup_path.py --run RUNS/recipe-cola/work/recipe --train ../shared/data/CoLA/train.tsv \
        --dev ../shared/data/CoLA/dev.tsv --pairs 1,2 4,5

--run is a `bertcli finetune --seeds ...` output (seed-N/best per seed) of a two-class task on GLUE-style TSV files
(text in --text-column, label in --label-column); the held-out rows are the ones `data.holdout_fraction`
(--holdout) carved from --train for that run (bertcli.tasks.holdout, stratified, seeded: the same rows). Printed:
- along each pair's line (alpha 0, 0.25, ..., 1: weights (1 - alpha) A + alpha B): MCC, accuracy and the share
  predicted as class 1 on both splits. A flat accuracy with a moving share means one basin whose average leans to
  one class; a dip in accuracy means a barrier between two basins.
- every seed, their mean, the ensemble of their logits (5x the compute), the uniform soup, and the soup with its
  class-1 logit shifted so that it predicts class 1 on the held-out rows as often as the seeds do on average (no
  label is read for the shift).
- with --refit-head: the soup's encoder with a new linear head fitted (scikit-learn's logistic regression, its
  default regularisation) on the soup's pooled outputs of the training rows that are not held out, so that the
  head matches the averaged encoder; and, for comparison only, one fitted on the held-out rows (its held-out score
  is then not a fair one; dev still is).
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import matthews_corrcoef
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bertcli.tasks.holdout import holdout_rows


def read(path: Path, text_column: int, label_column: int) -> tuple[list[str], np.ndarray]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r[text_column] for r in rows], np.array([int(r[label_column]) for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--dev", type=Path, required=True)
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument("--text-column", type=int, default=3)
    parser.add_argument("--label-column", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--pairs", nargs="*", default=["1,2"], help="seed pairs A,B to walk between")
    parser.add_argument("--refit-head", action="store_true", help="also the soup with a head fitted anew")
    args = parser.parse_args()
    torch.set_num_threads(1)

    train_text, train_gold = read(args.train, args.text_column, args.label_column)
    kept, held, _ = holdout_rows(len(train_text), args.holdout, strata=train_gold)
    splits = {"held-out": ([train_text[i] for i in held], train_gold[held]),
              "dev": read(args.dev, args.text_column, args.label_column)}  # fmt: skip
    seeds = sorted(int(p.name.split("-")[1]) for p in args.run.glob("seed-*") if (p / "best").is_dir())
    tok = AutoTokenizer.from_pretrained(args.run / f"seed-{seeds[0]}" / "best")

    def load(seed: int):
        path = args.run / f"seed-{seed}" / "best"
        return AutoModelForSequenceClassification.from_pretrained(path).eval()

    def logits(model, texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), 64):
                batch = tok(texts[i : i + 64], truncation=True, max_length=args.max_length, padding=True,
                            return_tensors="pt")  # fmt: skip
                out.append(model(**batch).logits.float().numpy())
        return np.concatenate(out)

    def pooled(model, texts: list[str]) -> np.ndarray:  # what the classifier reads
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), 64):
                batch = tok(texts[i : i + 64], truncation=True, max_length=args.max_length, padding=True,
                            return_tensors="pt")  # fmt: skip
                out.append(model.base_model(**batch).pooler_output.float().numpy())
        return np.concatenate(out)

    def describe(predicted: dict[str, np.ndarray]) -> str:
        return "  ".join(f"{name}: MCC {100 * matthews_corrcoef(splits[name][1], p):6.2f} acc "
                         f"{100 * (p == splits[name][1]).mean():5.1f} class 1 {100 * p.mean():5.1f}%"
                         for name, p in predicted.items())  # fmt: skip

    def averaged(states: list[dict], weights: list[float]) -> dict:
        return {k: sum(w * s[k] for w, s in zip(weights, states)) if states[0][k].is_floating_point() else states[0][k]
                for k in states[0]}  # fmt: skip

    states = {s: load(s).state_dict() for s in seeds}
    model = load(seeds[0])
    for pair in args.pairs:
        a, b = (int(x) for x in pair.split(","))
        print(f"seed {a} -> seed {b}")
        for alpha in (0.0, 0.25, 0.5, 0.75, 1.0):
            model.load_state_dict(averaged([states[a], states[b]], [1 - alpha, alpha]))
            print(f"  alpha {alpha:.2f}  " + describe({n: logits(model, t).argmax(1) for n, (t, _) in splits.items()}))

    seed_logits = {}
    for s in seeds:
        model.load_state_dict(states[s])
        seed_logits[s] = {n: logits(model, t) for n, (t, _) in splits.items()}
        print(f"seed {s}  " + describe({n: x.argmax(1) for n, x in seed_logits[s].items()}))
    dev_scores = [100 * matthews_corrcoef(splits["dev"][1], seed_logits[s]["dev"].argmax(1)) for s in seeds]
    print(f"seeds' dev MCC {statistics.fmean(dev_scores):.2f} +- {statistics.stdev(dev_scores):.2f}")
    ensemble = {n: sum(seed_logits[s][n] for s in seeds).argmax(1) for n in splits}
    print("logit ensemble  " + describe(ensemble))
    model.load_state_dict(averaged(list(states.values()), [1 / len(seeds)] * len(seeds)))
    soup = {n: logits(model, t) for n, (t, _) in splits.items()}
    print("uniform soup  " + describe({n: x.argmax(1) for n, x in soup.items()}))
    share = statistics.fmean(float(seed_logits[s]["held-out"].argmax(1).mean()) for s in seeds)
    margin = {n: x[:, 1] - x[:, 0] for n, x in soup.items()}
    shift = -float(np.quantile(margin["held-out"], 1 - share))
    print(f"soup, class-1 logit {shift:+.3f}  " + describe({n: (m + shift > 0).astype(int) for n, m in margin.items()}))

    if args.refit_head:
        features = {n: pooled(model, t) for n, (t, _) in splits.items()}
        train_features = pooled(model, [train_text[i] for i in kept])
        fits = {"training rows": (train_features, train_gold[kept]),
                "held-out rows (unfair on held-out)": (features["held-out"], splits["held-out"][1])}  # fmt: skip
        for name, (x, y) in fits.items():
            head = LogisticRegression(max_iter=2000).fit(x, y)
            print(f"soup, head fitted on the {name}  " + describe({n: head.predict(f) for n, f in features.items()}))


if __name__ == "__main__":
    main()
