"""srn-port deblur on videos through PyAV (the video extra): the audio streams copied packet
for packet, every frame's timestamp kept (variable frame rates included), the rotation and
colour range kept, H.264 by default, --codec/--crf; and the OpenCV fallback without PyAV.
The clips are made here with PyAV itself (12 frames of 64x48 at 24 fps and half a second
of a 440 Hz sine in AAC), small enough for a few seconds per test."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

from _srn_ckpt import write_srn_checkpoint
from srn_port.api.convert import convert
from srn_port.cli import cli
from srn_port.core.errors import ImageError
from srn_port.core.network import SRNConfig

av = pytest.importorskip("av")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 48000  # audio samples per second


@pytest.fixture(autouse=True)
def pyav_backend(monkeypatch):
    monkeypatch.delenv("SRN_PORT_VIDEO_BACKEND", raising=False)  # auto: PyAV


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w")
    out = folder / "color.safetensors"
    convert(write_srn_checkpoint(folder / "c", SRNConfig("color", 4)), out)
    return out


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def make_clip(path, times=range(12), size=(48, 64), time_base=Fraction(1, 24), audio=True,
              rotation=None, full_range=False, codec="libx264"):
    """A clip whose frame k is shown at ``times[k] * time_base`` seconds, with half a second
    of a 440 Hz sine (AAC, mono) where ``audio``; the display rotation and colour range
    given are written as the container's tags."""
    out = av.open(str(path), "w")
    video = out.add_stream(codec, rate=24)
    video.width, video.height, video.pix_fmt = size[1], size[0], "yuv420p"
    video.time_base = video.codec_context.time_base = time_base
    if str(path).endswith(".avi"):  # AVI stores no times: no reordered frames
        video.codec_context.max_b_frames = 0
    if full_range:
        video.codec_context.color_range = 2
    if rotation is not None:
        video.set_display_rotation(rotation)
    sound = None
    if audio:
        sound = out.add_stream("aac", rate=RATE)
        sound.layout = "mono"
    for k, t in enumerate(times):
        rgb = np.random.default_rng(k).integers(0, 255, (*size, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format="yuv420p", dst_color_range=2 if full_range else None)
        frame.pts = t
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    if sound is not None:
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(RATE // 2) / RATE)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp",
                                               layout="mono")
            chunk.sample_rate, chunk.pts = RATE, start
            for packet in sound.encode(chunk):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    out.close()
    return path


def audio_of(path):
    """(the audio packets' bytes and times, the decoded samples) of the first audio stream."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        packets = [(bytes(p), p.pts, p.duration) for p in c.demux(stream) if p.size]
        c.seek(0)
        samples = np.concatenate([f.to_ndarray() for f in c.decode(stream)], axis=1)
    return packets, samples


def video_of(path):
    """Facts about the first video stream: codec, pixel format, frame times in seconds,
    rotation, colour range, size; and the container's duration."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = list(c.decode(stream))
        return {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "times": [f.pts * f.time_base for f in frames],
                "rotation": frames[0].rotation, "range": int(frames[0].color_range),
                "size": (frames[0].width, frames[0].height), "duration": c.duration}


def test_a_clip_keeps_its_sound_frames_times_rotation_and_range_in_h264(tmp_path, weights):
    clip = make_clip(tmp_path / "clip.mp4", rotation=90, full_range=True)
    res = run("deblur", weights, clip, "-o", tmp_path / "out", "--compare")
    assert res.exit_code == 0, res.output
    assert "12 frame(s) at 24 fps; 1 audio stream(s) copied; written with libx264, crf 18" \
        in " ".join(res.output.split())
    src = video_of(clip)
    assert len(src["times"]) == 12 and src["rotation"] == 90 and src["range"] == 2
    for name, size in (("clip.mp4", (64, 48)), ("clip_compare.mp4", (128, 48))):
        got = video_of(tmp_path / "out" / name)
        # 4:2:0, 8 bits (FFmpeg's H.264 decoder names it yuvj420p when in full range)
        assert got["codec"] == "h264" and got["pix_fmt"] == src["pix_fmt"] == "yuvj420p"
        assert got["size"] == size
        assert got["times"] == src["times"]  # 12 frames, each at its time
        assert got["rotation"] == 90 and got["range"] == 2
        assert got["duration"] == src["duration"]
        packets, samples = audio_of(tmp_path / "out" / name)
        src_packets, src_samples = audio_of(clip)
        assert packets == src_packets  # copied, not re-encoded
        assert np.array_equal(samples, src_samples) and samples.shape[1] >= RATE // 2
    # the pictures are the model's output, not the input copied
    with av.open(str(tmp_path / "out" / "clip.mp4")) as out, av.open(str(clip)) as inp:
        a = next(out.decode(video=0)).to_ndarray(format="rgb24").astype(int)
        b = next(inp.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert np.abs(a - b).mean() > 1


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_a_variable_frame_rate_keeps_every_timestamp(tmp_path, weights, ext):
    times = [0, 1, 3, 4, 9, 10, 30]  # in 1/24 s: pauses of 2, 5 and 20 frames
    clip = make_clip(tmp_path / f"vfr{ext}", times=times, audio=False)
    res = run("deblur", weights, clip, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    got = video_of(tmp_path / "out" / f"vfr{ext}")["times"]
    # Matroska's clock ticks in milliseconds: both files hold the times rounded to it
    assert got == video_of(clip)["times"]
    if ext == ".mp4":
        assert got == [Fraction(t, 24) for t in times]
    assert [round(float(t) * 24) for t in got] == times


@pytest.mark.parametrize("ext,audio", [(".mov", True), (".avi", False)])
def test_other_containers_keep_frames_and_sound(tmp_path, weights, ext, audio):
    clip = make_clip(tmp_path / f"clip{ext}", audio=audio)
    res = run("deblur", weights, clip, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    got, src = video_of(tmp_path / "out" / f"clip{ext}"), video_of(clip)
    assert got["codec"] == "h264" and len(got["times"]) == 12
    if audio:
        assert audio_of(tmp_path / "out" / f"clip{ext}")[0] == audio_of(clip)[0]
    start = lambda ts: [t - ts[0] for t in ts]  # AVI holds a rate, not times  # noqa: E731
    assert start(got["times"]) == start(src["times"])


def test_audio_that_a_container_would_retime_is_refused(tmp_path, weights):
    """FFmpeg's AVI muxer writes copied AAC as constant-rate audio (its block size taken as
    a sample size), so the packets would come back at other times: the re-read refuses the
    file rather than keep a video whose sound drifts."""
    clip = make_clip(tmp_path / "clip.avi")
    res = run("deblur", weights, clip, "-o", tmp_path / "out")
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "Traceback" not in text
    assert "audio packet 2 of stream 1 came back at" in text and "e.g. AAC or MP3 in AVI" in text
    assert list((tmp_path / "out").iterdir()) == []


def test_codec_and_crf(tmp_path, weights):
    clip = make_clip(tmp_path / "clip.mkv", audio=False)
    sizes = {}
    for crf in ("0", "40"):
        res = run("deblur", weights, clip, "-o", tmp_path / crf, "--crf", crf)
        assert res.exit_code == 0, res.output
        sizes[crf] = (tmp_path / crf / "clip.mkv").stat().st_size
    assert sizes["0"] > 2 * sizes["40"]  # crf 0 is x264's lossless mode
    res = run("deblur", weights, clip, "-o", tmp_path / "ffv1", "--codec", "ffv1")
    assert res.exit_code == 0, res.output
    assert video_of(tmp_path / "ffv1" / "clip.mkv")["codec"] == "ffv1"
    for args, needle in ((["--codec", "nosuch"], "codec 'nosuch': not a video encoder"),
                         (["--codec", "aac"], "codec 'aac': not a video encoder"),
                         (["--codec", "ffv1", "--crf", "10"], "takes no constant rate factor"),
                         (["--crf", "99"], "--crf 99: expected 0")):
        res = run("deblur", weights, clip, "-o", tmp_path / "bad", *args)
        assert res.exit_code == 2 and needle in " ".join(res.output.split()), res.output
        assert not (tmp_path / "bad").exists()  # refused before any work
    # a container that cannot hold the codec: that file fails, nothing is left
    mov = make_clip(tmp_path / "clip.mov", audio=False)
    res = run("deblur", weights, mov, "-o", tmp_path / "mov", "--codec", "ffv1")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "'mov' format does not support 'ffv1' codec" in " ".join(res.output.split())
    assert list((tmp_path / "mov").iterdir()) == []


def test_a_frame_rate_is_kept_exactly_or_refused(tmp_path, weights):
    """The MJPG AVIs of test_hostile_newer: 30000/1001 fps is kept exactly (OpenCV rounds it
    to 29.97); 90000 fps, which the AVI muxer turns into 600, is refused by the re-read."""
    from test_hostile_newer import avi_with_rate

    usual = avi_with_rate(tmp_path / "usual.avi", 30000, 1001)
    fast = avi_with_rate(tmp_path / "fast.avi", 90000, 1)
    res = run("deblur", weights, usual, fast, "-o", tmp_path / "out")
    assert res.exit_code == 1
    text = " ".join(res.output.split())
    assert "1 file(s) deblurred, 1 failed" in text
    assert "frame 2 came back at 0.00166667 s instead of 1.11111e-05 s" in text
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["usual.avi"]
    with av.open(str(tmp_path / "out" / "usual.avi")) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)
        assert c.streams.video[0].frames == 3


def test_headers_are_checked_before_pyav_opens_the_file(tmp_path, monkeypatch):
    from test_hostile_newer import huge_third_frame

    from srn_port.data.video import Video

    clip = huge_third_frame(tmp_path / "clip.avi", 8000)
    opened = []
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a))
    with pytest.raises(ImageError, match="frame 3's JPEG header claims 8000x8000"):
        Video(clip)
    assert opened == []


def size_change(path, small=40):
    """An H.264 AVI of ``small`` 64x48 frames and then one of 640x480 (a new SPS in band):
    the container, probed on its first frames, says 64x48."""
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=24)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    packets = []
    for (w, h), n, start in (((64, 48), small, 0), ((640, 480), 1, small)):
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
        ctx.time_base, ctx.max_b_frames = Fraction(1, 24), 0
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 100, np.uint8),
                                               format="rgb24").reformat(format="yuv420p")
            frame.pts = start + k
            packets += ctx.encode(frame)
        packets += ctx.encode(None)
    for packet in packets:
        packet.stream = stream
        out.mux(packet)
    out.close()
    return path


