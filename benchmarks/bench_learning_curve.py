"""Learning-curve parity: `bertcli pretrain` against Hugging Face `Trainer` + `BertForPreTraining` +
`DataCollatorForLanguageModeling`, same shape, data, schedule and initial weights, evaluated on the same held-out
pairs with the same fixed masks every --eval-every steps.

    python benchmarks/bench_learning_curve.py --preset tiny --steps 600 --eval-every 100 [--seeds 42 43]

Data: one `bertcli tokenize` output (default: bench_pretrain's cached 12 MB slice of the shared English corpus,
WordPiece 30522, NSP pairs of at most 128 tokens; made on first use). Both sides train on its train split, batch
--batch, AdamW (lr --lr, betas 0.9/0.999, eps 1e-6, weight decay 0.01 off biases and LayerNorm), linear decay after
--warmup steps, clipping 1.0, 15% masking (80/10/10), fp32, initial weights from the same seed through the same
builder (`bertcli.modeling.build_pretraining_model`). What differs by design: ours masks each example from its own
seed and draws dropout masks with numpy; Trainer's collator masks from one generator and torch draws dropout.

Evaluation, for both: our validation loader (`EpochIndexed(fixed=True)`, masks from `masking.eval_seed`), so both
models see the same masked tokens; MLM loss = mean cross-entropy over masked tokens, MLM accuracy, NSP accuracy.
Prints both at each point, the relative gap in MLM loss (goal: within 2%), and saves the curves as a PNG.

--mlm-only: the MLM-only row. Ours: the same text tokenized with `nsp.mode none` (each split one stream, [SEP]
between documents, full --seq sequences, the tokenizer of the pairs data), objective mlm. Reference: Trainer +
`BertForMaskedLM` on run_mlm.py's `group_texts` of the same train documents: each document as the tokenizer encodes
it ([CLS] text [SEP]), concatenated, cut into blocks of --seq, the last partial block dropped. Same initial weights
(the pooler and NSP head left out), evaluated on our MLM-only validation split; no NSP accuracy.

    python benchmarks/bench_learning_curve.py --mlm-only --preset tiny --steps 600 --eval-every 100
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_ours(data: Path, args, seed: int, out: Path) -> dict[int, dict[str, float]]:
    """Eval records of `run_pretrain` by step."""
    from bertcli.config import load_config
    from bertcli.pipelines.pretrain import run_pretrain
    from bertcli.schema.pretrain import PretrainConfig

    cfg = load_config(PretrainConfig, overrides=_overrides(data, args, seed) + ["objective=mlm"] * args.mlm_only + [
        f"train.eval_every={args.eval_every}", "train.log_every=50", "train.save_every=0",
        "train.tensorboard=false", f"output.dir={out}",
    ])  # fmt: skip
    run_pretrain(cfg, overwrite=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records if r["split"] == "eval"}


def _overrides(data: Path, args, seed: int) -> list[str]:
    return [
        f"model.preset={args.preset}", f"data.dirs=[{data}]", f"data.batch_size={args.batch}",
        f"train.max_steps={args.steps}", f"train.learning_rate={args.lr}", f"train.warmup_steps={args.warmup}",
        f"train.seed={seed}", "train.mixed_precision='no'",
    ]  # fmt: skip


def evaluate_reference(model, loader) -> dict[str, float]:
    """Our evaluation's metrics (pipelines.pretrain.summarize) for a plain `BertForPreTraining`."""
    import torch
    import torch.nn.functional as F

    sums = {"mlm_loss": 0.0, "mlm_correct": 0.0, "mlm_count": 0.0, "nsp_correct": 0.0, "nsp_count": 0.0}
    model.eval()
    with torch.no_grad():
        for batch in loader:
            out = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                        attention_mask=batch["attention_mask"])  # fmt: skip
            labels = batch["labels"]
            masked = labels != -100
            logits = out.logits if hasattr(out, "logits") else out.prediction_logits  # BertForMaskedLM's, or not
            scores, targets = logits[masked], labels[masked]
            sums["mlm_loss"] += float(F.cross_entropy(scores, targets, reduction="sum"))
            sums["mlm_correct"] += float((scores.argmax(-1) == targets).sum())
            sums["mlm_count"] += float(masked.sum())
            if "next_sentence_label" in batch:
                nsp = out.seq_relationship_logits.argmax(-1)
                sums["nsp_correct"] += float((nsp == batch["next_sentence_label"]).sum())
                sums["nsp_count"] += len(nsp)
    model.train()
    return {
        "mlm_loss": sums["mlm_loss"] / sums["mlm_count"],
        "mlm_accuracy": sums["mlm_correct"] / sums["mlm_count"],
        "nsp_accuracy": sums["nsp_correct"] / sums["nsp_count"] if sums["nsp_count"] >= 1 else math.nan,
    }


