"""Raw text -> documents of sentences: the three layouts, compression, encodings, sentence splitting."""

from __future__ import annotations

import gzip
import json

import pytest

from bertcli.corpus import read_documents, resolve_inputs, split_sentences
from bertcli.errors import UsageError


def docs(path, fmt="sentences", **kw):
    return [d["sentences"] for d in read_documents([str(path)], fmt, **kw)]


def test_sentence_per_line_with_blank_lines_between_documents(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("One.\nTwo.\n\n\nThree.\n  \nFour.\nFive.\n")
    assert docs(p) == [["One.", "Two."], ["Three."], ["Four.", "Five."]]


def test_paragraphs_are_split_by_a_real_sentence_splitter(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text(
        "Mr. Smith paid $3.50 for 2.5 kg of apples, e.g. Gala. Then he left! Was it cheap? Yes.\n"
        "The U.S. team won.\n\nSecond document here.\n"
    )
    assert docs(p, "paragraphs") == [
        ["Mr. Smith paid $3.50 for 2.5 kg of apples, e.g. Gala.", "Then he left!", "Was it cheap?", "Yes.",
         "The U.S. team won."],
        ["Second document here."],
    ]  # fmt: skip


def test_chinese_sentences_end_at_full_width_marks():
    assert split_sentences("今天天气很好。我们去公园吧！你来吗？价格是3.5元。", "zh") == [
        "今天天气很好。", "我们去公园吧！", "你来吗？", "价格是3.5元。",
    ]  # fmt: skip


def test_jsonl_documents_with_a_configured_field(tmp_path):
    p = tmp_path / "a.jsonl"
    rows = [{"body": "First one. Second one.\nNew paragraph."}, {"body": ""}, {"body": "Alone."}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert docs(p, "jsonl", text_field="body") == [
        ["First one.", "Second one.", "New paragraph."],
        ["Alone."],
    ]


@pytest.mark.parametrize(
    "line,message",
    [
        ("{not json", "a.jsonl:2: not valid JSON"),
        ('{"text": 3}', "field 'body' is"),
        ('{"x": 1}', "no field 'body'"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    p = tmp_path / "a.jsonl"
    p.write_text('{"body": "ok."}\n' + line.replace('"text"', '"body"') + "\n")
    with pytest.raises(UsageError, match=message):
        docs(p, "jsonl", text_field="body")


def test_gzip_and_byte_order_mark(tmp_path):
    p = tmp_path / "a.txt.gz"
    with gzip.open(p, "wb") as f:
        f.write("\ufeffCafé au lait.\r\nSecond.\r\n".encode())
    assert docs(p) == [["Café au lait.", "Second."]]


def test_broken_gzip_is_a_clear_error(tmp_path):
    p = tmp_path / "a.txt.gz"
    p.write_bytes(b"not gzip at all")
    with pytest.raises(UsageError, match="a.txt.gz: not a readable gzip file"):
        docs(p)


def test_non_utf8_names_file_line_and_byte_offset(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"Fine line.\nCaf\xe9 here.\n")
    with pytest.raises(UsageError, match=r"latin1.txt: line 2, byte offset 14: not UTF-8.*on_bad_bytes=replace"):
        docs(p)


def test_bad_bytes_can_be_replaced_and_counted(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"Caf\xe9 \xff here.\nOk \xef\xbf\xbd kept.\n")  # the second line holds a real U+FFFD
    (doc,) = list(read_documents([str(p)], "sentences", on_bad_bytes="replace"))
    assert doc["sentences"][0] == "Caf\ufffd \ufffd here." and doc["bad_bytes"] == 2


def test_resolve_inputs_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        resolve_inputs([str(tmp_path / "missing.txt")])
    with pytest.raises(UsageError, match="matches no files"):
        resolve_inputs([str(tmp_path / "*.txt")])
    with pytest.raises(UsageError, match="is a directory"):
        resolve_inputs([str(tmp_path)])
    (tmp_path / "b.txt").write_text("x")
    (tmp_path / "a.txt").write_text("x")
    assert [p.name for p in resolve_inputs([str(tmp_path / "*.txt"), str(tmp_path / "a.txt")])] == [
        "a.txt",
        "b.txt",
    ]


@pytest.mark.parametrize("fmt", ["sentences", "paragraphs", "jsonl"])
@pytest.mark.parametrize("n_units", [1, 3, 7, 40])
def test_units_hold_the_documents_of_the_files_in_order(tmp_path, fmt, n_units):
    """Workers read the corpus in units cut at document boundaries: whatever the cuts, no document is split, lost
    or repeated, and the units in order give the documents in order (across files, gzip ones included)."""
    from bertcli.corpus import plan_units, read_shard

    files = []
    for k, size in enumerate([23, 1, 9]):
        docs_text = [
            [f"File {k} doc {d} sentence {s}. It goes on." for s in range(1 + (d * 7) % 5)] for d in range(size)
        ]
        p = tmp_path / (f"f{k}.jsonl" if fmt == "jsonl" else f"f{k}.txt")
        if fmt == "jsonl":
            p.write_text("".join(json.dumps({"text": " ".join(d)}) + "\n" for d in docs_text))
        else:
            sep = " " if fmt == "paragraphs" else "\n"
            p.write_text("\n\n  \n".join(sep.join(d) for d in docs_text) + "\n")
        files.append(str(p))
    gz = tmp_path / "f3.txt.gz"
    zipped = (
        b'{"text": "Zipped one."}\n{"text": "Zipped two."}\n' if fmt == "jsonl" else b"Zipped one.\n\nZipped two.\n"
    )
    gz.write_bytes(gzip.compress(zipped))
    files.append(str(gz))

    expected = [d["sentences"] for d in read_documents(files, fmt)]
    units = plan_units(files, fmt, n_units)
    assert len(units) == n_units
    got = [d["sentences"] for unit in units for shard in unit for d in read_shard(shard, fmt)]
    assert got == expected and len(expected) == 23 + 1 + 9 + 2


def test_an_error_in_a_later_unit_names_the_line_of_the_file(tmp_path):
    from bertcli.corpus import plan_units, read_shard

    p = tmp_path / "a.txt"
    p.write_bytes(b"".join(b"Sentence %d.\n\n" % i for i in range(50)) + b"Bad \xff byte.\n")
    last = plan_units([str(p)], "sentences", 4)[-1]
    assert last[0].start > 0
    with pytest.raises(UsageError, match=r"line 101, byte offset \d+: not UTF-8"):
        list(read_shard(last[0], "sentences"))


# --- input.format auto -------------------------------------------------------------------------------------


def test_auto_reads_jsonl_and_json_files_as_jsonl_and_others_as_sentences():
    from bertcli.corpus import describe_formats, file_format

    names = ["a.jsonl", "b.JSON", "c.jsonl.gz", "d.txt", "e.txt.gz", "f", "g.json.txt"]
    assert [file_format(n, "auto") for n in names] == ["jsonl"] * 3 + ["sentences"] * 4
    assert file_format("a.jsonl", "paragraphs") == "paragraphs"  # a declared format wins
    assert describe_formats(names).startswith("input.format=auto: 7 file(s), 4 as sentences and 3 as jsonl")


def test_auto_reads_paragraph_long_lines_as_paragraphs(tmp_path):
    import gzip

    from bertcli.corpus import describe_formats, file_format

    sentence = "A short sentence here."
    (tmp_path / "sentences.txt").write_text(f"{sentence}\n{sentence} And more.\n\n{sentence}\n")
    (tmp_path / "three.txt").write_text(f"{sentence} {sentence} {sentence}\n" * 5)  # 3 sentences, 68 characters
    (tmp_path / "long.txt").write_text("word " * 80 + "\n\n" + "word " * 70 + "\n")  # no full stop, 375 characters
    with gzip.open(tmp_path / "long.txt.gz", "wt") as handle:
        handle.write("word " * 80 + "\n")
    names = [str(tmp_path / n) for n in ("sentences.txt", "three.txt", "long.txt", "long.txt.gz")]
    assert [file_format(n, "auto") for n in names] == ["sentences", "paragraphs", "paragraphs", "paragraphs"]
    assert describe_formats(names).startswith("input.format=auto: 4 file(s), 3 as paragraphs and 1 as sentences")
    assert file_format(names[2], "sentences") == "sentences"  # a declared format wins


def test_auto_cuts_and_reads_each_file_in_its_own_layout(tmp_path):
    from bertcli.corpus import plan_units, read_shard

    lines = "".join(json.dumps({"text": f"Doc {d}. Second sentence of doc {d}."}) + "\n" for d in range(30))
    (tmp_path / "a.jsonl").write_text(lines)
    (tmp_path / "b.txt").write_text("".join(f"Text {d}.\nMore {d}.\n\n" for d in range(20)))
    files = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.txt")]
    expected = [d["sentences"] for d in read_documents(files, "auto")]
    assert expected[0] == ["Doc 0.", "Second sentence of doc 0."] and expected[30] == ["Text 0.", "More 0."]
    assert len(expected) == 50
    units = plan_units(files, "auto", 7)
    assert [d["sentences"] for unit in units for shard in unit for d in read_shard(shard, "auto")] == expected


@pytest.mark.parametrize(
    ("encoding", "name"), [("utf-16", "UTF-16"), ("utf-16-be", "UTF-16"), ("utf-32", "UTF-32"), ("utf-32-be", "UTF-32")]
)
@pytest.mark.parametrize("on_bad_bytes", ["error", "replace"])
def test_a_utf16_or_utf32_file_is_named_with_how_to_convert_it(tmp_path, encoding, name, on_bad_bytes):
    """Its byte-order mark names it; `replace` would read it as garbage, so it is refused either way."""
    p = tmp_path / "corpus.txt"
    text = "First.\nSecond.\n"  # utf-16 and utf-32 write a byte-order mark; with a byte order named, we add it
    p.write_bytes((text if encoding in ("utf-16", "utf-32") else "\ufeff" + text).encode(encoding))
    with pytest.raises(UsageError) as e:
        docs(p, on_bad_bytes=on_bad_bytes)
    assert str(e.value) == (
        f"{p} is {name} text (it starts with a {name} byte-order mark), not UTF-8; convert it: "
        f"iconv -f {name} -t UTF-8 {p} > {tmp_path / 'corpus-utf8.txt'}"
    )


def test_a_gzipped_utf16_file_is_named_with_how_to_convert_it(tmp_path):
    p = tmp_path / "corpus.jsonl.gz"
    with gzip.open(p, "wb") as f:
        f.write('{"text": "First."}\n'.encode("utf-16"))
    with pytest.raises(UsageError, match=r"is UTF-16 text .* convert it: zcat .*corpus.jsonl.gz \| iconv -f UTF-16 -t "
                       r"UTF-8 \| gzip > .*corpus-utf8.jsonl.gz$"):  # fmt: skip
        docs(p, "jsonl")


def test_a_symlink_loop_or_a_broken_link_is_not_called_missing(tmp_path):
    (tmp_path / "loop.txt").symlink_to(tmp_path / "loop.txt")
    (tmp_path / "a.txt").symlink_to(tmp_path / "b.txt")
    (tmp_path / "b.txt").symlink_to(tmp_path / "a.txt")
    (tmp_path / "broken.txt").symlink_to(tmp_path / "gone.txt")
    for name in ("loop.txt", "a.txt"):
        with pytest.raises(UsageError) as e:
            resolve_inputs([str(tmp_path / name)])
        assert str(e.value).startswith(f"input file {tmp_path / name} is a symlink loop"), e.value
    with pytest.raises(UsageError) as e:
        resolve_inputs([str(tmp_path / "broken.txt")])
    assert (
        str(e.value)
        == f"input file {tmp_path / 'broken.txt'} is a symbolic link to {tmp_path / 'gone.txt'}, which does not exist"
    )
