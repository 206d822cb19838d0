"""Write faults as they really happen (docs/reliability.md): every writer of srn-port on a
genuinely full filesystem and on a read-only one, two runs into one folder, and a training
run killed with SIGKILL at random instants.

The full disk is a small tmpfs mounted for the test (root only; the test checks that the
mount really is there), filled to a chosen number of free bytes. Where no tmpfs can be
mounted, the command runs in a child process under ``RLIMIT_FSIZE`` (SIGXFSZ ignored), so
that its writes really fail, with EFBIG. A read-only folder is a read-only mount (chmod
does not stop root). Each writer must end in one ``Error:`` paragraph naming the file and
the cause, with the documented exit code, no temporary left, and the previous file
unchanged."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO
from srn_port.cli import cli
from srn_port.core.convert import convert_checkpoint
from srn_port.core.errors import FileWriteError
from srn_port.core.fileio import append_line
from srn_port.core.folderlock import LOCK_NAME
from srn_port.core.network import SRNConfig
from srn_port.data.images import encode_image

from _disk import CHILD, mount_tmpfs, umount
from _srn_ckpt import write_srn_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOLDEN_CKPT = REPO / "golden" / "ckpt" / "color"
CAUSE = {"tmpfs": "no space is left on the disk", "rlimit": "past the largest file"}


def errors(text: str) -> int:
    """How many 'Error: ' paragraphs the output holds (not counting 'RuntimeError: ')."""
    return len(re.findall(r"(?<![A-Za-z])Error: ", text))


class Disk:
    """A small disk at ``path``: a real tmpfs, or (``mode == "rlimit"``) a plain folder whose
    writers run under a file size limit of ``limit`` bytes."""

    def __init__(self, path: Path, mode: str):
        self.path, self.mode, self.limit = path, mode, None

    def fill(self, leave: int) -> None:
        """Leave about ``leave`` free bytes (rounded to pages): fill the tmpfs to its last
        block, then give back ``leave``; in rlimit mode, files may grow to ``leave`` bytes."""
        if self.mode == "rlimit":
            # not 0: Python's tempfile (which torch calls) must write its 4-byte probe file
            self.limit = max(leave, 64)
            return
        filler = self.path / "filler"
        with open(filler, "ab", buffering=0) as f:
            block = b"\0" * 4096
            try:
                while True:
                    f.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - leave))
        st = os.statvfs(self.path)
        assert st.f_bavail * st.f_frsize <= leave + 8192  # the disk really is (nearly) full

    def readonly(self) -> bool:
        """Remount read-only (tmpfs only); False where not possible."""
        if self.mode != "tmpfs":
            return False
        res = subprocess.run(["mount", "-o", "remount,ro", str(self.path)], capture_output=True)
        if res.returncode:
            return False
        probe = self.path / "probe"
        try:
            probe.write_bytes(b"x")
        except OSError as exc:
            return exc.errno == errno.EROFS
        return False

    def run(self, *args, child: bool = False):
        """Run ``srn-port args`` (in this process, or a child one with ``child`` or under a
        file size limit); (exit code, output as one line of text)."""
        args = [str(a) for a in args]
        if child or self.mode == "rlimit" and self.limit is not None:
            limit = self.limit if self.mode == "rlimit" and self.limit is not None else -1
            res = subprocess.run([sys.executable, "-c", CHILD, str(limit), *args],
                                 capture_output=True, text=True, timeout=300, cwd=REPO)
            out = res.stdout + res.stderr
            code = res.returncode
        else:
            result = CliRunner().invoke(cli, args)
            out = result.output
            code = result.exit_code
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                raise result.exception
        assert "Traceback" not in out
        return code, " ".join(out.split())


def _can_mount() -> bool:
    """Whether this process can mount a tmpfs (root with the right to mount): tried."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        ok = mount_tmpfs(Path(folder), "size=64k")
        umount(Path(folder))
    return ok


