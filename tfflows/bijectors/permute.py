"""`tfp.bijectors.Permute` whose gradient is a gather too."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["Permute"]


def _permute(x, permutation, inverse_permutation, axis):
    """`tf.gather(x, permutation, axis=axis)`, differentiated as the gather
    of the upstream gradient by the inverse permutation: TensorFlow's own
    gradient of a gather on an inner axis transposes the gradient, sums it
    by segments and transposes it back (three times the cost of a MAF's
    permutation in training). The gradient's own gradient is TensorFlow's
    (a custom gradient inside a custom gradient is not saved in a
    SavedModel, and loading one warns about it)."""

    @tf.custom_gradient
    def permute(x):
        def gradient(upstream):
            return tf.gather(upstream, inverse_permutation, axis=axis)
        return tf.gather(x, permutation, axis=axis), gradient

    return permute(x)


class Permute(tfp.bijectors.Permute):
    """`tfp.bijectors.Permute` (same arguments, same values) with a cheap
    gradient: both directions gather, and so do their gradients, each by
    the other's permutation. A reversal known when the bijector is made (a
    list or array, not a variable) runs as `tf.reverse`, a copy, where a
    gather on the last axis picks element by element (4x the time at
    10,000 rows of 16)."""

    def __init__(self, permutation, axis=-1, validate_args=False, name=None):
        super().__init__(permutation, axis=axis, validate_args=validate_args,
                         name=name)
        static = tf.get_static_value(permutation)
        self._reverses = static is not None and np.array_equal(
            np.ravel(static), np.arange(np.size(static))[::-1])

    def _forward(self, x):
        if self._reverses:
            return tf.reverse(x, [self.axis])
        permutation = tf.convert_to_tensor(self.permutation)
        y = _permute(x, permutation, tf.math.invert_permutation(permutation), self.axis)
        y.set_shape(x.shape)
        return y

    def _inverse(self, y):
        if self._reverses:
            return tf.reverse(y, [self.axis])
        permutation = tf.convert_to_tensor(self.permutation)
        x = _permute(y, tf.math.invert_permutation(permutation), permutation, self.axis)
        x.set_shape(y.shape)
        return x