def run_reference(data: Path, args, seed: int, out: Path) -> dict[int, dict[str, float]]:
    """Trainer with BertForPreTraining and DataCollatorForLanguageModeling, evaluated by a callback."""
    import datasets
    import torch
    from transformers import (
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from bertcli.config import load_config
    from bertcli.modeling import build_pretraining_model
    from bertcli.pipelines.pretrain import _dataloaders, load_pretrain_data
    from bertcli.schema.pretrain import PretrainConfig

    cfg = load_config(PretrainConfig, overrides=_overrides(data, args, seed) + ["objective=mlm"] * args.mlm_only)
    _, eval_loader = _dataloaders(cfg, load_pretrain_data(cfg))  # our fixed evaluation masks
    tokenizer = AutoTokenizer.from_pretrained(str(data / "tokenizer"))
    train = datasets.load_from_disk(str(data / "dataset"))["train"]
    train = train.remove_columns([c for c in ("word_starts",) if c in train.column_names])
    torch.manual_seed(seed)  # as ours: set_seed(seed), then the same builder
    model = build_pretraining_model(cfg.model, len(tokenizer), tokenizer.pad_token_id)
    if args.mlm_only:
        model, train = masked_lm_from(model), group_texts(train, tokenizer, args.seq)
    points: dict[int, dict[str, float]] = {}

    class Evaluate(TrainerCallback):
        def on_step_end(self, _args, state, *_, **__):
            if state.global_step % args.eval_every == 0 or state.global_step == args.steps:
                points[state.global_step] = evaluate_reference(model, eval_loader)

    training = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch, max_steps=args.steps,
        learning_rate=args.lr, warmup_steps=args.warmup, lr_scheduler_type="linear", weight_decay=0.01,
        adam_epsilon=1e-6, max_grad_norm=1.0, use_cpu=True, report_to="none", save_strategy="no",
        eval_strategy="no", logging_strategy="no", disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, seed=seed, data_seed=seed,
    )  # fmt: skip
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
    Trainer(model=model, args=training, train_dataset=train, data_collator=collator, callbacks=[Evaluate()]).train()
    return points


def masked_lm_from(model):
    """A BertForMaskedLM with the BertForPreTraining's initial weights (its pooler and NSP head left out)."""
    from transformers import BertForMaskedLM

    masked = BertForMaskedLM(model.config)
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith(("bert.pooler.", "cls.seq_rel"))}
    masked.load_state_dict(weights, strict=True)
    return masked


def group_texts(train, tokenizer, seq: int):
    """run_mlm.py's group_texts over the train documents of our MLM-only split: the documents (our stream, split at
    its [SEP] separators) each as the tokenizer encodes a text, [CLS] ... [SEP], concatenated and cut into blocks
    of `seq`, the last partial block dropped (as run_mlm.py does)."""
    import datasets
    import numpy as np

    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    stream = np.concatenate([np.asarray(ids[1:-1]) for ids in train["input_ids"]])
    docs = np.split(stream, np.flatnonzero(stream == sep))  # each after the first starts with its separator
    encoded = np.concatenate([np.concatenate(([cls], d[d != sep], [sep])) for d in docs])
    n = len(encoded) // seq * seq
    blocks = encoded[:n].reshape(-1, seq)
    return datasets.Dataset.from_dict({"input_ids": blocks.tolist(), "token_type_ids": np.zeros_like(blocks).tolist()})


