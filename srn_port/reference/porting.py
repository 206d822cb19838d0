"""The TF side of a port (the ``tf`` extra): run a user's TF1 / tf-slim graph builder and
fetch its activations as plain NHWC arrays for :func:`srn_port.port.compare`.

A *builder* is a function ``builder(images) -> net | (net, end_points) | end_points``
that builds the network on a float32 NHWC ``images`` tensor under ``tf.compat.v1`` graph
mode, as tf-slim's nets do (``resnet_v1_50(images, ...)``). :func:`run_tf` builds it once
in a fresh graph and either restores a checkpoint or, for tests and demonstrations,
initialises it at random (with random batch-norm statistics and biases, so that a wrong
mapping of any of them shows) and saves it with a ``tf.train.Saver``. TensorFlow is
imported only when :func:`run_tf` runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from ..core.errors import SrnPortError
from .graph import import_tf

#: Variables a fresh slim graph initialises to constants, randomised by ``run_tf(save_to=)``
#: (leaf name -> (low, high) of a uniform draw).
RANDOM_CONSTANTS = {"biases": (-0.2, 0.2), "beta": (-0.2, 0.2), "gamma": (0.5, 1.5),
                    "moving_mean": (-0.2, 0.2), "moving_variance": (0.5, 2.0)}


@dataclass
class TFRun:
    activations: Dict[str, np.ndarray]  # end_point key or tensor name -> NHWC array
    end_points: Sequence[str]  # the end_points' keys, in the order the builder listed them
    checkpoint: Optional[str]  # the checkpoint restored or saved
    variables: Sequence[str]  # the graph's global variables


def _legacy_layers() -> None:
    """slim.batch_norm builds ``tf.compat.v1.layers.BatchNormalization``, which TF 2.16+
    loads from ``tf_keras.legacy_tf_layers``; tf-keras 2.21 keeps that package under
    ``tf_keras.src.legacy_tf_layers`` only (ModuleNotFoundError otherwise). Alias it."""
    import importlib
    import sys

    try:
        importlib.import_module("tf_keras.legacy_tf_layers.normalization")
        return
    except ModuleNotFoundError:
        pass
    try:
        legacy = importlib.import_module("tf_keras.src.legacy_tf_layers")
        norm = importlib.import_module("tf_keras.src.legacy_tf_layers.normalization")
    except ModuleNotFoundError:
        return  # nets without batch norm still build; slim reports the rest itself
    sys.modules.setdefault("tf_keras.legacy_tf_layers", legacy)
    sys.modules.setdefault("tf_keras.legacy_tf_layers.normalization", norm)


def run_tf(builder: Callable, images: np.ndarray, *, checkpoint: Optional[str] = None,
           save_to: Optional[str] = None, fetch: Sequence[str] = (), seed: int = 0,
           global_step: bool = True) -> TFRun:
    """Build ``builder`` on ``images`` (NHWC float32) and fetch every end_point and each
    tensor name in ``fetch`` (``'scope/op:0'``).

    ``checkpoint``: restore it (every global variable must be in it, as TF's Saver
    demands). Otherwise the graph is initialised at random (seeded), the constants of
    :data:`RANDOM_CONSTANTS` replaced by random values, a ``global_step`` added (unless
    ``global_step=False``) and, with ``save_to``, saved there as a V2 checkpoint."""
    tf, _ = import_tf()
    _legacy_layers()
    if checkpoint is None and save_to is None:
        raise ValueError("run_tf needs a checkpoint to restore or a prefix to save_to")
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(seed)
        x = tf.compat.v1.placeholder(tf.float32, images.shape, name="images")
        built = builder(x)
        end_points: Dict[str, object] = {}
        if isinstance(built, tuple) and len(built) == 2 and isinstance(built[1], dict):
            end_points = dict(built[1])
        elif isinstance(built, dict):
            end_points = dict(built)
        elif built is not None:
            end_points = {"output": built}
        end_points = {k: v for k, v in end_points.items() if isinstance(v, tf.Tensor)}
        tensors = dict(end_points)
        for name in fetch:
            if name in tensors:
                continue
            try:
                tensors[name] = graph.get_tensor_by_name(name if ":" in name else name + ":0")
            except (KeyError, ValueError) as exc:
                raise SrnPortError(f"The TF graph has no tensor '{name}' ({exc}); name a tensor "
                                   f"as 'scope/op:0' or an end_point key.") from None
        if checkpoint is None and global_step:
            tf.compat.v1.train.get_or_create_global_step()
        variables = tf.compat.v1.global_variables()
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            if checkpoint is not None:
                try:
                    saver.restore(sess, checkpoint)
                except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError,
                        ValueError) as exc:
                    first = str(exc).strip().splitlines()[0][:400]
                    raise SrnPortError(
                        f"TF could not restore checkpoint '{checkpoint}' into the builder's "
                        f"graph: {first}. The builder must build the network the checkpoint "
                        f"was saved from (same scopes, shapes, arg_scope).") from None
            else:
                sess.run(tf.compat.v1.global_variables_initializer())
                rng = np.random.default_rng(seed)
                for v in variables:
                    leaf = v.op.name.rpartition("/")[2]
                    if leaf in RANDOM_CONSTANTS:
                        low, high = RANDOM_CONSTANTS[leaf]
                        v.load(rng.uniform(low, high, v.shape.as_list()).astype(np.float32),
                               sess)
                checkpoint = saver.save(sess, save_to, write_meta_graph=False)
            values = sess.run(tensors, {x: images})
    return TFRun({k: np.asarray(v) for k, v in values.items()}, list(end_points), checkpoint,
                 [v.op.name for v in variables])
