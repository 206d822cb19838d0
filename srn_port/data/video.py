"""Video files in and out with OpenCV (``cv2.VideoCapture`` / ``cv2.VideoWriter``): frames
as RGB arrays; no torch. Audio is not read, so it is not carried over."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional

import cv2
import numpy as np

from ..core import limits
from ..core.errors import ImageError, SrnPortError
from ..core.fileio import atomic_write, regular_file_size

#: The codec written for each container (OpenCV's built-in encoders).
FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v"}


class Video:
    """An open video: ``fps``, ``width``, ``height``, ``frames`` (the container's count,
    which may be approximate) and iteration over its RGB frames."""

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
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or 25.0
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

    def __iter__(self) -> Iterator[np.ndarray]:
        frame = self._first
        while frame is not None:
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            ok, frame = self._cap.read()
            if not ok:
                frame = None

    def close(self) -> None:
        self._cap.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_video(path, frames: Iterable[np.ndarray], fps: float, width: int, height: int) -> int:
    """Write RGB uint8 frames of ``width`` x ``height`` to ``path`` (container by extension,
    codec :data:`FOURCC`), atomically: a temporary file beside it, renamed into place once
    every frame is written. Returns the number of frames."""
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
                             f"{FOURCC[suffix]} codec on this system; choose another "
                             f"container ({', '.join(FOURCC)}).")
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

    atomic_write(path, write, keep_suffix=True)
    return count
