"""Video files in and out: frames as RGB arrays; no torch.

Two backends, chosen by :func:`video_backend`:

``pyav`` (the ``video`` extra: PyAV, FFmpeg's libraries inside its wheel; used when installed)
    Frames decoded by FFmpeg with each frame's timestamp; the output is encoded with H.264
    (libx264, yuv420p, CRF 18) by default, each frame keeping its input timestamp (so a
    variable frame rate stays as it was), the audio streams copied packet for packet (not
    re-encoded), and the rotation (display matrix) and colour tags (range, matrix,
    primaries, transfer) of the input kept. :class:`PyAVVideo`, :func:`write_video`.
``opencv`` (the fallback)
    ``cv2.VideoCapture`` / ``cv2.VideoWriter``: mp4v (MJPG in ``.avi``) at the input's
    frame rate; audio is not read, so it is not carried over. :class:`OpenCVVideo`.

``SRN_PORT_VIDEO_BACKEND=opencv|pyav`` forces one (``auto``, the default: PyAV where it is
installed). Both backends count the frames decoded against the container's promise, bound
each frame's pixels before it is decoded, and re-read the written file before it is renamed
into place (:func:`srn_port.core.fileio.atomic_write`)."""

from __future__ import annotations

import collections
import math
import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Tuple

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


def check_jpeg_frames(path: Path, most: int) -> Optional[Tuple[int, int]]:
    """Before any decoder sees the AVI ``path`` (opening a video decodes its first frame):
    every motion-JPEG frame's header size within ``most`` pixels and equal to the first's
    (OpenCV would scale a frame of another size to the first's without a word). Returns
    that size, or None for an AVI without JPEG frames (another codec)."""
    first = None
    try:
        for n, width, height in avi_jpeg_frame_sizes(path):
            if width * height > most:
                raise ImageError(
                    f"'{path}': frame {n}'s JPEG header claims {width}x{height} "
                    f"pixels, more than the limit of {most / 1e6:g} MP (--max-pixels or "
                    f"{limits.PIXELS.env}); nothing was decoded or written for it.")
            if first is None:
                first = (width, height)
            elif (width, height) != first:
                raise ImageError(
                    f"'{path}': frame {n}'s JPEG header says {width}x{height} pixels, "
                    f"frame 1's {first[0]}x{first[1]}; frames of changing size are not "
                    f"supported (OpenCV would silently scale it). Nothing was written for "
                    f"it; repair or re-encode the video.")
    except OSError as exc:
        raise ImageError(f"Cannot read the video '{path}': "
                         f"{exc.strerror or exc}.") from None
    return first


def _before_opening(path: Path, max_pixels: Optional[int]):
    """The checks made before a decoder opens ``path``: a regular file, and in an AVI every
    motion-JPEG frame's header size (:func:`check_jpeg_frames`). Returns (pixel limit, the
    JPEG frames' size or None)."""
    try:
        regular_file_size(path, "video")
    except SrnPortError as exc:
        raise ImageError(str(exc)) from None
    most = limits.PIXELS.value() if max_pixels is None else max_pixels
    jpeg = check_jpeg_frames(path, most) if path.suffix.lower() == ".avi" else None
    return most, jpeg


class OpenCVVideo:
    """An open video read by OpenCV: ``fps``, ``width``, ``height``, ``frames`` (the count the
    container promises; 0 where it states none) and iteration over its RGB frames.

    Iteration is checked as it goes: a video that cannot be decoded to its end (a damaged
    frame, a truncated file: OpenCV's decoder stops there and reports no error) is an
    :class:`ImageError` naming how many frames of how many were decoded, and so is a frame
    whose size differs from the container's. In an AVI, every motion-JPEG frame's header is
    read before OpenCV opens the file (:func:`avi_jpeg_frame_sizes`): a frame claiming more
    pixels than the limit, or another size than the first, is refused undecoded; elsewhere
    the limit is checked against the container's size before the first frame is read."""

    backend = "opencv"

    def __init__(self, path, max_pixels: Optional[int] = None):
        self.path = Path(path)
        most, jpeg = _before_opening(self.path, max_pixels)
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


