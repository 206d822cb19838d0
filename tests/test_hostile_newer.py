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


def replace_frame(path: Path, n: int, jpeg: bytes) -> Path:
    """Put ``jpeg`` in place of frame ``n`` (from 1; the last one, so that no offset after
    it moves) of an MJPG AVI: the chunk, its index entry and the RIFF/movi sizes fixed."""
    data = bytearray(path.read_bytes())
    movi = data.index(b"movi")
    chunks, at = [], movi
    while (at := data.find(b"00dc", at + 1)) > 0 and at < data.index(b"idx1"):
        chunks.append(at)
    assert len(chunks) == n, "replace the last frame"
    c = chunks[n - 1]
    old = struct.unpack("<I", data[c + 4:c + 8])[0]
    new = b"00dc" + struct.pack("<I", len(jpeg)) + jpeg + b"\0" * (len(jpeg) & 1)
    delta = len(new) - (8 + old + (old & 1))
    data[c:c + 8 + old + (old & 1)] = new
    for field in (4, movi - 4):  # RIFF size, movi LIST size
        data[field:field + 4] = struct.pack("<I", struct.unpack("<I", data[field:field + 4])[0]
                                            + delta)
    entry = data.index(b"idx1") + 8 + 16 * (n - 1)
    data[entry + 12:entry + 16] = struct.pack("<I", len(jpeg))
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


