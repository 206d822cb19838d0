"""The original training computation in TF (``tf.compat.v1``), for comparisons only: the
multi-scale loss on the reference graph, its gradients for every variable, and TF's own
``AdamOptimizer`` applied to given gradients (docs/original-srn.md §4).

Everything runs in float32, as the original, unless ``dtype="float64"`` is given: then the
variables, the batch placeholders and the loss are float64 (a float32 checkpoint is widened
on loading), which removes float32 round-off from a comparison of training trajectories. TF
itself keeps some float32 in such a graph: each bilinear resize (its kernel interpolates in
float32 and returns float32; cast back, see ``graph._resize_legacy``), the learning rate
and the Adam constants (float32 tensors cast to float64 in ``apply_adam``) and the
``beta1_power``/``beta2_power`` accumulators (created float32 whatever the variables)."""

from __future__ import annotations

import time
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..core.network import SRNConfig
from .graph import _resize_legacy, _session, build_generator, import_tf


def _loss_graph(tf, config: SRNConfig, blur_shape, sharp_shape, dtype="float32"):
    """Placeholders for a batch and the original loss on the reference graph: the sum over
    levels of the MSE against the sharp batch resized with resize_images(method=0)."""
    dtype = tf.as_dtype(dtype)
    blur = tf.compat.v1.placeholder(dtype, list(blur_shape))
    sharp = tf.compat.v1.placeholder(dtype, list(sharp_shape))
    levels = []
    for out in build_generator(blur, config):
        hi, wi = out.get_shape().as_list()[1:3]
        gt = _resize_legacy(tf, sharp, [hi, wi])
        levels.append(tf.reduce_mean((gt - out) ** 2))
    return blur, sharp, tf.add_n(levels), levels


def _restorer(tf, variables, checkpoint, dtype="float32"):
    """A function that loads ``variables`` from ``checkpoint`` into a session: TF's Saver in
    a float32 graph; in a float64 graph, which Saver refuses to fill from a float32
    checkpoint, one assignment of the stored values widened to each variable's dtype
    (exactly: float32 -> float64 is lossless; the int32 step stays int32)."""
    if tf.as_dtype(dtype) == tf.float32:
        saver = tf.compat.v1.train.Saver(list(variables))
        return lambda sess: saver.restore(sess, str(checkpoint))
    from ..core.checkpoint import CheckpointReader

    with CheckpointReader(checkpoint) as reader:
        values = {v.op.name: reader.get_tensor(v.op.name) for v in variables}
    feeds = {v: tf.compat.v1.placeholder(v.dtype.base_dtype, v.shape) for v in variables}
    assign = tf.group(*[v.assign(p) for v, p in feeds.items()])
    feed = {p: values[v.op.name].astype(v.dtype.base_dtype.as_numpy_dtype)
            for v, p in feeds.items()}
    return lambda sess: sess.run(assign, feed_dict=feed)


def tf_loss_and_gradients(checkpoint, config: SRNConfig, blur_nhwc: np.ndarray,
                          sharp_nhwc: np.ndarray, threads: Optional[int] = None,
                          dtype: str = "float32"):
    """(loss, level losses, {variable name: gradient}) of the original loss on the graph
    restored from ``checkpoint``, for one batch (NHWC ``dtype``, already in the model's
    channels). Gradients are in TF's layouts, keyed by TF variable names."""
    tf, _ = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        blur, sharp, loss, levels = _loss_graph(tf, config, blur_nhwc.shape, sharp_nhwc.shape,
                                                dtype)
        variables = tf.compat.v1.trainable_variables()
        grads = tf.gradients(loss, variables)
        restore = _restorer(tf, tf.compat.v1.global_variables(scope="g_net"), checkpoint,
                            dtype)
        with _session(tf, graph, threads) as sess:
            restore(sess)
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
    ``beta2_power``) continues an earlier run's optimizer. The variables, and the fed
    gradients, have the dtype of ``initial`` (float32, or float64; the learning rate and the
    beta powers are float32 either way, as TF makes them). Returns the final variables,
    slots and beta powers under the same names."""
    tf, _ = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        variables = {n: tf.compat.v1.get_variable(n.replace("/", "__"), initializer=v)
                     for n, v in initial.items()}
        feeds = {n: tf.compat.v1.placeholder(variables[n].dtype.base_dtype, v.shape)
                 for n, v in initial.items()}
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
                   times: Optional[List[float]] = None, dtype: str = "float32",
                   final: Optional[Dict[str, np.ndarray]] = None) -> List[float]:
    """The original's training op (AdamOptimizer on the polynomially decayed learning rate,
    no clipping), restored from ``checkpoint`` with its Adam state when it has one, run on
    ``batches`` ((blur, sharp) NHWC ``dtype`` pairs) from ``start_step``; returns each step's
    loss (computed before that step's update, as ``sess.run([train_op, loss])`` does).
    ``times``, if given, receives each step's wall time (for benchmarks); ``final``, if
    given, every variable after the last step under its TF name (weights, ``/Adam`` and
    ``/Adam_1`` slots, ``beta1_power``, ``beta2_power``, ``Variable``)."""
    tf, _ = import_tf()
    graph = tf.Graph()
    blur0, sharp0 = batches[0]
    with graph.as_default():
        step = tf.Variable(start_step, dtype=tf.int32, trainable=False)  # 'Variable'
        blur, sharp, loss, _ = _loss_graph(tf, config, blur0.shape, sharp0.shape, dtype)
        lr = tf.compat.v1.train.polynomial_decay(learning_rate, step, total_steps,
                                                 end_learning_rate=0.0, power=power)
        opt = tf.compat.v1.train.AdamOptimizer(lr)
        train = opt.minimize(loss, global_step=step,
                             var_list=tf.compat.v1.trainable_variables())
        from ..core.checkpoint import CheckpointReader

        with CheckpointReader(checkpoint) as reader:
            stored = set(reader.keys())
            checkpoint = reader.prefix
        restore = _restorer(tf, [v for v in tf.compat.v1.global_variables()
                                 if v.op.name in stored], checkpoint, dtype)
        losses = []
        with _session(tf, graph, threads) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            restore(sess)
            step.load(start_step, sess)
            for b, s in batches:
                started = time.perf_counter()
                _, value = sess.run([train, loss], feed_dict={blur: b, sharp: s})
                if times is not None:
                    times.append(time.perf_counter() - started)
                losses.append(float(value))
            if final is not None:
                variables = tf.compat.v1.global_variables()
                final.update(zip([v.op.name for v in variables], sess.run(variables)))
    return losses
