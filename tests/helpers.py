"""Small helpers shared by the layer and flow tests."""

import numpy as np
import tensorflow as tf


def copy(t):
    """A new tensor with the same value: TFP caches by tensor identity."""
    return tf.constant(np.asarray(t))


def perturb(model, scale=0.1, seed=0):
    """Random non-trivial weights for a layer or model: fresh couplings are
    the identity, which would make most checks vacuous."""
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        w.assign(w.numpy() + scale * rng.standard_normal(w.shape).astype(w.dtype))
