"""The small-data recipe against BERT's reference fine-tuning, same checkpoint, same data, over seeds (issue 33).

    python benchmarks/bench_recipe.py --task cola --seeds 1 2 3 4 5
    python benchmarks/bench_recipe.py --task movie_reviews --limit 800 --seeds 1 2 3
    python benchmarks/bench_recipe.py --task ner --limit 2000 --seeds 1 2 3
    python benchmarks/bench_recipe.py --task cola --limit 200 --seeds 1 --ref-lrs 5e-5 --epochs 0.2   # does it run?
    python benchmarks/bench_recipe.py --task cola --variant "llrd=train.layer_lr_decay=0.9" \\
        --variant "reinit=model.reinit_top_layers=1"                  # one option at a time on the reference

Model: all-MiniLM-L6-v2 (--model, default the copy bench_continued_pretraining.py unpacks under --cache).
Data: CoLA (../shared/data/CoLA, Matthews correlation), the movie reviews (../shared/data/movie_reviews, accuracy,
the last 128 tokens of each review) or CoNLL-2002 Spanish NER (../shared/data/conll2002 esp.train / esp.testa,
entity F1); --limit N: N training examples drawn with seed 0 (the same for every arm).

Arms, each run with every --seeds seed; model selection on a held-out tenth of the training file
(data.holdout_fraction 0.1: the same rows for every arm and seed), the dev file scored once per model at the end
(metrics.json's `final`), so no arm ever picks on dev:
    reference  BERT's recipe: batch 32, --epochs (3) epochs, lr 2e-5 / 3e-5 / 5e-5 (--ref-lrs), the best of the three
               on the held-out split, per seed
    recipe     the keys of --recipe-config (configs/finetune/small-data.yaml: a longer budget with early stopping on
               the held-out split, ...) over the reference's, plus the soup of its seeds' best models
               (train.average_seeds) as a row of its own
    variants   --variant NAME=KEY=VALUE[,KEY=VALUE]: the reference's best lr of each seed plus these keys
Two processes can share the cores: one with --no-recipe, one with --no-reference, the same --work; then either again
reads both back into one table. Printed: per arm the dev score x100 (mean +- std over seeds), the held-out score it
was chosen by, and the minutes of all its runs; --json FILE keeps every run. With --work DIR a run finished there
with the same settings is read back. Minutes: the training and evaluation seconds metrics.json records for every
run of the arm.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data"
METRIC = {"cola": "matthews_correlation", "movie_reviews": "accuracy", "ner": "f1"}


def data_files(task: str, limit: int | None, work: Path) -> tuple[Path, Path]:
    """(train, dev): the task's files, train cut to `limit` examples drawn with seed 0."""
    if task == "ner":
        train, dev = SHARED / "conll2002" / "esp.train", SHARED / "conll2002" / "esp.testa"
        if limit is None:
            return train, dev
        blocks = [b for b in train.read_text(encoding="utf-8").split("\n\n") if b.strip()]
        picked = random.Random(0).sample(blocks, min(limit, len(blocks)))
        out = work / "train.conll"
        out.write_text("\n\n".join(picked) + "\n", encoding="utf-8")
        return out, dev
    folder = SHARED / ("CoLA" if task == "cola" else "movie_reviews")
    train, dev = folder / "train.tsv", folder / "dev.tsv"
    if limit is None:
        return train, dev
    lines = train.read_text(encoding="utf-8").splitlines()
    header = [] if task == "cola" else lines[:1]  # CoLA's files have no header
    rows = lines[len(header) :]
    picked = random.Random(0).sample(rows, min(limit, len(rows)))
    out = work / "train.tsv"
    out.write_text("\n".join(header + picked) + "\n", encoding="utf-8")
    return out, dev


def task_args(task: str, train: Path, dev: Path) -> list[str]:
    """The finetune options that pick the task and its files."""
    if task == "cola":
        base = ["--config", str(REPO / "configs/finetune/cola.yaml"), "--set", "data.dir=null"]
        return base + ["--set", f"data.train_file={train}", "--set", f"data.validation_files=[{dev}]",
                       "--set", "data.max_seq_length=64"]  # fmt: skip
    if task == "ner":
        return ["--config", str(REPO / "configs/finetune/conll2003.yaml"), "--set", f"data.train_file={train}",
                "--set", f"data.validation_files=[{dev}]", "--set", "task.scheme=iob2"]  # fmt: skip
    return ["--config", str(REPO / "configs/finetune/custom.yaml"), "--set", "task.text_columns=[text]",
            "--set", "task.label_column=label", "--set", "task.labels=[neg, pos]", "--set", f"data.train_file={train}",
            "--set", f"data.validation_files=[{dev}]", "--set", "data.max_seq_length=128",
            "--set", "data.truncation_side=left"]  # fmt: skip


