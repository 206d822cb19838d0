"""Video files in and out with OpenCV (``cv2.VideoCapture`` / ``cv2.VideoWriter``): frames
as RGB arrays; no torch. Audio is not read, so it is not carried over."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Iterable, Iterator, Optional, Tuple

import cv2
import numpy as np

from ..core import limits
from ..core.errors import ImageError, SrnPortError
from ..core.fileio import atomic_write, regular_file_size
from ..core.tolerances import TOLERANCES, within

#: The codec written for each container (OpenCV's built-in encoders).
FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v"}


#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...): they hold
#: the frame's height and width.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(f, start: int, end: int) -> Optional[Tuple[int, int]]:
    """(width, height) from the SOF header of the JPEG at ``start`` (its markers walked by
    their lengths, never past ``end``), or None where there is none before the scan."""
    f.seek(start)
    if f.read(2) != b"\xff\xd8":
        return None
    pos = start + 2
    for _ in range(256):  # a JPEG has a few dozen header segments
        f.seek(pos)
        head = f.read(4)
        if len(head) < 4 or head[0] != 0xFF or pos + 4 > end:
            return None
        marker, length = head[1], struct.unpack(">H", head[2:4])[0]
        if marker in _SOF:
            body = f.read(5)
            if len(body) < 5:
                return None
            height, width = struct.unpack(">HH", body[1:5])
            return width, height
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no SOF before them
            return None
        pos += 2 + length
    return None


def avi_jpeg_frame_sizes(path) -> Iterator[Tuple[int, int, int]]:
    """(frame number from 1, width, height) of every motion-JPEG frame of an AVI file, from
    the frames' own JPEG headers, without decoding anything: the RIFF chunks are walked by
    their sizes (``RIFF``/``LIST`` ``movi``, ``rec `` and OpenDML ``AVIX`` descended into,
    ``##dc``/``##db`` chunks read up to their SOF header). Bounded by the file's size."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        stack = [(0, size)]
        frame = 0
        while stack:
            pos, end = stack.pop()
            while pos + 8 <= end:
                f.seek(pos)
                head = f.read(12)
                if len(head) < 8:
                    break
                ident, length = head[:4], struct.unpack("<I", head[4:8])[0]
                chunk_end = min(pos + 8 + length, end)
                if ident in (b"RIFF", b"LIST") and head[8:12] in (b"AVI ", b"AVIX", b"movi",
                                                                  b"rec "):
                    stack.append((chunk_end + (length & 1), end))
                    pos, end = pos + 12, chunk_end
                    continue
                if ident[2:] in (b"dc", b"db") and ident[:2].isdigit():
                    frame += 1
                    found = _jpeg_size(f, pos + 8, chunk_end)
                    if found is not None:
                        yield (frame, *found)
                pos = pos + 8 + length + (length & 1)


class Video:
    """An open video: ``fps``, ``width``, ``height``, ``frames`` (the count the container
    promises; 0 where it states none) and iteration over its RGB frames.

    Iteration is checked as it goes: a video that cannot be decoded to its end (a damaged
    frame, a truncated file: OpenCV's decoder stops there and reports no error) is an
    :class:`ImageError` naming how many frames of how many were decoded, and so is a frame
    whose size differs from the container's. In an AVI, every motion-JPEG frame's header is
    read before OpenCV opens the file (:func:`avi_jpeg_frame_sizes`): a frame claiming more
    pixels than the limit, or another size than the first, is refused undecoded; elsewhere
    the limit is checked against the container's size before the first frame is read."""

    def __init__(self, path, max_pixels: Optional[int] = None):
        self.path = Path(path)
        try:
            regular_file_size(self.path, "video")
        except SrnPortError as exc:
            raise ImageError(str(exc)) from None
        most = limits.PIXELS.value() if max_pixels is None else max_pixels
        jpeg = self._check_jpeg_frames(most) if self.path.suffix.lower() == ".avi" else None
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
        if jpeg is not None and jpeg != (self.width, self.height):
            self.close()
            raise ImageError(f"'{self.path}': its frames' JPEG headers say {jpeg[0]}x{jpeg[1]} "
                             f"pixels, but the container {self.width}x{self.height}; the video is "
                             f"damaged. Nothing was written for it; re-encode it.")
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

    def _check_jpeg_frames(self, most: int) -> Optional[Tuple[int, int]]:
        """Before OpenCV decodes anything (opening a video decodes its first frame): every
        motion-JPEG frame's header size within ``most`` pixels and equal to the first's
        (OpenCV would scale a frame of another size to the first's without a word). Returns
        that size, or None for an AVI without JPEG frames (another codec)."""
        first = None
        try:
            for n, width, height in avi_jpeg_frame_sizes(self.path):
                if width * height > most:
                    raise ImageError(
                        f"'{self.path}': frame {n}'s JPEG header claims {width}x{height} "
                        f"pixels, more than the limit of {most / 1e6:g} MP (--max-pixels or "
                        f"{limits.PIXELS.env}); nothing was decoded or written for it.")
                if first is None:
                    first = (width, height)
                elif (width, height) != first:
                    raise ImageError(
                        f"'{self.path}': frame {n}'s JPEG header says {width}x{height} pixels, "
                        f"frame 1's {first[0]}x{first[1]}; frames of changing size are not "
                        f"supported (OpenCV would silently scale it). Nothing was written for "
                        f"it; repair or re-encode the video.")
        except OSError as exc:
            raise ImageError(f"Cannot read the video '{self.path}': "
                             f"{exc.strerror or exc}.") from None
        return first

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
