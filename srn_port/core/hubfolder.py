"""Hugging Face Hub-style model folders, the parts that need no torch.

A converted model published the way the Hugging Face ecosystem loads models is a folder::

    config.json         what the model is: variant, width, srn-port version, the source
                        checkpoint and the SHA-256 of its files, its step
    model.safetensors   srn-port's own .safetensors weights (srn_port.core.weightfile)
    README.md           the model card

The same folder lies on the Hub (``hf://org/name``) or in huggingface_hub's local cache
(``models--org--name/snapshots/<commit>/``); :func:`resolve_weights` turns either, or a
local folder, into the path of its checked ``model.safetensors``, so every command that
reads weights accepts them. Downloading is huggingface_hub's own (``snapshot_download``,
which honours ``HF_HUB_OFFLINE`` and the cache); only the three files above are fetched.

Only ``model.safetensors`` is ever read: a folder that has pickled weights
(``pytorch_model.bin`` and the like) and no ``model.safetensors`` is refused unopened.
``config.json`` is read whole only below :data:`MAX_CONFIG_BYTES`, parsed as JSON (data,
never code), and must agree with the weights it sits beside.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .. import __version__
from .errors import FileWriteError, ModelFileError, SrnPortError
from .fileio import _fsync_folder, _pid_alive, regular_file_size, write_failure
from .network import VARIANTS, SRNConfig
from .weightfile import (FORMAT, FORMAT_VERSION, check_shapes, open_safetensors,
                         read_header)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
#: The files of a Hub folder; the only ones downloaded.
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
#: Weights formats that are pickles (or may be): never opened, named in the refusal.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: srn-port's config.json is ~1 KB; a larger one is refused unread.
MAX_CONFIG_BYTES = 1 << 20
HUB_SCHEME = "hf://"
INSTALL_HINT = "pip install 'srn-port[hub]'"
LIBRARY_NAME = "srn-port"
ORIGINAL_REPO = "https://github.com/jiangsutx/SRN-Deblur"
PAPER = "https://arxiv.org/abs/1802.01770"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def require_hub(what: str):
    """The ``huggingface_hub`` module, or a one-paragraph error saying how to install it."""
    try:
        import huggingface_hub
    except ImportError:
        raise SrnPortError(
            f"{what} needs the huggingface_hub library, which is not installed. Install "
            f"srn-port's 'hub' extra: {INSTALL_HINT}") from None
    return huggingface_hub


def hub_id(weights) -> Optional[Tuple[str, Optional[str]]]:
    """``(repo_id, revision)`` of ``hf://org/name[@revision]``, else None. A ``Path`` of it
    (``hf:/org/name``: pathlib folds the double slash) is recognised too."""
    if weights is None:
        return None
    text = os.fspath(weights) if isinstance(weights, os.PathLike) else str(weights)
    if text.startswith(HUB_SCHEME):
        rest = text[len(HUB_SCHEME):]
    elif text.startswith("hf:/") and isinstance(weights, os.PathLike):
        rest = text[len("hf:/"):]
    else:
        return None
    repo, _, revision = rest.partition("@")
    repo = repo.rstrip("/")
    if not _REPO_ID.match(repo) or ".." in repo or (revision == "" and "@" in rest):
        raise SrnPortError(f"'{text}' is not a Hugging Face Hub model id; write it as "
                           f"hf://ORG/NAME (or hf://ORG/NAME@REVISION), e.g. hf://org/srn-color.")
    return repo, (revision or None)


def is_hub_folder(path) -> bool:
    """A folder that holds a config.json or a model.safetensors, or pickled weights and no
    TF checkpoint (a ``checkpoint`` file or an ``.index``: a TF checkpoint folder may hold a
    converted ``.pt`` beside it, and is read as the checkpoint)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / CONFIG_NAME).exists() or (path / WEIGHTS_NAME).exists():
        return True
    if (path / "checkpoint").exists() or next(path.glob("*.index"), None) is not None:
        return False
    return bool(_pickles(path))


def _pickles(folder: Path) -> List[str]:
    try:
        return sorted(p.name for p in folder.iterdir()
                      if p.suffix.lower() in PICKLE_SUFFIXES and not p.name.startswith("."))
    except OSError:
        return []


