"""The committed goldens can be remade and agree with themselves (needs TF).

1. tools/make_golden.py run on each committed checkpoint, into a temporary folder, gives
   the committed tensors within the tolerance table (TF run to run: measured identical on
   one machine; another CPU's oneDNN kernels may differ by round-off, which the table covers).
2. make_checkpoint with the recorded seed remakes a checkpoint that does the committed one's
   job: the same variables, shapes and dtypes, the same bookkeeping values, and weights that
   reproduce the committed golden activations within the tolerance table.

Why not equal weights: make_checkpoint gives seeded NumPy values one Adam step
(``lr * g / (sqrt(g^2) + eps)``), and the gradient g comes from TF's oneDNN convolutions,
whose summation order depends on the CPU's instruction set (AVX2, AVX-512, AMX). Where
|g| is near eps that ratio turns the gradient's last-bit differences into changes of up to
lr: measured 3.5e-7 against max |w| 0.125 (2.8e-6 relative) on an AVX2 AMD EPYC, against
the checkpoints made on an AVX-512 Xeon. Bit-identical weights hold on one CPU kind only;
what the goldens need, activations within the table, holds on any.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from conftest import REPO
from srn_port.api.weights import as_state_dict
from srn_port.core.checkpoint import read_checkpoint
from srn_port.core.convert import convert_checkpoint
from srn_port.core.network import N_LEVELS, SRNConfig
from srn_port.core.network import level_graph
from srn_port.nn.model import SRN, capture_activations
from srn_port.parity.golden import FROM_CHECKPOINT, GENERATED, GoldenFile
from srn_port.core.tolerances import TOLERANCES, node_tolerance_keys, within

pytestmark = pytest.mark.tf

GOLDEN = REPO / "golden"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("make_golden", REPO / "tools" / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COMMITTED = {**{v: GOLDEN / "ckpt" / v for v in GENERATED},
             **{name: REPO / folder for name, folder in FROM_CHECKPOINT.items()}}


@pytest.mark.parametrize("variant", sorted(COMMITTED))
def test_golden_remade_from_committed_checkpoint_agrees(tool, tmp_path, variant):
    with GoldenFile(GOLDEN / f"{variant}.h5", require_checkpoint=True) as old:
        h, w = old.info.input_shape[2:]
        assert tool.main(["--checkpoint", str(COMMITTED[variant]), "--name", variant,
                          "--out", str(tmp_path), "--size", f"{h}x{w}"]) == 0
        with GoldenFile(tmp_path / f"{variant}.h5", require_checkpoint=True) as new:
            assert new.info.config == old.info.config
            assert new.info.checkpoint_sha256 == old.info.checkpoint_sha256
            assert np.array_equal(new.input().numpy(), old.input().numpy())
            graph = level_graph(old.info.config)
            failures, worst = [], 0.0
            for level in range(N_LEVELS):
                for name, key in node_tolerance_keys(graph, level).items():
                    a, b = new.tensor(level, name).numpy(), old.tensor(level, name).numpy()
                    err, scale = float(np.abs(a - b).max()), float(np.abs(b).max())
                    worst = max(worst, err / scale if scale else err)
                    if not within(err, scale, TOLERANCES[key]):
                        failures.append((level, name, key, err, scale))
    assert not failures, failures
    print(f"{variant}: TF run to run, worst relative difference {worst:.2e}")


@pytest.mark.parametrize("variant", GENERATED)
def test_make_checkpoint_with_the_recorded_seed_remakes_a_checkpoint_of_the_golden(
        tool, tmp_path, variant, one_torch_thread):
    with GoldenFile(GOLDEN / f"{variant}.h5", require_checkpoint=True) as golden:
        attrs = golden.info.attrs
        committed = read_checkpoint(golden.checkpoint_prefix())
        prefix = tool.make_variant_checkpoint(tmp_path, SRNConfig(variant, int(attrs["width"])),
                                              int(attrs["checkpoint_seed"]))
        remade = read_checkpoint(prefix)
        assert sorted(remade) == sorted(committed)
        for name in committed:
            assert remade[name].shape == committed[name].shape
            assert remade[name].dtype == committed[name].dtype
        for name in ("Variable", "beta1_power", "beta2_power"):  # bookkeeping: exact
            assert remade[name] == committed[name]
        # The remade weights, run by srn-port, give the committed TF activations.
        conv = convert_checkpoint(prefix)
        model = SRN(conv.config).eval()
        model.load_state_dict(as_state_dict(conv.arrays), strict=True)
        with torch.no_grad():
            acts = capture_activations(model, golden.input())
        graph = level_graph(golden.info.config)
        failures = []
        for level in range(N_LEVELS):
            for name, key in node_tolerance_keys(graph, level).items():
                ours, ref = acts[(level, name)].numpy(), golden.tensor(level, name).numpy()
                err, scale = float(np.abs(ours - ref).max()), float(np.abs(ref).max())
                if not within(err, scale, TOLERANCES[key]):
                    failures.append((level, name, key, err, scale))
    assert not failures, failures
    same = sum(np.array_equal(remade[n], committed[n]) for n in committed)
    print(f"{variant}: {same} of {len(committed)} tensors bit-identical to the committed ones")
