"""Evaluate a pretrained `BertForPreTraining`: MLM loss, perplexity, masked-token and NSP accuracy, NSP loss
(a `BertForMaskedLM`, as pretrain saves after objective mlm: the MLM metrics only).

The data is a `bertcli tokenize` output folder (one split) or raw text, which goes through the tokenize
pipeline with the model's own tokenizer (NSP pairs seeded by `masking.seed`). Masks come from pretrain's
`PretrainingCollator`: each example is masked by a generator seeded from (seed, example index), so the numbers
depend neither on batch size, batch order, nor the number of processes, and repeat exactly run after run; with
the default seed they equal pretrain's own evaluation of the same split. The MLM head runs on masked positions
only (`PretrainingModel`): the loss equals `BertForPreTraining`'s full forward, at a fraction of the cost.

Sums travel per example (loss sum, correct and masked counts) and are gathered with the example index, so
under `accelerate launch` each example is counted exactly once.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bertcli.errors import UsageError
from bertcli.report import EvalResult
from bertcli.schema.eval import EvalConfig

SUMS = ["mlm_loss_sum", "mlm_correct", "mlm_count", "nsp_loss_sum", "nsp_correct", "nsp_count"]


def evaluate_pretraining(path: str, plan, cfg: EvalConfig, accelerator) -> EvalResult:
    """Pretraining metrics of the model in `path` on the plan's data."""
    from bertcli.tasks.evaluation import import_modeling

    start = time.perf_counter()
    import_modeling()
    from bertcli.masking import EpochIndexed, PretrainingCollator
    from bertcli.modeling import PretrainingModel

    imported = time.perf_counter()
    model, tok = load_pretrained(path, cfg)
    with tempfile.TemporaryDirectory(prefix="bertcli-eval-") as work:
        data = Path(str(plan.data)) if _is_dir(plan.data) else str(plan.data)
        dataset = pretraining_dataset(data, tok, cfg, work, tokenizer_dir=cfg.model.tokenizer_path or path)
        _check_fits(dataset, model, path)
        # a BertForMaskedLM (pretrain's final/ after objective mlm) has no NSP head: MLM metrics only
        with_nsp = "next_sentence_label" in dataset.column_names and hasattr(model.cls, "seq_relationship")
        lengths = np.fromiter((len(x) for x in dataset["input_ids"]), dtype=np.int64, count=len(dataset))
        order = np.argsort(-lengths, kind="stable")
        m = cfg.masking
        collator = _IndexedCollator(
            PretrainingCollator(tok, m.seed, m.mlm_probability, m.mask_replace_prob, m.random_replace_prob,
                                m.whole_word_mask, with_nsp)
        )  # fmt: skip
        loader = torch.utils.data.DataLoader(
            _Ordered(EpochIndexed(dataset, epoch=0), order),
            batch_size=cfg.data.batch_size,
            collate_fn=collator,
        )
        scorer = accelerator.prepare_model(PretrainingModel(model, with_nsp).eval(), evaluation_mode=True)
        loader = accelerator.prepare_data_loader(loader)
        loaded = time.perf_counter()
        sums = _accumulate(scorer, loader, accelerator, len(dataset))
    computed = time.perf_counter()
    metrics = pretraining_metrics(sums, with_nsp)
    done = time.perf_counter()
    runtime = {"import_s": imported - start, "load_s": loaded - imported, "compute_s": computed - loaded}
    runtime["metrics_s"] = done - computed
    runtime["total_s"] = done - imported
    return EvalResult(model=path, task="pretraining", metrics=metrics, examples=len(dataset), runtime=runtime)


