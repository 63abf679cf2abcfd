"""The velocity network of continuous flows."""

import keras
from keras import ops

from tfflows._checks import integer, widths
from tfflows.nn.coupling import _with_context

__all__ = ["VelocityMLP"]


@keras.saving.register_keras_serializable(package="tfflows")
class VelocityMLP(keras.layers.Layer):
    """A dense velocity field `v(x, t[, context])`, zero at start.

    Maps `[x, t, context]` through `hidden_units` dense layers to a velocity
    of `x`'s size. The last layer is zero-initialised, so a fresh
    continuous flow is the identity. Smooth activations (the default
    `"silu"`, or `"tanh"`, `"softplus"`) keep the ODE smooth, which the
    fixed-step solver's accuracy relies on; ReLU gives a piecewise-constant
    Jacobian.

    Args:
      event_size: `D`, the size of `x` and of the velocity.
      hidden_units: widths of the hidden layers.
      activation: hidden activation.
      context_dim: size of the context input, or None.

    Input shape:
      `x` `[..., D]`; `t` a scalar, `[...]` or `[..., 1]`; `context`
      `[..., context_dim]` (or `[context_dim]`) if set.

    Output shape:
      `[..., D]`.
    """

    def __init__(self, event_size, hidden_units=(64, 64, 64), activation="silu",
                 context_dim=None, **kwargs):
        super().__init__(**kwargs)
        self.event_size = integer("event_size", event_size)
        self.hidden_units = widths("hidden_units", hidden_units)
        self.activation = keras.activations.get(activation)
        self.context_dim = integer("context_dim", context_dim, optional=True)
        self._hidden = [keras.layers.Dense(u, activation=self.activation,
                                           dtype=self.dtype_policy)
                        for u in self.hidden_units]
        self._out = keras.layers.Dense(self.event_size, kernel_initializer="zeros",
                                       bias_initializer="zeros",
                                       dtype=self.dtype_policy)

    def call(self, x, t, context=None):
        batch_shape = tuple(ops.shape(x)[:-1])
        t = ops.cast(t, x.dtype)
        if len(t.shape) == len(x.shape) - 1:
            t = ops.expand_dims(t, -1)
        t = ops.broadcast_to(t, batch_shape + (1,))
        h = _with_context(self, ops.concatenate([x, t], axis=-1), context,
                          batch_shape)
        h = ops.reshape(h, (-1, h.shape[-1]))
        for layer in self._hidden:
            h = layer(h)
        return ops.reshape(self._out(h), batch_shape + (self.event_size,))

    def get_config(self):
        return {**super().get_config(), "event_size": self.event_size,
                "hidden_units": list(self.hidden_units),
                "activation": keras.activations.serialize(self.activation),
                "context_dim": self.context_dim}