@pytest.mark.parametrize("damage,needle", [
    ("third frame", "only 2 of the 10 frame(s) its container promises could be decoded"),
    ("cut", "only 3 of the 6 frame(s) its container promises could be decoded"),
    ("20000x20000", "frame 3's JPEG header claims 20000x20000 pixels, more than the limit"),
    ("16000x16000", "frame 3's JPEG header claims 16000x16000 pixels, more than the limit"),
    ("real 8000x8000", "frame 3's JPEG header claims 8000x8000 pixels, more than the limit"),
    ("real 96x64", "frame 3's JPEG header says 96x64 pixels, frame 1's 64x48"),
])
def test_a_video_that_cannot_be_decoded_to_its_end_fails(tmp_path, weights, damage, needle,
                                                         backend):
    src = tmp_path / "in"
    src.mkdir()
    if damage == "third frame":
        clip = damaged_third_frame(src / "clip.avi")
    elif damage == "cut":
        clip = mjpg_avi(src / "clip.avi", frames=6)
        clip.write_bytes(clip.read_bytes()[:len(clip.read_bytes()) * 7 // 13])
    elif damage.startswith("real"):  # frame 3 a real JPEG of another size
        w, h = (int(v) for v in damage.split()[1].split("x"))
        clip = replace_frame(mjpg_avi(src / "clip.avi", frames=3), 3, cv2.imencode(
            ".jpg", np.full((h, w, 3), 90, np.uint8))[1].tobytes())
    else:
        clip = huge_third_frame(src / "clip.avi", int(damage.split("x")[0]))
    if damage.startswith("real"):  # OpenCV decodes it at its size and scales it, silently
        assert decoded(clip) == 3
    else:  # OpenCV itself stops early and says nothing
        assert decoded(clip) < 6
    good = mjpg_avi(src / "good.avi", frames=3)
    before = digest(src)
    res = run("deblur", weights, clip, good, "-o", tmp_path / "out")
    text = one_paragraph_error(res)
    assert "1 file(s) deblurred, 1 failed" in text
    assert needle in text and "clip.avi" in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.avi"]  # no partial
    assert digest(src) == before


def test_frame_headers_are_checked_before_opencv_decodes_anything(tmp_path, monkeypatch):
    """A frame claiming more pixels than the limit is refused from its header: OpenCV is
    never asked to open the file. (PyAV's av.open likewise: tests/test_video_pyav.py.)"""
    monkeypatch.setenv("SRN_PORT_VIDEO_BACKEND", "opencv")
    clip = huge_third_frame(tmp_path / "clip.avi", 8000)
    opened = []
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a: opened.append(a))
    with pytest.raises(ImageError, match="frame 3's JPEG header claims 8000x8000"):
        Video(clip)
    assert opened == []
    monkeypatch.setenv("SRN_PORT_MAX_PIXELS", str(8000 * 8000))  # raised: then size differs
    with pytest.raises(ImageError, match="frames of changing size"):
        Video(clip)


def test_the_video_iterator_counts_its_frames(tmp_path, backend):
    clip = damaged_third_frame(tmp_path / "clip.avi")
    with Video(clip) as video:
        assert video.frames == 10
        got = []
        with pytest.raises(ImageError, match=r"only 2 of the 10 frame\(s\)"):
            for frame in video:
                got.append(frame)
    assert len(got) == 2


def test_a_frame_rate_a_container_cannot_hold_is_an_error_not_a_change(tmp_path, weights,
                                                                       monkeypatch):
    """OpenCV's writer (PyAV keeps both rates or refuses: tests/test_video_pyav.py)."""
    monkeypatch.setenv("SRN_PORT_VIDEO_BACKEND", "opencv")
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


def test_a_usual_frame_rate_is_kept_exactly(tmp_path, weights, monkeypatch):
    """OpenCV's writer; PyAV keeps 30000/1001 itself (tests/test_video_pyav.py)."""
    monkeypatch.setenv("SRN_PORT_VIDEO_BACKEND", "opencv")
    clip = avi_with_rate(tmp_path / "clip.avi", 30000, 1001)  # 29.97 fps
    res = run("deblur", weights, clip, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.avi"))
    assert cap.get(cv2.CAP_PROP_FPS) == 29.97  # OpenCV keeps 3 decimals ('frame_rate')
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 3


# -- datasets ---------------------------------------------------------------------------------

def picture(h, w, seed):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def gopro(root: Path, scenes=("s1", "s2"), per_scene=2, size=(32, 32)) -> Path:
    for s, scene in enumerate(scenes):
        for k in range(per_scene):
            for kind in ("blur", "sharp"):
                folder = root / scene / kind
                folder.mkdir(parents=True, exist_ok=True)
                img = picture(*size, seed=100 * s + k + (7 if kind == "blur" else 0))
                (folder / f"{k}.png").write_bytes(encode_image(img, ".png"))
    return root


TRAIN = ["--steps", "1", "--width", "2", "--crop", "32", "--batch", "1"]


# -- 2. evaluate --csv/--json on a file it reads; 3. train over its own start point ----------

@pytest.mark.parametrize("target", ["dataset image", "checkpoint index", "checkpoint data",
                                    "new file in the checkpoint folder", "weights file",
                                    "datalist", "image listed outside the root", "via a link"])
def test_evaluate_never_writes_over_what_it_reads(tmp_path, weights, ckpt_dir, target):
    import shutil

    data = gopro(tmp_path / "data", scenes=("s1",), per_scene=1)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(ckpt_dir, ckpt)
    w = tmp_path / "w.safetensors"
    shutil.copy(weights, w)
    model, dataset = ckpt, data
    if target == "dataset image":
        out = data / "s1" / "blur" / "0.png"
    elif target == "checkpoint index":
        out = next(ckpt.glob("*.index"))
    elif target == "checkpoint data":
        out = next(ckpt.glob("*.data-*"))
    elif target == "new file in the checkpoint folder":
        out = ckpt / "scores.csv"
    elif target == "weights file":
        model, out = w, w
    elif target == "datalist":
        dataset = tmp_path / "list.txt"
        dataset.write_text("data/s1/sharp/0.png data/s1/blur/0.png\n")
        out = dataset
    elif target == "image listed outside the root":
        (tmp_path / "lists").mkdir()
        dataset = tmp_path / "lists" / "list.txt"
        dataset.write_text("../data/s1/sharp/0.png ../data/s1/blur/0.png\n")
        out = data / "s1" / "sharp" / "0.png"
    else:
        (tmp_path / "link.csv").symlink_to(data / "s1" / "sharp" / "0.png")
        out = tmp_path / "link.csv"
    before = digest(tmp_path)
    for option in ("--csv", "--json"):
        res = run("evaluate", model, dataset, option, out, "--force")
        text = one_paragraph_error(res)
        assert "would destroy the input" in text and "even with --force" in text
    assert digest(tmp_path) == before
    res = run("evaluate", model, dataset, "--csv", tmp_path / "ok.csv")  # elsewhere: fine
    assert res.exit_code == 0, res.output


def test_the_input_rule_covers_files_folders_links_and_checkpoint_prefixes(tmp_path):
    from srn_port.core.fileio import input_clash

    (tmp_path / "ckpt").mkdir()
    prefix = tmp_path / "ckpt" / "deblur.model-3000"  # not a file: a checkpoint prefix
    (tmp_path / "a.png").write_bytes(b"x")
    os.link(tmp_path / "a.png", tmp_path / "hard.png")
    (tmp_path / "soft.png").symlink_to(tmp_path / "a.png")
    (tmp_path / "into").symlink_to(tmp_path / "ckpt")
    inputs = [prefix, tmp_path / "a.png", None]
    for clash in (prefix.with_name("deblur.model-3000.index"),
                  prefix.with_name("deblur.model-3000.data-00000-of-00001"),
                  tmp_path / "hard.png", tmp_path / "soft.png", tmp_path / "a.png"):
        assert input_clash(clash, inputs) is not None, clash
    for fine in (prefix.with_name("deblur.model-30000.index"), tmp_path / "b.png",
                 tmp_path / "ckpt" / "scores.csv"):
        assert input_clash(fine, inputs) is None, fine
    assert input_clash(tmp_path / "into" / "new.csv", [tmp_path / "ckpt"]) == tmp_path / "ckpt"


def test_train_never_writes_over_its_start_point_or_data(tmp_path, ckpt_dir, weights):
    import shutil

    data = gopro(tmp_path / "data", scenes=("s1",), per_scene=1)
    first = tmp_path / "first"
    res = run("train", first, "--data", data, *TRAIN)
    assert res.exit_code == 0, res.output
    tfdir = tmp_path / "tf"
    shutil.copytree(ckpt_dir, tfdir)
    before = digest(tmp_path)
    cases = [
        (first, ["--init", first / "model.safetensors"], "would write"),  # its own weights
        (tfdir, ["--init", tfdir], "would write"),  # the TF checkpoint folder
        (tfdir, ["--resume-tf", tfdir], "would write"),
        (data / "run", ["--init", weights], "would write"),  # inside the dataset
        (first, [], "already holds the outputs of another run"),
    ]
    for out, start, needle in cases:
        res = run("train", out, "--data", data, *start, "--steps", "600000", *TRAIN[2:])
        text = one_paragraph_error(res)
        assert needle in text, text
    assert digest(tmp_path) == before
    assert not (data / "run").exists()
    # a folder holding only another run's log (or weights) is another run too
    other = tmp_path / "other"
    other.mkdir()
    (other / "log.jsonl").write_text('{"step": 1}\n')
    res = run("train", other, "--data", data, *TRAIN)
    assert "already holds the outputs of another run (log.jsonl)" in one_paragraph_error(res)
    assert (other / "log.jsonl").read_text() == '{"step": 1}\n'


# -- 4, 5. dataset discovery: nothing left out in silence --------------------------------------

@pytest.mark.parametrize("layout,needle", [
    ("sharp without blur", "s2/sharp (no blur/ folder beside it)"),
    ("Blur", "s2/Blur (the folder must be named 'blur', in lower case)"),
    ("root is a scene too", "holds blur/ or sharp/ itself and also scene folders"),
    ("dangling link", "(a dangling symbolic link)"),
    ("link loop", "(a symbolic link loop)"),
    ("unpaired link loop", "x.png (a symbolic link loop)"),
    ("scene link loop", "(a symbolic link loop)"),
])
@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_dataset_layout_problems_are_errors(tmp_path, weights, layout, needle, command):
    data = gopro(tmp_path / "data")
    s2 = data / "s2"
    if layout == "sharp without blur":
        for f in (s2 / "blur").iterdir():
            f.unlink()
        (s2 / "blur").rmdir()
    elif layout == "Blur":
        (s2 / "blur").rename(s2 / "Blur")
    elif layout == "root is a scene too":
        gopro(tmp_path / "extra", scenes=("x",))
        (tmp_path / "extra" / "x" / "blur").rename(data / "blur")
        (tmp_path / "extra" / "x" / "sharp").rename(data / "sharp")
    elif layout == "dangling link":
        (s2 / "blur" / "9.png").symlink_to(tmp_path / "nowhere.png")
        (s2 / "sharp" / "9.png").write_bytes((s2 / "sharp" / "0.png").read_bytes())
    elif layout == "link loop":
        (s2 / "blur" / "1.png").unlink()
        (s2 / "blur" / "1.png").symlink_to(s2 / "blur" / "1.png")
    elif layout == "unpaired link loop":
        (s2 / "blur" / "x.png").symlink_to(s2 / "blur" / "x.png")
    else:
        (data / "s3").symlink_to(data / "s3")
    before = digest(data) if layout not in ("link loop", "unpaired link loop") else None
    if command == "evaluate":
        res = run("evaluate", weights, data)
    else:
        res = run("train", tmp_path / "run", "--data", data, *TRAIN)
        assert not (tmp_path / "run").exists()
    text = one_paragraph_error(res)
    assert needle in text, text
    assert "--crop" not in text or command == "train"
    if before is not None:
        assert digest(data) == before


@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_what_is_left_out_is_reported_and_counted(tmp_path, weights, command):
    data = gopro(tmp_path / "data")
    (data / "notes").mkdir()  # a folder that is not a scene
    (data / "README.txt").write_text("x")
    (data / "s1" / "blur_gamma").mkdir()  # GoPro's extra folder
    (data / "s1" / "blur" / "Thumbs.db").write_bytes(b"x")
    if command == "evaluate":
        res = run("evaluate", weights, data, "--json", tmp_path / "s.json")
    else:
        res = run("train", tmp_path / "run", "--data", data, *TRAIN)
    assert res.exit_code == 0, res.output
    text = flat(res)
    assert "left out 2 folder(s) that are not scenes" in text and "notes" in text
    assert "blur_gamma" in text
    assert "left out 2 file(s) that are not images" in text and "Thumbs.db" in text
    assert "left out 2 folder(s), 2 file(s)" in text  # in the summary line
    if command == "evaluate":
        import json

        summary = json.loads((tmp_path / "s.json").read_text())
        assert summary["left_out"] == {"folders": 2, "files": 2} and summary["images"] == 4


def test_evaluate_speaks_of_its_own_options(tmp_path, weights):
    data = gopro(tmp_path / "data", scenes=("s1",))
    (data / "s1" / "sharp" / "1.png").write_bytes(encode_image(picture(32, 48, 1), ".png"))
    text = one_paragraph_error(run("evaluate", weights, data))
    assert "is 32x32 but" in text and "nothing was evaluated" in text
    assert "--crop" not in text and "train" not in text


# -- 10. datalists: read line by line, a stated size limit --------------------------------------

def test_a_datalist_over_the_limit_is_refused_unread(tmp_path, weights, monkeypatch):
    data = gopro(tmp_path / "data", scenes=("s1",), per_scene=1)
    listing = tmp_path / "list.txt"
    line = "data/s1/sharp/0.png data/s1/blur/0.png\n"
    listing.write_text(line * 100)  # 3,900 bytes
    monkeypatch.setenv("SRN_PORT_MAX_DATALIST_BYTES", "1000")
    for args in (["evaluate", weights, listing], ["train", tmp_path / "run", "--datalist",
                                                  listing, "--data", tmp_path, *TRAIN]):
        text = one_paragraph_error(run(*args))
        assert "3,900 bytes, more than the limit of 1,000" in text
        assert "SRN_PORT_MAX_DATALIST_BYTES" in text
    monkeypatch.setenv("SRN_PORT_MAX_DATALIST_BYTES", "4000")
    res = run("evaluate", weights, listing, "--limit", "1")
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "run").exists()
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    assert "FIFO" in one_paragraph_error(run("evaluate", weights, fifo))


def test_a_datalist_is_read_line_by_line(tmp_path):
    """Peak memory of reading a 20 MB list of 2 distinct lines repeated: far below the
    list's size twice (as read_text().splitlines() took), since the pairs themselves are
    all that is kept (here 20 MB / 40 bytes = 500,000 pairs x ~600 bytes: not small, so
    the list is of comment lines, which are not kept)."""
    import subprocess
    import sys

    listing = tmp_path / "list.txt"
    with open(listing, "w") as f:
        f.write("a/sharp/0.png a/blur/0.png\n")
        for _ in range(20 * 2**20 // 64):
            f.write("#" * 63 + "\n")
    code = ("import resource, sys; from srn_port.data.pairs import read_datalist; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "pairs = read_datalist(sys.argv[1]); "
            "print(len(pairs), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    out = subprocess.run([sys.executable, "-c", code, str(listing)], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "1" and int(out[1]) < 5 * 1024, out  # KB: < 5 MB for a 20 MB list


# -- 6, 7, 8, 12. --resume-tf: every slot, beta power and step validated before training --------

RESUME = ["--steps", "600000", "--width", "2", "--crop", "32", "--batch", "1"]


def tf_run(folder: Path, change) -> Path:
    tensors = srn_tensors(CFG)
    change(tensors)
    write_srn_checkpoint(folder, CFG, tensors=tensors)
    return folder


W = "g_net/enc1_1/weights"


@pytest.mark.parametrize("case,needle", [
    ("another size", f"{W}/Adam has shape [5, 5, 6, 3], its weight [5, 5, 6, 2]"),
    ("permuted", f"{W}/Adam_1 has shape [2, 6, 5, 5], its weight [5, 5, 6, 2]"),
    ("scalar", f"{W}/Adam has shape [], its weight [5, 5, 6, 2]"),
    ("string slot", f"{W}/Adam is DT_STRING, not floating point"),
    ("integer slot", f"{W}/Adam_1 is DT_INT32, not floating point"),
    ("string beta1_power", "beta1_power is a DT_STRING of shape [], not a floating-point scalar"),
    ("beta2_power vector", "beta2_power is a DT_FLOAT of shape [2], not a floating-point scalar"),
    ("beta1_power 1", "beta1_power is 1.0, outside [0, 1)"),
    ("beta2_power NaN", "beta2_power is nan, outside [0, 1)"),
    ("step -5", "the global step 'Variable' is -5, negative"),
    ("step float", "the global step 'Variable' is a DT_FLOAT of shape [], not an integer"),
    ("NaN in Adam_1", f"{W}/Adam_1 holds 1 NaN value(s) of 300"),
    ("Inf in Adam", f"{W}/Adam holds 1 infinite value(s) of 300"),
    ("negative Adam_1", f"{W}/Adam_1 holds 300 negative value(s) of 300"),
])
def test_a_damaged_adam_state_is_refused_before_training(tmp_path, case, needle):
    def change(t):
        if case == "another size":
            t[f"{W}/Adam"] = np.zeros((5, 5, 6, 3), np.float32)
        elif case == "permuted":
            t[f"{W}/Adam_1"] = np.abs(t[f"{W}/Adam_1"]).transpose(3, 2, 0, 1).copy()
        elif case == "scalar":
            t[f"{W}/Adam"] = np.float32(0.5)
        elif case == "string slot":
            t[f"{W}/Adam"] = np.array(b"zeros", dtype=object)
        elif case == "integer slot":
            t[f"{W}/Adam_1"] = np.ones((5, 5, 6, 2), np.int32)
        elif case == "string beta1_power":
            t["beta1_power"] = np.array(b"0.9", dtype=object)
        elif case == "beta2_power vector":
            t["beta2_power"] = np.array([0.9, 0.9], np.float32)
        elif case == "beta1_power 1":
            t["beta1_power"] = np.float32(1.0)
        elif case == "beta2_power NaN":
            t["beta2_power"] = np.float32("nan")
        elif case == "step -5":
            t["Variable"] = np.int32(-5)
        elif case == "step float":
            t["Variable"] = np.float32(3.0)
        elif case == "NaN in Adam_1":
            t[f"{W}/Adam_1"].flat[7] = np.nan
        elif case == "Inf in Adam":
            t[f"{W}/Adam"].flat[3] = np.inf
        else:
            t[f"{W}/Adam_1"] = -np.abs(t[f"{W}/Adam_1"]) - 1

    ckpt = tf_run(tmp_path / "tf", change)
    before = digest(ckpt)
    res = run("train", tmp_path / "run", "--synthetic", "--resume-tf", ckpt, *RESUME)
    text = one_paragraph_error(res)
    assert needle in text, text
    assert "no usable Adam state" in text and "--init" in text
    if "NaN" in case:
        assert "negative value" not in text  # a NaN is reported as a NaN
    assert not (tmp_path / "run").exists()  # 11: a refused run creates nothing
    assert digest(ckpt) == before


def test_a_sound_adam_state_still_resumes(tmp_path):
    ckpt = tf_run(tmp_path / "tf", lambda t: None)
    res = run("train", tmp_path / "run", "--synthetic", "--resume-tf", ckpt, "--steps",
              "523001", *RESUME[2:], "--crop", "16")
    assert res.exit_code == 0, res.output
    assert "trained steps 523000..523001" in res.output


def test_other_refused_trains_create_no_folder(tmp_path, weights):
    out = tmp_path / "a" / "run"
    for args in (["--init", weights, "--width", "4"],  # a width-2 model into a width-4 run
                 ["--resume"],  # nothing to resume
                 ["--batch", "0"]):
        res = run("train", out, "--synthetic", "--steps", "2", "--crop", "16", *args)
        one_paragraph_error(res)
        assert not (tmp_path / "a").exists(), args


# -- 9. an error in a DataLoader worker reads as the same one paragraph ------------------------

@pytest.mark.slow
def test_a_worker_error_is_the_same_paragraph_as_in_process(tmp_path):
    data = gopro(tmp_path / "data", scenes=("s1",), per_scene=1, size=(48, 48))
    png = data / "s1" / "blur" / "0.png"
    png.write_bytes(png.read_bytes()[:200])  # header intact, pixel data cut
    texts = {}
    for workers in ("0", "1"):
        res = run("train", tmp_path / f"run{workers}", "--data", data, "--workers", workers,
                  *TRAIN)
        text = one_paragraph_error(res)
        assert "0.png" in text and "Original Traceback" not in text
        assert "DataLoader worker" not in text and 'File "' not in text
        texts[workers] = text.replace(f"run{workers}", "run")
    assert texts["0"] == texts["1"]
    assert not (tmp_path / "run0").exists() and not (tmp_path / "run1").exists()


# -- 12. export checks its destination before the export ----------------------------------------

def test_export_into_a_read_only_or_missing_folder_is_refused_before_exporting(tmp_path,
                                                                             weights):
    import subprocess
    import time

    ro = tmp_path / "ro"
    ro.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)],
                         capture_output=True)
    if res.returncode or not os.path.ismount(ro):
        pytest.skip("no read-only mount possible here (chmod does not stop root)")
    try:
        for name in ("m.onnx", "m.pt2"):
            start = time.perf_counter()
            res = run("export", weights, ro / name)
            took = time.perf_counter() - start
            text = one_paragraph_error(res)
            assert "Read-only file system" in text and str(ro) in text, text
            assert took < 5, took  # refused before the export (which takes ~30 s), not after
        text = one_paragraph_error(run("export", weights, tmp_path / "missing" / "m.onnx"))
        assert "does not exist" in text
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)
    assert list(tmp_path.iterdir()) == [ro]


