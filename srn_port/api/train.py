"""Training as the original trains (docs/original-srn.md §4), in PyTorch.

The original loss (:func:`srn_port.nn.loss.srn_loss`), Adam with TF's rule
(:class:`srn_port.nn.optim.TFAdam`), the polynomial decay 1e-4 -> 0 with power 0.3 over the
run's steps, batch 16 of 256x256 random crops (the same window in blur and sharp), gray and
lstm models on TF's ``rgb_to_grayscale`` of the pair, no gradient clipping unless asked for
(``clip_lstm``: the original defines it for the ConvLSTM, global norm 3, but never uses it).

Start points: slim's initializers (Xavier-uniform weights, zero biases), a converted file
or TF checkpoint (``init``), or a TF training checkpoint with its Adam state (``resume_tf``:
the schedule and the optimizer pick up where TF stopped), or this trainer's own state
(``resume``).

Exactness of resuming: the data a step sees is a pure function of (seed, step) — the
epoch's permutation of the pairs and every crop are seeded by their position — so a run
resumed from its state file ends with the same weights as an uninterrupted one. The state
(weights, optimizer, step, settings) is written atomically every ``save_every`` steps, at
the end, and when the process gets SIGINT/SIGTERM.

Data parallel: launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), each of
the N processes computes 1/N of every global batch (the same positions a single process
would use, split by rank) under PyTorch's DistributedDataParallel (gloo on CPU, NCCL on
CUDA), so N processes follow one process's run with the same global batch up to the
summation order of the gradient average. Rank 0 logs and saves.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from .. import __version__
from ..core.convert import read_adam_state
from ..core.errors import SrnPortError
from ..core.fileio import append_line, atomic_write, input_clash
from ..core.folderlock import FolderLock
from ..core.network import SRNConfig
from ..core.weightfile import save_safetensors
from ..data import synthetic
from ..data.pairs import Pair, check_pairs, load_pair, random_crop, rgb_to_gray
from ..nn.loss import srn_loss
from ..nn.model import SRN
from ..nn.optim import TFAdam, tf_polynomial_decay
from ..nn.precision import amp_dtype, ieee_fp32
from .distributed import distributed as _distributed, gather as _gather, process_device
from .weights import load_model

STATE_FILE = "train_state.pt"
WEIGHTS_FILE = "model.safetensors"
LOG_FILE = "log.jsonl"
#: The original's schedule and optimizer settings.
LR, END_LR, POWER = 1e-4, 0.0, 0.3
LSTM_CLIP_NORM = 3.0
_DATA_STREAM, _CROP_STREAM = 11, 12
#: Settings a resumed run must share with the state it resumes.
_RESUME_KEYS = ("variant", "width", "steps", "batch", "crop", "lr", "seed", "clip_lstm",
                "data")


class TrainError(SrnPortError):
    """Training cannot start or resume as asked."""


class PairLoadError(TrainError):
    """A training pair that cannot be loaded. Raised in a DataLoader worker, it reaches the
    main process as torch re-creates it there: ``PairLoadError(torch's text)``, which holds
    the worker's whole traceback, ending with ``...PairLoadError: <the message>``; only that
    message is kept, so the error reads the same with and without workers."""

    _WORKER = "Original Traceback"

    def __init__(self, message: str):
        message = str(message)
        if self._WORKER in message:
            message = message.rsplit(f"{type(self).__name__}: ", 1)[-1].strip()
        super().__init__(message)


@dataclass
class TrainConfig:
    variant: str = "color"
    width: int = 32
    steps: int = 1000
    batch: int = 16
    crop: int = 256
    lr: float = LR
    seed: int = 0
    clip_lstm: bool = False
    save_every: int = 500
    log_every: int = 10
    val_every: int = 0
    workers: int = 0
    data: str = ""  # what the data is (a folder, a datalist, "synthetic"), for resuming
    #: Where the run computes: cpu, cuda or auto (cuda when available). A run resumes on
    #: any device (the state is saved as CPU tensors), so this is no resume setting.
    device: str = "cpu"
    #: fp32 (IEEE; TF32 off on CUDA: gradient-equal to TF), bf16 or fp16 (autocast; fp16
    #: with a gradient scaler). An explicit opt-in; a resumed run may change it.
    precision: str = "fp32"
    notes: List[str] = field(default_factory=list)


class PairCrops(Dataset):
    """Item k (a position in the run's sample stream) -> (blur, sharp) NCHW-ready float32
    crops. Position k of epoch k // N is pair ``perm_epoch[k % N]``, cropped by a generator
    seeded with (seed, k): any worker, any restart gives the same sample."""

    def __init__(self, pairs: Sequence[Pair], channels: int, crop: int, seed: int):
        self.pairs, self.channels, self.crop, self.seed = list(pairs), channels, crop, seed
        self._perms = {}

    def __len__(self):  # positions are unbounded; the sampler chooses them
        return 2**62

    def _pair(self, k: int) -> Pair:
        n = len(self.pairs)
        epoch = k // n
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([_DATA_STREAM, self.seed, epoch])
                           .permutation(n)}
        return self.pairs[int(self._perms[epoch][k % n])]

    def __getitem__(self, k: int):
        try:
            blur, sharp = load_pair(self._pair(k), self.channels)
        except SrnPortError as exc:  # the same one paragraph from a worker process too
            raise PairLoadError(f"{exc} Fix or remove the pair; the last saved state is "
                                f"kept.") from None
        rng = np.random.default_rng([_CROP_STREAM, self.seed, k])
        blur, sharp = random_crop(blur, sharp, self.crop, rng)
        return torch.from_numpy(blur.transpose(2, 0, 1)), torch.from_numpy(sharp.transpose(2, 0, 1))


class SyntheticCrops(Dataset):
    """Synthetic camera-shake pairs (:mod:`srn_port.data.synthetic`) for demos: item k is
    pair k % batch of ``training_batch(seed, k // batch)``."""

    def __init__(self, channels: int, crop: int, seed: int, batch: int):
        self.channels, self.crop, self.seed, self.batch = channels, crop, seed, batch
        self._cache = (None, None)

    def __len__(self):
        return 2**62

    def __getitem__(self, k: int):
        step = k // self.batch
        if self._cache[0] != step:
            self._cache = (step, synthetic.training_batch(self.seed, step, self.batch, self.crop))
        blur, sharp = (a[k % self.batch].astype(np.float32) / np.float32(255)
                       for a in self._cache[1])
        if self.channels == 1:
            blur, sharp = rgb_to_gray(blur), rgb_to_gray(sharp)
        return (torch.from_numpy(np.ascontiguousarray(blur.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(sharp.transpose(2, 0, 1))))


def slim_init(model: SRN, seed: int) -> None:
    """slim.conv2d's defaults: Xavier (Glorot) uniform weights, zero biases, seeded."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
                continue
            k = p.shape[2] * p.shape[3]
            limit = math.sqrt(6.0 / (k * p.shape[0] + k * p.shape[1]))
            p.copy_(torch.rand(p.shape, generator=gen) * (2 * limit) - limit)


def _lstm_params(model: SRN):
    return [p for n, p in model.named_parameters() if n.startswith("convLSTM.")]


def _psnr_of(model: SRN, pairs, channels: int) -> float:
    """Mean PSNR (8 bits) of the finest output on held-out (blur, sharp) float crops, in
    float32 on the model's device."""
    values = []
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), ieee_fp32():
        for blur, sharp in pairs:
            out = model(blur[None].to(device))[-1][0].float().cpu()
            a = np.clip(np.round(np.clip(out.numpy(), 0, 1) * 255), 0, 255)
            b = np.round(sharp.numpy() * 255)
            values.append(synthetic.psnr(a, b))
    model.train()
    return float(np.mean(values))


class Trainer:
    """One training run into ``out`` (state, weights, log)."""

    def __init__(self, config: TrainConfig, dataset: Dataset, out, *, init=None,
                 resume: bool = False, resume_tf=None, val: Sequence = (),
                 tensorboard: bool = False, progress: Optional[Callable] = None,
                 inputs: Sequence = ()):
        self.config, self.dataset, self.out = config, dataset, Path(out)
        self.val, self.progress = list(val), progress
        if sum(x is not None and x is not False for x in (init, resume_tf)) + bool(resume) > 1:
            raise TrainError("Give one start point: init weights, resume (this trainer's "
                             "state) or resume_tf (a TF training checkpoint).")
        if config.steps < 1 or config.batch < 1 or config.crop < 16 or config.crop % 16:
            raise TrainError(f"steps ({config.steps}) and batch ({config.batch}) must be "
                             f"positive and the crop ({config.crop}) a multiple of 16.")
        self.rank, self.world = _distributed(resolve_train_device(config.device))
        if config.batch % self.world:
            raise TrainError(f"The global batch {config.batch} does not split over "
                             f"{self.world} processes; use a multiple of {self.world}.")
        # nothing the run reads (start points, data) is written over (see check_out)
        check_out(self.out, resume, [init, resume_tf, *inputs,
                                     *(p for pair in getattr(dataset, "pairs", ())
                                       for p in (pair.blur, pair.sharp))])
        self.device = train_device(config.device)
        self.amp = train_precision(config.precision, self.device)
        self.model = SRN(SRNConfig(config.variant, config.width)).train().to(self.device)
        self.opt = TFAdam(self.model.parameters(), lr=config.lr)
        self.scaler = (torch.amp.GradScaler(self.device.type)
                       if self.amp == torch.float16 else None)
        self.step = 0
        state_path = self.out / STATE_FILE
        loaded = _file_id(state_path) if resume else None
        if resume:
            self._load_state(state_path)
        else:
            if resume_tf is not None:
                self._start_from_tf(resume_tf)
            elif init is not None:
                self._load_weights(init)
            else:
                slim_init(self.model, config.seed)
        self._make_out()
        # a new run that fails before its first step removes what it wrote (see _abandon)
        self._new, self._first_step = not resume, self.step
        self.writer = None
        # one run per folder: rank 0 (the one that writes) holds the folder until run() ends
        self._lock = FolderLock(self.out, "training folder")
        refused = None
        if self.rank == 0:
            try:
                self._lock.acquire()
                # again under the lock: a run that held the folder until now may have
                # written its outputs (refused) or a newer state (resumed from)
                if not resume:
                    check_out(self.out, False)
                elif _file_id(state_path) != loaded:
                    self._load_state(state_path)
                if resume:
                    self._trim_log()
                else:
                    # the start point is the run's first state: a kill at any later instant
                    # leaves a complete state to resume (with its --init weights)
                    self.save()
                if tensorboard:
                    self.writer = _summary_writer(self.out / "tensorboard")
            except BaseException as exc:
                self._abandon()
                if self.world == 1 or not isinstance(exc, SrnPortError):
                    raise
                refused = exc
        if self.world > 1:  # every process stops when rank 0 cannot take the folder
            why = _gather([None if refused is None else str(refused)], self.world)[0][0]
            if refused is not None:
                raise refused
            if why is not None:
                raise TrainError(why)
        self._stop = False

    def _abandon(self) -> None:
        """Give the folder up after a failure. A new run that has not completed a step removes
        what it wrote (its start state, log, TensorBoard folder: they only repeat its start)
        while it still holds the lock, so no other run's files are touched: under the lock,
        check_out found none of these there. Then the lock is released, and a folder this run
        made is removed if nothing else is in it."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._lock.held and self._new and self.step == self._first_step:
            for name in RUN_OUTPUTS:
                path = self.out / name
                try:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    elif path.exists() or path.is_symlink():
                        path.unlink()
                except OSError:
                    pass
        self._lock.release()
        if self._made_out:
            try:
                self.out.rmdir()  # only an empty folder: whatever another run put there stays
            except OSError:
                pass

    def _make_out(self) -> None:
        self._made_out = False
        try:
            self.out.mkdir(parents=True)
            self._made_out = True
        except FileExistsError:
            pass  # check_out refused anything but a folder
        except OSError as exc:
            raise TrainError(f"Cannot create the output folder '{self.out}': "
                             f"{exc.strerror or exc}. Choose an OUT you can write to.") from None

    # -- start points ------------------------------------------------------------------
    def _load_weights(self, path) -> None:
        src = load_model(path, channels_last=False)
        if src.config != self.model.config:
            raise TrainError(f"'{path}' is an SRN {src.config.variant} model of width "
                             f"{src.config.width}; this run trains {self.model.config.variant} "
                             f"of width {self.model.config.width}.")
        self.model.load_state_dict(src.state_dict())

    def _start_from_tf(self, checkpoint) -> None:
        self._load_weights(checkpoint)
        adam = read_adam_state(checkpoint)
        self.opt.load_tf_state(self.model.named_parameters(), adam)
        self.step = int(adam["step"] or 0)
        if self.step >= self.config.steps:
            raise TrainError(f"The TF checkpoint is at step {self.step}, at or past the run's "
                             f"{self.config.steps} steps; give more --steps.")

    def _load_state(self, path: Path) -> None:
        if not path.is_file():
            raise TrainError(f"There is no training state to resume in '{self.out}' "
                             f"({STATE_FILE} is missing); start a new run instead.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            saved = state["config"]
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            if self.scaler is not None and state.get("grad_scaler"):
                self.scaler.load_state_dict(state["grad_scaler"])
            step = int(state["step"])
        except Exception as exc:
            raise TrainError(f"'{path}' is not a readable srn-port training state "
                             f"({_load_failure(exc)}); start a new run in another "
                             f"folder.") from None
        changed = [f"{k}: {saved.get(k)!r} -> {getattr(self.config, k)!r}" for k in _RESUME_KEYS
                   if saved.get(k) != getattr(self.config, k)]
        if changed:
            raise TrainError(f"The run in '{self.out}' was started with other settings, so "
                             f"resuming would not continue it: {'; '.join(changed)}. Resume "
                             f"with the same settings, or train into another folder.")
        self.step = step

    # -- the loop ----------------------------------------------------------------------
    def save(self) -> None:
        if self.rank != 0:
            return
        # CPU tensors, whatever the device: the state resumes anywhere, bit for bit
        state = _on_cpu({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                         "step": self.step, "config": asdict(self.config),
                         "srn_port_version": __version__})
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        atomic_write(self.out / STATE_FILE, lambda tmp: torch.save(state, tmp))
        arrays = {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        meta = {"variant": self.config.variant, "width": self.config.width,
                "source": f"srn-port train ({self.config.data})", "step": self.step,
                "srn_port_version": __version__}
        save_safetensors(arrays, meta, self.out / WEIGHTS_FILE, force=True)

    def _log(self, record: dict) -> None:
        if self.rank != 0:
            return
        append_line(self.out / LOG_FILE, json.dumps(record))
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def _trim_log(self) -> None:
        """On resume: keep the log lines of the steps the resumed state holds (a killed run
        may have logged steps after its last save, or half a line)."""
        path = self.out / LOG_FILE
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not (line.endswith("\n") and isinstance(record, dict)
                    and isinstance(record.get("step"), int) and record["step"] <= self.step):
                continue
            c = self.config
            if ("val_psnr" in record and record["step"] == self.step and c.val_every
                    and self.val and self.step % c.val_every == 0):
                continue  # run() validates again where it starts
            kept.append(line)
        if kept != lines:
            atomic_write(path, lambda tmp: Path(tmp).write_text("".join(kept), encoding="utf-8"))

    def _on_signal(self, signum, frame):
        self._stop = True

    def run(self, stop_after: Optional[int] = None) -> int:
        """Train to ``config.steps`` (or until step ``stop_after``, or a signal); returns the
        step reached. The state is saved at the end whatever ended the loop."""
        c = self.config
        if self.rank == 0:
            self._lock.acquire()  # held since __init__; again after an earlier run() ended
        end = c.steps if stop_after is None else min(c.steps, stop_after)
        share = c.batch // self.world  # this process's part of each global batch
        sampler = [s * c.batch + self.rank * share + i
                   for s in range(self.step, end) for i in range(share)]
        cuda = self.device.type == "cuda"
        loader = DataLoader(self.dataset, batch_size=share, sampler=sampler,
                            num_workers=c.workers, persistent_workers=False, pin_memory=cuda)
        net = self.model
        if self.world > 1 or (dist.is_available() and dist.is_initialized()):
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(self.model, device_ids=[self.device.index]
                                          if cuda else None)
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        if c.val_every and self.val and self.step % c.val_every == 0:  # where the run starts
            self._log({"step": self.step, "val_psnr": _psnr_of(self.model, self.val,
                                                               self.model.config.channels)})
        started, done = time.perf_counter(), 0
        waited = 0.0  # seconds spent waiting for batches (loading, and the copy to the device)
        failed = True
        batches = iter(loader)
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    blur, sharp = next(batches)
                except StopIteration:
                    break
                blur = blur.to(self.device, non_blocking=cuda)
                sharp = sharp.to(self.device, non_blocking=cuda)
                waited += time.perf_counter() - t0
                lr = tf_polynomial_decay(self.step, c.lr, c.steps, END_LR, POWER)
                for group in self.opt.param_groups:
                    group["lr"] = lr
                self.opt.zero_grad(set_to_none=True)
                loss = self._loss(net, blur, sharp)
                self._backward(loss)  # DDP: the gradient is averaged over the processes
                if self.scaler is not None and c.clip_lstm and self.model.config.use_lstm:
                    self.scaler.unscale_(self.opt)
                if c.clip_lstm and self.model.config.use_lstm:
                    torch.nn.utils.clip_grad_norm_(_lstm_params(self.model), LSTM_CLIP_NORM)
                if self.scaler is not None:
                    self.scaler.step(self.opt)  # skipped where the scaled gradient overflowed
                    self.scaler.update()
                else:
                    self.opt.step()
                self.step += 1
                done += 1
                value = float(_mean_over_processes(loss.detach(), self.world))
                if not math.isfinite(value):
                    raise TrainError(f"The loss became {value} at step {self.step}: the run "
                                     f"diverged. The last saved state is kept; lower the "
                                     f"learning rate or check the data.")
                elapsed = time.perf_counter() - started
                rate = done * c.batch / elapsed
                if self.progress is not None and self.rank == 0:
                    self.progress(self.step, c.steps, value, rate)
                if self.step % c.log_every == 0 or self.step == end:
                    # data_wait: the share of the run's time spent waiting for batches; near
                    # 0 the device is kept busy, near 1 add --workers
                    self._log({"step": self.step, "loss": value, "lr": lr,
                               "pairs_per_s": round(rate, 3),
                               "data_wait": round(waited / elapsed, 4)})
                if c.val_every and self.val and self.step % c.val_every == 0:
                    self._log({"step": self.step, "val_psnr": _psnr_of(self.model, self.val,
                                                                       self.model.config.channels)})
                if self.step % c.save_every == 0 and self.step != end:
                    self.save()
                if _any_process(self._stop, self.world, self.device):
                    self._stop = True
                    break
            failed = False
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            if failed:  # a failed step never replaces the last good state
                self._abandon()
            else:
                try:
                    self.save()
                    if self.writer is not None:
                        self.writer.close()
                finally:
                    self._lock.release()
        return self.step

    def _loss(self, net, blur: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
        """The original loss of one batch: the forward in the run's precision (IEEE float32,
        TF32 off; or autocast), the loss itself in float32."""
        with ieee_fp32():
            if self.amp is None:
                return srn_loss(net(blur), sharp)
            with torch.autocast(self.device.type, dtype=self.amp):
                outputs = net(blur)
            return srn_loss([o.float() for o in outputs], sharp)

    def _backward(self, loss: torch.Tensor) -> None:
        """The gradients, with TF32 off for the backward convolutions too (cuDNN's default
        would use TF32 there, fp32 or not); fp16 through the gradient scaler."""
        with ieee_fp32():
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()

    @property
    def interrupted(self) -> bool:
        return self._stop


def _summary_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainError("TensorBoard logging needs the tensorboard package: pip install "
                         "'srn-port[train]' (or drop --tensorboard).") from None
    return SummaryWriter(str(folder))


#: What a run writes into its OUT folder.
RUN_OUTPUTS = (STATE_FILE, WEIGHTS_FILE, LOG_FILE, "tensorboard")


def check_out(out, resume: bool, inputs: Sequence = ()) -> None:
    """Refuse an OUT where the run would write over something it reads (``inputs``: the
    start point, its folder, the data and every pair's files; see
    :func:`srn_port.core.fileio.input_clash`), or, unless resuming, an OUT that already
    holds another run's outputs (its log would be appended to, its weights replaced)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TrainError(f"OUT '{out}' exists and is not a folder; give a folder for the run.")
    for name in RUN_OUTPUTS:
        inp = input_clash(out / name, inputs)
        if inp is not None:
            raise TrainError(f"Training into '{out}' would write '{out / name}' over (or inside) "
                             f"the input '{inp}', which the run reads; inputs are never "
                             f"modified. Train into another folder.")
    if resume:
        return
    held = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if held:
        raise TrainError(f"'{out}' already holds the outputs of another run ({', '.join(held)}); "
                         f"a new run would replace or append to them. Resume that run "
                         f"(--resume, where its {STATE_FILE} is there) or train into another "
                         f"folder.")


def _file_id(path: Path):
    """What identifies a version of ``path`` (replaced atomically: a new inode), or None."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _mean_over_processes(value: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return value


def _any_process(flag: bool, world: int, device=None) -> bool:
    """A stop asked for in any process stops all of them at the same step."""
    if world <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)  # NCCL reduces CUDA tensors
    dist.all_reduce(t)
    return bool(t.item() > 0)


def resolve_train_device(name: str) -> str:
    """``auto`` -> ``cuda`` when CUDA is available with a GPU for every process of this
    machine (torchrun's LOCAL_WORLD_SIZE; every process decides alike), else ``cpu``;
    ``cuda`` must be available."""
    if name not in TRAIN_DEVICES:
        raise TrainError(f"Unknown device '{name}'; expected one of {', '.join(TRAIN_DEVICES)}.")
    cuda = torch.cuda.is_available()
    if name == "auto":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return "cuda" if cuda and torch.cuda.device_count() >= local_world else "cpu"
    if name == "cuda" and not cuda:
        raise TrainError("device 'cuda': CUDA is not available (no NVIDIA GPU, or this torch "
                         "build is CPU-only). Train with --device cpu, or install a CUDA build "
                         "of torch.")
    return name


def train_device(name: str) -> torch.device:
    """The device this process trains on: the CPU, or under torchrun the GPU of its
    LOCAL_RANK (one GPU per process; without torchrun, GPU 0)."""
    return process_device(resolve_train_device(name))


def train_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``precision`` (None: IEEE float32). fp16 and bf16 run on CUDA;
    on the CPU too (for tests: slowly, and fp16 has no CPU kernels worth using)."""
    if precision not in TRAIN_PRECISIONS:
        raise TrainError(f"Unknown precision '{precision}'; expected one of "
                         f"{', '.join(TRAIN_PRECISIONS)}.")
    dtype = amp_dtype(precision)
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrainError("precision 'bf16': this GPU has no bfloat16 support; use fp16.")
    return dtype


#: Choices of ``TrainConfig.device`` and ``TrainConfig.precision``.
TRAIN_DEVICES = ("auto", "cpu", "cuda")
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")


def _on_cpu(obj):
    """``obj`` (nested dicts/lists of tensors) with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def dataset_for(pairs: Optional[Sequence[Pair]], config: TrainConfig, channels: int) -> Dataset:
    """The training samples: pairs from files (checked first) or synthetic ones."""
    if pairs is None:
        return SyntheticCrops(channels, config.crop, config.seed, config.batch)
    check_pairs(pairs, config.crop)
    return PairCrops(pairs, channels, config.crop, config.seed)


def held_out(pairs: Optional[Sequence[Pair]], channels: int, n: int = 8, size: int = 128):
    """Validation crops: the centre ``size`` crops of ``pairs``, or synthetic held-out pairs."""
    out = []
    if pairs is None:
        for blur, sharp in synthetic.held_out_set(n, size, photos=False):
            pair = [a.astype(np.float32) / np.float32(255) for a in (blur, sharp)]
            if channels == 1:
                pair = [rgb_to_gray(a) for a in pair]
            out.append(tuple(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
                             for a in pair))
        return out
    for pair in list(pairs)[:n]:
        blur, sharp = load_pair(pair, channels)
        h, w = blur.shape[:2]
        s = min(size, h // 16 * 16, w // 16 * 16)
        y, x = (h - s) // 2, (w - s) // 2
        out.append(tuple(torch.from_numpy(np.ascontiguousarray(a[y:y + s, x:x + s]
                                                               .transpose(2, 0, 1)))
                         for a in (blur, sharp)))
    return out


def _load_failure(exc: Exception) -> str:
    """One line on why a state file did not load. torch's own text for a refused pickle is
    several paragraphs that end in advice to unpickle it anyway: never given here."""
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
        return ("it holds objects other than tensors and plain containers, which srn-port "
                "never unpickles: they could run code")
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def read_training_state(path) -> tuple:
    """(weights, Adam state, metadata) of a ``train_state.pt``: the weights as numpy arrays
    by parameter name, the state as :func:`srn_port.core.export.tf_variables` takes it
    (``m``, ``v``, beta powers), and variant/width/step — for ``srn-port export-tf``."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        weights = {k: v.numpy() for k, v in state["model"].items()}
        opt = state["optimizer"]
        names = list(weights)
        order = [i for g in opt["param_groups"] for i in g["params"]]
        m = {names[i]: opt["state"][i]["m"].numpy() for i in order if i in opt["state"]}
        v = {names[i]: opt["state"][i]["v"].numpy() for i in order if i in opt["state"]}
        b1p, b2p = opt["tf_beta_powers"]
        config = state["config"]
        meta = {"variant": config["variant"], "width": config["width"], "step": int(state["step"])}
    except Exception as exc:
        raise TrainError(f"'{path}' is not a readable srn-port training state "
                         f"({_load_failure(exc)}).") from None
    if len(m) != len(names):  # a state saved before the first step has no moments yet
        return weights, None, meta
    return weights, {"m": m, "v": v, "beta1_power": b1p, "beta2_power": b2p}, meta
