"""Glow's actnorm layer with data-dependent initialisation."""

import keras
import numpy as np
import tensorflow as tf

from tfflows import bijectors as tfb_
from tfflows.layers.base import FlowLayer, bound

__all__ = ["ActNorm"]


@keras.saving.register_keras_serializable(package="tfflows")
class ActNorm(FlowLayer):
    """Per-channel affine normalisation, initialised from the first batch.

    Wraps `tfflows.bijectors.ActNorm`. `initialize(x)` (called by
    `Flow.fit` on the first batch, or by you) sets `loc` and `log_scale` so
    the layer's output (data -> latent) has zero mean and unit variance per
    channel (Salimans & Kingma 2016; Kingma & Dhariwal 2018). The flag
    `initialized` is a non-trainable weight: it is saved with the model, so a
    reloaded model never re-initialises over trained weights.

    Args:
      epsilon: variance floor, so a constant channel gets a finite scale.
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"ActNorm needs a known channel count. "
                             f"Received: input_shape={tuple(input_shape)}")
        self.loc = self.add_weight(shape=(channels,), initializer="zeros",
                                   name="loc")
        self.log_scale = self.add_weight(shape=(channels,),
                                         initializer="zeros", name="log_scale")
        self.initialized = self.add_weight(shape=(), initializer="zeros",
                                           trainable=False, name="initialized")
        super().build(input_shape)

    @property
    def is_initialized(self):
        return bool(keras.ops.convert_to_numpy(self.initialized) > 0)

    def initialize(self, x):
        """Sets loc/log_scale from the batch `x` (eagerly); returns True if it
        did, False if the layer was already initialised."""
        self._require_built()
        if self.is_initialized:
            return False
        axes = list(range(len(x.shape) - 1))
        mean, var = tf.nn.moments(tf.cast(x, self.compute_dtype), axes=axes)
        var = tf.maximum(var, self.epsilon)
        self.loc.assign(mean)
        self.log_scale.assign(0.5 * tf.math.log(var))
        self.initialized.assign(np.ones((), self.initialized.dtype))
        return True

    @property
    def needs_initialization(self):
        return not self.is_initialized

    def initialize_from(self, x, context=None):
        self.initialize(x)
        return super().initialize_from(x, context)

    def make_bijector(self, context=None):
        return tfb_.ActNorm(bound(self.loc), bound(self.log_scale),
                            event_ndims=self._built_event_ndims, name=self.name)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
