"""Training batches of a tagger: plain shuffled by default (`data.group_by_length` null: the family's choice), and
when grouped by length, cut by pieces (`data.token_batches`, the tagging family's default): about the same count of
pieces per batch, so a per-piece mean loss weighs every piece about alike, as random batches do."""

from __future__ import annotations

import numpy as np
import pytest

from bertcli.training.batches import length_grouped_batches
from tests.finetune_fixtures import save_tiny_model


def test_token_batches_hold_about_the_same_count_of_pieces_and_cover_every_example_once():
    lengths = np.array([3] * 200 + [120] * 100)  # one-word sentences among long ones: 12,600 pieces
    even = length_grouped_batches(lengths, 16, seed=1, by_tokens=True)
    assert sorted(i for b in even for i in b) == list(range(len(lengths)))
    assert even == length_grouped_batches(lengths, 16, seed=1, by_tokens=True)  # seeded: a resume sees the same
    assert even != length_grouped_batches(lengths, 16, seed=2, by_tokens=True)
    fixed = length_grouped_batches(lengths, 16, seed=1)
    assert len(even) == len(fixed) == 19  # as many steps per epoch: 300 examples, 16 per batch
    pieces = [int(lengths[b].sum()) for b in even]
    assert min(pieces) >= 12600 / 19 - 120 and max(pieces) <= 12600 / 19 + 120  # within a long sentence of the mean
    assert min(int(lengths[b].sum()) for b in fixed) <= 16 * 3  # one-word sentences only: under a tenth of the mean


def test_plain_shuffled_batches_ignore_token_batches():
    lengths = np.array([3] * 50 + [120] * 50)
    assert length_grouped_batches(lengths, 8, 1, group=0, by_tokens=True) == length_grouped_batches(lengths, 8, 1, 0)


@pytest.mark.parametrize(
    "settings, expected",
    [({}, (False, True)), ({"data.group_by_length": True}, (True, True)),
     ({"data.group_by_length": True, "data.token_batches": False}, (True, False))],
)  # fmt: skip
def test_ner_trains_on_shuffled_batches_unless_told_to_group_them_then_by_pieces(tmp_path, monkeypatch, settings,
                                                                                  expected):  # fmt: skip
    """(group_by_length, by_tokens) of the training loader finetune ner builds: shuffled batches by default."""
    import bertcli.pipelines.finetune as finetune
    from bertcli.config import load_config
    from bertcli.schema.finetune import FinetuneConfig

    model = save_tiny_model(tmp_path / "bare")
    train = tmp_path / "train.txt"
    train.write_text("the O\ncat B-PER\nsat O\n\ndog B-PER\n\na O\nfilm B-LOC\nwas O\nthat O\n", encoding="utf-8")
    seen = []

    def recording(split, batch_size, seed, group_by_length, train_, *args, **kwargs):
        if train_:
            seen.append((group_by_length, args[2] if len(args) > 2 else kwargs.get("by_tokens", False)))
        return make_loader(split, batch_size, seed, group_by_length, train_, *args, **kwargs)

    make_loader = finetune.make_loader
    monkeypatch.setattr(finetune, "make_loader", recording)
    values = {"task.name": "ner", "model.path": str(model), "data.train_file": str(train),
              "data.validation_files": [str(train)], "output.dir": str(tmp_path / "run"), "data.batch_size": 2,
              "train.max_steps": 1, **settings}  # fmt: skip
    finetune.run_finetune(load_config(FinetuneConfig, values=values))
    assert seen == [expected]


def test_other_families_keep_length_grouped_batches_of_batch_size_rows():
    from bertcli.tasks.registry import family_for

    for task in ("cola", "custom", "squad", "swag"):
        assert family_for(task).group_by_length is True and family_for(task).token_batches is False, task
    assert family_for("ner").group_by_length is False


def test_two_processes_share_batches_of_varying_size_evenly():
    """Accelerate's shard of the sampler (as `prepare` makes it): batches of varying size go whole to each process,
    both get as many (the last ones repeat early batches), and every example is trained on."""
    from accelerate.data_loader import BatchSamplerShard

    from bertcli.training.batches import IndexBatches

    lengths = np.array([3] * 41 + [30] * 37 + [120] * 23)
    sampler = IndexBatches(lengths, 8, seed=4, group_by_length=True, by_tokens=True)
    shards = [list(BatchSamplerShard(sampler, num_processes=2, process_index=i, even_batches=True)) for i in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == -(-len(sampler) // 2)
    assert all(b in list(sampler) for shard in shards for b in shard)  # whole batches, never filled up or cut
    assert {i for shard in shards for b in shard for i in b} == set(range(len(lengths)))
