"""Find the checkpoint prefix a user means from a path (and an optional step).

Accepted forms, in the spirit of ``tf.train.latest_checkpoint`` and SRN-Deblur's own
``load()`` (``models/model.py``):

* a prefix ``dir/deblur.model-523000`` (``.index`` beside it), or one of its files:
  the ``.index``, a ``.data-SSSSS-of-NNNNN`` shard or the ``.meta`` graph;
* a directory with a ``checkpoint`` file (text-format ``CheckpointState``, docs/tf-numerics.md §3.9).
  Only the *file name* of ``model_checkpoint_path`` is used, joined with the directory:
  ``Saver`` stores the path as given to ``save()``, often absolute on the machine that
  trained, so the path itself is useless after the directory has been copied;
* a directory plus a step: the one prefix in it ending in ``-<step>``;
* a directory with no ``checkpoint`` file but exactly one ``*.index``.

TF V1 checkpoints (one SSTable file per shard, no ``.index``) are recognised and
rejected with instructions, since converting them needs TensorFlow.
"""

from __future__ import annotations

import glob
import os
import re
import struct
from pathlib import Path

from google.protobuf import text_format

from ..errors import CheckpointError
from . import protos
from .sstable import FOOTER_SIZE, TABLE_MAGIC

CHECKPOINT_STATE_FILE = "checkpoint"
INDEX_SUFFIX = ".index"
META_SUFFIX = ".meta"
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")
_STEP = re.compile(r"-(\d+)$")
#: How many directory entries to name in an error message.
_LIST_LIMIT = 8


def resolve_checkpoint(path: os.PathLike | str, step: int | None = None) -> Path:
    """Return the absolute prefix of the checkpoint that ``path`` (and ``step``) designate.

    The prefix's ``.index`` file is guaranteed to exist; its data files are checked when
    the checkpoint is opened. Raises :class:`CheckpointError` explaining what was found.
    """
    given = Path(os.fspath(path)).expanduser()
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise CheckpointError(f"The checkpoint step must be a non-negative integer, got {step!r}.")
    try:
        prefix = _from_directory(given, step) if given.is_dir() else _from_path(given, step)
    except OSError as exc:  # e.g. a directory that may not be listed
        raise CheckpointError(
            f"Cannot read {exc.filename or given} while looking for a checkpoint: "
            f"{exc.strerror or exc}. Check that it exists and that you may read it."
        ) from None
    return prefix.parent.resolve() / prefix.name


def list_checkpoints(directory: Path) -> list[Path]:
    """Prefixes of the V2 checkpoints in ``directory`` (those with an ``.index``), by step."""
    prefixes = [
        p.with_name(p.name[: -len(INDEX_SUFFIX)])
        for p in directory.glob("*" + INDEX_SUFFIX)
        if p.is_file() and _has_suffix(p.name, INDEX_SUFFIX)
    ]
    return sorted(prefixes, key=lambda p: (_step_of(p) is None, _step_of(p) or 0, p.name))


def _step_of(prefix: Path) -> int | None:
    match = _STEP.search(prefix.name)
    return int(match.group(1)) if match else None


def _names(paths, limit: int = _LIST_LIMIT) -> str:
    names = [p.name for p in paths]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _has_suffix(name: str, suffix: str) -> bool:
    return name.endswith(suffix) and len(name) > len(suffix)


def _index_of(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + INDEX_SUFFIX)


