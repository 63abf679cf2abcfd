"""Conditioner networks for coupling layers."""

import keras
from keras import ops

__all__ = ["CouplingMLP"]


@keras.saving.register_keras_serializable(package="tfflows")
class CouplingMLP(keras.layers.Layer):
    """A dense conditioner for vector couplings, identity at start.

    Maps the conditioning part `x_a` (and an optional context) through
    `hidden_units` dense layers to `num_params` tensors of `output_size`
    entries each: `(shift, log_scale)` for `AffineCoupling`, `shift` for
    `AdditiveCoupling`. The last layer is zero-initialised, so a fresh
    coupling is the identity.

    Args:
      output_size: entries of the transformed part.
      num_params: tensors to return (1: a tensor; 2 or more: a tuple).
      hidden_units: widths of the hidden layers.
      activation: hidden activation.
      context_dim: size of the context input, or None for none.

    Input shape:
      `[..., num_masked]`, and `context` `[..., context_dim]` if set.

    Output shape:
      `num_params` tensors `[..., output_size]`.
    """

    def __init__(self, output_size, num_params=2, hidden_units=(64, 64),
                 activation="relu", context_dim=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(output_size, int) or output_size < 1:
            raise ValueError("output_size must be a positive integer. "
                             f"Received: output_size={output_size!r}")
        if not isinstance(num_params, int) or num_params < 1:
            raise ValueError("num_params must be a positive integer. "
                             f"Received: num_params={num_params!r}")
        hidden_units = tuple(int(u) for u in hidden_units)
        if not hidden_units or min(hidden_units) < 1:
            raise ValueError("hidden_units must be a non-empty list of "
                             f"positive widths. Received: {hidden_units!r}")
        self.output_size = output_size
        self.num_params = num_params
        self.hidden_units = hidden_units
        self.activation = keras.activations.get(activation)
        self.context_dim = context_dim
        self._hidden = [keras.layers.Dense(u, activation=self.activation,
                                           dtype=self.dtype_policy)
                        for u in hidden_units]
        self._out = keras.layers.Dense(
            output_size * num_params, kernel_initializer="zeros",
            bias_initializer="zeros", dtype=self.dtype_policy)

    def call(self, x, context=None):
        if (context is None) != (self.context_dim is None):
            raise ValueError(
                f"CouplingMLP(context_dim={self.context_dim}) was called "
                f"{'without' if context is None else 'with'} a context")
        h = x if context is None else ops.concatenate(
            [x, ops.broadcast_to(context, ops.shape(x)[:-1] +
                                 (self.context_dim,))], axis=-1)
        for layer in self._hidden:
            h = layer(h)
        out = self._out(h)
        if self.num_params == 1:
            return out
        return tuple(ops.split(out, self.num_params, axis=-1))

    def get_config(self):
        return {**super().get_config(),
                "output_size": self.output_size,
                "num_params": self.num_params,
                "hidden_units": list(self.hidden_units),
                "activation": keras.activations.serialize(self.activation),
                "context_dim": self.context_dim}
