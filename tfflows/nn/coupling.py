"""Conditioner networks for coupling layers."""

import keras
from keras import ops

from tfflows._checks import integer, widths

__all__ = ["CouplingMLP", "CouplingConvNet"]


def _with_context(layer, x, context, batch_and_spatial, spatial_ndims=0):
    """Appends the context, broadcast over batch (and pixels), to `x`.

    `context` is `[K]` (shared) or `[..., K]` per example; images
    (`spatial_ndims=2`) see it at every pixel.
    """
    if (context is None) != (layer.context_dim is None):
        raise ValueError(
            f"{type(layer).__name__}(context_dim={layer.context_dim}) was "
            f"called {'without' if context is None else 'with'} a context")
    if context is None:
        return x
    context = ops.cast(context, x.dtype)
    for _ in range(spatial_ndims):  # images: add H, W
        context = ops.expand_dims(context, -2)
    context = ops.broadcast_to(context, tuple(batch_and_spatial) + (layer.context_dim,))
    return ops.concatenate([x, context], axis=-1)


def _split_params(out, num_params, stacked):
    """The last axis `[num_params * size]` (parameter-major) as one tensor
    `[..., size, num_params]` (`stacked`), or a tensor / tuple of tensors."""
    if stacked:
        shape = tuple(ops.shape(out)[:-1]) + (num_params, out.shape[-1] // num_params)
        return ops.swapaxes(ops.reshape(out, shape), -1, -2)
    if num_params == 1:
        return out
    return tuple(ops.split(out, num_params, axis=-1))


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
      stacked: return one tensor `[..., output_size, num_params]` (what
        `tfflows.bijectors.Coupling` takes) instead of `num_params` tensors.
        The weights are the same either way.

    Input shape:
      `[..., num_masked]`, and `context` `[..., context_dim]` if set.

    Output shape:
      `num_params` tensors `[..., output_size]` (a tensor if 1), or one
      `[..., output_size, num_params]` if `stacked`.
    """

    def __init__(self, output_size, num_params=2, hidden_units=(64, 64),
                 activation="relu", context_dim=None, stacked=False, **kwargs):
        super().__init__(**kwargs)
        self.output_size = integer("output_size", output_size)
        self.num_params = integer("num_params", num_params)
        self.hidden_units = widths("hidden_units", hidden_units)
        self.activation = keras.activations.get(activation)
        self.context_dim = context_dim
        self.stacked = bool(stacked)
        self._hidden = [keras.layers.Dense(u, activation=self.activation,
                                           dtype=self.dtype_policy)
                        for u in hidden_units]
        self._out = keras.layers.Dense(
            output_size * num_params, kernel_initializer="zeros",
            bias_initializer="zeros", dtype=self.dtype_policy)

    def call(self, x, context=None):
        batch_shape = tuple(ops.shape(x)[:-1])
        h = _with_context(self, x, context, batch_shape)
        # Dense layers want [batch, features]: flatten any batch shape (none,
        # as in `distribution.sample()`, or several) and restore it after.
        h = ops.reshape(h, (-1, h.shape[-1]))
        for layer in self._hidden:
            h = layer(h)
        out = self._out(h)
        out = ops.reshape(out, batch_shape + (out.shape[-1],))
        return _split_params(out, self.num_params, self.stacked)

    def get_config(self):
        return {**super().get_config(),
                "output_size": self.output_size,
                "num_params": self.num_params,
                "hidden_units": list(self.hidden_units),
                "activation": keras.activations.serialize(self.activation),
                "context_dim": self.context_dim, "stacked": self.stacked}


@keras.saving.register_keras_serializable(package="tfflows")
class CouplingConvNet(keras.layers.Layer):
    """A convolutional conditioner for image couplings, identity at start.

    3x3 conv -> 1x1 conv -> 3x3 conv (zero-initialised), as in Glow's coupling
    network, mapping `[..., H, W, C_in]` (plus an optional context broadcast
    over the pixels) to `num_params` tensors `[..., H, W, output_channels]`.

    Args:
      output_channels: channels of the transformed part.
      num_params: tensors to return (2 for affine couplings).
      hidden_channels: width of the hidden convolutions.
      context_dim: size of the context vector, or None.
      stacked: return one tensor `[..., H, W, output_channels, num_params]`
        instead of `num_params` tensors (same weights).

    Input shape:
      `[..., H, W, C_in]` (any number of batch dimensions).

    Output shape:
      `num_params` tensors `[..., H, W, output_channels]`, or one
      `[..., H, W, output_channels, num_params]` if `stacked`.
    """

    def __init__(self, output_channels, num_params=2, hidden_channels=64,
                 context_dim=None, stacked=False, **kwargs):
        super().__init__(**kwargs)
        self.output_channels = integer("output_channels", output_channels)
        self.num_params = integer("num_params", num_params)
        self.hidden_channels = integer("hidden_channels", hidden_channels)
        self.context_dim = context_dim
        self.stacked = bool(stacked)
        policy = self.dtype_policy
        self._convs = [
            keras.layers.Conv2D(hidden_channels, 3, padding="same",
                                activation="relu", dtype=policy),
            keras.layers.Conv2D(hidden_channels, 1, activation="relu",
                                dtype=policy),
            keras.layers.Conv2D(output_channels * num_params, 3,
                                padding="same", kernel_initializer="zeros",
                                dtype=policy),
        ]

    def call(self, x, context=None):
        shape = ops.shape(x)
        h = _with_context(self, x, context, shape[:-1], spatial_ndims=2)
        h = ops.reshape(h, (-1,) + tuple(h.shape[-3:]))
        for conv in self._convs:
            h = conv(h)
        h = ops.reshape(h, tuple(shape[:-1]) + (h.shape[-1],))
        return _split_params(h, self.num_params, self.stacked)

    def get_config(self):
        return {**super().get_config(),
                "output_channels": self.output_channels,
                "num_params": self.num_params,
                "hidden_channels": self.hidden_channels,
                "context_dim": self.context_dim, "stacked": self.stacked}
