"""Video: decord reading of videos written in the test (PyAV), frame sampling, Qwen2-VL temporal
patches equal to HF."""
import types

import av
import numpy as np
import pytest
import torch
from transformers import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

from msmm.data.image_processing import Qwen2VLImageTransform
from msmm.data.video import InternVLFrameSampler, Qwen2VLFrameSampler, read_video


def write_video(path, num_frames=20, size=(96, 64), fps=10, seed=0):
    """A moving gradient with noise, mpeg4 in mp4."""
    rng = np.random.default_rng(seed)
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        y, x = np.mgrid[0:height, 0:width]
        for k in range(num_frames):
            frame = np.stack([(x * 4 + k * 9) % 256, (y * 4) % 256, np.full_like(x, k * 12 % 256)], -1)
            frame = np.clip(frame + rng.integers(-8, 8, frame.shape), 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


def test_decord_reads_the_sampled_frames(tmp_path):
    path = write_video(tmp_path / "v.mp4", num_frames=20, fps=10)
    video = read_video(path, Qwen2VLFrameSampler(fps=2.0))
    assert video.fps == pytest.approx(10.0)
    np.testing.assert_array_equal(video.indices, [0, 5, 10, 15])  # 2 s at 2 fps -> 4 frames
    assert len(video.frames) == 4 and video.frames[0].size == (96, 64)
    # frames differ over time (the gradient moves), so the right frames were decoded
    first, last = np.asarray(video.frames[0], np.int16), np.asarray(video.frames[-1], np.int16)
    assert np.abs(first - last).mean() > 10


def _hf_sample(total, video_fps, fps, min_frames, max_frames):
    fake = types.SimpleNamespace(num_frames=None, fps=None)
    picked = Qwen2VLVideoProcessor.sample_frames(
        fake, torch.arange(total), frame_factor=2, min_frames=min_frames, max_frames=max_frames,
        metadata={"fps": video_fps}, fps=fps,
    )
    return picked.numpy()


def test_qwen2vl_sampling_equals_hf():
    compared = 0
    for total in (4, 7, 20, 33, 100, 301, 1000):
        for video_fps in (10.0, 24.0, 29.97):
            for fps, max_frames in ((2.0, 768), (1.0, 16), (0.5, 8)):
                sampler = Qwen2VLFrameSampler(fps=fps, min_frames=4, max_frames=max_frames)
                ours = sampler(total, video_fps)
                hf = _hf_sample(total, video_fps, fps, 4, max_frames)
                # HF's torch.arange with a float step sometimes yields one extra (out-of-range) index;
                # the frame count is exact, so compare where HF returns that many frames
                if len(hf) == sampler.num_frames(total, video_fps):
                    np.testing.assert_array_equal(ours, hf)
                    compared += 1
                assert ours.max() < total and len(ours) % 2 == 0
    assert compared >= 50


def test_qwen2vl_video_patches_equal_hf(tmp_path):
    path = write_video(tmp_path / "v.mp4", num_frames=30, size=(120, 90), fps=10)
    video = read_video(path, Qwen2VLFrameSampler(fps=2.0))
    transform = Qwen2VLImageTransform(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    patches, grid = transform.frames(video.frames)
    ref = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    expected = ref(images=None, videos=[video.frames], return_tensors="np")
    assert grid == tuple(expected["video_grid_thw"][0]) and grid[0] == 3
    np.testing.assert_allclose(patches, expected["pixel_values_videos"], atol=1e-5, rtol=0)


def test_internvl_segments():
    middle = InternVLFrameSampler(8, 8, "middle")(80, 25.0)
    np.testing.assert_array_equal(middle, np.arange(8) * 10 + 4)
    sampler = InternVLFrameSampler(4, 12, "rand")
    draws = [sampler(100, 25.0, np.random.default_rng(s)) for s in range(20)]
    for indices in draws:
        n = len(indices)
        assert 4 <= n <= 12
        bounds = np.linspace(0, 100, n + 1).astype(int)
        assert ((indices >= bounds[:-1]) & (indices < bounds[1:] - 1)).all()  # inside its own segment
    np.testing.assert_array_equal(sampler(100, 25.0, np.random.default_rng(3)), draws[3])  # seeded
    assert len({tuple(d) for d in draws}) > 10
    short = InternVLFrameSampler(6, 6, "middle")(3, 25.0)
    np.testing.assert_array_equal(short, [0, 1, 2, 2, 2, 2])  # padded with the last frame
    np.testing.assert_array_equal(InternVLFrameSampler(1, 3, "fps1")(100, 10.0), [5, 15, 25])
