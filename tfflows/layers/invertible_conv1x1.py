"""Glow's invertible 1x1 convolution layer (LU-parametrised)."""

import keras
import numpy as np

from tfflows._checks import draw_seed
from tfflows import bijectors as tfb_
from tfflows.bijectors import lu
from tfflows.layers.base import FlowLayer, bound

__all__ = ["InvertibleConv1x1"]


@keras.saving.register_keras_serializable(package="tfflows")
class InvertibleConv1x1(FlowLayer):
    """A learned invertible channel mixing, initialised to a random rotation.

    Wraps `tfflows.bijectors.InvertibleConv1x1`: `W = P L (U + diag(s))`
    with `P` and `sign(s)` fixed (non-trainable weights) and `L`, `U`,
    `log|s|` trained. Works on NHWC images and on vectors.

    Args:
      seed: seed of the initial rotation (kept in the config). None draws
        one from NumPy's global generator, so a flow built after
        `keras.utils.set_random_seed` is the same every time.
    """

    xla_on_cpu = True  # the LU assembly is a string of small elementwise ops

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        if seed is None:
            seed = draw_seed()
        self.seed = int(seed)

    def build(self, input_shape):
        channels = input_shape[-1]
        params = lu.lu_decompose(lu.random_rotation(channels, seed=self.seed,
                                                    dtype=np.float64))
        params = {k: np.asarray(v) for k, v in params.items()}
        init = keras.initializers.Constant
        self.lower = self.add_weight(shape=(channels, channels), name="lower",
                                     initializer=init(params["lower"]))
        self.upper = self.add_weight(shape=(channels, channels), name="upper",
                                     initializer=init(params["upper"]))
        self.log_abs_diag = self.add_weight(
            shape=(channels,), name="log_abs_diag",
            initializer=init(params["log_abs_diag"]))
        self.sign = self.add_weight(shape=(channels,), name="sign",
                                    trainable=False,
                                    initializer=init(params["sign"]))
        self.permutation = self.add_weight(
            shape=(channels,), name="permutation", dtype="int32",
            trainable=False, initializer=init(params["permutation"]))
        super().build(input_shape)

    def make_bijector(self, context=None):
        return tfb_.InvertibleConv1x1(
            bound(self.lower), bound(self.upper), bound(self.log_abs_diag),
            sign=bound(self.sign), permutation=bound(self.permutation),
            event_ndims=self._built_event_ndims, name=self.name)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
