"""What TF1 training adds to a checkpoint besides the model, by name: the one list used by
SRN's rules (:mod:`srn_port.core.naming`) and the porting toolkit's ``TRAINING_STATE``
(:mod:`srn_port.port.mapping`). docs/tf-numerics.md §4."""

from __future__ import annotations

#: Slot names of the tf.compat.v1.train optimizers (slot_creator names a slot
#: ``<var>/<OptimizerName>``, the 2nd, 3rd... of one variable ``_1``, ``_2``...).
OPTIMIZER_SLOT_NAMES = ("Adam", "Momentum", "RMSProp", "Adagrad", "AdagradDA", "Adadelta",
                        "Ftrl", "ProximalAdagrad", "LazyAdam", "Nadam", "AdaMax", "AMSGrad")
#: tf.train.ExponentialMovingAverage's shadow of a variable: ``<var>/<EMA_SUFFIX>``.
EMA_SUFFIX = "ExponentialMovingAverage"
#: Adam's bias-correction accumulators (``_1``... when there are several optimizers).
BETA_POWER = r"(beta1_power|beta2_power)(_\d+)?"
#: The global step: tf.train's ``global_step``, or an unnamed ``tf.Variable`` (``Variable``).
GLOBAL_STEP = r"Variable(_\d+)?|global_step"