@pytest.fixture
def disk(request, tmp_path):
    """A small disk (``request.param``, default tmpfs); ``tmpfs`` is skipped where no tmpfs
    can be mounted (not root), in which case the ``rlimit`` one still runs."""
    path = tmp_path / "disk"
    path.mkdir()
    if getattr(request, "param", "tmpfs") == "tmpfs":
        if not mount_tmpfs(path, "size=1m"):
            pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE variant runs")
        try:
            yield Disk(path, "tmpfs")
        finally:
            umount(path)
    else:
        yield Disk(path, "rlimit")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Width-4 color weights (.pt and .safetensors), their TF checkpoint, a photo, a video
    and a dataset of two pairs."""
    from srn_port.api.weights import as_state_dict, save_weights
    from srn_port.data import synthetic
    from srn_port.data.video import write_video

    root = tmp_path_factory.mktemp("tiny")
    prefix = write_srn_checkpoint(root / "ckpt", SRNConfig("color", 4))
    conv = convert_checkpoint(prefix)
    out = {"ckpt": root / "ckpt", "pt": root / "w.pt", "st": root / "w.safetensors"}
    for key in ("pt", "st"):
        save_weights(as_state_dict(conv.arrays), conv.metadata(), out[key])
    blur, sharp = synthetic.held_out_set(1, 48, 64, seed=5, photos=False)[0]
    out["png"] = root / "photo.png"
    out["png"].write_bytes(encode_image(blur, ".png"))
    out["avi"] = root / "clip.avi"
    rng = np.random.default_rng(0)
    write_video(out["avi"], [rng.integers(0, 255, (32, 48, 3), np.uint8) for _ in range(3)],
                10.0, 48, 32)
    data = root / "data"
    for k in range(2):
        for sub, img in (("blur", blur), ("sharp", sharp)):
            (data / "s" / sub).mkdir(parents=True, exist_ok=True)
            (data / "s" / sub / f"{k}.png").write_bytes(encode_image(img, ".png"))
    out["data"] = data
    return out


def _listing(folder: Path) -> dict:
    """Every file under ``folder`` (but the filler) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "filler"}


def _no_temporaries(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name
            or p.name == LOCK_NAME]
    assert not left, left


TRAIN = ["--synthetic", "--width", "4", "--batch", "1", "--crop", "16", "--save-every", "1",
         "--log-every", "1"]

# (name, srn-port arguments with D for the disk, free bytes left, exit code, previous files)
WRITERS = [
    ("convert-pt", lambda t, D: ["convert", t["ckpt"], D / "o.pt", "--force"], 8192, 1,
     ["o.pt"]),
    ("convert-safetensors", lambda t, D: ["convert", t["ckpt"], D / "o.safetensors",
                                          "--force"], 8192, 1, ["o.safetensors"]),
    ("export-tf", lambda t, D: ["export-tf", t["st"], D / "tf", "--step", "7", "--force"],
     8192, 1, ["tf/deblur.model-7.index", "tf/deblur.model-7.data-00000-of-00001",
               "tf/checkpoint"]),
    ("export-pt2", lambda t, D: ["export", t["pt"], D / "o.pt2", "--force"], 8192, 1,
     ["o.pt2"]),
    ("export-onnx", lambda t, D: ["export", t["pt"], D / "o.onnx", "--force"], 8192, 1,
     ["o.onnx"]),
    ("deblur-image", lambda t, D: ["deblur", t["st"], t["png"], "-o", D / "out", "--force"],
     0, 1, ["out/photo.png"]),
    ("deblur-video", lambda t, D: ["deblur", t["st"], t["avi"], "-o", D / "out", "--force"],
     0, 1, ["out/clip.avi"]),
    ("diff-json", lambda t, D: ["diff", GOLDEN_CKPT, "--json", D / "d.json", "--force"], 0, 2,
     ["d.json"]),
    ("diff-heatmap", lambda t, D: ["diff", GOLDEN_CKPT, "--heatmap", D / "h.png", "--force"],
     0, 2, ["h.png"]),
    ("evaluate-csv", lambda t, D: ["evaluate", t["st"], t["data"], "--csv", D / "e.csv",
                                   "--force"], 0, 1, ["e.csv"]),
    ("evaluate-json", lambda t, D: ["evaluate", t["st"], t["data"], "--json", D / "e.json",
                                    "--force"], 0, 1, ["e.json"]),
    ("train", lambda t, D: ["train", D / "run", "--steps", "2", *TRAIN], 0, 1, []),
]
SLOW = {"export-onnx", "export-pt2"}  # torch.export: ~20-40 s each
#: Writers that also run under RLIMIT_FSIZE by default where a tmpfs can be mounted: where
#: none can (not root, or no right to mount), the variant is what runs for every writer, and
#: none of it is marked slow.
RLIMIT_QUICK = {"convert-pt", "convert-safetensors", "export-tf", "deblur-image", "train"}
CAN_MOUNT = _can_mount()
#: Run in a child process: the exporters leave state in torch that has made a later
#: in-process command of the same pytest process abort.
IN_CHILD = {"export-onnx", "export-pt2"}


