"""`run_tokenize`: raw text -> tokenizer/ + dataset/ (NSP instances, train and validation) + stats.json.

Every step runs through `datasets` (Arrow files on disk, memory-mapped), so memory stays flat as the corpus grows:

    [train the vocabulary] -> read + split sentences + tokenize (num_proc) -> split documents -> NSP pairs (num_proc)
    -> save
"""

from __future__ import annotations

import os
import shutil
import tempfile
from itertools import islice
from pathlib import Path

import numpy as np

from bertcli.config import dump_config
from bertcli.corpus import Shard, describe_formats, file_format, plan_units, read_documents, read_shard, resolve_inputs
from bertcli.errors import UsageError
from bertcli.nsp import MIN_DOCUMENTS, build_nsp_batch
from bertcli.outputs import atomic_dir, write_json, write_text
from bertcli.run_output import RunOutput
from bertcli.schema.tokenize import TokenizeConfig
from bertcli.tokenizer import SentenceEncoder, encode_documents, load_tokenizer, train_tokenizer
from bertcli.vocab import add_domain_words, check_extendable
from bertcli.words import WordBoundaries, check_segmenter, group_words, segmenter_for

OUTPUTS = ("tokenizer", "dataset", "stats.json", "config.yaml")  # what --overwrite replaces of an earlier run
MIN_UNITS = 64  # units of the corpus that the workers share out (see _tokenize_corpus)
MAX_UNIT_BYTES = 1 << 24


def run_tokenize(cfg: TokenizeConfig, overwrite: bool = False, preview: int = 0) -> dict:
    """Build the tokenizer and the NSP pretraining dataset into ``cfg.output.dir``; return the statistics."""
    files = [str(p) for p in resolve_inputs(cfg.input.paths)]
    if cfg.tokenizer.path:
        tok = load_tokenizer(cfg.tokenizer.path)  # fail on a bad folder before any long work
        check_extendable(tok, cfg.tokenizer)
    check_segmenter(segmenter_for(cfg.input.segment_words, cfg.input.language), cfg.input.segment_words)
    inputs = {"input.paths": files, "tokenizer.path": cfg.tokenizer.path}
    with RunOutput.plan(cfg.output.dir, overwrite, OUTPUTS, inputs) as output:  # one run at a time in the folder
        out = output.create()
        work = Path(tempfile.mkdtemp(prefix=".tmp-work-", dir=out))  # datasets' cache for this run only
        try:
            _check_not_empty(files, cfg)
            if not cfg.tokenizer.path:
                tok = train_tokenizer(_sentence_batches(files, cfg), cfg.tokenizer, cfg.nsp.max_seq_length)
            added: dict = {}  # what tokenizer.add_words appended to the given vocabulary, for stats.json
            if cfg.tokenizer.add_words:  # words counted as the given tokenizer splits them (own cache folder)
                counted = _tokenize_corpus(files, tok, cfg, Path(tempfile.mkdtemp(dir=work)))
                tok, added = add_domain_words(tok, counted, cfg.tokenizer, work, _sentence_batches(files, cfg))
            docs = _tokenize_corpus(files, tok, cfg, work)
            _check_cut_share(docs, cfg, files)
            splits = _split_documents(docs, cfg)
            instances = {
                name: _build_instances(docs, rows, tok, cfg, work / f"{name}.arrow") for name, rows in splits.items()
            }
            stats = _statistics(docs, splits, instances, tok, cfg, files) | added
            _save(out, tok, instances, stats, cfg)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        output.commit()
    _print_summary(output.out, stats)
    if preview:
        print_preview(instances["train"], tok, preview)
    return stats


def _check_not_empty(files: list[str], cfg: TokenizeConfig) -> None:
    """Before any long work: the corpus has text, and documents enough for every split (reading stops there).
    With input.format auto, says which layout the files are read in."""
    if cfg.input.format == "auto":
        print(describe_formats(files), flush=True)
    needed = MIN_DOCUMENTS * (2 if cfg.split.validation_fraction > 0 else 1)
    args = (cfg.input.format, cfg.input.text_field, cfg.input.language, cfg.input.on_bad_bytes)
    found = sum(1 for _ in islice(read_documents(files, *args), needed))
    if not found:
        raise UsageError(f"empty corpus: no text in {', '.join(files)}")
    _split_sizes(found, cfg)


