"""Model cards (`README.md` beside a saved model) and loss-curve plots, written from a run's metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bertcli.outputs import atomic_file, write_text


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a torn last line from a killed run is skipped)."""
    records = []
    if Path(path).is_file():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def rewind_metrics(path: Path, step: int, seed: int | None = None) -> None:
    """Drop the records a killed run logged after `step` (only `seed`'s, for a log of several seeds), so that the run
    resumed from the checkpoint of `step` does not log them twice."""
    if not Path(path).is_file():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step or (seed is not None and r.get("seed") != seed)]
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def plot_loss_curves(records: list[dict[str, Any]], target: Path, title: str = "pretraining loss") -> None:
    """One PNG: every `*loss` series of the train and eval records against the step."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for split, style in (("train", "-"), ("eval", "o--")):
        rows = [r for r in records if r.get("split") == split]
        names = sorted({k for r in rows for k in r if k.endswith("loss")})
        for name in names:
            points = [(r["step"], r[name]) for r in rows if isinstance(r.get(name), (int, float))]
            if points:
                ax.plot(*zip(*points, strict=False), style, label=f"{split} {name}", markersize=4)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend()
    with atomic_file(target, "wb") as handle:
        fig.savefig(handle, format="png", bbox_inches="tight")
    plt.close(fig)


def pretrain_card(
    config: dict[str, Any],
    model_config: dict[str, Any],
    data_stats: list[dict[str, Any]],
    final: dict[str, Any],
    load_report: dict[str, Any] | None = None,
) -> str:
    """Markdown model card of a pretrained BertForPreTraining (BertForMaskedLM after objective mlm): shape, data,
    training, final metrics, usage.
    `load_report`: a run continued from a checkpoint (`model.init_from`): what was loaded and what started fresh."""
    shape = ", ".join(
        f"{k} {model_config[k]}"
        for k in (
            "num_hidden_layers",
            "hidden_size",
            "num_attention_heads",
            "intermediate_size",
            "vocab_size",
        )
    )
    train = config["train"]
    architecture = (model_config.get("architectures") or ["BertForPreTraining"])[0]
    auto = "AutoModelForMaskedLM" if architecture.endswith("ForMaskedLM") else "AutoModelForPreTraining"
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: fill-mask",
        "tags: [bert, bertcli, pretraining]",
        "---",
        "",
        "# BERT pretrained with bertcli",
        "",
        f"`{architecture}` ({shape}), objective `{config['objective']}`, "
        + (f"continued from `{load_report['source']}`" if load_report else "trained from scratch")
        + " with `bertcli pretrain`.",
        "",
        *_continued_section(load_report, final),
        "## Data",
        "",
    ]
    for stats in data_stats:
        lines.append(
            f"- `{stats.get('dir', '?')}`: {stats.get('documents', '?')} documents, "
            f"{stats.get('tokens', '?')} tokens, {stats.get('instances', '?')} instances, "
            f"max_seq_length {stats.get('max_seq_length', '?')}"
        )
    lines += [
        "",
        "## Training",
        "",
        f"- steps {final.get('step', '?')}, batch {config['data']['batch_size']} per device x "
        f"{final.get('processes', 1)} processes x {train['gradient_accumulation_steps']} accumulation",
        f"- AdamW lr {train['learning_rate']}, weight decay {train['weight_decay']}, "
        f"schedule {train['scheduler']}, "
        f"precision {train['mixed_precision']}, seed {train['seed']}",
        f"- masking: {json.dumps(config['masking'])}",
        "",
        "## Final metrics",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in final.items()]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        f"from transformers import {auto}, pipeline",
        f'model = {auto}.from_pretrained("path/to/final")',
        'fill = pipeline("fill-mask", model="path/to/final")',
        "```",
        "",
        "Fine-tune it with `bertcli finetune` (set the model path to this folder).",
        "",
        "## Config",
        "",
        "```json",
        json.dumps(config, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def _continued_section(load_report: dict[str, Any] | None, final: dict[str, Any]) -> list[str]:
    """The card's account of a continued run: the load report and the held-out perplexity before and after."""
    if not load_report:
        return []
    lines = [
        "## Continued pretraining",
        "",
        f"- loaded {load_report['loaded']} tensors from `{load_report['source']}` ({load_report['architecture']}, "
        f"{load_report['weights']})",
        f"- newly initialised: {', '.join(load_report['newly_initialised']) or 'nothing'}",
        f"- not used: {', '.join(load_report['not_used']) or 'nothing'}",
    ]
    if load_report.get("embeddings_grown"):
        lines.append(f"- embeddings grown: {json.dumps(load_report['embeddings_grown'])}")
    before, after = final.get("held_out_perplexity_before"), final.get("held_out_perplexity_after")
    if before is not None and after is not None:
        lines.append(f"- {perplexity_line(before, after, load_report).replace('held-out', 'held-out MLM', 1)}")
    return [*lines, ""]


def perplexity_line(before: float, after: float, load_report: dict | None) -> str:
    """The console line of a continued run's held-out perplexity. When the checkpoint had no MLM head, "before"
    scores a freshly initialised head (near the vocabulary's size), not the model, and the line says so."""
    line = f"held-out perplexity {_ppl(before)} → {_ppl(after)}"
    fresh = [name for name in (load_report or {}).get("newly_initialised", []) if name.startswith("cls.predictions")]
    if fresh:
        line += " (the checkpoint had no MLM head: 'before' scores a freshly initialised head, not the model)"
    return line


def _ppl(value: float) -> str:
    """A perplexity as a number people read: 48.3, 53,931 (never 5.39e+04)."""
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def write_card(target: Path, text: str) -> None:
    write_text(target, text)
