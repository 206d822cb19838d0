"""Shared fixtures. TF-dependent tests carry ``@pytest.mark.tf`` and are skipped when
TensorFlow/tf-slim are not installed (CI installs the [tf] extra, so there they run)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HAVE_TF = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tf_slim"))
REPO = Path(__file__).resolve().parent.parent
#: The four real blurry photos of the original repository (examples/photos/README.md).
PHOTOS = REPO / "examples" / "photos"


def pytest_collection_modifyitems(config, items):
    cuda_tests = [item for item in items if item.get_closest_marker("cuda") is not None]
    if cuda_tests:
        import torch

        if not torch.cuda.is_available():
            skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() "
                                                "is False); tools/gpu_check.sh runs these")
            for item in cuda_tests:
                item.add_marker(skip_cuda)
    if HAVE_TF:
        return
    skip = pytest.mark.skip(reason="needs TensorFlow and tf-slim: pip install '.[tf]'")
    for item in items:
        if "tf" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tf_checkpoints(tmp_path_factory):
    """Factory: TF-made checkpoint prefix for (variant, width, seed), made once per session."""
    made = {}

    def get(variant: str, width: int, seed: int = 0):
        key = (variant, width, seed)
        if key not in made:
            from srn_port.core.network import SRNConfig
            from srn_port.reference.graph import make_checkpoint

            out = tmp_path_factory.mktemp(f"ckpt_{variant}_{width}_{seed}")
            made[key] = make_checkpoint(out, SRNConfig(variant, width), seed=seed)
        return made[key]

    return get


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's PyTorch work on one thread. Small test tensors gain nothing from two,
    and on a shared 2-core machine OpenMP's barrier can spin for a long time per op
    (measured 50 ms instead of 1 ms per width-4 conv)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=["pyav", "opencv"])
def backend(request, monkeypatch):
    """Each video backend in turn (SRN_PORT_VIDEO_BACKEND); PyAV's runs are skipped without
    it (the video extra)."""
    if request.param == "pyav":
        pytest.importorskip("av")
    monkeypatch.setenv("SRN_PORT_VIDEO_BACKEND", request.param)
    return request.param
