"""tools/train_tf.py's starting weights (``--init identity``) leave every layer alive: the
first trained example started dec1_4 at 0 before a ReLU, and 56 of its 84 variables never
trained (issue 14). Here the tool itself runs 3 steps (Adam moves each weight by at most
about the learning rate a step, so the start is still visible) and the checkpoint is
checked the way srn-port inspect and tests/test_trained_alive.py check the committed
example. (At step 0 itself every ResnetBlock's conv1 has zero gradient, its conv2 starting
at 0; one step later that is no longer so: only a ReLU closed for good stays dead.)"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from srn_port.api.weights import load_model
from srn_port.core.convert import convert_checkpoint
from srn_port.core.liveness import zero_relu_layers
from srn_port.data import synthetic
from srn_port.nn.liveness import dead_variables

pytestmark = [pytest.mark.tf, pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
STEPS, LR = 3, 1e-4
MOVED = 1.2 * STEPS * LR  # an Adam step moves a weight by about lr at most


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cmd = [sys.executable, str(REPO / "tools" / "train_tf.py"), "train", "--out", str(out),
           "--width", "4", "--crop", "32", "--batch", "1", "--steps", str(STEPS), "--lr", str(LR),
           "--warmup", "0", "--no-photos", "--val-n", "0", "--save-every", str(STEPS),
           "--threads", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def test_identity_start_copies_the_input_and_keeps_the_coarse_path_alive(start):
    conv = convert_checkpoint(start)
    w, b = conv.arrays["dec1_4.weight"], conv.arrays["dec1_4.bias"]  # (in, out, k, k)
    c = conv.config.channels
    assert np.abs(w[:, :c]).max() <= MOVED  # started off the copied input channels...
    assert np.abs(w[:, c:]).max() > 1e-2  # ...at full Xavier scale elsewhere
    assert np.abs(b[:c] - 1e-3).max() <= MOVED  # the copy channels' ReLU started open
    assert zero_relu_layers(conv.arrays) == []
    model = load_model(start)
    blur, sharp = synthetic.held_out_set(2, 32, seed=5, photos=False)[0]
    x = torch.from_numpy(np.stack([blur]).transpose(0, 3, 1, 2).astype(np.float32) / 255)
    y = torch.from_numpy(np.stack([sharp]).transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert dead_variables(model, x, y) == []
    with torch.no_grad():  # the start is close to copying the input (the blurry image)
        out = model(x)[-1]
    assert float((out - x).abs().max()) < 0.1
