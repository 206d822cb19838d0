"""The original SRN-Deblur graph, rebuilt under ``tf.compat.v1`` + ``tf_slim``.

This is the reference srn-port is measured against. It is written from the facts in
docs/original-srn.md §1-2 (same scopes, layer order, resize, ConvLSTM and
variable names as the released checkpoints), and it can

* write a checkpoint like the released ones (:func:`make_checkpoint`): any variant and
  width, seeded, with Adam slots, ``beta1_power``/``beta2_power`` and the global step
  ``Variable``, with non-zero biases and ConvLSTM weights large enough to matter;
* run the graph on a checkpoint and return the level outputs and every activation under
  the names :func:`srn_port.core.network.level_graph` uses (:func:`run_reference`).

TensorFlow is imported lazily: the rest of srn-port works without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..core.network import N_LEVELS, SRNConfig, level_size
from ..core.errors import SrnPortError

#: Name the original's Saver gives its checkpoints: ``<dir>/deblur.model-<step>``.
MODEL_NAME = "deblur.model"
#: Step of the released checkpoints (test() restores it explicitly).
RELEASED_STEP = 523000


def import_tf():
    """Import TensorFlow and tf_slim, or explain how to get them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tf_slim as slim
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SrnPortError(
            f"This needs TensorFlow and tf-slim, which are not installed ({exc}). Install the "
            f"extra: pip install 'srn-port[tf]'.") from exc
    tf.get_logger().setLevel("ERROR")
    return tf, slim


def _resize_legacy(tf, x, size):
    # TF 1.4's tf.image.resize_images(method=0): bilinear, align_corners=False, legacy
    # (non half-pixel) sampling; skipped when the static size already matches.
    out = tf.compat.v1.image.resize_images(x, size, method=0)
    # ResizeBilinear's output is float32 whatever its input (its kernel interpolates in
    # float32): a float64 graph gets its dtype back, as srn-port's model does. A float32
    # graph has nothing to cast (no op is added).
    return out if out.dtype == x.dtype else tf.cast(out, x.dtype)


