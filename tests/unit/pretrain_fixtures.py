"""Tiny pretraining data in the layout of `bertcli tokenize` output, for pretrain tests.

The corpus is made to be learnable in a few hundred steps: each document has a topic, its sentences walk
through that topic's words in order (so a masked word follows from its neighbours), and a random "next"
sentence comes from another document, usually of another topic (so NSP is learnable too)."""

from __future__ import annotations

import json
import random
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOPICS, WORDS_PER_TOPIC = 4, 10
PIECES = ["##s", "##ing", "##ed"]


def vocabulary() -> list[str]:
    words = [f"t{t}w{w}" for t in range(TOPICS) for w in range(WORDS_PER_TOPIC)]
    return SPECIALS + words + PIECES


def make_tokenizer(path: Path):
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocabulary())}, do_lower_case=True)
    tokenizer.save_pretrained(str(path))
    return tokenizer


def _sentence(rng: random.Random, topic: int, vocab: dict[str, int]) -> list[int]:
    start, length = rng.randrange(WORDS_PER_TOPIC), rng.randint(3, 6)
    ids = []
    for k in range(length):
        ids.append(vocab[f"t{topic}w{(start + k) % WORDS_PER_TOPIC}"])
        if rng.random() < 0.15:  # some words get a ## piece, for whole-word masking
            ids.append(vocab[rng.choice(PIECES)])
    return ids


def _instances(n: int, rng: random.Random, vocab: dict[str, int], max_len: int) -> list[dict]:
    rows = []
    for _ in range(n):
        topic = rng.randrange(TOPICS)
        a = _sentence(rng, topic, vocab)
        is_random = rng.random() < 0.5
        b = _sentence(rng, (topic + rng.randrange(1, TOPICS)) % TOPICS if is_random else topic, vocab)
        a, b = a[: (max_len - 3) // 2], b[: (max_len - 3) // 2]
        ids = [vocab["[CLS]"], *a, vocab["[SEP]"], *b, vocab["[SEP]"]]
        rows.append(
            {
                "input_ids": ids,
                "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1),
                "special_tokens_mask": [1] + [0] * len(a) + [1] + [0] * len(b) + [1],
                "next_sentence_label": int(is_random),
            }
        )
    return rows


def make_tokenized_dir(
    root: Path, n_train: int = 1200, n_validation: int = 128, seed: int = 0, max_seq_length: int = 32
) -> Path:
    """Write OUT/tokenizer, OUT/dataset (train/validation), OUT/stats.json, OUT/config.yaml; return OUT."""
    import datasets

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(root / "tokenizer")
    vocab = tokenizer.get_vocab()
    rng = random.Random(seed)
    features = datasets.Features(
        {
            "input_ids": datasets.Sequence(datasets.Value("int32")),
            "token_type_ids": datasets.Sequence(datasets.Value("int8")),
            "special_tokens_mask": datasets.Sequence(datasets.Value("int8")),
            "next_sentence_label": datasets.Value("int8"),
        }
    )
    splits = {
        name: datasets.Dataset.from_list(_instances(n, rng, vocab, max_seq_length), features=features)
        for name, n in (("train", n_train), ("validation", n_validation))
    }
    datasets.DatasetDict(splits).save_to_disk(str(root / "dataset"))
    stats = {"max_seq_length": max_seq_length, "vocab_size": len(vocab), "instances": n_train + n_validation}
    (root / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    (root / "config.yaml").write_text("# test fixture\n", encoding="utf-8")
    return root


def tiny_config(data_dir, out: Path, model: dict | None = None, data: dict | None = None, **train):
    """A PretrainConfig for a 2-layer, width-32 model: a few seconds for a few hundred steps on CPU."""
    from bertcli.schema.pretrain import PretrainConfig

    dirs = [str(d) for d in data_dir] if isinstance(data_dir, (list, tuple)) else [str(data_dir)]
    return PretrainConfig.model_validate(
        {
            "model": {
                "preset": "tiny",
                "hidden_size": 32,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "max_position_embeddings": 64,
                **(model or {}),
            },
            "data": {"dirs": dirs, "batch_size": 16, **(data or {})},
            "train": {
                "max_steps": 20,
                "learning_rate": 2e-3,
                "warmup_steps": 2,
                "log_every": 5,
                "eval_every": 10,
                "save_every": 10,
                "eval_max_batches": 4,
                "tensorboard": False,
                **train,
            },
            "output": {"dir": str(out)},
        }
    )
