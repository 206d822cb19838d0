"""Test-only: SRN-shaped TF checkpoints written without TensorFlow (tests/_bundle_writer),
laid out like the released ones (weights, Adam slots, beta powers, global step)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from srn_port.core.network import SRNConfig
from srn_port.core.convert import expected_shapes
from srn_port.core.naming import torch_to_tf_name
from srn_port.reference.graph import random_weights

from _bundle_writer import write_bundle


def tf_shapes(config: SRNConfig) -> dict:
    """TF variable name -> TF shape for an SRN of ``config``."""
    out = {}
    for name, shape in expected_shapes(config).items():
        tf_shape = tuple(shape[i] for i in (2, 3, 1, 0)) if len(shape) == 4 else shape
        out[torch_to_tf_name(name)] = tf_shape
    return out


def srn_tensors(config: SRNConfig, seed: int = 0, slots=("Adam", "Adam_1")) -> dict:
    weights = random_weights(tf_shapes(config), seed)
    rng = np.random.default_rng(seed + 7)
    tensors = dict(weights)
    for name, value in weights.items():
        for slot in slots:
            moment = rng.standard_normal(value.shape).astype(np.float32)
            # Adam's second moment (the second slot) is never negative
            tensors[f"{name}/{slot}"] = np.abs(moment) if slot.endswith("_1") else moment
    tensors["beta1_power"] = np.float32(0.81)
    tensors["beta2_power"] = np.float32(0.998001)
    tensors["Variable"] = np.int32(523000)
    return tensors


def write_srn_checkpoint(folder, config: SRNConfig, seed: int = 0, tensors=None,
                         step: int = 523000) -> Path:
    """Write ``folder/deblur.model-<step>`` and the ``checkpoint`` file; return the prefix."""
    folder = Path(folder)
    prefix = write_bundle(folder / f"deblur.model-{step}",
                          tensors if tensors is not None else srn_tensors(config, seed))
    (folder / "checkpoint").write_text(
        f'model_checkpoint_path: "deblur.model-{step}"\n'
        f'all_model_checkpoint_paths: "deblur.model-{step}"\n')
    return prefix