def mlm_only_data(pairs: Path, cache: str) -> Path:
    """The text of the pairs data tokenized MLM-only with its tokenizer (made once, cached)."""
    out = Path(cache) / f"{pairs.name}-mlm-only"
    if (out / "stats.json").is_file():
        return out
    import yaml

    from bertcli.config import load_config
    from bertcli.pipelines.tokenize import run_tokenize
    from bertcli.schema.tokenize import TokenizeConfig

    made = yaml.safe_load((pairs / "config.yaml").read_text())
    overrides = [f"input.paths={json.dumps(made['input']['paths'])}", f"input.format={made['input']['format']}",
                 f"output.dir={out}", f"tokenizer.path={pairs / 'tokenizer'}", "nsp.mode=none",
                 f"nsp.max_seq_length={made['nsp']['max_seq_length']}",
                 f"split.validation_fraction={made['split']['validation_fraction']}"]  # fmt: skip
    run_tokenize(load_config(TokenizeConfig, overrides=overrides), overwrite=True)
    return out


def plot(curves: dict[str, dict[int, list[dict]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, metric in zip(axes, ("mlm_loss", "mlm_accuracy", "nsp_accuracy"), strict=True):
        for name, by_step in curves.items():
            steps = sorted(by_step)
            ax.plot(
                steps,
                [statistics.mean(r.get(metric, math.nan) for r in by_step[s]) for s in steps],
                marker="o",
                label=name,
            )
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a tokenize output (default: bench_pretrain's cached slice)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="the tiny preset's learning rate")
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--mlm-only", action="store_true", help="the MLM-only row (see above)")
    parser.add_argument("--seq", type=int, default=128, help="--mlm-only: the reference's group_texts block size")
    parser.add_argument("--png", type=Path, default=Path("learning_curve.png"))
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "bertcli-bench"))
    args = parser.parse_args()
    data = args.data
    if data is None:
        sys.path.insert(0, str(HERE))
        from bench_pretrain import SHARED, prepare_data

        data = prepare_data(argparse.Namespace(cache=args.cache, corpus=str(SHARED), megabytes=12.0, seq=128))
    if args.mlm_only:
        data = mlm_only_data(data, args.cache)
    curves: dict[str, dict[int, list[dict]]] = {"bertcli": {}, "HF Trainer": {}}
    work = Path(tempfile.mkdtemp(prefix="bench-curve-"))
    start = time.perf_counter()
    for seed in args.seeds:
        for name, fn in (("bertcli", run_ours), ("HF Trainer", run_reference)):
            for step, record in fn(data, args, seed, work / f"{name.split()[-1]}-{seed}").items():
                curves[name].setdefault(step, []).append(record)
    print(f"\nlearning curves: preset {args.preset}, batch {args.batch}, lr {args.lr}, warmup {args.warmup}, "
          f"{args.steps} steps, seeds {args.seeds}; data {data}; {time.perf_counter() - start:.0f} s")  # fmt: skip
    print(f"{'step':>6} | {'MLM loss ours':>13} {'ref':>7} {'gap':>7} | {'MLM acc ours':>12} {'ref':>6} | "
          f"{'NSP acc ours':>12} {'ref':>6}")  # fmt: skip
    gaps = []
    for step in sorted(set(curves["bertcli"]) & set(curves["HF Trainer"])):
        metrics = ("mlm_loss", "mlm_accuracy", "nsp_accuracy")
        ours, ref = ({m: statistics.mean(r.get(m, math.nan) for r in curves[n][step]) for m in metrics}
                     for n in ("bertcli", "HF Trainer"))  # fmt: skip
        gap = ours["mlm_loss"] / ref["mlm_loss"] - 1
        gaps.append(gap)
        print(f"{step:6d} | {ours['mlm_loss']:13.4f} {ref['mlm_loss']:7.4f} {gap:+7.1%} | "
              f"{ours['mlm_accuracy']:12.4f} {ref['mlm_accuracy']:6.4f} | {ours['nsp_accuracy']:12.4f} "
              f"{ref['nsp_accuracy']:6.4f}")  # fmt: skip
    worst = max(gaps, key=abs)
    print(f"largest MLM-loss gap {worst:+.1%} (goal: within 2% at every point; + means ours is higher)")
    plot(curves, args.png, f"{args.preset}: bertcli vs HF Trainer, held-out, fixed masks, seeds {args.seeds}")
    print(f"curves saved to {args.png}")


if __name__ == "__main__":
    main()
