"""Domain vocabulary: extend a released WordPiece tokenizer with the corpus's frequent long words, and grow a
model's embeddings to match.

A released tokenizer splits domain words into many pieces ("immunohistochemistry" -> 6), which costs sequence length
and learning. `add_domain_words` counts the whole words of the corpus as the tokenizer itself splits them, takes the
most frequent that become `min_pieces` or more pieces, and appends them to the WordPiece vocabulary itself (not as
added tokens: those would also match inside longer words and skip normalisation), at new ids after every old one.
`grow_embeddings` then gives a checkpoint one embedding row per new word, started at the mean of its old pieces.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bertcli.errors import UsageError
from bertcli.schema.tokenize import TokenizerSection
from bertcli.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from transformers import BertForPreTraining

INIT = "mean of the old tokenizer's pieces"
LISTED_WORDS = 20  # grow_embeddings names the words when there are at most this many
COUNT_BATCH = 10_000  # documents counted at a time: bounds the memory of the counting, not its speed


def add_domain_words(tok, docs, cfg: TokenizerSection, work: Path, sentence_batches=()) -> tuple[object, dict]:
    """Extend `tok` (a fast WordPiece tokenizer) with up to `cfg.add_words` words of the tokenized corpus `docs` (a
    dataset whose "ids" column holds each document's sentences as ids of `tok`); return the extended tokenizer and
    the record for stats.json: each added word with its count and the pieces `tok` made of it, and how often a word
    became [UNK] (never a candidate), with examples found in `sentence_batches` (the corpus's raw sentences)."""
    model = _wordpiece_model(tok)
    prefix = model["continuing_subword_prefix"]
    vocab = tok.get_vocab()
    continuation = np.zeros(max(vocab.values()) + 1, dtype=bool)
    continuation[[i for t, i in vocab.items() if t.startswith(prefix)]] = True
    counts = count_long_words(docs, continuation, cfg.add_words_min_pieces)
    chosen = _most_frequent(tok, counts, cfg, prefix)
    new_tok = extend_vocabulary(tok, [word for word, _, _ in chosen], work)
    words = [{"word": word, "count": count, "pieces": pieces} for word, count, pieces in chosen]
    unknown = count_unk_words(docs, tok.unk_token_id)
    unk = {"occurrences": unknown, "examples": unk_examples(tok, sentence_batches) if unknown else [], "why": UNK_WHY}
    shown = ", ".join(f"{w['word']} ×{w['count']} ({' '.join(w['pieces'])})" for w in words[:3])
    print(
        f"tokenizer: added {len(words)} of the {cfg.add_words} words asked for (split into "
        f"{cfg.add_words_min_pieces}+ pieces, seen {cfg.add_words_min_count}+ times)" + (f": {shown}" if shown else ""),
        flush=True,
    )
    if unknown:
        examples = ", ".join(unk["examples"])
        print(f"tokenizer: {unknown:,} words of the corpus map to {tok.unk_token} and cannot be added "
              f"(e.g. {examples}); stats.json unk_words_not_added says why", flush=True)  # fmt: skip
    return new_tok, {"original_vocab_size": len(tok), "added_words": words, "unk_words_not_added": unk}


UNK_WHY = (
    "add_words proposes words the tokenizer splits into pieces; a word it maps to [UNK] (a character missing from "
    "its vocabulary, or a word longer than its max_input_chars_per_word) has no pieces to count, so it is never "
    "proposed. occurrences counts such words in the corpus."
)
UNK_EXAMPLES = 5  # distinct [UNK] words named in stats.json
UNK_SEARCH = 200  # batches of raw sentences searched for them at most: bounds the search on a large corpus


def count_unk_words(docs, unk_id: int | None) -> int:
    """How many words of the tokenized corpus are [UNK] (WordPiece maps a whole word to one [UNK])."""
    import pyarrow.compute as pc

    if unk_id is None:
        return 0
    total = 0
    for batch in docs.select_columns(["ids"]).with_format("arrow").iter(batch_size=COUNT_BATCH):
        values = pc.list_flatten(pc.list_flatten(batch.column("ids")))
        total += int(pc.sum(pc.equal(values, unk_id)).as_py() or 0)
    return total


def unk_examples(tok, sentence_batches, limit: int = UNK_EXAMPLES) -> list[str]:
    """Up to `limit` distinct words of the raw sentences that `tok` maps to [UNK], as they appear in the text."""
    found: list[str] = []
    for batch in islice(sentence_batches, UNK_SEARCH):
        for sentence, encoding in zip(batch, tok.backend_tokenizer.encode_batch(batch, add_special_tokens=False)):
            for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
                word = sentence[start:end]
                if token_id == tok.unk_token_id and word not in found:
                    found.append(word)
                    if len(found) == limit:
                        return found
    return found


def count_long_words(docs, continuation: np.ndarray, min_pieces: int) -> Counter:
    """How often each word of `min_pieces` or more pieces occurs, keyed by its tuple of piece ids.

    A word starts at every piece that is not a continuation piece ("##ing") and at every sentence start, so the
    words are found with array operations over all ids at once; words of the same length are counted together by
    `np.unique` over their rows of ids. Python only touches each distinct long word once per batch of documents.
    """
    import pyarrow.compute as pc

    counts: Counter = Counter()
    # Arrow batches (not docs.data, which ignores a select()'s indices), large enough to make Python's part small
    for batch in docs.select_columns(["ids"]).with_format("arrow").iter(batch_size=COUNT_BATCH):
        sentences = pc.list_flatten(batch.column("ids"))
        lengths = pc.list_value_length(sentences).to_numpy(zero_copy_only=False)
        values = pc.list_flatten(sentences).to_numpy(zero_copy_only=False)
        if not len(values):
            continue
        start = ~continuation[values]
        start[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
        starts = np.flatnonzero(start)
        pieces = np.diff(np.append(starts, len(values)))
        for n in np.unique(pieces[pieces >= min_pieces]):
            rows = values[starts[pieces == n][:, None] + np.arange(n)]
            words, seen = np.unique(rows, axis=0, return_counts=True)
            counts.update(dict(zip(map(tuple, words.tolist()), seen.tolist())))
    return counts


def _most_frequent(tok, counts: Counter, cfg: TokenizerSection, prefix: str) -> list[tuple[str, int, list[str]]]:
    """The `cfg.add_words` most frequent words (ties in alphabetical order) seen `add_words_min_count` times, as
    (word, count, pieces). A word is kept only if the tokenizer splits it, alone, into exactly the pieces counted:
    a sentence cut at max_seq_length can leave the start of a word, which is no word of the corpus."""
    special = set(tok.all_special_ids)
    ranked = []
    for ids, count in counts.items():
        if count >= cfg.add_words_min_count and ids[0] not in special:
            pieces = tok.convert_ids_to_tokens(list(ids))
            ranked.append((-count, pieces[0] + "".join(p[len(prefix) :] for p in pieces[1:]), ids, pieces))
    ranked.sort()
    chosen: list[tuple[str, int, list[str]]] = []
    for k in range(0, len(ranked), 2 * cfg.add_words):
        batch = ranked[k : k + 2 * cfg.add_words]
        encoded = tok.backend_tokenizer.encode_batch_fast([word for _, word, _, _ in batch], add_special_tokens=False)
        for (count, word, ids, pieces), e in zip(batch, encoded):
            if tuple(e.ids) == ids and len(chosen) < cfg.add_words:
                chosen.append((word, -count, pieces))
        if len(chosen) == cfg.add_words:
            break
    return chosen


def extend_vocabulary(tok, words: list[str], work: Path):
    """`tok` with `words` appended to its WordPiece vocabulary at new ids after every old one (added tokens
    included), loaded back the way AutoTokenizer loads the saved folder, so every user of it sees the same ids."""
    with tempfile.TemporaryDirectory(prefix="extended-tokenizer-", dir=work) as folder:
        tok.save_pretrained(folder)
        path = Path(folder) / "tokenizer.json"
        state = json.loads(path.read_text(encoding="utf-8"))
        vocab = state["model"]["vocab"]
        first = max([*vocab.values(), *(t["id"] for t in state.get("added_tokens", []))]) + 1
        vocab.update({word: first + k for k, word in enumerate(words)})
        path.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        return load_tokenizer(folder)  # holds everything in memory: the folder can go


def check_extendable(tok, cfg: TokenizerSection) -> None:
    """Before any output: `tokenizer.add_words` needs a WordPiece tokenizer (BERT's)."""
    if cfg.add_words:
        _wordpiece_model(tok)


def _wordpiece_model(tok) -> dict:
    """The backend's WordPiece model as JSON; any other model (BPE, Unigram) cannot take whole words this way."""
    model = json.loads(tok.backend_tokenizer.to_str())["model"]
    if model.get("type") != "WordPiece":
        raise UsageError(
            f"tokenizer.add_words works with WordPiece tokenizers (BERT's); {tok.name_or_path} has a "
            f"{model.get('type')} model: give a WordPiece tokenizer in tokenizer.path, or set tokenizer.add_words=0"
        )
    return model


def grow_embeddings(model: BertForPreTraining, old_tokenizer, new_tokenizer) -> dict:
    """Give `model` (trained with `old_tokenizer`) one word-embedding row per token that `new_tokenizer` adds.

    `new_tokenizer` must extend the old one: every old token at its old id, the new ones at the ids after them.
    The word embeddings, and the MLM decoder tied to them with its bias, grow to the new size; each new row starts
    as the mean of the rows of the pieces the old tokenizer makes of the word (its bias as the mean of theirs),
    which keeps the new word close to what the model already understands by it. Old rows are left as they were.
    Returns what the load report says: how many rows were added and how they were initialised.
    """
    import torch

    new_ids, words = _added_tokens(old_tokenizer, new_tokenizer)
    embeddings = model.get_input_embeddings()
    if embeddings.num_embeddings < len(old_tokenizer):
        raise UsageError(
            f"the model has {embeddings.num_embeddings} word embeddings, fewer than the {len(old_tokenizer)} tokens "
            "of the tokenizer it was given as its own: give the tokenizer the model was trained with"
        )
    if not new_ids:
        return {"added_rows": 0, "init": INIT}
    pieces = old_tokenizer(words, add_special_tokens=False)["input_ids"]
    model.resize_token_embeddings(max(embeddings.num_embeddings, new_ids[-1] + 1), mean_resizing=False)
    output = model.get_output_embeddings()
    rows = [model.get_input_embeddings().weight]  # each row of a new word: the mean of its pieces' rows
    if output is not None:  # the decoder's weight (when not tied to the embeddings) and its bias
        rows += [t for t in (output.weight, output.bias) if t is not None and t is not rows[0]]
    with torch.no_grad():
        for row, ids in zip(new_ids, pieces):
            for tensor in rows:
                tensor[row] = tensor[ids].mean(dim=0)
    report = {"added_rows": len(new_ids), "init": INIT}
    if len(words) <= LISTED_WORDS:
        report["words"] = words  # their old pieces are in the tokenize run's stats.json (added_words)
    return report


def _added_tokens(old_tokenizer, new_tokenizer) -> tuple[list[int], list[str]]:
    """The ids and strings of the tokens `new_tokenizer` adds, in id order; refused unless it extends the old one."""
    old, new = old_tokenizer.get_vocab(), new_tokenizer.get_vocab()
    moved = [token for token, i in old.items() if new.get(token) != i]
    if moved:
        token = moved[0]
        where = f"at id {new[token]}" if token in new else "missing"
        raise UsageError(
            f"the new tokenizer does not extend the model's: {len(moved)} of its {len(old)} tokens are missing or at "
            f"other ids (e.g. {token!r}: id {old[token]}, {where}); tokenize with tokenizer.path set to the model's "
            "tokenizer"
        )
    added = sorted((i, token) for token, i in new.items() if token not in old)
    if added and added[0][0] < len(old):
        raise UsageError(
            f"the new tokenizer puts {added[0][1]!r} at id {added[0][0]}, among the old tokenizer's {len(old)} ids; "
            "new tokens must come after the old ones"
        )
    return [i for i, _ in added], [token for _, token in added]
