"""The original training computation in TF (``tf.compat.v1``), for comparisons only: the
multi-scale loss on the reference graph, its gradients for every variable, and TF's own
``AdamOptimizer`` applied to given gradients (docs/original-srn.md §4)."""

from __future__ import annotations

import time
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..core.network import SRNConfig
from .graph import _session, build_generator, import_tf


def _loss_graph(tf, config: SRNConfig, blur_shape, sharp_shape):
    """Placeholders for a batch and the original loss on the reference graph: the sum over
    levels of the MSE against the sharp batch resized with resize_images(method=0)."""
    blur = tf.compat.v1.placeholder(tf.float32, list(blur_shape))
    sharp = tf.compat.v1.placeholder(tf.float32, list(sharp_shape))
    levels = []
    for out in build_generator(blur, config):
        hi, wi = out.get_shape().as_list()[1:3]
        gt = tf.compat.v1.image.resize_images(sharp, [hi, wi], method=0)
        levels.append(tf.reduce_mean((gt - out) ** 2))
    return blur, sharp, tf.add_n(levels), levels


def tf_loss_and_gradients(checkpoint, config: SRNConfig, blur_nhwc: np.ndarray,
                          sharp_nhwc: np.ndarray, threads: Optional[int] = None):
    """(loss, level losses, {variable name: gradient}) of the original loss on the graph
    restored from ``checkpoint``, for one batch (NHWC float32, already in the model's
    channels). Gradients are in TF's layouts, keyed by TF variable names."""
    tf, _ = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        blur, sharp, loss, levels = _loss_graph(tf, config, blur_nhwc.shape, sharp_nhwc.shape)
        variables = tf.compat.v1.trainable_variables()
        grads = tf.gradients(loss, variables)
        saver = tf.compat.v1.train.Saver(tf.compat.v1.global_variables(scope="g_net"))
        with _session(tf, graph, threads) as sess:
            saver.restore(sess, str(checkpoint))
            value, level_values, grad_values = sess.run(
                [loss, levels, grads], feed_dict={blur: blur_nhwc, sharp: sharp_nhwc})
    names = [v.op.name for v in variables]
    return float(value), [float(x) for x in level_values], dict(zip(names, grad_values))


def tf_adam_steps(initial: Mapping[str, np.ndarray], gradients: Sequence[Mapping[str, np.ndarray]],
                  learning_rates: Sequence[float], beta1: float = 0.9, beta2: float = 0.999,
                  epsilon: float = 1e-8,
                  state: Optional[Mapping[str, object]] = None) -> Dict[str, object]:
    """Run ``tf.compat.v1.train.AdamOptimizer`` on variables starting at ``initial``, one
    ``apply_gradients`` per entry of ``gradients`` (fed, not computed), with that step's
    learning rate. ``state`` (``<name>/Adam``, ``<name>/Adam_1``, ``beta1_power``,
    ``beta2_power``) continues an earlier run's optimizer. Returns the final variables,
    slots and beta powers under the same names."""
    tf, _ = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        variables = {n: tf.compat.v1.get_variable(n.replace("/", "__"), initializer=v)
                     for n, v in initial.items()}
        feeds = {n: tf.compat.v1.placeholder(tf.float32, v.shape) for n, v in initial.items()}
        lr = tf.compat.v1.placeholder(tf.float32, [])
        opt = tf.compat.v1.train.AdamOptimizer(lr, beta1=beta1, beta2=beta2, epsilon=epsilon)
        train = opt.apply_gradients([(feeds[n], variables[n]) for n in initial])
        with _session(tf, graph, 1) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            if state is not None:
                for n, v in variables.items():
                    opt.get_slot(v, "m").load(state[f"{n}/Adam"], sess)
                    opt.get_slot(v, "v").load(state[f"{n}/Adam_1"], sess)
                b1p, b2p = opt._get_beta_accumulators()
                b1p.load(state["beta1_power"], sess)
                b2p.load(state["beta2_power"], sess)
            for grads, rate in zip(gradients, learning_rates):
                feed = {feeds[n]: grads[n] for n in initial}
                feed[lr] = rate
                sess.run(train, feed_dict=feed)
            out: Dict[str, object] = {n: sess.run(v) for n, v in variables.items()}
            for n, v in variables.items():
                out[f"{n}/Adam"] = sess.run(opt.get_slot(v, "m"))
                out[f"{n}/Adam_1"] = sess.run(opt.get_slot(v, "v"))
            b1p, b2p = opt._get_beta_accumulators()
            out["beta1_power"], out["beta2_power"] = sess.run([b1p, b2p])
    return out


def tf_polynomial_decay_values(steps: List[int], learning_rate: float, decay_steps: int,
                               end_learning_rate: float = 0.0, power: float = 0.3) -> List[float]:
    """TF's ``polynomial_decay`` evaluated at each of ``steps``."""
    tf, _ = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        step = tf.compat.v1.placeholder(tf.int64, [])
        lr = tf.compat.v1.train.polynomial_decay(learning_rate, step, decay_steps,
                                                 end_learning_rate=end_learning_rate, power=power)
        with _session(tf, graph, 1) as sess:
            return [float(sess.run(lr, feed_dict={step: s})) for s in steps]


def tf_train_steps(checkpoint, config: SRNConfig, batches: Sequence, total_steps: int,
                   learning_rate: float = 1e-4, start_step: int = 0, power: float = 0.3,
                   threads: Optional[int] = None,
                   times: Optional[List[float]] = None) -> List[float]:
    """The original's training op (AdamOptimizer on the polynomially decayed learning rate,
    no clipping), restored from ``checkpoint`` with its Adam state when it has one, run on
    ``batches`` ((blur, sharp) NHWC float32 pairs) from ``start_step``; returns each step's
    loss (computed before that step's update, as ``sess.run([train_op, loss])`` does).
    ``times``, if given, receives each step's wall time (for benchmarks)."""
    tf, _ = import_tf()
    graph = tf.Graph()
    blur0, sharp0 = batches[0]
    with graph.as_default():
        step = tf.Variable(start_step, dtype=tf.int32, trainable=False)  # 'Variable'
        blur, sharp, loss, _ = _loss_graph(tf, config, blur0.shape, sharp0.shape)
        lr = tf.compat.v1.train.polynomial_decay(learning_rate, step, total_steps,
                                                 end_learning_rate=0.0, power=power)
        opt = tf.compat.v1.train.AdamOptimizer(lr)
        train = opt.minimize(loss, global_step=step,
                             var_list=tf.compat.v1.trainable_variables())
        from ..core.checkpoint import CheckpointReader

        with CheckpointReader(checkpoint) as reader:
            stored = set(reader.keys())
            checkpoint = reader.prefix
        restore = [v for v in tf.compat.v1.global_variables() if v.op.name in stored]
        saver = tf.compat.v1.train.Saver(restore)
        losses = []
        with _session(tf, graph, threads) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.restore(sess, str(checkpoint))
            step.load(start_step, sess)
            for b, s in batches:
                started = time.perf_counter()
                _, value = sess.run([train, loss], feed_dict={blur: b, sharp: s})
                if times is not None:
                    times.append(time.perf_counter() - started)
                losses.append(float(value))
    return losses