def _previous(disk: Disk, names) -> None:
    for name in names:
        p = disk.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"previous " + name.encode())
    if any(n.startswith("tf/") for n in names):  # a real 'checkpoint' state file
        (disk.path / "tf" / "checkpoint").write_text(
            'model_checkpoint_path: "deblur.model-7"\n')


def _writer_params(modes=(None,), slow_ones=SLOW):
    for mode in modes:
        for case in WRITERS:
            slow = case[0] in slow_ones or (mode == "rlimit" and CAN_MOUNT
                                            and case[0] not in RLIMIT_QUICK)
            marks = [pytest.mark.slow] if slow else []
            if mode is None:
                yield pytest.param(*case, id=case[0], marks=marks)
            else:
                yield pytest.param(mode, *case, id=f"{mode}-{case[0]}", marks=marks)


@pytest.mark.parametrize("disk,name,args,leave,code,names",
                         list(_writer_params(("tmpfs", "rlimit"))), indirect=["disk"])
def test_every_writer_on_a_full_disk(disk, tiny, name, args, leave, code, names):
    _previous(disk, names)
    before = _listing(disk.path)
    disk.fill(leave)
    got, out = disk.run(*args(tiny, disk.path), child=name in IN_CHILD)
    assert got == code, out
    assert "Error: " in out and CAUSE[disk.mode] in out, out
    if name.startswith("deblur"):  # deblur reports each failed file, then a summary
        assert "Cannot write '" in out and "1 of 1 input(s) failed" in out, out
    else:
        assert errors(out) == 1 and "Traceback" not in out
        assert "Cannot write '" + str(disk.path) in out, out
    assert _listing(disk.path) == before
    _no_temporaries(disk.path)


