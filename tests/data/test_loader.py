"""Collation, packing, length grouping, multi-process determinism, exact resume, bad input end to end."""
import json
import logging

import numpy as np
import pytest
import torch

from msmm.config.data_config import parse_data_config
from msmm.data.bad_input import BadInputError, BadInputLog
from msmm.data.build import build_dataloader
from msmm.data.collate import PackingCollator, PaddingCollator
from msmm.data.sampler import EpochSampler, length_grouped_indices
from msmm.data.templates import IGNORE_INDEX

from test_image_processing import _image
from test_video import write_video
from tokenizers_for_tests import tiny_tokenizer


def _samples(lengths, rng):
    out = []
    for k, n in enumerate(lengths):
        ids = rng.integers(3, 100, n)
        labels = np.where(rng.random(n) < 0.5, ids, IGNORE_INDEX)
        out.append({"input_ids": ids, "labels": labels, "pixel_values": np.full((k + 1, 3, 2, 2), k, np.float32),
                    "image_grid_thw": np.array([[1, 2, 2]] * (k + 1))})
    return out


def test_padding_collator(rng):
    samples = _samples([5, 9, 3], rng)
    batch = PaddingCollator(pad_id=0, pad_to_multiple_of=4)(samples)
    assert batch["input_ids"].shape == (3, 12)
    for row, s in enumerate(samples):
        n = len(s["input_ids"])
        np.testing.assert_array_equal(batch["input_ids"][row, :n], s["input_ids"])
        np.testing.assert_array_equal(batch["labels"][row, :n], s["labels"])
        assert (batch["input_ids"][row, n:] == 0).all() and (batch["labels"][row, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][row].sum() == n and batch["attention_mask"][row, :n].all()
    np.testing.assert_array_equal(batch["pixel_values"][:, 0, 0, 0], [0, 1, 1, 2, 2, 2])
    assert batch["image_grid_thw"].shape == (6, 3)


def test_packing_attention_equals_separate_samples(rng):
    """A block-diagonal causal mask built from segment_ids (and, separately, from cu_seqlens) gives
    each sample exactly the attention output it has alone."""
    samples = _samples([5, 9, 3, 7, 4], rng)
    batch = PackingCollator(pad_id=0, pack_length=16)(samples)
    rows, length = batch["input_ids"].shape
    assert rows < len(samples) and length == 16
    torch.manual_seed(0)
    dim = 8
    table = torch.randn(100, 3 * dim)  # token id -> q, k, v
    q, k, v = table[torch.as_tensor(batch["input_ids"])].split(dim, -1)
    seg = torch.as_tensor(batch["segment_ids"])
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    mask = (seg[:, :, None] == seg[:, None, :]) & causal & (seg[:, :, None] >= 0)
    mask |= ~mask.any(-1, keepdim=True)  # padding rows: attend to anything, ignored below
    packed = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    # the same mask from cu_seqlens over the flattened rows
    cu = batch["cu_seqlens"]
    flat_seg = np.repeat(np.arange(len(cu) - 1), np.diff(cu)).reshape(rows, length)
    same = flat_seg[:, :, None] == flat_seg[:, None, :]
    np.testing.assert_array_equal(same & (batch["segment_ids"][:, :, None] >= 0), (seg[:, :, None] == seg[:, None, :]).numpy() & (batch["segment_ids"][:, :, None] >= 0))
    found = 0
    for r in range(rows):
        for s_id in range(int(seg[r].max()) + 1):
            cols = (seg[r] == s_id).nonzero().squeeze(-1)
            ids = batch["input_ids"][r, cols.numpy()]
            (match,) = [s for s in samples if len(s["input_ids"]) == len(ids) and (s["input_ids"] == ids).all()]
            # the first label is never a target (shifted labels start at the second token): -100
            np.testing.assert_array_equal(batch["labels"][r, cols.numpy()], [IGNORE_INDEX, *match["labels"][1:]])
            np.testing.assert_array_equal(batch["position_ids"][r, cols.numpy()], np.arange(len(ids)))
            qs, ks, vs = table[torch.as_tensor(ids)].split(dim, -1)
            alone = torch.nn.functional.scaled_dot_product_attention(qs[None], ks[None], vs[None], is_causal=True)[0]
            torch.testing.assert_close(packed[r, cols], alone)
            found += 1
    assert found == len(samples)
    assert (batch["labels"][batch["segment_ids"] < 0] == IGNORE_INDEX).all()
    assert batch["attention_mask"].sum() == sum(len(s["input_ids"]) for s in samples)


def test_length_grouping_xtuner_style():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(1, 500, 37), -rng.integers(1, 500, 23)])
    order = length_grouped_indices(lengths, 8, np.random.default_rng(1))
    assert sorted(order.tolist()) == list(range(60))
    groups = [order[i : i + 8] for i in range(0, 60 - (37 % 8 + 23 % 8), 8)]
    for g in groups:  # full mega-batches: one modality, longest first
        assert (lengths[g] > 0).all() or (lengths[g] < 0).all()
        assert (np.diff(np.abs(lengths[g])) <= 0).all()
    np.testing.assert_array_equal(order, length_grouped_indices(lengths, 8, np.random.default_rng(1)))


