"""Hostile input on the newer paths (issue 24): videos, ``evaluate``, ``train --data /
--datalist / --init / --resume-tf``, ``export``. Each numbered case of the issue builds its
own input here, small, and checks the standard: a one-paragraph error naming the file or
value (exit 1), nothing half written, inputs never modified, nothing dropped in silence."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from _srn_ckpt import srn_tensors, write_srn_checkpoint
from srn_port.api.convert import convert
from srn_port.cli import cli
from srn_port.core.errors import ImageError, SrnPortError
from srn_port.core.network import SRNConfig
from srn_port.data.images import encode_image
from srn_port.data.video import Video

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CFG = SRNConfig("color", 2)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def flat(result) -> str:
    return " ".join(result.output.split())


def one_paragraph_error(result, code: int = 1) -> str:
    text = flat(result)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == code, result.output
    assert "Error:" in text, result.output
    return text


def digest(folder: Path) -> dict:
    """Every file under ``folder`` -> its sha256 (to prove inputs untouched)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    write_srn_checkpoint(folder, CFG)
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory, ckpt_dir):
    out = tmp_path_factory.mktemp("w") / "color.safetensors"
    convert(ckpt_dir, out)
    return out


# -- 1. videos: damaged, truncated, frames claiming huge sizes; 12. absurd frame rates ----

def mjpg_avi(path: Path, frames: int = 10, size=(48, 64), fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size[::-1])
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8))
    writer.release()
    return path


def jpeg_starts(data: bytes) -> list:
    """Offsets of the frames' JPEG data (SOI markers followed by another marker)."""
    return [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]


def damaged_third_frame(path: Path) -> Path:
    data = bytearray(mjpg_avi(path).read_bytes())
    start = jpeg_starts(data)[2]
    for k in range(30, 600):  # the 3rd frame's headers and entropy data
        data[start + k] = 0
    path.write_bytes(bytes(data))
    return path


def huge_third_frame(path: Path, side: int) -> Path:
    """The 3rd frame's JPEG header (SOF0) claims side x side pixels."""
    data = bytearray(mjpg_avi(path).read_bytes())
    start = jpeg_starts(data)[2]
    sof = data.index(b"\xff\xc0", start)
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    path.write_bytes(bytes(data))
    return path


def avi_with_rate(path: Path, rate: int, scale: int) -> Path:
    """An MJPG AVI whose stream header states ``rate / scale`` frames per second."""
    data = bytearray(mjpg_avi(path, frames=3).read_bytes())
    strh = data.index(b"strh")
    data[strh + 28:strh + 36] = struct.pack("<II", scale, rate)  # dwScale, dwRate
    path.write_bytes(bytes(data))
    return path


def decoded(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.parametrize("damage", ["third frame", "cut", "20000x20000", "16000x16000"])
def test_a_video_that_cannot_be_decoded_to_its_end_fails(tmp_path, weights, damage):
    src = tmp_path / "in"
    src.mkdir()
    if damage == "third frame":
        clip = damaged_third_frame(src / "clip.avi")
    elif damage == "cut":
        clip = mjpg_avi(src / "clip.avi", frames=6)
        clip.write_bytes(clip.read_bytes()[:len(clip.read_bytes()) * 7 // 13])
    else:
        clip = huge_third_frame(src / "clip.avi", int(damage.split("x")[0]))
    assert decoded(clip) < 6  # OpenCV itself stops early and says nothing
    good = mjpg_avi(src / "good.avi", frames=3)
    before = digest(src)
    res = run("deblur", weights, clip, good, "-o", tmp_path / "out")
    text = one_paragraph_error(res)
    assert "1 file(s) deblurred, 1 failed" in text
    assert "could be decoded" in text and "clip.avi" in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.avi"]  # no partial
    assert digest(src) == before


def test_the_video_iterator_counts_its_frames(tmp_path):
    clip = damaged_third_frame(tmp_path / "clip.avi")
    with Video(clip) as video:
        assert video.frames == 10
        got = []
        with pytest.raises(ImageError, match=r"only 2 of the 10 frame\(s\)"):
            for frame in video:
                got.append(frame)
    assert len(got) == 2


def test_a_frame_rate_a_container_cannot_hold_is_an_error_not_a_change(tmp_path, weights):
    slow = avi_with_rate(tmp_path / "slow.avi", 1, 2**31)  # 4.7e-10 fps
    fast = avi_with_rate(tmp_path / "fast.avi", 90000, 1)
    with Video(slow) as v:
        assert 4e-10 < v.fps < 5e-10
    with Video(fast) as v:
        assert v.fps == 90000
    res = run("deblur", weights, slow, fast, "-o", tmp_path / "out")
    text = one_paragraph_error(res)
    assert "0 file(s) deblurred, 2 failed" in text
    assert "at 4.65661e-10 fps" in text  # the rate is named, not "cannot write .avi"
    assert "600 fps instead of 3 at 90000 fps" in text
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_usual_frame_rate_is_kept_exactly(tmp_path, weights):
    clip = avi_with_rate(tmp_path / "clip.avi", 30000, 1001)  # 29.97 fps
    res = run("deblur", weights, clip, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.avi"))
    assert cap.get(cv2.CAP_PROP_FPS) == 29.97  # OpenCV keeps 3 decimals ('frame_rate')
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 3