def _write_opencv(path, frames: Iterable[np.ndarray], fps: float, width: int, height: int) -> int:
    """OpenCV's :func:`write_video`: write RGB uint8 frames of ``width`` x ``height`` to ``path`` (container by extension,
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


# -- backend choice ----------------------------------------------------------------------------

#: Forces the video backend: ``opencv``, ``pyav`` or ``auto`` (the default: PyAV where
#: installed, else OpenCV).
BACKEND_ENV = "SRN_PORT_VIDEO_BACKEND"
VIDEO_BACKENDS = ("auto", "pyav", "opencv")
#: The containers PyAV writes, by extension: FFmpeg's muxer for each.
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
#: The encoder PyAV writes with unless told otherwise (H.264, which browsers play), and its
#: quality: x264's constant rate factor (0 lossless, 18 visually near-lossless, 51 worst).
DEFAULT_CODEC = "libx264"
DEFAULT_CRF = 18
#: Encoders that take a constant rate factor (``--crf``).
CRF_CODECS = frozenset({"libx264", "libx264rgb", "libx265", "libvpx-vp9", "libsvtav1"})
#: What FFmpeg may open for srn-port: the demuxers of the containers above (``mov`` is the
#: MP4/MOV family, ``matroska`` includes WebM) and local files only, so that a file named
#: clip.mp4 that is a playlist (HLS, concat) or refers to other files or URLs is refused.
_OPEN_OPTIONS = {"format_whitelist": "mov,matroska,avi", "protocol_whitelist": "file"}
#: FFmpeg's colour matrices (AVColorSpace) -> swscale's names for the RGB <-> YUV conversion.
_SWS_MATRIX = {1: "itu709", 4: "fcc", 5: "itu601", 6: "smpte170m", 7: "smpte240m",
               9: "bt2020", 10: "bt2020"}


def _import_av():
    try:
        import av
    except ImportError:
        return None
    return av


def video_backend() -> str:
    """``pyav`` or ``opencv``: :data:`BACKEND_ENV` where set, else PyAV where it is installed."""
    choice = (os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if choice not in VIDEO_BACKENDS:
        raise SrnPortError(f"{BACKEND_ENV}={os.environ.get(BACKEND_ENV)!r}: expected one of "
                           f"{', '.join(VIDEO_BACKENDS)}.")
    if choice == "opencv":
        return "opencv"
    if _import_av() is None:
        if choice == "pyav":
            raise SrnPortError(f"{BACKEND_ENV}=pyav, but PyAV is not installed: install it with "
                               f"pip install 'srn-port[video]', or unset {BACKEND_ENV} to use "
                               f"OpenCV (which does not carry the audio over).")
        return "opencv"
    return "pyav"


def Video(path, max_pixels: Optional[int] = None):
    """Open a video for reading with the :func:`video_backend`: a :class:`PyAVVideo` or an
    :class:`OpenCVVideo` (same attributes: ``fps``, ``width``, ``height``, ``frames``,
    ``decoded``, iteration over RGB frames, a context manager)."""
    if video_backend() == "pyav":
        return PyAVVideo(path, max_pixels)
    return OpenCVVideo(path, max_pixels)


def default_codec() -> str:
    """:data:`DEFAULT_CODEC` where this PyAV has it, else FFmpeg's own MPEG-4 encoder."""
    av = _import_av()
    try:
        av.codec.Codec(DEFAULT_CODEC, "w")
        return DEFAULT_CODEC
    except Exception:  # noqa: BLE001 - av.codec.codec.UnknownCodecError, or an older name
        return "mpeg4"


def check_encoder(codec: Optional[str], crf: Optional[int]) -> Tuple[str, Optional[int]]:
    """(encoder, crf) for ``write_video``: ``codec`` (default :func:`default_codec`) must be a
    video encoder of this PyAV, and ``crf`` (default :data:`DEFAULT_CRF` for the encoders of
    :data:`CRF_CODECS`) one it takes; a clear :class:`SrnPortError` otherwise."""
    av = _import_av()
    if av is None:
        raise SrnPortError("--codec and --crf choose PyAV's encoder, and PyAV is not installed "
                           "(videos are then written by OpenCV, as mp4v or MJPG): install it "
                           "with pip install 'srn-port[video]', or leave out --codec/--crf.")
    codec = codec or default_codec()
    try:
        found = av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - UnknownCodecError
        found = None
    if found is None or found.type != "video":
        raise SrnPortError(f"codec '{codec}': not a video encoder of the FFmpeg inside PyAV "
                           f"{av.__version__}; use e.g. libx264 (H.264, the default), libx265, "
                           f"libvpx-vp9, libsvtav1, ffv1 (lossless) or mpeg4.")
    if crf is not None and codec not in CRF_CODECS:
        raise SrnPortError(f"--crf {crf}: the encoder '{codec}' takes no constant rate factor "
                           f"(those that do: {', '.join(sorted(CRF_CODECS))}); leave out --crf.")
    if crf is not None and not 0 <= crf <= 63:
        raise SrnPortError(f"--crf {crf}: expected 0 (lossless) to 51 (H.264) or 63 (VP9, AV1); "
                           f"{DEFAULT_CRF} (the default) is near-lossless to the eye.")
    if crf is None and codec in CRF_CODECS:
        crf = DEFAULT_CRF
    return codec, crf