def build_generator(inputs, config: SRNConfig, record: Optional[dict] = None) -> list:
    """Build ``g_net`` on NHWC ``inputs`` (static shape) and return the 3 level outputs.

    The variables take the dtype of ``inputs`` (float32 as in the original; float64 for the
    float64 training comparison, where each bilinear resize, float32 in TF's kernel, is cast
    back to float64).

    ``record``, if given, receives ``{(level, name): tensor}`` for every node named as in
    :func:`srn_port.core.network.level_graph`.
    """
    tf, slim = import_tf()
    n, h, w, _ = inputs.get_shape().as_list()
    width, chns = config.width, config.channels
    rec = record if record is not None else {}

    def resblock(x, dim, scope):
        with tf.compat.v1.variable_scope(scope):
            net = slim.conv2d(x, dim, [5, 5], scope="conv1")
            net = slim.conv2d(net, dim, [5, 5], activation_fn=None, scope="conv2")
            return net + x

    def lstm_cell(x, state):
        feats = config.lstm_features
        with tf.compat.v1.variable_scope("convLSTM"):
            c, hid = tf.split(state, 2, 3)
            gates = slim.conv2d(tf.concat([x, hid], 3), 4 * feats, [3, 3], activation_fn=None,
                                scope="LSTM_conv")
            i, j, f, o = tf.split(gates, 4, 3)
            new_c = c * tf.nn.sigmoid(f + 1.0) + tf.nn.sigmoid(i) * tf.nn.tanh(j)
            new_h = tf.nn.tanh(new_c) * tf.nn.sigmoid(o)
            return new_h, tf.concat([new_c, new_h], 3)

    if config.use_lstm:
        rnn_state = tf.zeros([n, h // 4, w // 4, 2 * config.lstm_features],
                             dtype=inputs.dtype.base_dtype)
    outputs = []
    with tf.compat.v1.variable_scope("g_net"):
        with slim.arg_scope([slim.conv2d, slim.conv2d_transpose], activation_fn=tf.nn.relu,
                            padding="SAME", normalizer_fn=None):
            inp_pred = inputs
            for level in range(N_LEVELS):
                hi, wi = level_size(h, w, level)
                t = {}
                t["inp_blur"] = _resize_legacy(tf, inputs, [hi, wi])
                t["inp_pred"] = tf.stop_gradient(_resize_legacy(tf, inp_pred, [hi, wi]))
                t["inp"] = tf.concat([t["inp_blur"], t["inp_pred"]], axis=3, name="inp")
                if config.use_lstm:
                    rnn_state = _resize_legacy(tf, rnn_state, [hi // 4, wi // 4])
                    t["rnn_state"] = rnn_state
                x = slim.conv2d(t["inp"], width, [5, 5], scope="enc1_1")
                t["enc1_1"] = x
                for stage, dim in ((1, width), (2, 2 * width), (3, 4 * width)):
                    if stage > 1:
                        x = slim.conv2d(x, dim, [5, 5], stride=2, scope=f"enc{stage}_1")
                        t[f"enc{stage}_1"] = x
                    for k in (2, 3, 4):
                        x = resblock(x, dim, f"enc{stage}_{k}")
                        t[f"enc{stage}_{k}"] = x
                if config.use_lstm:
                    x, rnn_state = lstm_cell(x, rnn_state)
                    t["convLSTM_state"], t["convLSTM"] = rnn_state, x
                for name in ("dec3_3", "dec3_2", "dec3_1"):
                    x = resblock(x, 4 * width, name)
                    t[name] = x
                for stage, dim, cat in ((2, 2 * width, "cat2"), (1, width, "cat1")):
                    x = slim.conv2d_transpose(x, dim, [4, 4], stride=2, scope=f"dec{stage}_4")
                    t[f"dec{stage}_4"] = x
                    x = x + t[f"enc{stage}_4"]
                    t[cat] = x
                    for k in (3, 2, 1):
                        x = resblock(x, dim, f"dec{stage}_{k}")
                        t[f"dec{stage}_{k}"] = x
                inp_pred = slim.conv2d(x, chns, [5, 5], activation_fn=None, scope="dec1_0")
                t["dec1_0"] = inp_pred
                outputs.append(inp_pred)
                for name, tensor in t.items():
                    rec[(level, name)] = tensor
                if level == 0:
                    tf.compat.v1.get_variable_scope().reuse_variables()
    return outputs


def _session(tf, graph, threads: Optional[int]):
    cfg = tf.compat.v1.ConfigProto()
    if threads:
        cfg.intra_op_parallelism_threads = threads
        cfg.inter_op_parallelism_threads = threads
    return tf.compat.v1.Session(graph=graph, config=cfg)


def random_weights(shapes: Dict[str, Tuple[int, ...]], seed: int) -> Dict[str, np.ndarray]:
    """Seeded weights that exercise a conversion: Glorot-uniform kernels (as the original's
    xavier initializer; also for the ConvLSTM, whose own 1e-3 init would make its gates
    near-constant and hide a gate-order bug) and non-zero biases (zero biases would hide a
    bias-mapping bug). Drawn with NumPy so they do not depend on TF's RNG."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith("/weights"):
            kh, kw, a, b = shape
            limit = np.sqrt(6.0 / (kh * kw * (a + b)))
            out[name] = rng.uniform(-limit, limit, shape).astype(np.float32)
        else:
            out[name] = rng.uniform(-0.1, 0.1, shape).astype(np.float32)
    return out


def make_checkpoint(out_dir, config: SRNConfig, seed: int = 0, step: int = RELEASED_STEP,
                    train_size: Tuple[int, int] = (32, 32), batch: int = 1,
                    weights: Optional[Dict[str, np.ndarray]] = None,
                    threads: Optional[int] = None) -> Path:
    """Write a checkpoint laid out like the released ones; returns its prefix.

    The model variables get :func:`random_weights` (or ``weights``), then one Adam step is
    taken on a seeded random batch, so the file holds what a real training checkpoint holds:
    weights, ``/Adam`` and ``/Adam_1`` slots, ``beta1_power``/``beta2_power`` and the int32
    global step ``Variable`` (set to ``step``). Saved by ``tf.compat.v1.train.Saver`` as
    ``<out_dir>/deblur.model-<step>``, with the ``checkpoint`` file beside it.
    """
    tf, _ = import_tf()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    c = config.channels
    graph = tf.Graph()
    with graph.as_default():
        global_step = tf.Variable(initial_value=0, dtype=tf.int32, trainable=False)  # 'Variable'
        x = tf.constant(rng.random((batch, *train_size, c), dtype=np.float32))
        gt = tf.constant(rng.random((batch, *train_size, c), dtype=np.float32))
        outputs = build_generator(x, config)
        loss = 0.0
        for out in outputs:
            hi, wi = out.get_shape().as_list()[1:3]
            loss += tf.reduce_mean((_resize_legacy(tf, gt, [hi, wi]) - out) ** 2)
        train_op = tf.compat.v1.train.AdamOptimizer(1e-4).minimize(loss, global_step)
        model_vars = {v.op.name: v for v in tf.compat.v1.trainable_variables()}
        values = weights if weights is not None else random_weights(
            {k: tuple(v.shape.as_list()) for k, v in model_vars.items()}, seed)
        missing = sorted(set(model_vars) - set(values))
        if missing:
            raise ValueError(f"weights lack {missing[:5]}...")
        # One run assigns every weight (per-variable Variable.load is one run each).
        feeds = {name: tf.compat.v1.placeholder(var.dtype.base_dtype, var.shape)
                 for name, var in model_vars.items()}
        assign = tf.group(*[var.assign(feeds[name]) for name, var in model_vars.items()])
        saver = tf.compat.v1.train.Saver(max_to_keep=None)
        with _session(tf, graph, threads) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(assign, feed_dict={feeds[n]: values[n] for n in model_vars})
            sess.run(train_op)
            global_step.load(step, sess)
            prefix = saver.save(sess, str(out_dir / MODEL_NAME), global_step=step)
    return Path(prefix)


@dataclass
class ReferenceRun:
    """Outputs (coarse to fine) and activations of the TF graph, NHWC float32 arrays."""

    outputs: List[np.ndarray]
    activations: Dict[Tuple[int, str], np.ndarray] = field(default_factory=dict)


class ReferenceModel:
    """The TF graph restored from a checkpoint, for one input shape; reusable across runs."""

    def __init__(self, checkpoint, config: SRNConfig, input_shape: Tuple[int, int, int, int],
                 threads: Optional[int] = None, record: bool = True):
        tf, _ = import_tf()
        self.tf = tf
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.inputs = tf.compat.v1.placeholder(tf.float32, list(input_shape), name="inputs")
            self.record: dict = {}
            self.outputs = build_generator(self.inputs, config, self.record if record else None)
            saver = tf.compat.v1.train.Saver(tf.compat.v1.global_variables(scope="g_net"))
            self.sess = _session(tf, self.graph, threads)
            saver.restore(self.sess, str(checkpoint))

    def run(self, x_nhwc: np.ndarray, activations: bool = True) -> ReferenceRun:
        fetch = {"outputs": self.outputs}
        if activations:
            fetch["acts"] = self.record
        res = self.sess.run(fetch, feed_dict={self.inputs: x_nhwc})
        return ReferenceRun(outputs=list(res["outputs"]), activations=res.get("acts", {}))

    def close(self):
        self.sess.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_reference(checkpoint, x_nhwc: np.ndarray, config: SRNConfig,
                  activations: bool = True, threads: Optional[int] = None) -> ReferenceRun:
    """Run the original graph from ``checkpoint`` (a prefix) on ``x_nhwc`` once."""
    x_nhwc = np.asarray(x_nhwc, dtype=np.float32)
    with ReferenceModel(checkpoint, config, x_nhwc.shape, threads, record=activations) as ref:
        return ref.run(x_nhwc, activations)
