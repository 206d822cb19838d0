"""srn-port deblur on videos: frames in and out, same frame rate, size and count, --compare
as a side-by-side video, bad videos reported and skipped, no partial output; each test on
both backends (PyAV, the default where installed, and OpenCV, the fallback) unless it is
about one of them. PyAV's own guarantees (audio, timestamps, H.264): tests/test_video_pyav.py."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from _srn_ckpt import write_srn_checkpoint
from srn_port.api.convert import convert
from srn_port.cli import cli
from srn_port.core.errors import ImageError
from srn_port.core.network import SRNConfig
from srn_port.data.video import Video, write_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_clip(path, frames=5, size=(48, 64), fps=12.0, fourcc="mp4v"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size[::-1])
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8))
    writer.release()
    return path


def props(path):
    cap = cv2.VideoCapture(str(path))
    out = (int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS),
           int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w")
    out = folder / "color.safetensors"
    convert(write_srn_checkpoint(folder / "c", SRNConfig("color", 2)), out)
    return out


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("ext,fourcc", [(".mp4", "mp4v"), (".avi", "MJPG")])
def test_a_video_is_deblurred_frame_by_frame(tmp_path, weights, ext, fourcc, backend):
    clip = make_clip(tmp_path / f"clip{ext}", fourcc=fourcc)
    res = run("deblur", weights, clip, "-o", tmp_path / "out", "--compare")
    assert res.exit_code == 0, res.output
    if backend == "opencv":
        assert "audio is not carried over" in res.output
    else:
        assert "no audio; written with libx264, crf 18 (PyAV)" in res.output
    assert props(tmp_path / "out" / f"clip{ext}") == (5, 12.0, 64, 48)
    assert props(tmp_path / "out" / f"clip_compare{ext}") == (5, 12.0, 128, 48)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"clip{ext}",
                                                                    f"clip_compare{ext}"]


def test_videos_in_a_folder_and_existing_outputs(tmp_path, weights, backend):
    folder = tmp_path / "clips"
    folder.mkdir()
    make_clip(folder / "a.mp4")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.mp4").write_bytes(b"keep")
    res = run("deblur", weights, folder, "-o", tmp_path / "out")
    assert res.exit_code == 2 and "--force" in res.output
    assert (tmp_path / "out" / "a.mp4").read_bytes() == b"keep"


def test_a_damaged_video_is_reported_and_skipped(tmp_path, weights, backend):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    good = make_clip(tmp_path / "good.mp4")
    res = run("deblur", weights, bad, good, "-o", tmp_path / "out")
    assert res.exit_code == 1 and "bad.mp4" in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.mp4"]
    with pytest.raises(ImageError, match="bad.mp4"):
        Video(bad)


def test_an_unwritable_container_leaves_nothing(tmp_path, backend):
    with pytest.raises(ImageError, match="cannot write '.webm'"):
        write_video(tmp_path / "x.webm", [], 10.0, 16, 16)
    frames = [np.zeros((16, 16, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)]
    with pytest.raises(ImageError, match="expected 16x16"):
        write_video(tmp_path / "x.mp4", frames, 10.0, 16, 16)
    assert list(tmp_path.iterdir()) == []  # no partial video, no temporary left


def test_the_frame_pixel_limit(tmp_path, weights, backend):
    clip = make_clip(tmp_path / "clip.mp4")
    res = run("deblur", weights, clip, "-o", tmp_path / "out", "--max-pixels", "100")
    assert res.exit_code == 1 and "more than the limit" in " ".join(res.output.split())


@pytest.mark.slow
def test_two_torchrun_processes_split_the_inputs_and_give_the_same_files(tmp_path, weights):
    """torchrun --nproc_per_node 2 -m srn_port deblur: the inputs split over 2 CPU processes,
    outputs identical to one process, one merged summary."""
    import os
    import subprocess
    import sys

    from srn_port.data.images import encode_image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        img = np.random.default_rng(i).integers(0, 255, (32 + 16 * i, 48, 3), dtype=np.uint8)
        (photos / f"{i}.png").write_bytes(encode_image(img, ".png"))
    (photos / "broken.png").write_bytes(b"not an image")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = {}
    for name, launcher in (("one", [sys.executable, "-m", "srn_port"]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node", "2", "-m", "srn_port"])):
        out = tmp_path / name
        res = subprocess.run(launcher + ["deblur", str(weights), str(photos), "-o", str(out)],
                             env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 1, res.stdout + res.stderr  # the broken file: exit 1
        assert res.stdout.count("5 file(s) deblurred, 1 failed") == 1, res.stdout
        outs[name] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert outs["one"] == outs["two"] and len(outs["one"]) == 5


@pytest.mark.parametrize("variant", ["color", "gray"])
def test_batched_frames_equal_frames_one_at_a_time(tmp_path, variant):
    """deblur_batch (the video path: --batch frames per network call) gives what
    deblur_image gives frame by frame: the network is the same per sample; float32 round-off
    of a batched convolution may move a rounding, so at most 1 level on a few pixels."""
    from srn_port.api.deblur import deblur_batch, deblur_image
    from srn_port.api.weights import load_model

    out = tmp_path / f"{variant}.safetensors"
    convert(write_srn_checkpoint(tmp_path / "c", SRNConfig(variant, 2)), out)
    model = load_model(out)
    frames = [np.random.default_rng(i).integers(0, 255, (40, 56, 3), dtype=np.uint8)
              for i in range(3)]
    batched = deblur_batch(model, frames)
    for frame, b in zip(frames, batched):
        one = deblur_image(model, frame)
        diff = np.abs(one.astype(int) - b.astype(int))
        assert b.shape == frame.shape and b.dtype == np.uint8
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    with pytest.raises(ImageError, match="one shape"):
        deblur_batch(model, [frames[0], frames[0][:32]])


def test_video_batch_sizes_give_the_same_video(tmp_path, weights, backend):
    clip = make_clip(tmp_path / "clip.avi", frames=5, fourcc="MJPG")
    videos = {}
    lossless = ["--crf", "0"] if backend == "pyav" else []  # x264's lossless mode
    for batch in (1, 2, 5):
        res = run("deblur", weights, clip, "-o", tmp_path / f"b{batch}", "--batch", batch,
                  *lossless)
        assert res.exit_code == 0, res.output
        with Video(tmp_path / f"b{batch}" / "clip.avi") as v:
            videos[batch] = np.stack(list(v))
    assert videos[1].shape == (5, 48, 64, 3)
    for batch in (2, 5):
        # 1 level in RGB (test_batched_frames_equal_frames_one_at_a_time) through a lossy
        # MJPG encoder (OpenCV), or through RGB -> yuv420p -> RGB (x264 lossless)
        assert np.abs(videos[batch].astype(int) - videos[1].astype(int)).max() <= 3