def download(repo_id: str, revision: Optional[str] = None, *, cache_dir=None,
             force_download: bool = False, local_files_only: bool = False, token=None) -> Path:
    """The local folder of a Hub model: huggingface_hub's ``snapshot_download`` of its
    config.json, model.safetensors and README.md only (from the cache when it holds them;
    ``HF_HUB_OFFLINE=1`` never touches the network)."""
    hub = require_hub(f"Loading the Hub model '{repo_id}'")
    # huggingface_hub.utils: where 0.23 has them, and later versions still export them
    from huggingface_hub.utils import (HFValidationError, LocalEntryNotFoundError,
                                       RepositoryNotFoundError, RevisionNotFoundError)

    where = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    try:
        folder = hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                       allow_patterns=list(HUB_FILES), token=token,
                                       force_download=force_download,
                                       local_files_only=local_files_only)
    except LocalEntryNotFoundError:
        raise SrnPortError(
            f"The Hub model '{where}' is not in the local Hugging Face cache, and downloading "
            f"is off (HF_HUB_OFFLINE=1, or no network). Download it once with network access "
            f"(or unset HF_HUB_OFFLINE), or give the path of a local copy of the folder.") \
            from None
    except HFValidationError as exc:
        raise SrnPortError(f"'{repo_id}' is not a Hugging Face Hub model id ({exc}); write it "
                           f"as ORG/NAME, or give the path of a local folder.") from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise SrnPortError(f"The Hub has no model '{where}' ({type(exc).__name__}); check the "
                           f"name and revision (private models need `hf auth login`).") from None
    except OSError as exc:  # network errors, a cache that cannot be written
        raise SrnPortError(f"Cannot fetch the Hub model '{where}': {exc}. Check the network "
                           f"and the name, or give the path of a local copy of the "
                           f"folder.") from None
    return Path(folder)


def read_config(folder) -> Dict[str, Any]:
    """A Hub folder's config.json: a JSON object with a valid variant and width."""
    path = Path(folder) / CONFIG_NAME
    size = regular_file_size(path, "Hub folder's config.json")
    if size > MAX_CONFIG_BYTES:
        raise ModelFileError(f"'{path}' is {size:,} bytes; srn-port's config.json is about "
                             f"1 KB and at most {MAX_CONFIG_BYTES:,} bytes are read. It is not "
                             f"the config of an srn-port model.")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"'{path}' is not valid JSON ({exc}); the folder is damaged or is "
                             f"not an srn-port model. Write it again with: srn-port convert "
                             f"CHECKPOINT OUT --hub") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"'{path}' holds a JSON {type(config).__name__}, not an object; "
                             f"it is not the config of an srn-port model.")
    variant, width = config.get("variant"), config.get("width")
    if variant not in VARIANTS or isinstance(width, bool) or not isinstance(width, int) \
            or width < 1:
        raise ModelFileError(
            f"'{path}' does not declare an SRN model: it needs \"variant\" (one of "
            f"{', '.join(VARIANTS)}) and a positive integer \"width\", and has variant="
            f"{variant!r}, width={width!r}. It is not a folder written by srn-port (srn-port "
            f"convert CHECKPOINT OUT --hub, or SRN.save_pretrained).")
    return config