def _sentence_batches(files: list[str], cfg: TokenizeConfig, batch_size: int = 1000):
    """Sentences for training the vocabulary, in batches, read straight from the files."""
    batch: list[str] = []
    args = (cfg.input.format, cfg.input.text_field, cfg.input.language, cfg.input.on_bad_bytes)
    for doc in read_documents(files, *args):
        batch.extend(doc["sentences"])
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode_units(
    batch: dict,
    units: list[list[Shard]],
    cfg: TokenizeConfig,
    encoder: SentenceEncoder,
    words: WordBoundaries,
    max_tokens: int,
    unk_id: int,
):
    """Read, split and tokenize units of the corpus (stretches of whole documents), `run.batch_size` documents at
    a time; a unit's documents come out in their order in the files."""
    import pyarrow as pa

    args = (cfg.input.format, cfg.input.text_field, cfg.input.language, cfg.input.on_bad_bytes)
    tables, docs = [], []
    for shard in (shard for k in batch["unit"] for shard in units[k]):
        for doc in read_shard(shard, *args):
            docs.append(doc)
            if len(docs) == cfg.run.batch_size:
                tables.append(_encode_documents(docs, encoder, words, max_tokens, unk_id))
                docs = []
    if docs or not tables:
        tables.append(_encode_documents(docs, encoder, words, max_tokens, unk_id))
    return pa.concat_tables(tables)


def _encode_documents(docs: list[dict], encoder: SentenceEncoder, words: WordBoundaries, max_tokens: int, unk_id: int):
    """Documents -> ids, as an Arrow ``list<list<int32>>`` column, their word-start flags (``list<list<int8>>``)
    and per-document counts for the statistics.

    Sentences longer than `max_tokens` are cut (and counted); sentences left empty by normalisation are dropped.
    """
    import pyarrow as pa

    offsets: dict[int, list] | None = {} if words.needs_offsets() else None
    values, lengths = encode_documents(encoder, [doc["sentences"] for doc in docs], offsets)
    flags = words([s for doc in docs for s in doc["sentences"]], values, lengths, offsets or {})
    sentence_doc = np.repeat(np.arange(len(docs)), [len(doc["sentences"]) for doc in docs])
    starts = np.cumsum(lengths) - lengths
    position = np.arange(len(values)) - np.repeat(starts, lengths)  # of each token within its sentence
    values, flags = values[position < max_tokens], flags[position < max_tokens]  # long sentences cut
    truncated = np.bincount(sentence_doc, weights=lengths > max_tokens, minlength=len(docs)).astype(np.int64)
    cut = np.bincount(sentence_doc, weights=np.maximum(lengths - max_tokens, 0), minlength=len(docs))
    kept = lengths > 0  # sentences left empty by normalisation are dropped
    sentence_lengths, sentence_doc = np.minimum(lengths[kept], max_tokens), sentence_doc[kept]
    doc_sizes = np.bincount(sentence_doc, minlength=len(docs))
    sent_offsets = np.concatenate(([0], np.cumsum(sentence_lengths)))
    doc_offsets = np.concatenate(([0], np.cumsum(doc_sizes))).astype(np.int64)
    doc_token_offsets = sent_offsets[doc_offsets]
    unk = np.concatenate(([0], np.cumsum(values == unk_id)))[doc_token_offsets]
    sentences = pa.ListArray.from_arrays(pa.array(sent_offsets.astype(np.int32)), pa.array(values, pa.int32()))
    word_starts = pa.ListArray.from_arrays(pa.array(sent_offsets.astype(np.int32)), pa.array(flags, pa.int8()))
    return pa.table(
        {
            "ids": pa.ListArray.from_arrays(pa.array(doc_offsets.astype(np.int32)), sentences),
            "word_starts": pa.ListArray.from_arrays(pa.array(doc_offsets.astype(np.int32)), word_starts),
            "bad_bytes": pa.array([doc["bad_bytes"] for doc in docs], pa.int64()),
            "num_tokens": pa.array(np.diff(doc_token_offsets)),
            "num_unk": pa.array(np.diff(unk)),
            "num_truncated": pa.array(truncated, type=pa.int64()),
            "num_cut_tokens": pa.array(cut.astype(np.int64), type=pa.int64()),
        }
    )