def test_ffmpeg_refuses_a_frame_over_the_pixel_limit_before_decoding_it(tmp_path):
    """The container's size is checked against the limit first; then FFmpeg's max_pixels
    refuses any frame over it before decoding it; under the limit, a frame of another size
    than the container's is refused once decoded."""
    from srn_port.data.video import Video

    clip = size_change(tmp_path / "clip.avi")
    with pytest.raises(ImageError, match="more than the limit of 0.003 MP"):
        Video(clip, max_pixels=3000)
    with Video(clip, max_pixels=64 * 48 * 4) as v:
        assert (v.width, v.height, v.frames) == (64, 48, 41)
        with pytest.raises(ImageError, match=r"only 40 of the 41 frame\(s\).*decoder stopped "
                                             r"at frame 41.*limit of 0.012288 MP"):
            list(v)
    with Video(clip, max_pixels=10 ** 6) as v:
        with pytest.raises(ImageError, match="frame 41 decodes to 640x480 pixels, but the "
                                             "container says 64x48"):
            list(v)


def test_timestamps_that_go_back_are_refused(tmp_path, weights):
    """Motion-JPEG frames (never reordered) stamped 0, 5, 2, 6 frames in a Matroska file:
    the third is not after the second, so the file fails, with nothing written."""
    clip = tmp_path / "back.mkv"
    out = av.open(str(clip), "w")
    stream = out.add_stream("mjpeg", rate=24)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
    stream.codec_context.color_range = 2
    packets = []
    for k in range(4):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 50 * k, np.uint8),
                                           format="rgb24").reformat(format="yuvj420p")
        frame.pts = k
        packets += stream.encode(frame)
    packets += stream.encode(None)
    for k, (packet, pts) in enumerate(zip(packets, [0, 5, 2, 6])):
        packet.pts, packet.dts = pts, k
        out.mux(packet)
    out.close()
    res = run("deblur", weights, clip, "-o", tmp_path / "out")
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "Traceback" not in text
    assert "frame 3 is stamped 0.083 s, not after frame 2's 0.208 s" in text
    assert list((tmp_path / "out").iterdir()) == []


