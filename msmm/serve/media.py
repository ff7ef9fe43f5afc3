"""Images and videos of a chat request: ``data:`` URIs (base64) and, under the allowed roots
only, local files (``file://`` URIs); images decoded with Pillow, videos with decord (the
training pipeline's ``read_video``), after size checks."""
from __future__ import annotations

import base64
import binascii
import io
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Sequence
from urllib.parse import unquote, urlparse

from PIL import Image

from ..data.video import Video, read_video
from .errors import bad_request


@dataclass(frozen=True)
class MediaLimits:
    allowed_roots: Sequence[str] = ()  # real paths of the directories local files may come from
    max_bytes: int = 20 * 1024 * 1024  # encoded size of one image
    max_pixels: int = 8192 * 8192  # width x height of one image
    max_video_bytes: int = 100 * 1024 * 1024  # encoded size of one video


def _data_uri(url: str, max_bytes: int, param: str, kind: str = "image") -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise bad_request(f"an {kind} data URI must be data:{kind}/...;base64,<data>", param, f"invalid_{kind}_url")
    if len(payload) * 3 // 4 > max_bytes:
        raise bad_request(f"the {kind} is larger than {max_bytes} bytes", param, f"{kind}_too_large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"the {kind} data URI is not valid base64", param, f"invalid_{kind}_url") from None


def _allowed_path(url: str, limits: MediaLimits, param: str) -> str:
    """The real path of a ``file://`` URL, if it is a file under an allowed root."""
    path = os.path.realpath(unquote(urlparse(url).path))
    if not any(os.path.commonpath([path, root]) == root for root in limits.allowed_roots):
        allowed = ", ".join(limits.allowed_roots) or "none (start msmm-serve with --allowed-local-media-path)"
        raise bad_request(f"local file {path} is outside the allowed media paths ({allowed})", param,
                          "file_not_allowed")
    if not os.path.isfile(path):
        raise bad_request(f"local file {path}: not found", param, "file_not_found")
    return path


def _local_file(url: str, limits: MediaLimits, param: str) -> bytes:
    path = _allowed_path(url, limits, param)
    if os.path.getsize(path) > limits.max_bytes:
        raise bad_request(f"the image is larger than {limits.max_bytes} bytes", param, "image_too_large")
    with open(path, "rb") as f:
        return f.read()


def load_image(url: str, limits: MediaLimits, param: str) -> Image.Image:
    """The RGB image of an ``image_url`` (``param`` names it in errors)."""
    if url.startswith("data:"):
        data = _data_uri(url, limits.max_bytes, param)
    elif url.startswith("file://"):
        data = _local_file(url, limits, param)
    else:
        raise bad_request("image_url must be a data: URI (base64) or a file:// URI under an allowed path; "
                          "the server fetches nothing from the network", param, "invalid_image_url")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > limits.max_pixels:
            raise bad_request(f"the image is {image.width}x{image.height} pixels, more than {limits.max_pixels}",
                              param, "image_too_large")
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise bad_request(f"the image cannot be decoded ({type(err).__name__})", param, "invalid_image") from None


def load_video(url: str, limits: MediaLimits, param: str, frames: Callable) -> Video:
    """The frames ``frames(total, fps, rng)`` picks of a ``video_url``'s video."""
    def read(path: str) -> Video:
        try:
            return read_video(path, frames)
        except Exception as err:  # decord raises many kinds for a file it cannot decode
            raise bad_request(f"the video cannot be decoded ({type(err).__name__}: {err})", param,
                              "invalid_video") from None

    if url.startswith("file://"):
        path = _allowed_path(url, limits, param)
        if os.path.getsize(path) > limits.max_video_bytes:
            raise bad_request(f"the video is larger than {limits.max_video_bytes} bytes", param, "video_too_large")
        return read(path)
    if not url.startswith("data:"):
        raise bad_request("video_url must be a data: URI (base64) or a file:// URI under an allowed path", param,
                          "invalid_video_url")
    with tempfile.NamedTemporaryFile(suffix=".video") as f:
        f.write(_data_uri(url, limits.max_video_bytes, param, "video"))
        f.flush()
        return read(f.name)