def check_folder(folder) -> Tuple[Path, SRNConfig]:
    """The ``model.safetensors`` of a Hub folder and the config its config.json declares,
    checked against each other from the safetensors header (no tensor is read). Pickled
    weights are never opened: a folder with only those is refused."""
    folder = Path(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.exists():
        pickles = _pickles(folder)
        if pickles:
            raise ModelFileError(
                f"The model folder '{folder}' has no {WEIGHTS_NAME}, only {', '.join(pickles)}: "
                f"pickled weights, which can run any code when opened, so srn-port never opens "
                f"them. Ask for (or make) a {WEIGHTS_NAME}: srn-port writes one with `srn-port "
                f"convert CHECKPOINT OUT --hub` or SRN.save_pretrained.")
        raise ModelFileError(f"The model folder '{folder}' has no {WEIGHTS_NAME}; it is not an "
                             f"srn-port Hub folder (written by `srn-port convert CHECKPOINT OUT "
                             f"--hub` or SRN.save_pretrained).")
    if not (folder / CONFIG_NAME).exists():
        raise ModelFileError(f"The model folder '{folder}' has {WEIGHTS_NAME} but no "
                             f"{CONFIG_NAME}, which a Hub folder has to say what the model is. "
                             f"Give the weights file itself ('{weights}'), or write a Hub "
                             f"folder with: srn-port convert CHECKPOINT OUT --hub")
    declared = read_config(folder)
    config = SRNConfig(variant=declared["variant"], width=declared["width"])
    regular_file_size(weights, "model weights")
    with open_safetensors(weights, "The folder is damaged; write it again.") as f:
        meta, shapes = read_header(f, weights)
    claimed = (meta.get("variant"), meta.get("width"))
    if claimed != (config.variant, config.width):
        raise ModelFileError(
            f"The model folder '{folder}' disagrees with itself: its {CONFIG_NAME} declares SRN "
            f"{config.variant} of width {config.width}, and its {WEIGHTS_NAME} says SRN "
            f"{claimed[0]} of width {claimed[1]}. One of them was edited or replaced; write the "
            f"folder again with: srn-port convert CHECKPOINT OUT --hub")
    try:
        check_shapes(shapes, config, weights)
    except ModelFileError as exc:
        raise ModelFileError(f"The model folder '{folder}': its {CONFIG_NAME} declares SRN "
                             f"{config.variant} of width {config.width}, and the weights do not "
                             f"fit it. {exc}") from None
    return weights, config


def resolve_weights(weights) -> Path:
    """Where the weights of WEIGHTS are: the checked ``model.safetensors`` of a Hub folder
    (``hf://org/name`` is downloaded, or taken from the cache, first), else WEIGHTS itself
    (a weights file, a TF checkpoint, an exported model)."""
    ref = hub_id(weights)
    if ref is not None:
        return check_folder(download(*ref))[0]
    path = Path(weights)
    if is_hub_folder(path):
        return check_folder(path)[0]
    return path


def publish(folder, repo_id: str, *, private: Optional[bool] = None,
            revision: Optional[str] = None, message: Optional[str] = None, token=None) -> str:
    """Upload a Hub folder with huggingface_hub (``create_repo``, then ``upload_folder`` of
    its three files only, one commit), after checking it as loading does; returns the
    commit's URL."""
    folder = Path(folder)
    if not is_hub_folder(folder):
        raise SrnPortError(f"'{folder}' is not a Hub folder (config.json, model.safetensors, "
                           f"README.md); write one with: srn-port convert CHECKPOINT OUT --hub")
    check_folder(folder)
    if not (folder / CARD_NAME).is_file():
        raise SrnPortError(f"The model folder '{folder}' has no {CARD_NAME} (the model card); "
                           f"write the folder again with: srn-port convert CHECKPOINT OUT --hub")
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise SrnPortError(f"'{repo_id}' is not a Hugging Face Hub repository id; write it as "
                           f"ORG/NAME.")
    hub = require_hub("srn-port publish")
    network_errors = (OSError,)  # offline mode, HTTP errors (huggingface_hub's are OSErrors)
    try:
        import httpx

        network_errors += (httpx.HTTPError,)
    except ImportError:
        pass
    try:
        api = hub.HfApi(token=token)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder),
                                 allow_patterns=list(HUB_FILES), revision=revision,
                                 commit_message=message or f"srn-port {__version__}: upload "
                                                           f"{folder.name}")
    except network_errors as exc:
        raise SrnPortError(f"Cannot upload '{folder}' to hf://{repo_id}: "
                           f"{' '.join(str(exc).split())[:300].rstrip('.')}. Check the network, that "
                           f"HF_HUB_OFFLINE is not set, and your token (`hf auth login`), "
                           f"then run the command again.") from None
    return str(getattr(info, "commit_url", info))


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_hashes(prefix) -> Dict[str, str]:
    """SHA-256 of the files of a TF checkpoint (its ``.index`` and data shards), by name."""
    prefix = Path(prefix)
    files = [prefix.with_name(prefix.name + ".index")]
    files += sorted(prefix.parent.glob(prefix.name + ".data-*-of-*"))
    return {p.name: sha256_file(p) for p in files if p.is_file()}


def hub_config(meta: Mapping[str, Any], source_sha256: Optional[Mapping[str, str]] = None
               ) -> Dict[str, Any]:
    """The config.json of a model with weights metadata ``meta``."""
    config = {"library_name": LIBRARY_NAME, "model_type": "srn-deblur",
              "variant": meta["variant"], "width": int(meta["width"]),
              "srn_port_version": meta.get("srn_port_version") or __version__,
              "weights": WEIGHTS_NAME, "weights_format": FORMAT,
              "weights_format_version": FORMAT_VERSION,
              "source": meta.get("source"), "source_sha256": dict(source_sha256 or {}),
              "step": meta.get("step"), "ema": bool(meta.get("ema", False))}
    return config