def _from_path(given: Path, step: int | None) -> Path:
    name = given.name
    if given.is_file():
        if _has_suffix(name, INDEX_SUFFIX):
            prefix = given.with_name(name[: -len(INDEX_SUFFIX)])
        elif _DATA_SUFFIX.search(name):
            prefix = given.with_name(_DATA_SUFFIX.sub("", name))
        elif _has_suffix(name, META_SUFFIX):
            prefix = given.with_name(name[: -len(META_SUFFIX)])
            if not _index_of(prefix).is_file() and is_v1_checkpoint_file(prefix):
                raise v1_error(prefix)
        elif _index_of(given).is_file():
            prefix = given
        elif is_v1_checkpoint_file(given):
            raise v1_error(given)
        else:
            raise CheckpointError(
                f"{given} is not a TensorFlow checkpoint file: there is no {name}{INDEX_SUFFIX} "
                "beside it and it is not a checkpoint's .index or .data-* file. Pass a checkpoint "
                "prefix such as train/deblur.model-523000 (whose .index and .data-* files exist), "
                "one of those files, or the directory that holds them."
            )
    else:
        prefix = given
        if not _index_of(given).is_file():
            v1_shards = [
                p
                for p in given.parent.glob(f"{glob.escape(name)}-?????-of-?????")
                if is_v1_checkpoint_file(p)
            ]
            if v1_shards:
                raise v1_error(given)
            if not any(given.parent.glob(f"{glob.escape(name)}.data-*")):
                raise _does_not_exist(given)
    _check_index(prefix)
    if step is not None and _step_of(prefix) != step:
        raise CheckpointError(
            f"Both the checkpoint {prefix} and step {step} were given, but that checkpoint is "
            f"not the one for step {step}. Pass the directory {prefix.parent} together with the "
            "step, or the checkpoint prefix alone."
        )
    return prefix


def _check_index(prefix: Path) -> None:
    if _index_of(prefix).is_file():
        return
    data = sorted(prefix.parent.glob(f"{glob.escape(prefix.name)}.data-*"))
    raise CheckpointError(
        f"The checkpoint {prefix} has no index file {prefix.name}{INDEX_SUFFIX} (found its data "
        f"files: {_names(data) if data else 'none'}). The index holds every tensor's name, shape "
        f"and location, so the data files cannot be read without it: copy "
        f"{prefix.name}{INDEX_SUFFIX} from where the checkpoint was saved."
    )


def _does_not_exist(given: Path) -> CheckpointError:
    parent = given.parent
    if parent.is_dir():
        present = list_checkpoints(parent)
        hint = f"; {parent} holds the checkpoints {_names(present)}" if present else ""
    else:
        hint = f", and neither does its directory {parent}"
    return CheckpointError(
        f"The checkpoint path {given} does not exist (no such file, directory or checkpoint "
        f"prefix with a {INDEX_SUFFIX} file){hint}. Pass a checkpoint prefix such as "
        "train/deblur.model-523000, its .index file, or the directory that holds it."
    )


def _from_directory(directory: Path, step: int | None) -> Path:
    present = list_checkpoints(directory)
    if step is not None:
        matches = [p for p in present if _step_of(p) == step]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise CheckpointError(
                f"The directory {directory} holds {len(matches)} checkpoints for step {step}: "
                f"{_names(matches)}. Pass the prefix of the one you want instead of a step."
            )
        steps = sorted({s for s in map(_step_of, present) if s is not None})
        raise CheckpointError(
            f"The directory {directory} has no checkpoint for step {step} (no *-{step}{INDEX_SUFFIX} "
            f"file). Steps available: {', '.join(map(str, steps)) if steps else 'none'}"
            f"{f' ({_names(present)})' if present else ''}. Pass one of those steps, or the prefix "
            "of the checkpoint you want."
        )

    state_file = directory / CHECKPOINT_STATE_FILE
    if state_file.is_file():
        return _from_state_file(state_file, present)
    if len(present) == 1:
        return present[0]
    if present:
        steps = [s for s in map(_step_of, present) if s is not None]
        step_hint = f" (steps {', '.join(map(str, steps))})" if steps else ""
        raise CheckpointError(
            f"The directory {directory} holds {len(present)} checkpoints and no '{CHECKPOINT_STATE_FILE}' "
            f"file saying which is the latest: {_names(present)}. Choose one with --step{step_hint} "
            f"or pass its prefix, e.g. {present[-1]}."
        )
    v1 = next((p for p in _plain_files(directory) if is_v1_checkpoint_file(p)), None)
    if v1 is not None:
        raise v1_error(v1)
    contents = sorted(directory.iterdir())
    found = f"it holds only {_names(contents)}" if contents else "it is empty"
    raise CheckpointError(
        f"The directory {directory} contains no TensorFlow checkpoint: there is no "
        f"'{CHECKPOINT_STATE_FILE}' file and no *{INDEX_SUFFIX} file ({found}). Pass the directory "
        "the checkpoint was saved to, or the checkpoint prefix itself, e.g. "
        f"{directory / 'deblur.model-523000'}."
    )