def test_deblur_writes_nothing_into_its_weights(tmp_path, ckpt_dir):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(ckpt_dir, ckpt)
    photo = tmp_path / "a.png"
    photo.write_bytes(encode_image(picture(16, 16, 0), ".png"))
    before = digest(ckpt)
    res = run("deblur", ckpt, photo, "-o", ckpt, "--force")
    assert res.exit_code == 2 and "would write over or inside WEIGHTS" in flat(res)
    assert digest(ckpt) == before


@pytest.mark.slow
def test_a_datalist_that_does_not_fit_in_memory_is_an_error(tmp_path):
    """Under an address-space cap, a list whose pairs do not fit ends in the one-paragraph
    error, not a MemoryError traceback (a child process: the cap is per process)."""
    import subprocess
    import sys

    listing = tmp_path / "list.txt"
    with open(listing, "w") as f:
        line = "a/sharp/000000.png a/blur/000000.png\n"
        f.write(line * (40 * 2**20 // len(line)))  # 40 MB: ~1.1 M pairs, ~0.7 GB of them
    # the cap: the child's own address space after its imports, plus 300 MB (the pairs
    # need ~0.7 GB)
    code = ("import resource, sys\n"
            "from srn_port.cli import main\n"
            "import torch, cv2, numpy\n"  # loaded before the cap
            "now = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
            "resource.setrlimit(resource.RLIMIT_AS, (now + 300 * 2**20, now + 300 * 2**20))\n"
            "sys.exit(main(['evaluate', sys.argv[1], sys.argv[2]]))\n")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")  # never reached
    res = subprocess.run([sys.executable, "-c", code, str(weights), str(listing)],
                         capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "Traceback" not in out and "more pairs than fit in memory" in out, out


def test_evaluate_refuses_one_file_for_csv_and_json(tmp_path, weights):
    data = gopro(tmp_path / "data", scenes=("s1",), per_scene=1)
    out = tmp_path / "scores"
    text = one_paragraph_error(run("evaluate", weights, data, "--csv", out, "--json", out))
    assert "--csv and --json are both" in text and not out.exists()
