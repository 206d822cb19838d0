"""The proof: for every variant at the released width (32), checkpoints made by the TF
reference, converted WITHOUT TF, give the TF graph's outputs and activations within the
tolerance table, on a square and a non-square input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srn_port.api.weights import as_state_dict
from srn_port.core.convert import convert_checkpoint
from srn_port.nn.model import SRN, capture_activations
from srn_port.reference.graph import ReferenceModel
from srn_port.core.tolerances import TOLERANCES, node_tolerance_keys, within

pytestmark = [pytest.mark.tf, pytest.mark.slow]

SIZES = [(64, 64), (48, 112)]


@pytest.mark.parametrize("variant", ["color", "gray", "lstm"])
def test_full_width_model_matches_tf(tf_checkpoints, variant):
    prefix = tf_checkpoints(variant, 32)
    conv = convert_checkpoint(prefix)  # the pure-Python reader, no TF involved
    assert conv.config.width == 32 and conv.config.variant == variant
    model = SRN(conv.config).eval()
    model.load_state_dict(as_state_dict(conv.arrays), strict=True)
    fast = SRN(conv.config).eval()  # what load_model gives: NHWC activations
    fast.load_state_dict(as_state_dict(conv.arrays), strict=True)
    fast.to_channels_last()
    batch = 1 if variant == "color" else 3  # gray/lstm run the R, G, B planes as a batch
    for h, w in SIZES:
        x = np.random.default_rng(h * w).random((batch, h, w, conv.config.channels),
                                                dtype=np.float32)
        with ReferenceModel(prefix, conv.config, x.shape) as ref:
            tf_run = ref.run(x)
        for m in (model, fast):
            _compare(m, x, tf_run)


def _compare(model, x, tf_run):
    """Every activation and output of ``model`` on ``x`` against the TF run."""
    with torch.no_grad():
        acts = capture_activations(model, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert len(acts) == len(tf_run.activations)
    failures = []
    for level in range(3):
        keys = node_tolerance_keys(model.graph, level)
        for name, key in keys.items():
            ours = acts[(level, name)].permute(0, 2, 3, 1).numpy()
            theirs = tf_run.activations[(level, name)]
            assert ours.shape == theirs.shape, (level, name)
            err = float(np.abs(ours - theirs).max())
            if not within(err, float(np.abs(theirs).max()), TOLERANCES[key]):
                failures.append((level, name, key, err))
        out = acts[(level, "dec1_0")].permute(0, 2, 3, 1).numpy()
        err = float(np.abs(out - tf_run.outputs[level]).max())
        scale = float(np.abs(tf_run.outputs[level]).max())
        assert scale > 0.1  # a real signal, not a collapsed network
        assert within(err, scale, TOLERANCES["output"]), (level, err, scale)
    assert not failures, failures
