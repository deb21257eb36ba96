"""Model selection in `run_finetune` kept apart from the reported scores, and the seed soup.

With data.holdout_fraction (`bertcli.tasks.holdout`), every evaluation during training (best step, early stopping)
scores the held-out split only; the validation files are scored once per seed, at the end, with that seed's best
model (`score_reported`), and once with the soup. `train.average_seeds` averages the seeds' best models
(`bertcli.training.soup`), with train.soup_head refit fits its head anew on the training rows (`refit_soup_head`),
scores the soup on the split that picks the model and keeps it as best/ only where it beats the best single seed
there (`soup_seeds`). metrics.json keeps both sides: `selection` says which split picked the model and whether that
choice looked at the reported data; `runs[i].final`, `best.final` and `soup.final` hold the validation scores of a
selection made on the holdout.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from bertcli.outputs import atomic_dir
from bertcli.tasks.base import FinetuneData
from bertcli.tasks.evaluation import quiet_loading
from bertcli.tasks.holdout import HOLDOUT
from bertcli.tasks.registry import family_of
from bertcli.training.batches import make_loader
from bertcli.training.soup import refit_head, soup_of

REFIT_EPOCHS = 3  # train.soup_head refit: passes over the training rows (its description says so)


def save_predictions(family, folder: Path, predictions: dict[str, Any]) -> None:
    """The best evaluation's predictions in `folder` (beside best/), in the file `bertcli eval --predictions`
    writes: predictions.{ext}, or predictions-{split}.{ext} per split when there are several."""
    ext = family.eval_predictions_ext
    for name, found in predictions.items():
        file = f"predictions.{ext}" if len(predictions) == 1 else f"predictions-{name}.{ext}"
        family.write_best_predictions(folder / file, found)


def main_score(scores: dict[str, dict[str, float]], spec) -> float:
    """The number that picks the model: the main metric, averaged over the splits (MNLI: matched, mismatched)."""
    return statistics.fmean(s[spec.main_metric] for s in scores.values())


def load_saved(data: FinetuneData, path: Path | str):
    """A model saved by this run (a seed's best/), through its family's Auto class, quietly."""
    import transformers

    auto = getattr(transformers, family_of(data.spec).auto_class)
    with quiet_loading():
        return auto.from_pretrained(str(path), local_files_only=True)


def score_model(acc, data: FinetuneData, cfg, model, splits: dict[str, Any]) -> tuple[dict, dict]:
    """(metrics, predictions) by split name of `model` on `splits`, as the evaluations during training score."""
    family = family_of(data.spec)
    net = acc.prepare_model(family.forward_module(model, None), evaluation_mode=True)
    batch = cfg.data.eval_batch_size or 2 * cfg.data.batch_size
    scores, predictions = {}, {}
    for name, split in splits.items():
        loader = make_loader(split, batch, 0, False, False, collate=family.collator(split, data.tokenizer))
        scores[name], found = family.score(acc, net, acc.prepare_data_loader(loader), split, data.spec)
        if found is not None:
            predictions[name] = found
    return scores, predictions


def write_predictions(acc, data: FinetuneData, folder: Path, predictions: dict[str, Any]) -> None:
    if acc.is_main_process:
        save_predictions(family_of(data.spec), folder, predictions)
    acc.wait_for_everyone()


def score_reported(acc, data: FinetuneData, cfg, run_dir: Path) -> dict[str, dict[str, float]]:
    """The validation files scored once with the seed's best model (run_dir/best), its predictions written beside
    it where the family has any: the reported scores of a model the holdout picked."""
    scores, predictions = score_model(acc, data, cfg, load_saved(data, run_dir / "best"), data.evals)
    write_predictions(acc, data, run_dir, predictions)
    return scores


# --- the seed soup ---------------------------------------------------------------------------------------------


def soup_scores(acc, data: FinetuneData, cfg, model) -> tuple[dict, dict]:
    """The soup's scores on the selection split and, with a holdout, on the validation files (one pass each)."""
    splits = {**data.selection, **data.evals}  # the same dict twice without a holdout: scored once
    return score_model(acc, data, cfg, model, splits)


def keep_soup(soup_main: float, best_main: float) -> bool:
    """Keep the soup only where it beats the best single seed on the selection split (a tie keeps the seed)."""
    return not math.isnan(soup_main) and (math.isnan(best_main) or soup_main > best_main)


def soup_seeds(acc, data: FinetuneData, cfg, out: Path, runs: list) -> dict[str, Any]:
    """Average the seeds' best models (out/seed-N/best) into one, score it on the selection split, and write it as
    out/best (save_pretrained, with the tokenizer) when it beats the best seed there. Returns metrics.json's `soup`."""
    spec = data.spec
    paths = [out / f"seed-{r.seed}" / "best" for r in runs]
    model = soup_of(paths, lambda path: load_saved(data, path))
    refit = refit_soup_head(acc, data, cfg, model) if cfg.train.soup_head == "refit" else None
    scores, predictions = soup_scores(acc, data, cfg, model)
    selection = {name: scores[name] for name in data.selection}
    best = max(runs, key=lambda r: -math.inf if math.isnan(r.best["main"]) else r.best["main"])
    main = main_score(selection, spec)
    record = {"seeds": [r.seed for r in runs], "metrics": selection, "main": main, "best_seed": best.seed,
              "best_seed_main": best.best["main"], "kept": keep_soup(main, best.best["main"])}  # fmt: skip
    if refit is not None:
        record["head"] = {"refit": True, "epochs": REFIT_EPOCHS, "loss": refit}
    if data.holdout is not None:
        record["final"] = {name: scores[name] for name in data.evals}
    if record["kept"]:
        if acc.is_main_process:
            _save(model, data.tokenizer, out / "best")
        write_predictions(acc, data, out, {n: p for n, p in predictions.items() if n in data.evals})
    acc.wait_for_everyone()
    return record


def refit_soup_head(acc, data: FinetuneData, cfg, model) -> list[float]:
    """train.soup_head refit: the soup's head fitted anew on the training rows (`bertcli.training.soup.refit_head`)
    with the family's own training loss, in shuffled batches of data.batch_size drawn with train.seed, the same on
    every process. Returns each pass's mean loss (metrics.json's soup.head.loss)."""
    import torch

    family = family_of(data.spec)
    model.to(acc.device)
    net = family.forward_module(model, None)
    collate = family.collator(data.train, data.tokenizer)
    loader = make_loader(data.train, cfg.data.batch_size, cfg.train.seed, False, True, collate=collate)

    def on_device(batch: dict) -> dict:
        return {k: v.to(acc.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def passes():
        for epoch in range(REFIT_EPOCHS):
            loader.batch_sampler.set_epoch(epoch)
            yield (on_device(batch) for batch in loader)

    def loss(batch: dict):
        return family.loss_and_sums(net, batch, data.spec)[0]

    losses = refit_head(model, passes(), loss, total_steps=REFIT_EPOCHS * len(loader))
    acc.print(f"soup: head fitted anew on {len(data.train)} training rows, {REFIT_EPOCHS} passes, loss "
              + " -> ".join(f"{x:.4f}" for x in losses))  # fmt: skip
    return losses


def _save(model, tokenizer, target: Path) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        with atomic_dir(target) as tmp:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
    finally:
        hf_logging.enable_progress_bar()


# --- what metrics.json and the console say ---------------------------------------------------------------------


def selection_record(data: FinetuneData, fraction: float) -> dict[str, Any]:
    """metrics.json's `selection`: the split(s) that picked the model, and whether that choice saw the reported data."""
    record: dict[str, Any] = {"splits": list(data.selection), "looked_at_reported_data": data.holdout is None}
    if data.holdout is not None:
        record["holdout"] = {"fraction": fraction, "how": data.holdout_how, **data.counts.get(HOLDOUT, {})}
    return record


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The console's lines on how the model was picked, its reported scores and the soup's fate."""
    lines, best, soup = [], result["best"], result.get("soup")
    picked = ", ".join(result["selection"]["splits"])
    if result["selection"]["looked_at_reported_data"]:
        if soup is not None:  # the soup's keep-or-drop looked at the reported split too
            lines.append(f"  picked on {picked}: the scores above are those the choice looked at "
                         "(data.holdout_fraction keeps them apart)")  # fmt: skip
    else:
        lines.append(f"  picked on {picked} (held out of the training file); reported, scored once at the end:")
        lines.append(f"  seed {best['seed']}: {_shown(best.get('final') or {})}")
    if soup is not None:
        verdict = (
            "kept as best/"
            if soup["kept"]
            else f"not better than seed {soup['best_seed']} ({soup['best_seed_main']:.4f}): best/ is that seed's"
        )
        final = f"; reported: {_shown(soup['final'])}" if soup.get("final") else ""
        lines.append(f"  soup of seeds {soup['seeds']}: {picked} {soup['main']:.4f}, {verdict}{final}")
    return lines


def _shown(scores: dict[str, dict[str, float]]) -> str:
    return "  ".join(f"{s}/{k} {v:.4f}" for s, vals in scores.items() for k, v in vals.items() if "/" not in k)