def model_card(config: Mapping[str, Any], parity: str, converted_by: str) -> str:
    """The README.md of a Hub folder. ``parity``: markdown saying what ``srn-port diff``
    found (or why there is no result); ``converted_by``: how the folder was made."""
    variant, width = config["variant"], config["width"]
    kind = {"color": "RGB images", "gray": "grayscale images, one channel",
            "lstm": "grayscale images, with a ConvLSTM between the pyramid levels"}[variant]
    hashes = config.get("source_sha256") or {}
    hash_lines = "".join(f"  - `{name}`: `{digest}`\n" for name, digest in hashes.items())
    hash_lines = hash_lines or "  - (not recorded)\n"
    ema = " (EMA shadow weights)" if config.get("ema") else ""
    step = config.get("step")
    return f"""---
license: mit
library_name: {LIBRARY_NAME}
pipeline_tag: image-to-image
tags:
- image-deblurring
- srn-deblur
- pytorch
- safetensors
---

# SRN-Deblur ({variant}, width {width}) for srn-port

SRN-Deblur is the scale-recurrent network for single-image deblurring of Tao, Gao, Shen,
Wang and Jia, "Scale-recurrent Network for Deep Image Deblurring", CVPR 2018
([paper]({PAPER}), [original code]({ORIGINAL_REPO})). It deblurs an image coarse to fine at
three scales (1/4, 1/2, full size), one encoder-decoder shared by the scales. This is the
**{variant}** variant ({kind}), first-stage width {width}, in PyTorch, as ported by srn-port
{config.get("srn_port_version")}.

## Licence

The original SRN-Deblur code and its released weights are under the MIT licence
(jiangsutx/SRN-Deblur, Copyright (c) 2018 Xin Tao). These weights are those of the source
checkpoint below, converted: the same licence applies.

## How it was converted

{converted_by}

- source checkpoint: `{config.get("source")}`
- step: {step if step is not None else "unknown"}{ema}
- SHA-256 of the checkpoint files:
{hash_lines}
The conversion maps every TensorFlow variable by name to the PyTorch parameter, with no
training and no rounding: the tensors are the checkpoint's, permuted to PyTorch's layout.
`model.safetensors` holds them (safetensors: no code runs when it is opened).

## Parity with the TensorFlow original

{parity}

## Usage

```python
from srn_port import SRN

model = SRN.from_pretrained("path/or/org-name")   # eval mode, checked against config.json
```

```
pip install 'srn-port[hub]'
srn-port deblur hf://ORG/NAME blurry.png -o out/
srn-port diff hf://ORG/NAME
```

or with torch.hub, from a checkout of srn-port:
`torch.hub.load("path/to/srn-port", "srn", source="local", weights="hf://ORG/NAME")`.
"""


def write_hub_folder(out, arrays: Mapping[str, Any], metadata: Mapping[str, Any],
                     config: Mapping[str, Any], card: str, force: bool = False) -> Path:
    """Write a Hub folder ``out`` (model.safetensors, config.json, README.md) atomically: it
    is built in a hidden temporary folder beside ``out`` and renamed into place, so ``out``
    is either absent (or the old one) or complete. An existing ``out`` is refused unless
    ``force``; with ``force`` the old folder is moved aside, replaced, then deleted."""
    from .weightfile import save_safetensors

    out = Path(out)
    _clean_stale(out)
    check_hub_output(out, force)
    tmp = old = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp",
                                    dir=out.parent))
        save_safetensors(arrays, metadata, tmp / WEIGHTS_NAME)
        for name, text in ((CONFIG_NAME, json.dumps(dict(config), indent=2) + "\n"),
                           (CARD_NAME, card)):
            with open(tmp / name, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        _fsync_folder(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".old",
                                        dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        _fsync_folder(out.parent)
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / out.name).exists() and not out.exists():
            os.replace(old / out.name, out)  # put the old folder back
        if isinstance(exc, FileWriteError) and tmp is not None:  # the name the user knows
            raise FileWriteError(str(exc).replace(str(tmp), str(out))) from None
        if isinstance(exc, OSError):
            raise write_failure(out, exc, kept=(
                f"Nothing was written: '{out}' is {'as it was' if out.exists() else 'absent'}"
            )) from None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


def _clean_stale(out: Path) -> None:
    """Remove what an earlier write of ``out`` left when its process was killed (its
    process id is in the names): its temporary folder, and the old folder it had moved
    aside, which is put back first when ``out`` is missing (killed between the renames)."""
    if not out.parent.is_dir():
        return
    for path in sorted(out.parent.glob(f".{glob.escape(out.name)}.*")):
        middle = path.name[len(out.name) + 2:]
        pid, _, rest = middle.partition(".")
        if not (pid.isdigit() and rest.endswith((".tmp", ".old")) and path.is_dir()):
            continue
        if int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        if rest.endswith(".old") and (path / out.name).is_dir() and not out.exists():
            os.replace(path / out.name, out)
        shutil.rmtree(path, ignore_errors=True)


def check_hub_output(out, force: bool) -> None:
    """Refuse an output folder that exists (without ``force``), is a file, or whose parent
    is missing; checked before any (slow) work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SrnPortError(f"Output '{out}' is a file; --hub writes a folder (config.json, "
                           f"model.safetensors, README.md). Give a folder name.")
    if out.exists() and not force:
        raise SrnPortError(f"Output folder '{out}' already exists; pass --force to replace it, "
                           f"or choose another name.")
    if not out.parent.is_dir():
        raise SrnPortError(f"The folder '{out.parent}' of the output '{out}' does not exist; "
                           f"create it first.")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
