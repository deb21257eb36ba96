"""Shared fixtures: small corpora made here (tests never depend on ../shared/data) and one tokenize run."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

WORDS = (
    "the a river bright garden quiet village market baker morning evening window train station old new small "
    "large green silver walked carried watched opened closed listened painted played playing player sang "
    "slowly quickly carefully yesterday tomorrow because although while after before bread cheese apple "
    "letter friend teacher student museum library mountain valley lantern harbour island bicycle"
).split()


def make_corpus(path: Path, docs: int = 60, seed: int = 0, min_sents: int = 4, max_sents: int = 14) -> Path:
    """BERT's layout: one sentence per line, a blank line between documents."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(docs):
            for _ in range(rng.randint(min_sents, max_sents)):
                words = [rng.choice(WORDS) for _ in range(rng.randint(4, 16))]
                f.write(" ".join(words).capitalize() + ".\n")
            f.write("\n")
    return path


@pytest.fixture(scope="session")
def tokenized_dir(tmp_path_factory) -> Path:
    """A finished `bertcli tokenize` output directory: tokenizer/, dataset/ (train, validation), stats.json.

    Tiny: ~120 documents, a WordPiece vocabulary of at most 200 tokens, sequences of at most 64 tokens.
    """
    from bertcli.config import load_config
    from bertcli.pipelines.tokenize import run_tokenize
    from bertcli.schema.tokenize import TokenizeConfig

    root = tmp_path_factory.mktemp("tokenized")
    corpus = make_corpus(root / "corpus.txt", docs=120)
    cfg = load_config(
        TokenizeConfig,
        overrides=[
            f"input.paths=[{corpus}]",
            f"output.dir={root / 'out'}",
            "tokenizer.vocab_size=200",
            "tokenizer.min_frequency=1",
            "nsp.max_seq_length=64",
            "split.validation_fraction=0.1",
            "run.num_proc=1",
        ],
    )
    run_tokenize(cfg)
    return root / "out"