def test_only_the_expected_containers_and_local_files_are_opened(tmp_path, weights):
    """A file named .mp4 that is an HLS playlist of another local file, or an MPEG-TS stream,
    is refused: FFmpeg opens MP4/MOV, Matroska/WebM and AVI demuxers only, through the
    file protocol only (no playlist or reference reaches another file or a URL)."""
    clip = make_clip(tmp_path / "clip.mp4", audio=False)
    with av.open(str(clip)) as c, av.open(str(tmp_path / "part.ts"), "w") as ts:
        stream = ts.add_stream_from_template(c.streams.video[0])
        for packet in c.demux(c.streams.video[0]):
            if packet.size:
                packet.stream = stream
                ts.mux(packet)
    (tmp_path / "playlist.mp4").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n"
                                           "part.ts\n#EXT-X-ENDLIST\n")
    (tmp_path / "stream.mp4").write_bytes((tmp_path / "part.ts").read_bytes())
    res = run("deblur", weights, tmp_path / "playlist.mp4", tmp_path / "stream.mp4", clip,
              "-o", tmp_path / "out")
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "1 file(s) deblurred, 2 failed" in text
    assert text.count("not an MP4/MOV, Matroska/WebM or AVI file") == 2
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip.mp4"]


def test_without_pyav_opencv_writes_the_frames_and_says_the_audio_is_lost(tmp_path, weights,
                                                                          monkeypatch):
    clip = make_clip(tmp_path / "clip.mp4")
    monkeypatch.setitem(sys.modules, "av", None)  # import av fails, as when not installed
    from srn_port.data.video import OpenCVVideo, Video, video_backend

    assert video_backend() == "opencv"
    with Video(clip) as v:
        assert isinstance(v, OpenCVVideo)
    res = run("deblur", weights, clip, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "audio is not carried over" in res.output
    assert "pip install 'srn-port[video]'" in res.output
    import cv2

    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert (fourcc.lower(), count) in (("mp4v", 12), ("fmp4", 12))  # MPEG-4 part 2, not H.264
    res = run("deblur", weights, clip, "-o", tmp_path / "out2", "--crf", "20")
    assert res.exit_code == 2 and "PyAV is not installed" in " ".join(res.output.split())
    monkeypatch.setenv("SRN_PORT_VIDEO_BACKEND", "pyav")
    res = run("deblur", weights, clip, "-o", tmp_path / "out3")
    assert res.exit_code == 1 and "SRN_PORT_VIDEO_BACKEND=pyav, but PyAV is not installed" \
        in " ".join(res.output.split())
    monkeypatch.setenv("SRN_PORT_VIDEO_BACKEND", "ffmpeg")
    res = run("deblur", weights, clip, "-o", tmp_path / "out4")
    assert res.exit_code == 1 and "expected one of auto, pyav, opencv" in res.output


def test_a_write_past_the_file_size_limit_is_one_paragraph(tmp_path, weights):
    """A real write failure (RLIMIT_FSIZE: the writes past it fail with EFBIG) inside
    FFmpeg's muxer: av's OSError carries the errno, atomic_write names the cause, and nothing
    is left behind."""
    clip = make_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))\n"
        "from srn_port.cli import main\n"
        "sys.argv = ['srn-port'] + sys.argv[1:]\n"
        "main()\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code, "deblur", str(weights), str(clip), "-o",
                          str(out)], capture_output=True, text=True, env=env, timeout=300)
    text = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1, text
    assert "Traceback" not in text
    assert "the file grew past the largest file this process may write" in text, text
    assert [p.name for p in out.iterdir() if not p.name.startswith(".srn-port")] == []