def load_pretrained(path: str, cfg: EvalConfig):
    """(BertForPreTraining, or BertForMaskedLM when the folder holds one, in eval mode; tokenizer); an error if its
    MLM or NSP head would be new weights."""
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    from bertcli.model_dir import check_checkpoint_dir, load_tokenizer_for
    from bertcli.tasks.evaluation import quiet_loading

    raw = check_checkpoint_dir(Path(path))
    tok = load_tokenizer_for(Path(path), cfg.model.tokenizer_path, raw["vocab_size"])
    masked_lm = "BertForMaskedLM" in (raw.get("architectures") or [])
    auto = AutoModelForMaskedLM if masked_lm else AutoModelForPreTraining
    try:
        with quiet_loading():
            model, info = auto.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: cannot load it as a pretraining model ({str(err).splitlines()[0]})") from None
    missing = [k for k in info.get("missing_keys", []) if k.startswith("cls.")]
    if missing or type(model).__name__ not in ("BertForPreTraining", "BertForMaskedLM"):
        raise UsageError(f"{path} has no trained MLM and NSP heads (a {type(model).__name__}, missing {missing})")
    return model.eval(), tok


def _is_dir(data) -> bool:
    return Path(str(data)).is_dir()


def pretraining_dataset(data, tok, cfg: EvalConfig, work: str, tokenizer_dir: str):
    """The split to score: a tokenize output folder's, or raw text tokenized with the model's tokenizer."""
    if isinstance(data, Path) and data.is_dir():
        root = data / "dataset" if (data / "dataset").is_dir() else data
        if not (root / "dataset_dict.json").is_file():
            raise UsageError(f"{data} is not a `bertcli tokenize` output folder (no dataset/dataset_dict.json)")
        _check_vocab(data, tok)
        splits = json.loads((root / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        if cfg.data.split not in splits:
            raise UsageError(f"{data} has no split '{cfg.data.split}' (splits: {', '.join(splits)}); set data.split")
        return _load_split(root, cfg.data.split, data)
    return _tokenize_raw_text(str(data), cfg, work, tokenizer_dir)


def _load_split(root: Path, split: str, shown: Path):
    """One split of a saved DatasetDict, read on its own (memory-mapped): the others are neither read nor needed."""
    from datasets import Dataset

    if not any((root / split).glob("*.arrow")):
        raise UsageError(f"split '{split}' of {shown} is empty; set data.split to another split")
    dataset = Dataset.load_from_disk(str(root / split))
    if len(dataset) == 0:
        raise UsageError(f"split '{split}' of {shown} is empty; set data.split to another split")
    return dataset


def _check_vocab(data: Path, tok) -> None:
    stats = data / "stats.json"
    if stats.is_file():
        size = json.loads(stats.read_text(encoding="utf-8")).get("vocab_size")
        if size is not None and size != len(tok):
            raise UsageError(
                f"{data} was tokenized with a vocabulary of {size} tokens, the model's tokenizer has {len(tok)}: "
                "evaluate on raw text instead (it is tokenized with the model's tokenizer)"
            )


def _tokenize_raw_text(pattern: str, cfg: EvalConfig, work: str, tokenizer_dir: str):
    """Raw text -> NSP instances with the model's tokenizer, through the tokenize pipeline (one split)."""
    from bertcli.pipelines.tokenize import run_tokenize
    from bertcli.schema.tokenize import TokenizeConfig

    language = cfg.data.language if cfg.data.language != "auto" else _text_language(pattern, cfg)
    tcfg = TokenizeConfig(
        # max_cut_share 1: eval scores the text as data.max_seq_length cuts it (tokenize's guard names its own keys)
        input={
            "paths": [pattern],
            "format": cfg.data.text_format,
            "text_field": cfg.data.text_field,
            "language": language,  # its word segmentation (jieba for zh) matters to whole-word masking only
            "segment_words": "auto" if cfg.masking.whole_word_mask else "none",
            "max_cut_share": 1.0,
        },
        tokenizer={"path": tokenizer_dir},
        nsp={"max_seq_length": cfg.data.max_seq_length, "seed": cfg.masking.seed},
        split={"validation_fraction": 0.0},
        output={"dir": str(Path(work) / "tokenized")},
        run={"num_proc": 1},
    )
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the report (JUnit, Markdown) only
        run_tokenize(tcfg, overwrite=True)
    return _load_split(Path(work) / "tokenized" / "dataset", "train", Path(pattern))


def _text_language(pattern: str, cfg: EvalConfig, documents: int = 50) -> str:
    """zh when most letters of the first documents of the raw text are Chinese characters, else en (what
    data.language auto means). A file that cannot be read is left to the tokenize run, which names the problem."""
    from itertools import islice

    from bertcli.corpus import read_documents, resolve_inputs

    try:
        files = [str(f) for f in resolve_inputs([pattern])]
        docs = islice(read_documents(files, cfg.data.text_format, cfg.data.text_field), documents)
        text = "".join(s for doc in docs for s in doc["sentences"])
    except (UsageError, OSError, ValueError):
        return "en"
    letters = [c for c in text if c.isalpha()]
    chinese = sum("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in letters)
    return "zh" if letters and chinese > len(letters) / 2 else "en"


def _check_fits(dataset, model, path: str) -> None:
    longest = max(len(x) for x in dataset["input_ids"])
    limit = model.config.max_position_embeddings
    if longest > limit:
        raise UsageError(
            f"the data has sequences of {longest} tokens but {path} takes at most {limit}; "
            f"re-tokenize with nsp.max_seq_length <= {limit} (or set data.max_seq_length for raw text)"
        )


class _Ordered(torch.utils.data.Dataset):
    """`base` read in `order` (longest first), one Arrow read per batch."""

    def __init__(self, base, order: np.ndarray):
        self.base, self.order = base, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, positions) -> list[dict]:
        return self.base.__getitems__([int(self.order[p]) for p in positions])


class _IndexedCollator:
    """The pretraining collator, plus each example's index (its mask key) for de-duplicating gathers."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collator(rows)
        batch["example_index"] = torch.tensor([r["mask_key"][1] for r in rows], dtype=torch.long)
        return batch


@torch.inference_mode()
def _accumulate(scorer, loader, accelerator, n: int) -> dict[str, np.ndarray]:
    """Per-example sums in file order (float64); every example filled exactly once."""
    sums = {name: np.zeros(n, dtype=np.float64) for name in SUMS}
    seen = np.zeros(n, dtype=bool)
    for batch in loader:
        index = batch.pop("example_index")
        out = scorer(**batch)
        names = [name for name in SUMS if name in out]
        gathered = accelerator.gather_for_metrics((index, *(out[name].float() for name in names)))
        index = gathered[0].cpu().numpy()
        seen[index] = True
        for name, values in zip(names, gathered[1:], strict=True):
            sums[name][index] = values.cpu().numpy()  # assignment, not +=: a repeated example counts once
    if not seen.all():
        raise RuntimeError(f"{int((~seen).sum())} examples were not evaluated")
    return sums


def pretraining_metrics(sums: dict[str, np.ndarray], with_nsp: bool) -> dict[str, float]:
    """Token-weighted MLM loss (as BertForPreTraining averages it, over the whole split), its perplexity, and
    masked-token accuracy; NSP loss and accuracy per pair."""
    count = sums["mlm_count"].sum()
    if count == 0:
        raise UsageError("no token was masked (the sequences are too short?); raise masking.mlm_probability")
    mlm_loss = float(sums["mlm_loss_sum"].sum() / count)
    metrics = {
        "mlm_loss": mlm_loss,
        "perplexity": float(math.exp(mlm_loss)) if mlm_loss < 700 else math.inf,
        "mlm_accuracy": float(sums["mlm_correct"].sum() / count),
    }
    if with_nsp:
        pairs = sums["nsp_count"].sum()
        metrics["nsp_loss"] = float(sums["nsp_loss_sum"].sum() / pairs)
        metrics["nsp_accuracy"] = float(sums["nsp_correct"].sum() / pairs)
    return metrics