@pytest.fixture
def read_only(tmp_path):
    """A folder that cannot be written, with its files put in first: a tmpfs remounted
    read-only (as root, where chmod stops nothing), else (not root) a folder of mode 555.
    Yields (Disk, what the error must say)."""
    path = tmp_path / "ro"
    path.mkdir()
    if mount_tmpfs(path, "size=1m"):
        disk = Disk(path, "tmpfs")

        def seal():
            assert disk.readonly()
            return "read-only"

        try:
            yield disk, seal
        finally:
            umount(path)
    elif os.geteuid() != 0:
        def seal():
            for p in [path, *path.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o555)
            return "permission"

        yield Disk(path, "plain"), seal
        for p in [path, *path.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
    else:
        pytest.skip("root without mount: no folder here refuses writes")


@pytest.mark.parametrize("name,args,leave,code,names", list(_writer_params(slow_ones=())))
def test_every_writer_into_a_read_only_folder(read_only, tiny, name, args, leave, code, names):
    disk, seal = read_only
    _previous(disk, names)
    before = _listing(disk.path)
    cause = seal()
    got, out = disk.run(*args(tiny, disk.path), child=name in IN_CHILD)
    assert got == code, out
    assert "Error: " in out and cause in out.lower(), out
    if not name.startswith("deblur"):
        assert errors(out) == 1, out
    assert _listing(disk.path) == before
    _no_temporaries(disk.path)


# -- training on a disk that fills up ---------------------------------------------------------

def _train_sizes(tmp_path) -> dict:
    """The sizes of one save of the tiny run (measured on an ordinary disk)."""
    out = tmp_path / "measure"
    code, text = Disk(tmp_path, "plain").run("train", out, "--steps", "1", *TRAIN)
    assert code == 0, text
    return {p.name: p.stat().st_size for p in out.iterdir()}


def test_training_on_a_disk_that_fills_up_keeps_its_last_state(tmp_path):
    import torch

    sizes = _train_sizes(tmp_path)
    path = tmp_path / "small"
    path.mkdir()
    # room for one save (state, weights, log) and half of a second state: the second save
    # needs its new temporary beside the old file, so it meets a full disk
    room = sizes["train_state.pt"] * 3 // 2 + sizes["model.safetensors"] + 64 * 1024
    if not mount_tmpfs(path, f"size={room // 4096 * 4096 + 4096}"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = path / "run"
        code, text = Disk(path, "tmpfs").run("train", out, "--steps", "4", *TRAIN)
        assert code == 1 and errors(text) == 1, text
        assert "Cannot write '" in text and "no space is left on the disk" in text, text
        state = torch.load(out / "train_state.pt", weights_only=True)
        assert state["step"] >= 1
        _no_temporaries(out)
        # the weights file is that state's (or the one before, if the disk filled between)
        from srn_port.api.weights import load_weights

        _, meta = load_weights(out / "model.safetensors")
        assert int(meta["step"]) in (state["step"], state["step"] - 1)
    finally:
        umount(path)


def test_appended_log_line_is_undone_on_a_full_disk(tmp_path):
    path = tmp_path / "disk"
    path.mkdir()
    if not mount_tmpfs(path, "size=64k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        log = path / "log.jsonl"
        append_line(log, json.dumps({"step": 1}))
        disk = Disk(path, "tmpfs")
        disk.fill(0)
        big = json.dumps({"step": 2, "pad": "x" * 20000})
        with pytest.raises(FileWriteError, match="no space is left.*The line was not added"):
            append_line(log, big)
        assert log.read_text() == '{"step": 1}\n'
    finally:
        umount(path)


# -- one run per output folder -----------------------------------------------------------------

def _srn_port(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "srn_port", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, **kw)


@pytest.mark.parametrize("rounds", [3, pytest.param(10, marks=pytest.mark.slow)])
def test_two_trainings_into_one_folder_started_together(tmp_path, rounds):
    # each write of the winner (its start state, its last state) waits 3 s under the lock,
    # so the two runs overlap even when one process starts seconds after the other on a
    # loaded machine (without it, a 3-step run could finish before the other reached the
    # folder, which then holds a finished run's outputs: another refusal, not the lock's)
    env = dict(os.environ, SRN_PORT_TEST_WRITE_DELAY="3")
    for round_ in range(rounds):
        out = tmp_path / f"run{round_}"
        procs = [_srn_port("train", out, "--steps", "3", *TRAIN, env=env) for _ in range(2)]
        results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
        codes = sorted(r[0] for r in results)
        texts = [" ".join((r[1] + r[2]).split()) for r in results]
        assert codes == [0, 1], texts
        refused = texts[[r[0] for r in results].index(1)]
        assert errors(refused) == 1 and "is in use by process" in refused, refused
        winner = procs[[r[0] for r in results].index(0)].pid
        assert f"process {winner} " in refused, (winner, refused)
        lines = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in lines] == [1, 2, 3]  # one run's log, not two interleaved
        assert not (out / LOCK_NAME).exists()


def test_a_killed_holder_does_not_block_the_next_run(tmp_path, tiny):
    out = tmp_path / "run"
    holder = _srn_port("train", out, "--steps", "1000000", *TRAIN[:-4], "--save-every",
                       "1000000")
    try:
        deadline = time.monotonic() + 120
        while _lock_pid(out) != holder.pid:
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        code, text = Disk(tmp_path, "plain").run("deblur", tiny["st"], tiny["png"], "-o", out)
        assert code == 1 and errors(text) == 1, text
        assert f"is in use by process {holder.pid}" in text and "`srn-port train " in text, text
        assert not (out / "photo.png").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.communicate()
    assert _lock_pid(out) == holder.pid  # the dead holder's lock file stays; it must not block
    code, text = Disk(tmp_path, "plain").run("deblur", tiny["st"], tiny["png"], "-o", out)
    assert code == 0 and (out / "photo.png").exists(), text
    assert not (out / LOCK_NAME).exists()


# -- kill -9 at random instants -----------------------------------------------------------------

def _lock_pid(out: Path):
    try:
        return json.loads((out / LOCK_NAME).read_text() or "{}").get("pid")
    except (OSError, ValueError):
        return None


def _kill_loop(out: Path, steps: int, kills: int, seed: int, env: dict):
    """Start the tiny run (resuming once a state exists) and SIGKILL it after a random delay,
    ``kills`` times; returns how many kills left a temporary behind (inside a save)."""
    rng = np.random.default_rng(seed)
    inside = 0
    for _ in range(kills):
        resume = ["--resume"] if (out / "train_state.pt").exists() else []
        proc = _srn_port("train", out, "--steps", str(steps), *TRAIN, *resume, env=env)
        # wait until the run trains (its lock is taken after start-up), then a random instant
        deadline = time.monotonic() + 120
        while _lock_pid(out) != proc.pid and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.communicate()
        if any(p.name.endswith(".tmp") for p in out.iterdir()):
            inside += 1
    return inside


def test_kill_at_random_instants_then_resume_ends_equal_to_an_uninterrupted_run(tmp_path):
    import torch

    steps = 12
    env = dict(os.environ, OMP_NUM_THREADS="1",
               SRN_PORT_TEST_WRITE_DELAY="0.05")  # each save takes a while: kills land in it
    whole = tmp_path / "whole"
    code, text = Disk(tmp_path, "plain").run("train", whole, "--steps", str(steps), *TRAIN)
    assert code == 0, text
    out = tmp_path / "killed"
    inside = _kill_loop(out, steps, kills=8, seed=1, env=env)
    assert inside >= 1  # some kills did land inside a save
    # each kill left a complete state (or none): finish the run from it
    resume = ["--resume"] if (out / "train_state.pt").exists() else []
    code, text = Disk(tmp_path, "plain").run("train", out, "--steps", str(steps), *TRAIN,
                                              *resume)
    assert code == 0, text
    a = torch.load(whole / "train_state.pt", weights_only=True)
    b = torch.load(out / "train_state.pt", weights_only=True)
    assert a["step"] == b["step"] == steps
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k  # bit-exact
    from srn_port.api.weights import load_weights

    (wa, ma), (wb, mb) = (load_weights(d / "model.safetensors") for d in (whole, out))
    assert ma == mb and wa.keys() == wb.keys()
    assert all(np.array_equal(np.asarray(wa[k]), np.asarray(wb[k])) for k in wa)
    _no_temporaries(out)
    steps_logged = [json.loads(l)["step"] for l in (out / "log.jsonl").read_text().splitlines()]
    assert steps_logged == list(range(1, steps + 1))


def test_under_torchrun_a_locked_folder_stops_every_process(tmp_path):
    """Rank 0 takes the lock; when it cannot, every rank stops (no rank left waiting)."""
    from srn_port.core.folderlock import FolderLock

    out = tmp_path / "run"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    with FolderLock(out):
        res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                              "2", "-m", "srn_port", "train", str(out), "--steps", "3",
                              "--synthetic", "--width", "4", "--batch", "2", "--crop", "16"],
                             capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    text = " ".join(res.stderr.split())
    assert res.returncode == 1 and f"is in use by process {os.getpid()}" in text, text
    assert sorted(os.listdir(out)) == []
