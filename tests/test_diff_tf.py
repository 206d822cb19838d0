"""`srn-port diff --tf`: the live TF graph as the reference, at the released width (32)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from srn_port.cli import cli
from srn_port.core.network import SRNConfig
from srn_port.core.network import level_graph
from srn_port.parity import TFReference, random_input
from srn_port.reference.graph import run_reference

pytestmark = [pytest.mark.tf, pytest.mark.usefixtures("one_torch_thread")]

WIDTH = 32  # released
#: One checkpoint for all tests (making one takes ~15 s): the lstm variant, whose level-by-level
#: reference must also hand on the ConvLSTM state.
VARIANT = "lstm"


def diff(*args):
    result = CliRunner().invoke(cli, ["diff", *map(str, args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_live_tf_passes_at_released_width(tf_checkpoints):
    variant = VARIANT
    ckpt = tf_checkpoints(variant, WIDTH)
    result = diff(ckpt, "--tf", ckpt, "--size", "32x48", "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["passed"] and data["reference"].startswith("live TensorFlow")
    assert data["weight_differences"] == []
    assert len(data["rows"]) == 3 * len(level_graph(SRNConfig(variant, WIDTH)))


def test_live_tf_finds_naive_padding(tf_checkpoints):
    ckpt = tf_checkpoints(VARIANT, WIDTH)
    result = diff(ckpt, "--tf", ckpt, "--size", "32x48", "--emulate", "torch-padding",
                  "--isolate")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "FIRST DIVERGENCE: enc2_1 at level 0" in text
    assert "diagnosis (stride2-padding)" in text


def test_live_tf_on_an_image_file(tf_checkpoints, tmp_path):
    ckpt = tf_checkpoints(VARIANT, WIDTH)
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (40, 56, 3), np.uint8))
    result = diff(ckpt, "--tf", ckpt, "--input", image, "--level", "2")
    assert result.exit_code == 0, result.output
    assert "40x56, edge-padded to 48x64" in result.output


def test_level_by_level_reference_equals_one_full_run(tf_checkpoints):
    """The memory-bounded TF reference (one level per session.run, feeding the previous
    level's output and ConvLSTM state) gives exactly what a single full run gives."""
    config = SRNConfig(VARIANT, WIDTH)
    ckpt = tf_checkpoints(VARIANT, WIDTH)
    x = random_input(config, (32, 48), seed=3)
    full = run_reference(ckpt, x.permute(0, 2, 3, 1).numpy(), config)
    with TFReference(ckpt, config, x) as ref:
        for level in range(3):
            acts = ref.level(level)
            for name in acts:
                want = torch.from_numpy(full.activations[(level, name)]).permute(0, 3, 1, 2)
                assert torch.equal(acts[name], want), (level, name)