def write_video(path, frames: Iterable[np.ndarray], fps: float, width: int, height: int,
                source=None, codec: Optional[str] = None, crf: Optional[int] = None) -> int:
    """Write RGB uint8 frames of ``width`` x ``height`` to ``path`` (container by extension),
    atomically (a temporary beside it, re-read, then renamed into place); returns the number
    of frames. With PyAV (:func:`video_backend`): encoded with ``codec`` (default H.264,
    libx264, yuv420p) at ``crf``; ``source``, the :class:`PyAVVideo` the frames come from,
    gives each frame its timestamp and the audio streams, rotation and colour tags to keep;
    without it the frames are ``fps`` apart. With OpenCV: mp4v or MJPG at ``fps``, no audio
    (``codec``/``crf`` are refused). Either way a written file whose frame count or timing
    differs from what was meant is an :class:`ImageError`, never a silently changed video."""
    if video_backend() == "opencv":
        if codec is not None or crf is not None:
            raise SrnPortError(f"'{path}': --codec and --crf choose PyAV's encoder; videos are "
                               f"written by OpenCV here ({BACKEND_ENV} or PyAV not installed).")
        return _write_opencv(path, frames, fps, width, height)
    return _write_pyav(path, frames, fps, width, height,
                       source if isinstance(source, PyAVVideo) else None, codec, crf)


# -- PyAV ------------------------------------------------------------------------------------