def bertcli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "bertcli", *args], check=True, stdout=subprocess.DEVNULL)


def finetune(args, out: Path, seeds: list[int], sets: list[str]) -> dict:
    """One finetune run (every seed of `seeds`) with the reference's settings and `sets` over them; its
    metrics.json."""
    base = [f"data.holdout_fraction={args.holdout}", "train.log_every=100000", "train.tensorboard=false",
            f"train.epochs={args.epochs}"]  # fmt: skip
    extra = [x for kv in base + sets for x in ("--set", kv)]
    settings = {"sets": extra, "seeds": seeds}
    if (out / "metrics.json").is_file() and (out / "bench-args.json").is_file():
        if json.loads((out / "bench-args.json").read_text()) == settings:  # finished with these settings: read back
            return json.loads((out / "metrics.json").read_text())
    bertcli("finetune", *args.task_args, *extra, "--model", str(args.model), "--output", str(out),
            "--seeds", ",".join(map(str, seeds)), "--overwrite")  # fmt: skip
    (out / "bench-args.json").write_text(json.dumps(settings))
    return json.loads((out / "metrics.json").read_text())


def recipe_keys(path: Path) -> list[str]:
    """The recipe config's keys as KEY=VALUE overrides, less those that name a task, files, seeds or a folder (the
    benchmark sets them)."""
    import yaml

    def flat(tree: dict, prefix: str = "") -> list[tuple[str, object]]:
        items = []
        for key, value in tree.items():
            name = f"{prefix}{key}"
            items += flat(value, name + ".") if isinstance(value, dict) else [(name, value)]
        return items

    skip = ("task.", "output.", "model.path", "data.dir", "data.max_seq_length", "train.seeds", "data.train_file",
            "data.validation_files")  # fmt: skip
    pairs = flat(yaml.safe_load(path.read_text(encoding="utf-8")))
    return [f"{k}={json.dumps(v)}" for k, v in pairs if not k.startswith(skip)]


def seconds_of(metrics: dict) -> float:
    """The training and evaluation seconds of every seed of a run, as its metrics.json records them (the same
    whether the run ran now or is read back; process start-up and data loading are not in it)."""
    return sum(r["train_seconds"] + r["eval_seconds"] for r in metrics.get("runs") or [metrics])


def run_of(metrics: dict, seed: int | None = None) -> dict:
    runs = metrics.get("runs") or [metrics]
    return next((r for r in runs if seed is None or r.get("seed") == seed), runs[0])


def selection_score(metrics: dict, seed: int | None = None) -> float:
    """x100: the main metric of the best evaluation on the held-out split (the one that picked the model)."""
    return 100 * float(run_of(metrics, seed)["best"]["main"])


def dev_score(args, final: dict) -> float:
    """x100: the dev file's score, scored once at the end of the run (`final`: split -> metrics)."""
    return 100 * statistics.fmean(split[METRIC[args.task]] for split in final.values())


def reference(args, work: Path) -> dict:
    """Per seed: the three learning rates, the best on the held-out split, its dev score."""
    rows = {"dev": [], "selection": [], "lr": [], "seconds": 0.0}
    for seed in args.seeds:
        tried = []
        for lr in args.ref_lrs:
            metrics = finetune(args, work / f"ref-{seed}-{lr}", [seed], [f"train.learning_rate={lr}"])
            tried.append((selection_score(metrics), lr, run_of(metrics)["final"]))
            rows["seconds"] += seconds_of(metrics)
        best, lr, final = max(tried, key=lambda t: t[0])
        rows["selection"].append(best)
        rows["lr"].append(lr)
        rows["dev"].append(dev_score(args, final))
    return rows


