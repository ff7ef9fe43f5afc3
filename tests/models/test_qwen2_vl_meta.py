"""The numpy metadata of Qwen2-VL / Qwen2.5-VL against HF's torch implementations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from msmm.models.qwen2_vl_meta import get_rope_index, vision_metadata, window_partition
from test_qwen2_vl import IMAGE, MERGE, PATCH, VIDEO, VISION_END, VISION_START, hf_model


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def hf(request):
    return request.param, hf_model(request.param).model


def _row(rng, items):
    ids = []
    for kind, arg in items:
        if kind == "text":
            ids += rng.integers(0, VISION_START, size=arg).tolist()
        else:
            t, h, w = arg
            ids += [VISION_START] + [IMAGE if kind == "image" else VIDEO] * (t * h * w // MERGE**2) + [VISION_END]
    return ids


def test_rope_index_matches_hf(hf, rng):
    """Left and right padding, a text-only row, images and videos interleaved."""
    family, model = hf
    rows = [
        [("text", 3), ("video", (3, 4, 4)), ("text", 2), ("image", (1, 4, 6)), ("text", 1)],
        [("text", 5)],
        [("image", (1, 2, 2)), ("text", 2), ("video", (2, 2, 4)), ("text", 3)],
    ]
    images = np.array([(1, 4, 6), (1, 2, 2)])
    videos = np.array([(3, 4, 4), (2, 2, 4)])
    seqs = [_row(rng, r) for r in rows]
    length = max(map(len, seqs)) + 2
    ids = np.zeros((len(seqs), length), np.int64)
    mask = np.zeros_like(ids)
    for i, s in enumerate(seqs):
        start = 0 if i == 0 else length - len(s)  # row 0 right-padded, others left-padded
        ids[i, start:start + len(s)], mask[i, start:start + len(s)] = s, 1
    extra = {}
    if family == "qwen2_5_vl":
        extra = {"second_per_grid_ts": torch.tensor([1.0, 3.0])}
    ref_pos, ref_delta = model.get_rope_index(
        torch.tensor(ids), torch.tensor(images), torch.tensor(videos), attention_mask=torch.tensor(mask), **extra
    )
    pos, delta = get_rope_index(
        ids, images, videos, mask,
        spatial_merge_size=MERGE, image_token_id=IMAGE, video_token_id=VIDEO,
        vision_start_token_id=VISION_START,
        second_per_grid_ts=[1.0, 3.0] if family == "qwen2_5_vl" else None,
        tokens_per_second=2 if family == "qwen2_5_vl" else None,
    )
    np.testing.assert_array_equal(pos, ref_pos.numpy())
    np.testing.assert_array_equal(delta, ref_delta.numpy())


def test_rope_index_text_only_matches_hf(hf):
    _, model = hf
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    ids = np.ones_like(mask)
    ref_pos, ref_delta = model.get_rope_index(torch.tensor(ids), None, None, attention_mask=torch.tensor(mask))
    pos, delta = get_rope_index(
        ids, None, None, mask, spatial_merge_size=MERGE, image_token_id=IMAGE,
        video_token_id=VIDEO, vision_start_token_id=VISION_START,
    )
    np.testing.assert_array_equal(pos, ref_pos.numpy())
    np.testing.assert_array_equal(delta, ref_delta.numpy())


def test_rope_index_rejects_grid_token_mismatch():
    ids = np.array([[1, VISION_START] + [IMAGE] * 5 + [VISION_END]])
    with pytest.raises(ValueError, match="expected 6 vision tokens"):
        get_rope_index(
            ids, np.array([(1, 4, 6)]), None, spatial_merge_size=MERGE, image_token_id=IMAGE,
            video_token_id=VIDEO, vision_start_token_id=VISION_START,
        )


def test_window_partition_matches_hf():
    model = hf_model("qwen2_5_vl").model.visual
    grids = np.array([(1, 6, 10), (2, 4, 4), (1, 8, 2)])
    ref_index, ref_cu = model.get_window_index(torch.tensor(grids))
    index, window_ids = window_partition(grids, MERGE, model.window_size, PATCH)
    np.testing.assert_array_equal(index, ref_index.numpy())
    sizes = np.bincount(window_ids)
    np.testing.assert_array_equal(np.concatenate([[0], np.cumsum(sizes * MERGE**2)]), np.unique(ref_cu))


def test_vision_metadata_permutation_round_trips():
    grids = np.array([(1, 6, 10), (2, 4, 4)])
    meta = vision_metadata(grids, MERGE, window_size=16, patch_size=PATCH)
    plain = vision_metadata(grids, MERGE)
    n = int((grids[:, 0] * grids[:, 1] * grids[:, 2]).sum())
    assert meta["vision_position_ids"].shape == (n, 2)
    np.testing.assert_array_equal(meta["vision_window_index"][meta["vision_reverse_index"]], np.arange(n // 4))
    unpermuted = meta["vision_position_ids"].reshape(-1, 4, 2)[meta["vision_reverse_index"]].reshape(n, 2)
    np.testing.assert_array_equal(unpermuted, plain["vision_position_ids"])
    # a window never crosses a frame
    frames, windows = meta["vision_segment_ids"], meta["vision_window_segment_ids"]
    for w in np.unique(windows):
        assert len(np.unique(frames[windows == w])) == 1