def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class PyAVVideo:
    """An open video read by FFmpeg through PyAV: ``fps`` (the average rate), ``width``,
    ``height``, ``frames`` (the count the container promises; 0 where it states none),
    ``time_base`` and iteration over its RGB frames; while iterating, each frame's timestamp
    goes to ``timestamps`` and the audio packets met on the way to ``audio_packets`` (both
    consumed by :func:`write_video`). ``display_matrix`` (the rotation, or None) and
    ``color`` (range, matrix, primaries, transfer) are the first frame's.

    Checked as with OpenCV: every motion-JPEG frame's header in an AVI before anything is
    decoded; the container's frame size against the pixel limit before the first frame, and
    every frame's size by FFmpeg's own ``max_pixels`` before it is decoded; a decoder error,
    a frame the decoder flags as corrupt, a frame of another size, or fewer frames than the
    container promises is an :class:`ImageError`."""

    backend = "pyav"

    def __init__(self, path, max_pixels: Optional[int] = None):
        av = _import_av()
        self._av = av
        self.path = Path(path)
        most, jpeg = _before_opening(self.path, max_pixels)
        self.timestamps: collections.deque = collections.deque()
        self.audio_packets: collections.deque = collections.deque()
        self.decoded = 0  #: frames decoded so far by iteration
        try:
            self._in = av.open(str(self.path), mode="r", metadata_errors="replace",
                               options=dict(_OPEN_OPTIONS))
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise ImageError(f"'{self.path}': FFmpeg (PyAV) cannot open it as a video "
                             f"({_detail(exc)}): not an MP4/MOV, Matroska/WebM or AVI file "
                             f"(the only containers opened: no playlists, no references to "
                             f"other files), an unknown codec, or a damaged file.") from None
        try:
            self._open(jpeg, most)
        except BaseException:
            self.close()
            raise

    def _open(self, jpeg, most: int) -> None:
        av = self._av
        if not self._in.streams.video:
            raise ImageError(f"'{self.path}': the file holds no video stream.")
        vs = self._vs = self._in.streams.video[0]
        ctx = vs.codec_context
        self.width, self.height = int(ctx.width), int(ctx.height)
        self.frames = max(0, int(vs.frames or 0))
        self.time_base = vs.time_base
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        self.rate = Fraction(rate) if rate else None
        self.fps = float(rate) if rate else 0.0
        # AVI holds a rate, not times: a frame's time is its slot (its decoding time stamp;
        # FFmpeg's guessed presentation times for reordered H.264 frames there may even
        # repeat); an empty chunk is a slot where the previous frame is held
        self._by_index = "avi" in self._in.format.name.split(",")
        self._held = 0  # empty AVI chunks met (slots skipped by the demuxer)
        self._last_dts = None
        self.audio = list(self._in.streams.audio)
        self.dropped = [s.type for s in self._in.streams
                        if s is not vs and s.type != "audio"]
        if self.time_base is None or self.time_base <= 0:
            raise ImageError(f"'{self.path}': its video stream states no time base, so the "
                             f"frames' times could not be kept; re-mux it (e.g. with ffmpeg).")
        if jpeg is not None and jpeg != (self.width, self.height):
            raise ImageError(f"'{self.path}': its frames' JPEG headers say {jpeg[0]}x{jpeg[1]} "
                             f"pixels, but the container {self.width}x{self.height}; the video "
                             f"is damaged. Nothing was written for it; re-encode it.")
        if self.width * self.height > most:
            raise ImageError(f"'{self.path}': frames of {self.width}x{self.height} pixels, more "
                             f"than the limit of {most / 1e6:g} MP (--max-pixels).")
        # FFmpeg refuses any frame of more pixels before allocating it
        self._most = most
        ctx.options = {**dict(ctx.options or {}), "max_pixels": str(most)}
        self._frames = self._decode()
        try:
            first = next(self._frames, None)
        except av.error.FFmpegError as exc:
            raise ImageError(f"'{self.path}': no frame can be decoded ({_detail(exc)}): an "
                             f"empty or damaged video, or a frame larger than the limit of "
                             f"{most / 1e6:g} MP (--max-pixels).") from None
        if first is None:
            raise ImageError(f"'{self.path}': no frame can be decoded (an empty or damaged "
                             f"video).")
        self._first = first
        self.display_matrix = None
        try:
            raw = bytes(first.side_data["DISPLAYMATRIX"])
            if len(raw) == 36:
                self.display_matrix = struct.unpack("<9i", raw)
        except (KeyError, TypeError, ValueError):
            pass
        self.color = {"color_range": int(first.color_range), "colorspace": int(first.colorspace),
                      "color_primaries": int(first.color_primaries),
                      "color_trc": int(first.color_trc)}
        self._last_pts = None

    def _decode(self):
        for packet in self._in.demux([self._vs] + self.audio):
            if packet.stream.type == "audio":
                if packet.size and packet.dts is not None:  # not the end-of-stream marker
                    self.audio_packets.append(packet)
                continue
            if self._by_index and packet.size and packet.dts is not None:
                if self._last_dts is not None and packet.dts > self._last_dts + 1:
                    self._held += packet.dts - self._last_dts - 1
                self._last_dts = packet.dts
            yield from packet.decode()

    def _stopped(self, why: str) -> ImageError:
        promised = (f"only {self.decoded} of the {self.frames} frame(s) its container promises "
                    f"could be decoded" if self.frames else
                    f"only {self.decoded} frame(s) could be decoded")
        return ImageError(f"'{self.path}': {promised} (the decoder stopped at frame "
                          f"{self.decoded + 1}: {why}). Nothing was written for it; repair or "
                          f"re-encode the video (e.g. with ffmpeg) and run again.")

    def __iter__(self) -> Iterator[np.ndarray]:
        av = self._av
        frame, self._first = self._first, None
        if frame is None:
            raise ImageError(f"'{self.path}': its frames can be read once only.")
        self.decoded = 0
        while frame is not None:
            if (frame.width, frame.height) != (self.width, self.height):
                raise ImageError(
                    f"'{self.path}': frame {self.decoded + 1} decodes to {frame.width}x"
                    f"{frame.height} pixels, but the container says {self.width}x{self.height}; "
                    f"frames of changing size are not supported. Nothing was written for it.")
            if frame.is_corrupt:
                raise self._stopped("the decoder flags it as corrupt, a damaged frame")
            pts = frame.dts if self._by_index else frame.pts
            if pts is None or (self._by_index and self._last_pts is not None
                               and pts <= self._last_pts):  # one frame after the previous
                step = max(1, round(1 / (self.rate * self.time_base))) if self.rate else 1
                pts = 0 if self._last_pts is None else self._last_pts + step
            elif self._last_pts is not None and pts <= self._last_pts:
                raise ImageError(
                    f"'{self.path}': frame {self.decoded + 1} is stamped "
                    f"{float(pts * self.time_base):.6g} s, not after frame {self.decoded}'s "
                    f"{float(self._last_pts * self.time_base):.6g} s; the "
                    f"video's timestamps are damaged. Nothing was written for it; re-mux it "
                    f"(e.g. with ffmpeg) and run again.")
            self._last_pts = pts
            self.timestamps.append(pts)
            rgb = frame.to_ndarray(format="rgb24")
            self.decoded += 1
            yield rgb
            try:
                frame = next(self._frames, None)
            except av.error.FFmpegError as exc:
                raise self._stopped(f"a damaged frame, a truncated file, or a frame of more "
                                    f"than the limit of {self._most / 1e6:g} MP, --max-pixels: "
                                    f"{_detail(exc)}")
        if self.decoded + self._held < self.frames:
            raise self._stopped("a damaged frame or a truncated file")

    def close(self) -> None:
        try:
            self._in.close()
        except Exception:  # noqa: BLE001 - closing an input cannot lose data
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pixel_format(av, codec: str, width: int, height: int) -> str:
    """yuv420p (what players play) where the encoder takes it and the sides are even (4:2:0
    halves them); yuv444p for odd sides; else the encoder's first format."""
    formats = [f.name for f in (av.codec.Codec(codec, "w").video_formats or ())]
    for want in (("yuv420p", "yuvj420p") if width % 2 == 0 and height % 2 == 0 else ()) + (
            "yuv444p", "yuvj444p", "rgb24", "bgr0"):
        if not formats or want in formats:
            return want
    return formats[0]