def recipe(args, work: Path) -> dict[str, dict]:
    """The recipe's seeds (one run, every seed) and their soup."""
    sets = [*recipe_keys(args.recipe_config), *args.recipe_set]
    if len(args.seeds) == 1:  # nothing to average
        sets = [kv for kv in sets if not kv.startswith("train.average_seeds")]
    metrics = finetune(args, work / "recipe", args.seeds, sets)
    rows = {"dev": [], "selection": [], "seconds": seconds_of(metrics), "epochs_run": []}
    for seed in args.seeds:
        run = run_of(metrics, seed)
        rows["selection"].append(selection_score(metrics, seed))
        rows["dev"].append(dev_score(args, run["final"]))
        rows["epochs_run"].append(run["best"]["epoch"])
    arms = {"recipe": rows}
    soup = metrics.get("soup")
    if soup is not None:
        arms["recipe soup"] = {"dev": [dev_score(args, soup["final"])], "selection": [100 * soup["main"]],
                               "seconds": 0.0, "kept": soup["kept"]}  # fmt: skip
    return arms


def variants(args, work: Path, ref: dict) -> dict[str, dict]:
    """Each --variant: the reference's learning rate of each seed plus the variant's keys."""
    arms = {}
    for spec in args.variant:
        name, _, keys = spec.partition("=")
        rows = {"dev": [], "selection": [], "seconds": 0.0}
        for seed, lr in zip(args.seeds, ref["lr"]):
            metrics = finetune(args, work / f"{name}-{seed}", [seed], [f"train.learning_rate={lr}", *keys.split(",")])
            rows["seconds"] += seconds_of(metrics)
            rows["selection"].append(selection_score(metrics))
            rows["dev"].append(dev_score(args, run_of(metrics)["final"]))
        arms[name] = rows
    return arms


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:6.2f}"
    return f"{statistics.fmean(values):6.2f} +- {statistics.stdev(values):4.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=list(METRIC), required=True)
    parser.add_argument("--model", type=Path, help="checkpoint folder (default: MiniLM unpacked under --cache)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "bertcli-bench"))
    parser.add_argument("--limit", type=int, help="N training examples (seed 0), the same for every arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--ref-lrs", type=float, nargs="+", default=[2e-5, 3e-5, 5e-5])
    parser.add_argument("--epochs", type=float, default=3.0, help="the reference's (and variants') epochs")
    parser.add_argument("--holdout", type=float, default=0.1, help="data.holdout_fraction of every arm")
    parser.add_argument("--recipe-config", type=Path, default=REPO / "configs/finetune/small-data.yaml")
    parser.add_argument("--recipe-set", action="append", default=[], metavar="KEY=VALUE", help="over the recipe")
    parser.add_argument("--no-recipe", action="store_true", help="the reference and the variants only")
    parser.add_argument("--no-reference", action="store_true", help="the recipe only (say --work to read the "
                        "reference back from a run of it, e.g. one running beside this with --no-recipe)")  # fmt: skip
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]")
    parser.add_argument("--json", type=Path, help="write every arm's runs here")
    parser.add_argument("--work", type=Path, help="the runs' folder (default: a new temporary one); a run finished "
                        "there with the same settings is read back, not trained again")  # fmt: skip
    args = parser.parse_args()
    if args.no_reference and args.variant:
        parser.error("--variant takes the reference's learning rates: drop --no-reference")
    if args.model is None:
        sys.path.insert(0, str(HERE))
        from bench_continued_pretraining import fetch_checkpoint

        args.model = fetch_checkpoint(Path(args.cache))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-recipe-"))
    work.mkdir(parents=True, exist_ok=True)
    train, dev = data_files(args.task, args.limit, work)
    args.task_args = task_args(args.task, train, dev)
    arms = {} if args.no_reference else {"reference": reference(args, work)}
    arms.update(variants(args, work, arms.get("reference")))
    if not args.no_recipe:
        arms.update(recipe(args, work))
    import torch

    threads = torch.get_num_threads()
    print(f"\nrecipe benchmark: {args.task} ({args.limit or 'all'} training examples), {args.model.name}, seeds "
          f"{args.seeds}, held-out {args.holdout}; dev {METRIC[args.task]} x100; {threads} threads")  # fmt: skip
    print(f"{'arm':<14} | {'dev':>15} | {'held-out':>15} | {'minutes':>7}")
    for name, rows in arms.items():
        extra = f"  (lr {rows['lr']})" if "lr" in rows else ""
        extra += f"  (kept as best/: {rows['kept']})" if "kept" in rows else ""
        print(f"{name:<14} | {mean_std(rows['dev']):>15} | {mean_std(rows['selection']):>15} | "
              f"{rows['seconds'] / 60:7.1f}{extra}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"task": args.task, "limit": args.limit, "seeds": args.seeds,
                                         "arms": arms}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
