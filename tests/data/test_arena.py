"""Batch arena (msmm.data.arena): samples laid end to end in reused memory, batches joined as views;
the loader's batches equal those of plain concatenation, and a buffer is never reused while a
batch or sample cut from it is alive."""
import numpy as np
import pytest

from msmm.data import arena
from msmm.data.bad_input import BadInput
from msmm.data.collate import PackingCollator, PaddingCollator
from msmm.data.loader import DataLoader
from msmm.data.sampler import EpochSampler
from msmm.data.templates import IGNORE_INDEX


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch):
    """Each test starts with no pooled buffers (the pool is per process)."""
    monkeypatch.setattr(arena, "_POOL", [])


class FakeDataset:
    """Samples of mixed lengths and image counts, pixel arrays from ``arena.empty`` as the
    transforms allocate them; every fifth record bad; some samples also carry video pixels."""

    def __init__(self, n: int, videos: bool = False) -> None:
        self.n, self.videos = n, videos

    def __len__(self) -> int:
        return self.n

    def get(self, index: int, epoch: int = 0):
        if index % 5 == 4:
            return BadInput(f"record {index}", "corrupt_image", "test")
        rng = np.random.default_rng(index)  # the same sample every epoch
        length = 3 + (index * 7) % 11
        ids = rng.integers(3, 100, length)
        images = 1 + index % 3
        pixels = arena.empty((images, 3, 4, 5), np.float32)
        pixels[...] = rng.standard_normal(pixels.shape)
        sample = {"input_ids": ids, "labels": np.where(rng.random(length) < 0.5, ids, IGNORE_INDEX),
                  "pixel_values": pixels, "image_grid_thw": np.tile([1, 4, 5], (images, 1))}
        if self.videos and index % 3 == 0:
            frames = arena.empty((2, 3, 4, 5), np.float32)
            frames[...] = rng.standard_normal(frames.shape)
            sample["pixel_values_videos"] = frames
        return sample


def reference_padding(samples, pad_id, multiple=1):
    """PaddingCollator as it was before the arena: fresh arrays, np.concatenate."""
    length = -(-max(len(s["input_ids"]) for s in samples) // multiple) * multiple
    ids = np.full((len(samples), length), pad_id, np.int64)
    labels = np.full((len(samples), length), IGNORE_INDEX, np.int64)
    mask = np.zeros((len(samples), length), np.int64)
    for row, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[row, :n], labels[row, :n], mask[row, :n] = s["input_ids"], s["labels"], 1
    out = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    for key in ("pixel_values", "image_flags", "image_grid_thw", "pixel_values_videos", "video_grid_thw"):
        parts = [np.array(s[key]) for s in samples if key in s]
        if parts:
            out[key] = np.concatenate(parts)
    return out


def expected_batches(dataset, batch_size, drop_last, collate):
    good = [s for s in (dataset.get(i) for i in range(len(dataset))) if not isinstance(s, BadInput)]
    batches = [good[i : i + batch_size] for i in range(0, len(good), batch_size)]
    if drop_last and len(batches[-1]) < batch_size:
        batches[-1] = (batches[-1] + good)[:batch_size]
    return [collate(b) for b in batches]


def assert_batches_equal(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert sorted(g) == sorted(e)
        for key in e:
            assert g[key].dtype == e[key].dtype, key
            np.testing.assert_array_equal(g[key], e[key], err_msg=key)


def test_join_is_a_view_of_adjacent_parts_and_a_copy_otherwise():
    a = arena.BatchArena(4)
    a.start_batch()
    parts = [a.empty((k, 3, 2), np.float32) for k in (1, 3, 0, 2)]
    for k, p in enumerate(parts):
        p[...] = k
    joined = arena.join(parts)
    np.testing.assert_array_equal(joined, np.concatenate(parts))
    assert joined.base is parts[0].base  # a view of the arena's buffer: no copy
    assert arena.join(parts[:1]) is parts[0]
    apart = [parts[0], parts[3]]  # not end to end: copied
    joined = arena.join(apart)
    np.testing.assert_array_equal(joined, np.concatenate(apart))
    assert not np.shares_memory(joined, parts[0])
    other = a.empty((2, 6), np.float32)  # adjacent, other shape: copied (np.concatenate raises as before)
    with pytest.raises(ValueError):
        arena.join([parts[3], other])
    plain = [np.ones((2, 3, 2), np.float32), np.zeros((1, 3, 2), np.float32)]
    np.testing.assert_array_equal(arena.join(plain), np.concatenate(plain))
    assert arena.empty((2, 2)).base is None  # no active arena: np.empty


def test_buffer_reused_only_when_nothing_holds_it():
    a = arena.BatchArena(2)
    a.start_batch()
    first = a.empty((8, 8), np.float32)
    address = first.ctypes.data
    a.start_batch()
    held = a.empty((8, 8), np.float32)  # `first` is alive: another buffer
    assert not np.shares_memory(held, first)
    del first
    a.start_batch()
    again = a.empty((8, 8), np.float32)  # the first buffer is free again
    assert again.ctypes.data == address
    assert not np.shares_memory(again, held)


@pytest.mark.parametrize("collator", ["padding", "padding_multiple", "packing"])
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_batches_equal_plain_concatenation(collator, workers, drop_last):
    """Mixed lengths, image counts, bad records, videos beside images (not end to end: copied),
    the last micro-batch partial or completed; batches kept (no reuse) or dropped one by one
    (buffers reused): the same arrays as the collators without the arena."""
    dataset = FakeDataset(29, videos=collator == "padding")
    collate = {"padding": PaddingCollator(0), "padding_multiple": PaddingCollator(0, pad_to_multiple_of=8),
               "packing": PackingCollator(0, 64)}[collator]
    if collator == "packing":
        reference = collate  # its text arrays are fresh; its vision arrays are compared through np.array copies below
        expected = [{k: np.array(v) for k, v in b.items()} for b in expected_batches(dataset, 4, drop_last, reference)]
    else:
        expected = expected_batches(dataset, 4, drop_last, lambda s: reference_padding(s, 0, collate.multiple))
    loader = DataLoader(dataset, EpochSampler(len(dataset), shuffle=False), collate, 4, workers, drop_last=drop_last)
    buffers = set()
    for got, want in zip(loader, expected):  # dropped one by one: buffers reused
        assert_batches_equal([got], [want])
        if got["pixel_values"].base is not None:
            buffers.add(got["pixel_values"].base.ctypes.data)
    assert len(buffers) <= 3 and len(arena._POOL) <= 3, (len(buffers), len(expected))
    kept = list(loader)  # every batch alive at once: no buffer may be reused under them
    assert_batches_equal(kept, expected)
    for got, want in zip(loader, expected):
        assert_batches_equal([got], [want])
    assert_batches_equal(kept, expected)  # still intact after another epoch
    if workers == 0 and collator != "padding":
        assert all(b["pixel_values"].base is not None for b in kept)  # joined as views


def test_lazy_sample_generator_draws_as_default_rng():
    """MultimodalDataset seeds a sample's generator on first use only; the draws are the same."""
    from msmm.data.dataset import _LazyGenerator

    seed = [0, 3, 17]
    lazy, eager = _LazyGenerator(seed), np.random.default_rng(seed)
    assert lazy._rng is None
    np.testing.assert_array_equal(lazy.integers(0, 100, 7), eager.integers(0, 100, 7))
    np.testing.assert_array_equal(lazy.permutation(20), eager.permutation(20))
    np.testing.assert_array_equal(lazy.integers([0, 5], [3, 9]), eager.integers([0, 5], [3, 9]))
