"""The TF original, for comparison only (the ``tf`` extra): the authors' graph rebuilt under
``tf.compat.v1`` + ``tf_slim`` (:mod:`.graph`) and their test-time pipeline with it
(:mod:`.pipeline`). TensorFlow is imported only when one of these is called."""

from .graph import (MODEL_NAME, RELEASED_STEP, ReferenceModel, build_generator, import_tf,
                    make_checkpoint)

__all__ = ["MODEL_NAME", "RELEASED_STEP", "ReferenceModel", "build_generator", "import_tf",
           "make_checkpoint"]