def _tokenize_corpus(files: list[str], tok, cfg: TokenizeConfig, work: Path):
    """Tokenized documents. Worker processes read, split and tokenize units of the files side by side (a unit is
    a stretch of whole documents); the documents are in the units' fixed shuffled order, which does not depend on
    num_proc. Documents left without tokens (only characters the normaliser removes) are dropped."""
    from datasets import Dataset, Features, Sequence, Value

    os.environ["TOKENIZERS_PARALLELISM"] = "true" if cfg.run.num_proc == 1 else "false"
    # Units of equal bytes (at most MAX_UNIT_BYTES, which bounds a worker's memory), handed to the workers in a
    # fixed shuffled order: long documents (whole books often come first) spread evenly over the workers, and the
    # order, the same for any num_proc, keeps the output independent of num_proc.
    total = sum(os.path.getsize(f) for f in files)
    units = plan_units(files, cfg.input.format, max(MIN_UNITS, -(-total // MAX_UNIT_BYTES)))
    order = np.random.default_rng(0).permutation(len(units))
    features = Features(
        {
            "ids": Sequence(Sequence(Value("int32"))),
            "word_starts": Sequence(Sequence(Value("int8"))),
            "bad_bytes": Value("int64"),
            "num_tokens": Value("int64"),
            "num_unk": Value("int64"),
            "num_truncated": Value("int64"),
            "num_cut_tokens": Value("int64"),
        }
    )
    docs = Dataset.from_dict({"unit": order}).map(
        _encode_units,
        batched=True,
        batch_size=1,
        num_proc=cfg.run.num_proc if cfg.run.num_proc > 1 else None,
        fn_kwargs={
            "units": units,
            "cfg": cfg,
            "encoder": SentenceEncoder(tok.backend_tokenizer),
            "words": WordBoundaries(tok.backend_tokenizer, segmenter_for(cfg.input.segment_words, cfg.input.language)),
            "max_tokens": cfg.nsp.max_seq_length - 3,
            "unk_id": tok.unk_token_id,
        },
        remove_columns=["unit"],
        features=features,
        cache_file_name=str(work / "documents.arrow"),
        desc="Reading and tokenizing",
        new_fingerprint="documents",  # a fresh cache directory per run: no need to hash the tokenizer and kwargs
    )
    empty = docs.data.column("num_tokens").to_numpy() == 0
    return docs.select(np.flatnonzero(~empty)).flatten_indices() if empty.any() else docs


def _cut_tokens(docs) -> tuple[int, int]:
    """(tokens kept, tokens cut off sentences longer than nsp.max_seq_length - 3)."""
    import pyarrow.compute as pc

    if not len(docs):
        return 0, 0
    return tuple(int(pc.sum(docs.data.column(c)).as_py() or 0) for c in ("num_tokens", "num_cut_tokens"))


def _check_cut_share(docs, cfg: TokenizeConfig, files: list[str]) -> None:
    """Before anything is saved: stop when the cut of long sentences drops more than input.max_cut_share of the
    tokens read, which is what text read in the wrong layout (paragraphs as sentences) looks like."""
    kept, cut = _cut_tokens(docs)
    share = cut / (kept + cut) if kept + cut else 0.0
    if share <= cfg.input.max_cut_share:
        return
    formats = sorted({file_format(f, cfg.input.format) for f in files})
    fix = (
        "if the files hold a paragraph or a document per line, set input.format: paragraphs"
        if "sentences" in formats
        else f"raise nsp.max_seq_length (now {cfg.nsp.max_seq_length})"
    )
    raise UsageError(
        f"cutting sentences to nsp.max_seq_length {cfg.nsp.max_seq_length} would drop {share:.1%} of the corpus's "
        f"tokens ({cut:,} of {kept + cut:,}; read as {', '.join(formats)}), more than input.max_cut_share "
        f"{cfg.input.max_cut_share:g}: {fix}; or set input.max_cut_share=1 to keep the cut"
    )


def _split_documents(docs, cfg: TokenizeConfig) -> dict[str, np.ndarray]:
    """Rows of the train and validation documents: the split is by whole documents, so no validation text leaks
    into training pairs. Rows stay in corpus order within each split."""
    n_val = _split_sizes(len(docs), cfg)["validation"]
    order = np.random.default_rng(cfg.split.seed).permutation(len(docs))
    return {"train": np.sort(order[n_val:]), "validation": np.sort(order[:n_val])}


def _split_sizes(n: int, cfg: TokenizeConfig) -> dict[str, int]:
    """Documents per split: `split.validation_fraction` of the `n` held out, and at least MIN_DOCUMENTS in each
    split (a random B comes from another document of the same split). Too few is an error, never wrong labels."""
    fraction = cfg.split.validation_fraction
    n_val = 0 if fraction == 0 else max(0, min(max(MIN_DOCUMENTS, round(fraction * n)), n - MIN_DOCUMENTS))
    sizes = {"train": n - n_val, "validation": n_val}
    for split, count in sizes.items():
        if count < MIN_DOCUMENTS and (split == "train" or fraction > 0):
            hint = "add documents (a blank line ends a document in text files, each jsonl line is one)"
            if fraction > 0 and n >= MIN_DOCUMENTS:
                hint += ", or set split.validation_fraction=0 to keep no validation split"
            raise UsageError(
                f"the {split} split would hold {count} document(s) of the corpus's {n}; next-sentence prediction "
                f"needs at least {MIN_DOCUMENTS} in every split, since B is drawn from another document: {hint}"
            )
    return sizes


def _build_instances(docs, rows: np.ndarray, tok, cfg: TokenizeConfig, cache_file: Path):
    """NSP instances of one split, written to `cache_file` (the split's list of rows lives in memory, and datasets
    would otherwise keep the output of a map over an in-memory dataset in memory too)."""
    from datasets import Dataset, Features, Sequence, Value

    features = Features(
        {
            "input_ids": Sequence(Value("int32")),
            "token_type_ids": Sequence(Value("int8")),
            "special_tokens_mask": Sequence(Value("int8")),
            "next_sentence_label": Value("int8"),
            "word_starts": Sequence(Value("int8")),
        }
    )
    fn_kwargs = dict(
        documents=docs.select_columns(["ids", "word_starts"]),
        split_rows=rows,
        seed=cfg.nsp.seed,
        dupe_factor=cfg.nsp.dupe_factor,
        max_seq_length=cfg.nsp.max_seq_length,
        short_seq_prob=cfg.nsp.short_seq_prob,
        nsp_probability=cfg.nsp.nsp_probability,
        cls_id=tok.cls_token_id,
        sep_id=tok.sep_token_id,
    )
    if len(rows) == 0:  # datasets would skip the function and leave no columns
        return Dataset.from_dict({name: [] for name in features}, features=features)
    split = Dataset.from_dict({"row": rows.astype(np.int64)}).with_format("arrow")
    return split.map(
        build_nsp_batch,
        batched=True,
        with_indices=True,
        batch_size=cfg.run.batch_size,
        num_proc=_procs(cfg, len(split)),
        fn_kwargs=fn_kwargs,
        remove_columns=["row"],
        features=features,
        cache_file_name=str(cache_file),
        desc="Building NSP pairs",
        new_fingerprint=f"nsp-{cache_file.stem}",
    ).with_format(None)


def _procs(cfg: TokenizeConfig, n: int) -> int | None:
    """Worker processes for `n` documents: none for what fits in one batch (starting a pool costs more)."""
    procs = min(cfg.run.num_proc, -(-n // cfg.run.batch_size))
    return procs if procs > 1 else None


def _statistics(docs, splits, instances, tok, cfg: TokenizeConfig, files: list[str]) -> dict:
    import pyarrow.compute as pc

    def total(ds, column: str) -> int:
        return int(pc.sum(ds.data.column(column)).as_py() or 0) if len(ds) else 0

    sentences_per_doc = pc.list_value_length(docs.data.column("ids"))
    lengths = np.concatenate(
        [pc.list_value_length(ds.data.column("input_ids")).to_numpy(zero_copy_only=False) for ds in instances.values()]
    )
    labels = np.concatenate([ds.data.column("next_sentence_label").to_numpy() for ds in instances.values()])
    tokens, cut = total(docs, "num_tokens"), total(docs, "num_cut_tokens")
    edges = list(range(0, cfg.nsp.max_seq_length + 1, max(1, cfg.nsp.max_seq_length // 8)))
    if edges[-1] != cfg.nsp.max_seq_length:
        edges.append(cfg.nsp.max_seq_length)
    counts, _ = np.histogram(lengths, bins=[*edges[:-1], edges[-1] + 1])
    return {
        "input_files": files,
        "input_formats": {name: file_format(name, cfg.input.format) for name in files},
        "max_seq_length": cfg.nsp.max_seq_length,
        "vocab_size": len(tok),
        "documents": len(docs),
        "documents_per_split": {name: len(split) for name, split in splits.items()},
        "single_sentence_documents": int(pc.sum(pc.equal(sentences_per_doc, 1)).as_py() or 0),
        "sentences": int(pc.sum(sentences_per_doc).as_py() or 0),
        "tokens": tokens,
        "truncated_sentences": total(docs, "num_truncated"),
        "cut_tokens": cut,  # dropped from those sentences; tokens counts what was kept
        "cut_token_share": round(cut / (tokens + cut), 6) if tokens + cut else 0.0,
        "replaced_bad_bytes": total(docs, "bad_bytes"),
        "unk_rate": round(total(docs, "num_unk") / tokens, 6) if tokens else 0.0,
        "word_segmentation": segmenter_for(cfg.input.segment_words, cfg.input.language) or "none",
        "tokens_per_word": round(tokens / words, 4) if (words := _word_count(docs)) else 0.0,
        "instances": int(len(lengths)),
        "instances_per_split": {name: len(ds) for name, ds in instances.items()},
        "random_next_ratio": round(float(labels.mean()), 4) if len(labels) else 0.0,
        "mean_instance_length": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
        "length_histogram": {
            f"{lo}-{hi - 1 if i < len(edges) - 2 else hi}": int(n)
            for i, (lo, hi, n) in enumerate(zip(edges[:-1], edges[1:], counts))
        },
    }


def _word_count(docs) -> int:
    """Words of the corpus, as whole-word masking sees them (what the segmentation changes: tokens_per_word)."""
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_flatten(pc.list_flatten(docs.data.column("word_starts")))).as_py() or 0)


def _save(out: Path, tok, instances: dict, stats: dict, cfg: TokenizeConfig) -> None:
    from datasets import DatasetDict

    with atomic_dir(out / "tokenizer") as tmp:
        tok.save_pretrained(str(tmp))
    # One shard per 500 MB as datasets does, but at least one: an empty split saved with none cannot be loaded.
    shards = {name: max(1, -(-ds.data.nbytes // 500_000_000)) for name, ds in instances.items()}
    with atomic_dir(out / "dataset") as tmp:
        DatasetDict(instances).save_to_disk(str(tmp), num_shards=shards)
    write_json(out / "stats.json", stats)
    write_text(out / "config.yaml", dump_config(cfg, "tokenize"))


def _print_summary(out: Path, stats: dict) -> None:
    per_split = stats["instances_per_split"]
    print(
        f"tokenize: {stats['documents']:,} documents, {stats['sentences']:,} sentences, {stats['tokens']:,} tokens "
        f"-> {per_split['train']:,} train / {per_split['validation']:,} validation instances "
        f"(random next {stats['random_next_ratio']:.1%}, [UNK] {stats['unk_rate']:.3%}, "
        f"{stats['truncated_sentences']:,} long sentences cut, {stats['cut_token_share']:.1%} of the tokens)"
    )
    print(f"saved: {out}/tokenizer, {out}/dataset, {out}/stats.json, {out}/config.yaml")


def print_preview(instances, tok, n: int) -> None:
    """Show instances the way a learner wants to see them: every token with its position and segment, and the
    words that whole-word masking masks as one (喜欢, or play ##ing)."""
    for k in range(min(n, len(instances))):
        row = instances[k]
        tokens = tok.convert_ids_to_tokens(row["input_ids"])
        starts = row.get("word_starts") or [1] * len(tokens)
        label = row["next_sentence_label"]
        meaning = "B is a random segment from another document" if label else "B follows A in the same document"
        print(f"\n── instance {k} · {len(tokens)} tokens · next_sentence_label={label} ({meaning})")
        print("   BERT's input = token embedding + segment embedding + position embedding, summed per position")
        for part, seg in (("A", 0), ("B", 1)):
            kept = [
                (t, w)
                for t, w, s, m in zip(tokens, starts, row["token_type_ids"], row["special_tokens_mask"])
                if s == seg and not m
            ]
            words = group_words([t for t, _ in kept], [w for _, w in kept])
            print(f"   segment {part} (segment id {seg}): {tok.convert_tokens_to_string([t for t, _ in kept])}")
            print(f"     words, each masked whole by whole_word_mask: {' | '.join(''.join(w) for w in words)}")
        print(f"   {'pos':>4}  {'token':<18}{'segment':>8}")
        seen_b = False
        for pos, (token, seg, start) in enumerate(zip(tokens, row["token_type_ids"], starts)):
            mark = ""
            if pos == 1:
                mark = "← A starts"
            elif seg == 1 and not seen_b:
                mark, seen_b = "← B starts", True
            elif not start:
                mark = "  (same word as the token above)"
            print(f"   {pos:>4}  {token:<18}{seg:>8}  {mark}".rstrip())