def _from_state_file(state_file: Path, present: list[Path]) -> Path:
    directory = state_file.parent
    state = protos.CheckpointState()
    try:
        text_format.Parse(state_file.read_text(encoding="utf-8"), state, allow_unknown_field=True)
    except (text_format.ParseError, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(
            f"The '{CHECKPOINT_STATE_FILE}' file {state_file} cannot be parsed as a TensorFlow "
            f"CheckpointState ({exc}). Pass the checkpoint prefix directly (e.g. "
            f"{present[-1] if present else directory / 'deblur.model-523000'}), or delete the "
            "damaged file if this directory holds a single checkpoint."
        ) from None
    named = state.model_checkpoint_path
    if not named:
        raise CheckpointError(
            f"The '{CHECKPOINT_STATE_FILE}' file {state_file} names no model_checkpoint_path. "
            f"Pass a checkpoint prefix directly{'; present: ' + _names(present) if present else ''}."
        )
    # The path may come from another OS as well as another machine: split on both separators.
    base = re.split(r"[\\/]", named.rstrip("/\\"))[-1]
    if base in ("", ".", ".."):
        raise CheckpointError(
            f"The '{CHECKPOINT_STATE_FILE}' file {state_file} names {named!r} as the latest "
            f"checkpoint, which is a folder, not a checkpoint prefix such as 'deblur.model-523000'. "
            f"The file is damaged or hand-edited; pass a checkpoint prefix directly"
            f"{'; present: ' + _names(present) if present else ''}.")
    candidate = directory / base
    if _index_of(candidate).is_file():
        return candidate
    if is_v1_checkpoint_file(candidate):
        raise v1_error(candidate)
    raise CheckpointError(
        f"The '{CHECKPOINT_STATE_FILE}' file in {directory} names {named!r} as the latest checkpoint, "
        f"looked for as {candidate} (its file name, in this directory), but "
        f"{candidate.name}{INDEX_SUFFIX} does not exist there. Checkpoints present: "
        f"{_names(present) if present else 'none'}. Copy the missing checkpoint files into "
        f"{directory}, or choose a present checkpoint with --step or by passing its prefix."
    )


def _plain_files(directory: Path):
    for path in sorted(directory.iterdir()):
        if (
            path.is_file()
            and not path.name.endswith((INDEX_SUFFIX, META_SUFFIX))
            and not _DATA_SUFFIX.search(path.name)
        ):
            yield path


def is_v1_checkpoint_file(path: Path) -> bool:
    """True if ``path`` is an SSTable file that is not a V2 ``.index``: a V1 checkpoint.

    A V1 checkpoint (``tensorflow/core/util/tensor_slice_writer.cc``) is one table per
    shard mapping ``""`` and OrderedCode slice keys to ``SavedTensorSlices`` protos, with
    the tensor data inline; its last 8 bytes are the same table magic as a V2 index.
    """
    try:
        if (
            not path.is_file()
            or path.name.endswith(INDEX_SUFFIX)
            or path.stat().st_size < FOOTER_SIZE
        ):
            return False
        with open(path, "rb") as handle:
            handle.seek(-8, os.SEEK_END)
            lo, hi = struct.unpack("<II", handle.read(8))
    except OSError:
        return False
    return (hi << 32) | lo == TABLE_MAGIC


def v1_error(path: Path) -> CheckpointError:
    recipe = (
        'python -c "import tensorflow as tf; tf.compat.v1.disable_eager_execution(); '
        f"r = tf.train.load_checkpoint('{path}'); "
        "vs = {k: tf.compat.v1.Variable(r.get_tensor(k)) for k in r.get_variable_to_shape_map()}; "
        "s = tf.compat.v1.Session(); s.run(tf.compat.v1.global_variables_initializer()); "
        f"tf.compat.v1.train.Saver(vs).save(s, '{path}-v2')\""
    )
    return CheckpointError(
        f"{path} is a TensorFlow V1 checkpoint (a single-file table of SavedSlices with no "
        ".index file, as written before TensorFlow 0.12 or with Saver(write_version=V1)). "
        "TF V1 format, not supported; re-save with TF >= 0.12 Saver (V2), i.e. load it in "
        "TensorFlow and save it again with tf.compat.v1.train.Saver().save, for example: "
        f"{recipe} ; then convert {path}-v2."
    )