def test_epoch_sampler_shards_and_is_seeded():
    per_rank = [EpochSampler(10, seed=3, rank=r, world_size=3).indices(epoch=1) for r in range(3)]
    assert all(len(p) == 4 for p in per_rank)
    assert set(np.concatenate(per_rank)) == set(range(10))
    again = EpochSampler(10, seed=3, rank=1, world_size=3).indices(epoch=1)
    np.testing.assert_array_equal(again, per_rank[1])
    assert not np.array_equal(EpochSampler(10, seed=3).indices(0), EpochSampler(10, seed=3).indices(1))


# ----------------------------------------------------------------------------- end to end


def _dataset(tmp_path, bad=("missing_image", "corrupt_image", "malformed_json", "placeholder_mismatch", "too_long",
                         "corrupt_video", "missing_video")):
    """InternVL jsonl with mixed images, a video, text-only lines and the ``bad`` inputs."""
    media = tmp_path / "media"
    media.mkdir()
    sizes = [(640, 480), (300, 700), (448, 448), (1200, 300), (90, 60), (500, 500)]
    for i, (w, h) in enumerate(sizes):
        _image(w, h, i).save(media / f"img{i}.png")
    write_video(media / "clip.mp4", num_frames=16, fps=8)
    (media / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (media / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage")
    turn = lambda q, a: [{"from": "human", "value": q}, {"from": "gpt", "value": a}]  # noqa: E731
    lines = [json.dumps({"image": f"img{i}.png", "conversations": turn("<image>\nWhat is this?", f"Picture {i}.")}) for i in range(6)]
    lines += [json.dumps({"conversations": turn(f"Say {i}", f"{i} " * (i + 1))}) for i in range(4)]
    lines += [json.dumps({"image": ["img0.png", "img1.png"], "conversations": turn("<image><image> compare", "different")})]
    lines += [json.dumps({"video": "clip.mp4", "conversations": turn("<video>\nWhat happens?", "Colors move.")})]
    bad_lines = {
        "missing_image": json.dumps({"image": "nope.png", "conversations": turn("<image>", "x")}),
        "corrupt_image": json.dumps({"image": "broken.png", "conversations": turn("<image>", "x")}),
        "malformed_json": '{"conversations": [',
        "placeholder_mismatch": json.dumps({"image": "img0.png", "conversations": turn("no placeholder", "x")}),
        "too_long": json.dumps({"conversations": turn("word " * 400, "x")}),
        "corrupt_video": json.dumps({"video": "broken.mp4", "conversations": turn("<video>", "x")}),
        "missing_video": json.dumps({"video": "gone.mp4", "conversations": turn("<video>", "x")}),
    }
    bad_lines = {kind: bad_lines[kind] for kind in bad}
    lines[3:3] = list(bad_lines.values())
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, media, {kind: f"{path}:{lines.index(text) + 1}" for kind, text in bad_lines.items()}


def _config(path, media, **loader):
    return parse_data_config({
        "dataset_param": {
            "basic_parameters": {"template_name": "internvl2_5", "data_path": str(path), "data_folder": str(media),
                                 "cutoff_len": 1200},
            "tokenizer_config": {"from_pretrained": "in-memory"},
            "image_size": 28, "patch_size": 14, "max_dynamic_patch": 4, "min_num_frame": 2, "max_num_frame": 4,
        },
        "dataloader_param": {"seed": 7, "micro_batch_size": 2, "drop_last": False, **loader},
    })


def _equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_bad_inputs_are_skipped_counted_and_summarised(tmp_path, caplog):
    path, media, where = _dataset(tmp_path)
    log = BadInputLog()
    loader = build_dataloader(_config(path, media), tokenizer=tiny_tokenizer(), log=log)
    with caplog.at_level(logging.WARNING, logger="msmm.data"):
        batches = list(loader)
    assert sum(len(b["input_ids"]) for b in batches) == 12  # every good record, once
    for kind, place in where.items():
        assert f"{place}: {kind}" in caplog.text, kind
    assert "epoch 0: skipped 7 sample(s)" in caplog.text
    assert log.total == {kind: 1 for kind in where}
    tiles = sum(len(b["pixel_values"]) for b in batches)
    assert tiles == sum(len(b["image_flags"]) for b in batches) and tiles > 12


@pytest.mark.parametrize("kind", ["missing_image", "corrupt_video", "too_long"])
def test_strict_stops_with_the_place(tmp_path, kind):
    path, media, where = _dataset(tmp_path, bad=[kind])
    loader = build_dataloader(_config(path, media, shuffle=False), tokenizer=tiny_tokenizer(), log=BadInputLog(strict=True))
    batches = iter(loader)
    next(batches)  # the good records before it load
    with pytest.raises(BadInputError, match=f"{where[kind]}: {kind}"):
        list(batches)


def test_workers_deterministic_and_exact_resume(tmp_path):
    path, media, _ = _dataset(tmp_path, bad=())
    tok = tiny_tokenizer()
    single = build_dataloader(_config(path, media, group_by_length=True), tokenizer=tok)
    reference = [list(single), list(single)]  # two epochs
    assert len(reference[0]) == 6
    order = [[tuple(row[m > 0]) for b in epoch for row, m in zip(b["input_ids"], b["attention_mask"])] for epoch in reference]
    # a new order per epoch (and new video frames: the "rand" sampling draws per epoch)
    assert order[0] != order[1] and len(order[0]) == len(order[1]) == 12
    workers = build_dataloader(_config(path, media, group_by_length=True, num_workers=2), tokenizer=tok)
    first = iter(workers)
    got = [next(first) for _ in range(4)]
    state = workers.state_dict()
    assert state == {"epoch": 0, "batch_index": 4, "position": 8, "seed": 7, "skipped_before_epoch": 0}
    first.close()
    resumed = build_dataloader(_config(path, media, group_by_length=True, num_workers=2), tokenizer=tok)
    resumed.load_state_dict(state)
    got += list(resumed)
    assert resumed.state_dict()["epoch"] == 1
    got_next_epoch = list(resumed)
    for a, b in zip(reference[0] + reference[1], got + got_next_epoch, strict=True):
        _equal(a, b)


def test_packing_from_data_json(tmp_path):
    path, media, _ = _dataset(tmp_path, bad=())
    loader = build_dataloader(_config(path, media, packing=True, micro_batch_size=4), tokenizer=tiny_tokenizer())
    batches = list(loader)
    assert all(b["input_ids"].shape[1] == 1200 for b in batches)
    assert sum(len(b["input_ids"]) for b in batches) < 12  # rows hold several samples
    segments = sum(len(np.unique(row[row >= 0])) for b in batches for row in b["segment_ids"])
    assert segments == 12


def _good_and_bad(tmp_path):
    """8 good records; 5 rejected when the file is read, 5 that fail to load (interleaved)."""
    media = tmp_path / "media"
    media.mkdir()
    _image(40, 30, 0).save(media / "ok.png")
    turn = lambda q, a: [{"from": "human", "value": q}, {"from": "gpt", "value": a}]  # noqa: E731
    good = [json.dumps({"image": "ok.png", "conversations": turn("<image>\nWhat?", f"answer {i}")}) for i in range(8)]
    at_reading = ['{"conversations": [', json.dumps({"text": "x"}), json.dumps({"image": "../x.png", "conversations": turn("<image>", "x")}),
                  json.dumps({"conversations": turn("<image>", "x")}), json.dumps([1])]
    at_loading = [json.dumps({"image": f"gone{i}.png", "conversations": turn("<image>", "x")}) for i in range(5)]
    lines = [x for triple in zip(good[:5], at_reading, at_loading) for x in triple] + good[5:]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, media


def _answers(batches):
    tok = tiny_tokenizer()
    return [tok.decode(row[lab != IGNORE_INDEX]) for b in batches for row, lab in zip(b["input_ids"], b["labels"])]


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_records_take_no_good_records_turn(tmp_path, caplog, workers):
    """Micro-batch 2, drop_last: all 8 good records train in every epoch, in full micro-batches,
    and every epoch's summary counts all 10 bad records (5 found reading, 5 loading)."""
    path, media = _good_and_bad(tmp_path)
    log = BadInputLog()
    loader = build_dataloader(_config(path, media, drop_last=True, num_workers=workers), tokenizer=tiny_tokenizer(), log=log)
    with caplog.at_level(logging.WARNING, logger="msmm.data"):
        epochs = [list(loader) for _ in range(3)]
    for batches in epochs:
        assert [len(b["input_ids"]) for b in batches] == [2, 2, 2, 2]
        assert sorted(_answers(batches)) == sorted(f"answer {i}<|im_end|>" for i in range(8))
    for epoch, so_far in ((0, 10), (1, 20), (2, 30)):
        assert (f"epoch {epoch}: skipped 10 sample(s): malformed_json=1, bad_record=2, placeholder_mismatch=1, bad_path=1, missing_image=5; "
                f"5 of them rejected when the annotation file was read; {so_far} skipped in all epochs so far") in caplog.text


def test_partial_last_micro_batch_is_completed_under_drop_last(tmp_path):
    path, media = _good_and_bad(tmp_path)
    config = _config(path, media, drop_last=True, micro_batch_size=3, shuffle=False)
    batches = list(build_dataloader(config, tokenizer=tiny_tokenizer(), log=BadInputLog()))
    assert [len(b["input_ids"]) for b in batches] == [3, 3, 3]  # 8 good: the last one takes the first good again
    assert _answers(batches)[-1] == _answers(batches)[0]
    assert set(_answers(batches)) == {f"answer {i}<|im_end|>" for i in range(8)}
    config = _config(path, media, drop_last=False, micro_batch_size=3, shuffle=False)
    assert [len(b["input_ids"]) for b in build_dataloader(config, tokenizer=tiny_tokenizer(), log=BadInputLog())] == [3, 3, 2]


def test_exact_resume_with_bad_records(tmp_path, caplog):
    path, media = _good_and_bad(tmp_path)
    config = lambda: _config(path, media, drop_last=True, micro_batch_size=3)  # noqa: E731
    reference = build_dataloader(config(), tokenizer=tiny_tokenizer(), log=BadInputLog())
    expected = list(reference) + list(reference)
    first = build_dataloader(config(), tokenizer=tiny_tokenizer(), log=BadInputLog())
    it = iter(first)
    got = [next(it), next(it)]
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it
    it.close()
    resumed = build_dataloader(config(), tokenizer=tiny_tokenizer(), log=BadInputLog())
    resumed.load_state_dict(state)
    with caplog.at_level(logging.WARNING, logger="msmm.data"):
        got += list(resumed)
        got += list(resumed)
    for a, b in zip(expected, got, strict=True):
        _equal(a, b)
    # the resumed epoch's summary still counts the bad records met before the checkpoint
    assert "epoch 0: skipped 10 sample(s)" in caplog.text and "epoch 1: skipped 10 sample(s)" in caplog.text
    assert "20 skipped in all epochs so far" in caplog.text


@pytest.mark.parametrize("micro_batch_size, world_size, drop_last", [(2, 2, False), (2, 4, True), (3, 2, False), (1, 3, True)])
def test_micro_batches_hold_the_same_samples_whatever_the_data_parallel_size(micro_batch_size, world_size, drop_last):
    """Megatron's split: a rank reads runs of micro_batch_size from each block of
    micro_batch_size x world_size, so the micro-batches of one worker are exactly those the
    ranks read together (the premise of data parallel = one worker)."""
    block = micro_batch_size * world_size
    full = 23 // block  # the blocks before the wrap-around padding of the ranks' order

    def micro_batches(world: int, per_rank: int):
        out = []
        for rank in range(world):
            order = EpochSampler(23, seed=5, rank=rank, world_size=world, drop_last=drop_last,
                                 micro_batch_size=micro_batch_size).indices(epoch=2)
            if world > 1:  # padded, never cut: the loader applies drop_last to good samples
                assert len(order) == -(-23 // block) * micro_batch_size
            out += [tuple(order[i:i + micro_batch_size]) for i in range(0, per_rank * micro_batch_size, micro_batch_size)]
        return out

    one, many = micro_batches(1, full * world_size), micro_batches(world_size, full)
    assert all(len(b) == micro_batch_size for b in many)
    assert sorted(many) == sorted(one)


def test_two_ranks_pad_instead_of_dropping_and_report_a_bad_record_once(tmp_path):
    """With 2 ranks the sampler pads the 13 loadable records to 16 by wrapping around (never
    cuts, even with drop_last), so every good record trains on some rank; a bad record the
    padding repeats on a rank is reported there once."""
    path, media = _good_and_bad(tmp_path)
    answers, bad = [], 0
    for rank in range(2):
        log = BadInputLog()
        loader = build_dataloader(_config(path, media, drop_last=True), tokenizer=tiny_tokenizer(), log=log,
                                  rank=rank, world_size=2)
        order = loader.sampler.indices(0)
        assert len(order) == 8
        answers += _answers(list(loader))
        loaded_bad = {i for i in order.tolist() if loader.dataset.records[i].images[0].endswith(tuple(f"gone{k}.png" for k in range(5)))}
        assert log.total["missing_image"] == len(loaded_bad)
        bad += len(loaded_bad)
    assert set(answers) == {f"answer {i}<|im_end|>" for i in range(8)}
    assert bad >= 5
