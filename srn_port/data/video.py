"""Video files in and out with OpenCV (``cv2.VideoCapture`` / ``cv2.VideoWriter``): frames
as RGB arrays; no torch. Audio is not read, so it is not carried over."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Iterator, Optional

import cv2
import numpy as np

from ..core import limits
from ..core.errors import ImageError, SrnPortError
from ..core.fileio import atomic_write, regular_file_size
from ..core.tolerances import TOLERANCES, within

#: The codec written for each container (OpenCV's built-in encoders).
FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v"}


class Video:
    """An open video: ``fps``, ``width``, ``height``, ``frames`` (the count the container
    promises; 0 where it states none) and iteration over its RGB frames.

    Iteration is checked as it goes: a video that cannot be decoded to its end (a damaged
    frame, a truncated file: OpenCV's decoder stops there and reports no error) is an
    :class:`ImageError` naming how many frames of how many were decoded, and so is a frame
    whose size differs from the container's (e.g. a frame header claiming 20000x20000: the
    pixel limit is checked against the container's size before the first frame is read)."""

    def __init__(self, path, max_pixels: Optional[int] = None):
        self.path = Path(path)
        try:
            regular_file_size(self.path, "video")
        except SrnPortError as exc:
            raise ImageError(str(exc)) from None
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise ImageError(f"'{self.path}': OpenCV cannot open it as a video (unknown "
                             f"container or codec, or a damaged file).")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        if not math.isfinite(self.fps) or self.fps <= 0:
            self.close()
            raise ImageError(f"'{self.path}': its header states no usable frame rate "
                             f"({self.fps:g} fps), so the output could not keep it; re-mux "
                             f"the video with its real frame rate (e.g. with ffmpeg).")
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frames = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        most = limits.PIXELS.value() if max_pixels is None else max_pixels
        if self.width * self.height > most:
            self.close()
            raise ImageError(f"'{self.path}': frames of {self.width}x{self.height} pixels, more "
                             f"than the limit of {most / 1e6:g} MP (--max-pixels).")
        ok, first = self._cap.read()
        if not ok or first is None:
            self.close()
            raise ImageError(f"'{self.path}': no frame can be decoded (an empty or damaged "
                             f"video, or a codec OpenCV lacks).")
        self._first = first
        self.decoded = 0  #: frames decoded so far by iteration

    def __iter__(self) -> Iterator[np.ndarray]:
        frame = self._first
        self.decoded = 0
        while frame is not None:
            if frame.shape[:2] != (self.height, self.width):
                raise ImageError(
                    f"'{self.path}': frame {self.decoded + 1} decodes to "
                    f"{frame.shape[1]}x{frame.shape[0]} pixels, but the container says "
                    f"{self.width}x{self.height}; the video is damaged (frames of changing "
                    f"size are not supported). Nothing was written for it.")
            self.decoded += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            ok, frame = self._cap.read()
            if not ok:
                frame = None
        if self.decoded < self.frames:
            position = int(self._cap.get(cv2.CAP_PROP_POS_FRAMES))
            raise ImageError(
                f"'{self.path}': only {self.decoded} of the {self.frames} frame(s) its container "
                f"promises could be decoded (the decoder stopped at frame {position + 1}: a "
                f"damaged frame or a truncated file). Nothing was written for it; repair or "
                f"re-encode the video (e.g. with ffmpeg) and run again.")

    def close(self) -> None:
        self._cap.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _written(path: str):
    cap = cv2.VideoCapture(path)
    try:
        return float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def write_video(path, frames: Iterable[np.ndarray], fps: float, width: int, height: int) -> int:
    """Write RGB uint8 frames of ``width`` x ``height`` to ``path`` (container by extension,
    codec :data:`FOURCC`), atomically: a temporary file beside it, renamed into place once
    every frame is written. Returns the number of frames.

    The written file is opened again before it is renamed into place: a frame rate the
    container cannot hold (OpenCV's MJPG writer turns 90000 fps into 600 fps; MPEG-4's time
    base stops at 65535) or a frame count that differs from what was written is an
    :class:`ImageError`, never a silently changed video."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FOURCC:
        raise ImageError(f"cannot write '{suffix}' videos; use one of {', '.join(FOURCC)}.")
    count = 0

    def write(tmp):
        nonlocal count
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*FOURCC[suffix]), fps,
                                 (width, height))
        if not writer.isOpened():
            raise ImageError(f"'{path}': OpenCV cannot write {suffix} video with the "
                             f"{FOURCC[suffix]} codec at {fps:g} fps and {width}x{height} "
                             f"pixels on this system (MJPG in .avi needs 1 fps or more; "
                             f"MPEG-4 at most 65535 fps); choose another container "
                             f"({', '.join(FOURCC)}), or re-mux the input with a usual frame "
                             f"rate.")
        try:
            for frame in frames:
                if frame.shape[:2] != (height, width) or frame.dtype != np.uint8:
                    raise ImageError(f"'{path}': a frame of shape {frame.shape} {frame.dtype}, "
                                     f"expected {height}x{width} uint8.")
                rgb = frame if frame.ndim == 3 else np.repeat(frame[:, :, None], 3, axis=2)
                writer.write(cv2.cvtColor(np.ascontiguousarray(rgb[:, :, :3]),
                                          cv2.COLOR_RGB2BGR))
                count += 1
        finally:
            writer.release()
        got_fps, got_count = _written(tmp)
        if not within(abs(got_fps - fps), fps, TOLERANCES["frame_rate"]) or got_count != count:
            raise ImageError(f"'{path}': OpenCV wrote {got_count} frame(s) at {got_fps:g} fps "
                             f"instead of {count} at {fps:g} fps ({suffix} with "
                             f"{FOURCC[suffix]} cannot hold that frame rate), so the video "
                             f"would not keep its input's timing. Nothing was written; choose "
                             f"another container ({', '.join(FOURCC)}), or re-mux the input "
                             f"with a usual frame rate.")

    atomic_write(path, write, keep_suffix=True)
    return count