def _write_pyav(path, frames, fps, width, height, source, codec, crf) -> int:
    av = _import_av()
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONTAINERS:
        raise ImageError(f"cannot write '{suffix}' videos; use one of {', '.join(CONTAINERS)}.")
    codec, crf = check_encoder(codec, crf)
    if source is not None:
        time_base, rate = source.time_base, source.rate or Fraction(fps).limit_denominator(1 << 20)
    else:
        if not math.isfinite(fps) or fps <= 0:
            raise ImageError(f"'{path}': a frame rate of {fps:g} fps cannot be written.")
        rate = Fraction(fps).limit_denominator(1 << 20)
        time_base = 1 / rate
    pix_fmt = _pixel_format(av, codec, width, height)
    color = source.color if source is not None else {}
    matrix = _SWS_MATRIX.get(color.get("colorspace"))
    count = 0
    written_pts: List[int] = []
    audio_sent = collections.defaultdict(list)  # source stream index -> packets' times

    def write(tmp):
        nonlocal count
        try:
            out = av.open(tmp, mode="w", format=CONTAINERS[suffix])
        except av.error.FFmpegError as exc:
            if isinstance(exc, OSError):
                raise
            raise ImageError(f"'{path}': FFmpeg cannot write {suffix} ({_detail(exc)}).") from exc
        ok = False
        try:
            try:
                vs = out.add_stream(codec, rate=rate)
                vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
                vs.time_base = time_base
                vs.codec_context.time_base = time_base
                if crf is not None:
                    vs.codec_context.options = {"crf": str(crf)}
                if suffix == ".avi":  # AVI stores no presentation times: no reordered frames
                    vs.codec_context.max_b_frames = 0
                for key, value in color.items():
                    setattr(vs.codec_context, key, value)
                if source is not None and source.display_matrix is not None:
                    vs.set_display_matrix(list(source.display_matrix))
                audio = {s.index: out.add_stream_from_template(s)
                         for s in (source.audio if source is not None else ())}
            except (av.error.FFmpegError, ValueError, TypeError) as exc:
                if isinstance(exc, OSError):
                    raise
                raise ImageError(f"'{path}': FFmpeg cannot write the encoder '{codec}' in "
                                 f"{suffix} at {width}x{height} ({_detail(exc)}); choose "
                                 f"another --codec or container.") from exc

            def mux_audio():
                while source is not None and source.audio_packets:
                    packet = source.audio_packets.popleft()
                    index = packet.stream.index
                    when = None if packet.pts is None else packet.pts * packet.time_base
                    packet.stream = audio[index]
                    out.mux(packet)
                    audio_sent[index].append(when)

            try:
                for frame in frames:
                    if frame.shape[:2] != (height, width) or frame.dtype != np.uint8:
                        raise ImageError(f"'{path}': a frame of shape {frame.shape} "
                                         f"{frame.dtype}, expected {height}x{width} uint8.")
                    rgb = frame if frame.ndim == 3 else np.repeat(frame[:, :, None], 3, axis=2)
                    picture = av.VideoFrame.from_ndarray(
                        np.ascontiguousarray(rgb[:, :, :3]), format="rgb24")
                    picture = picture.reformat(format=pix_fmt, dst_colorspace=matrix,
                                               dst_color_range=color.get("color_range") or None)
                    pts = count
                    if source is not None:
                        if not source.timestamps:
                            raise ImageError(f"'{path}': more frames than '{source.path}' "
                                             f"decoded; their times are unknown.")
                        pts = source.timestamps.popleft()
                    picture.pts, picture.time_base = pts, time_base
                    for packet in vs.encode(picture):
                        out.mux(packet)
                    written_pts.append(pts)
                    count += 1
                    mux_audio()
                for packet in vs.encode(None):
                    out.mux(packet)
                mux_audio()
            except av.error.FFmpegError as exc:
                if isinstance(exc, OSError):
                    raise
                raise ImageError(f"'{path}': FFmpeg could not encode or write frame "
                                 f"{count + 1} with '{codec}' in {suffix} ({_detail(exc)}). "
                                 f"Nothing was written; choose another --codec or "
                                 f"container.") from exc
            ok = True
        finally:
            try:
                out.close()  # the trailer (an mp4's index) is written here
            except av.error.FFmpegError as exc:
                if ok:
                    if isinstance(exc, OSError):
                        raise
                    raise ImageError(f"'{path}': FFmpeg could not finish the file "
                                     f"({_detail(exc)}).") from exc
        _check_written_pyav(av, path, tmp, count, written_pts, time_base, audio_sent,
                            source)

    atomic_write(path, write, keep_suffix=True)
    return count


