"""Chinese whole-word masking end to end through the real CLI: tokenize with word segmentation (the preview shows
喜欢 as one word) -> pretrain with masking.whole_word_mask -> eval, which repeats pretrain's last evaluation."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import yaml
from datasets import load_from_disk
from typer.testing import CliRunner

from bertcli.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = [
    "我喜欢在北京学习中文。",
    "我们喜欢自然语言处理。",
    "老师在学校教学生写字。",
    "今天下午我们去图书馆看书。",
    "他的朋友住在上海。",
    "妈妈每天早上做早饭。",
    "这个问题非常简单。",
    "我们明天一起去公园散步。",
]


def _corpus(path: Path, docs: int = 16) -> Path:
    """Paragraph per line, a blank line between documents (the layout of configs/tokenize/chinese.yaml)."""
    rng = random.Random(0)
    paragraphs = ["".join(rng.choices(SENTENCES, k=rng.randint(3, 6))) for _ in range(docs)]
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


def _invoke(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_chinese_whole_word_masking_tokenize_pretrain_eval(tmp_path):
    tok = tmp_path / "tok"
    shown = _invoke(
        "tokenize", "--config", ROOT / "configs/tokenize/chinese.yaml", _corpus(tmp_path / "zh.txt"), "-o", tok,
        "--set", "tokenizer.vocab_size=400", "--set", "tokenizer.min_frequency=1", "--set", "nsp.max_seq_length=48",
        "--set", "split.validation_fraction=0.25", "--set", "run.num_proc=1", "--preview", "1",
    )  # fmt: skip
    # the preview's word lines group the characters of a word: "... | 老师 | 在 | 学校 | ..."
    listed = [line.split(": ", 1)[1].split(" | ") for line in shown.splitlines() if "words, each masked" in line]
    assert listed and {"喜欢", "我们", "北京", "学习", "老师", "学校", "公园"} & {w for ws in listed for w in ws}, shown
    stats = json.loads((tok / "stats.json").read_text(encoding="utf-8"))
    assert stats["word_segmentation"] == "jieba" and stats["tokens_per_word"] > 1.3
    assert "word_starts" in load_from_disk(str(tok / "dataset"))["train"].column_names

    config = tmp_path / "pretrain.yaml"
    settings = {
        "model": {"preset": "tiny", "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
                  "max_position_embeddings": 64},
        "data": {"batch_size": 8},
        "masking": {"whole_word_mask": True},
        "train": {"max_steps": 4, "learning_rate": 2e-3, "warmup_steps": 1, "log_every": 2, "eval_every": 4,
                  "save_every": 4, "tensorboard": False},
    }  # fmt: skip
    config.write_text("# bertcli pretrain --config pretrain.yaml\n" + yaml.safe_dump(settings), encoding="utf-8")
    _invoke("pretrain", tok, "-o", tmp_path / "pre", "--config", config)
    records = [json.loads(line) for line in (tmp_path / "pre/metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r.get("split") == "eval"][-1]

    _invoke(
        "eval", "--config", ROOT / "configs/eval/pretraining.yaml", "--model", tmp_path / "pre/final",
        "--data", tok, "-o", tmp_path / "eval", "--set", "masking.whole_word_mask=true",
    )  # fmt: skip
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text(encoding="utf-8"))
    found = json.dumps(metrics)
    mlm_loss = _find(metrics, "mlm_loss")
    assert mlm_loss is not None, found
    assert abs(mlm_loss - last["mlm_loss"]) < 1e-5 * last["mlm_loss"], (mlm_loss, last)


def test_eval_on_raw_chinese_text_reads_it_as_tokenize_reads_chinese(tmp_path):
    """eval --task pretraining on raw Chinese text tokenizes it with Chinese rules (jieba words for whole-word
    masking), as configs/tokenize/chinese.yaml does: the same numbers as eval on that tokenize output."""
    corpus = _corpus(tmp_path / "zh.txt")
    common = ["--set", "tokenizer.vocab_size=400", "--set", "tokenizer.min_frequency=1", "--set", "run.num_proc=1",
              "--set", "nsp.max_seq_length=48"]  # fmt: skip
    _invoke("tokenize", "--config", ROOT / "configs/tokenize/chinese.yaml", corpus, "-o", tmp_path / "tok", *common)
    model = tmp_path / "model"
    _pretraining_model(tmp_path / "tok" / "tokenizer", model)
    # the text again, with the model's tokenizer and eval's NSP seed, all of it in one split
    again = ["--set", f"tokenizer.path={model}", "--set", "nsp.seed=1234", "--set", "split.validation_fraction=0"]
    _invoke("tokenize", "--config", ROOT / "configs/tokenize/chinese.yaml", corpus, "-o", tmp_path / "again", *common,
            *again)  # fmt: skip
    wwm = ["--set", "masking.whole_word_mask=true", "--set", "data.max_seq_length=48"]
    raw = {}
    paragraphs = ["--set", "data.text_format=paragraphs"]
    for name, data, extra in (("tokenized", tmp_path / "again", ["--set", "data.split=train"]),
                              ("auto", corpus, paragraphs),
                              ("en", corpus, [*paragraphs, "--set", "data.language=en"])):  # fmt: skip
        _invoke("eval", "--task", "pretraining", "--model", model, "--data", data, "-o", tmp_path / name, *wwm, *extra)
        raw[name] = json.loads((tmp_path / name / "metrics.json").read_text(encoding="utf-8"))["metrics"]
    assert raw["auto"] == raw["tokenized"]
    assert raw["en"] != raw["tokenized"]  # character by character: other whole words, other masks


def _pretraining_model(tokenizer: Path, folder: Path) -> None:
    import torch
    from transformers import BertConfig, BertForPreTraining, BertTokenizer

    tok = BertTokenizer.from_pretrained(str(tokenizer))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertForPreTraining(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))


def _find(tree, key: str):
    """The first value of `key` anywhere in a JSON tree."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        tree = list(tree.values())
    if isinstance(tree, list):
        for item in tree:
            value = _find(item, key)
            if value is not None:
                return value
    return None


def test_chinese_segmentation_without_rjieba_is_one_line_before_any_output(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rjieba", None)  # import rjieba now raises ImportError
    out = tmp_path / "tok"
    config = ROOT / "configs/tokenize/default.yaml"
    args = ["tokenize", "--config", config, _corpus(tmp_path / "zh.txt"), "-o", out, "--set", "input.language=zh"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "rjieba" in lines[0] and "bertcli[zh]" in lines[0], result.output
    assert not out.exists()
    # English, or segment_words=none, needs no segmenter
    result = CliRunner().invoke(
        app,
        [
            str(a)
            for a in [
                *args,
                "--set",
                "input.segment_words=none",
                "--set",
                "tokenizer.vocab_size=400",
                "--set",
                "run.num_proc=1",
            ]
        ],
    )
    assert result.exit_code == 0, result.output