def _check_written_pyav(av, path, tmp, count, written_pts, time_base, audio_sent, source):
    """Decode the written ``tmp`` again: as many frames as were written, each at its time (to
    the output container's clock tick: an exact rescale, rounded to the nearest tick), and
    as many packets in each audio stream as were copied; else an :class:`ImageError`."""
    try:
        with av.open(tmp, options=dict(_OPEN_OPTIONS)) as back:
            vs = back.streams.video[0]
            tick = vs.time_base
            audio = {s.index: k for k, s in enumerate(back.streams.audio)}
            avi = Path(path).suffix.lower() == ".avi"
            got, audio_back = [], collections.defaultdict(list)
            ticks = [s.time_base for s in back.streams.audio]
            for packet in back.demux([vs] + list(back.streams.audio)):
                if packet.stream.index == vs.index:  # AVI: a frame's time is its slot
                    got.extend((f.dts if avi else f.pts) for f in packet.decode())
                elif packet.size:
                    audio_back[audio[packet.stream.index]].append(
                        None if packet.pts is None else packet.pts * packet.time_base)
    except (av.error.FFmpegError, IndexError) as exc:
        if isinstance(exc, OSError):
            raise
        raise ImageError(f"'{path}': the written video cannot be read back ({_detail(exc)}); "
                         f"nothing was written.") from exc
    why = None
    if len(got) != count:
        why = f"{len(got)} frame(s) came back instead of {count}"
    else:
        want = sorted(written_pts)
        got = sorted(p if p is not None else -1 for p in got)
        for n, (g, w) in enumerate(zip(got, want)):
            if g < 0 or abs(g * tick - w * time_base) > tick / 2:
                at = "no time" if g < 0 else f"{float(g * tick):.6g} s"
                why = (f"frame {n + 1} came back at {at} instead of {float(w * time_base):.6g} "
                       f"s (the container's clock ticks every {tick} s)")
                break
    sent = [audio_sent[s.index] for s in (source.audio if source is not None else ())]
    for k, want in enumerate(sent):
        if why is not None:
            break
        back_k = audio_back[k]
        if len(back_k) != len(want):
            why = (f"audio stream {k + 1} came back as {len(back_k)} packet(s) instead of "
                   f"{len(want)}")
            continue
        for n, (g, w) in enumerate(zip(back_k, want)):
            if w is not None and (g is None or abs(g - w) > ticks[k] / 2):
                at = "no time" if g is None else f"{float(g):.6g} s"
                why = (f"audio packet {n + 1} of stream {k + 1} came back at {at} instead of "
                       f"{float(w):.6g} s (FFmpeg's {Path(path).suffix} muxer does not keep "
                       f"this audio's timing when copied; e.g. AAC or MP3 in AVI)")
                break
    if why is not None:
        raise ImageError(f"'{path}': the written video differs from what was meant: {why}. "
                         f"Nothing was written; re-mux the input into another container "
                         f"(e.g. ffmpeg -i IN -c copy IN.mkv) and run again.")
