"""Layers for multi-scale and preprocessing: factor-out, logit, scaling."""

import keras
import tensorflow_probability as tfp

from tfflows import bijectors as tfb_
from tfflows.layers.base import FlowLayer, bound

__all__ = ["FactorOut", "Logit", "Scale"]

tfb = tfp.bijectors


@keras.saving.register_keras_serializable(package="tfflows")
class FactorOut(FlowLayer):
    """Runs `layers` on the first half of the channels; the rest is factored
    out, kept in place, and goes to the base distribution as it is.

    Wraps `tfflows.bijectors.FactorOut`. The inner layers are listed from the
    data side and must give back the shape they receive (e.g. start with
    `Squeeze` and end with `Unsqueeze`).

    Args:
      layers: flow layers applied to the kept channels.
      fraction: share of channels kept for the inner layers (default 1/2).
    """

    conditional = True

    def __init__(self, layers, fraction=0.5, context_dim=None, **kwargs):
        super().__init__(context_dim=context_dim, **kwargs)
        self.inner_layers = [keras.saving.deserialize_keras_object(l)
                             if isinstance(l, dict) else l for l in layers]
        if not self.inner_layers:
            raise ValueError("FactorOut needs at least one inner layer")
        self.fraction = float(fraction)

    def build(self, input_shape):
        channels = input_shape[-1]
        kept = int(round(channels * self.fraction))
        if not 1 <= kept < channels:
            raise ValueError(
                f"FactorOut(fraction={self.fraction}) must keep between 1 and "
                f"{channels - 1} of {channels} channels. Received: "
                f"input_shape={tuple(input_shape)}")
        shape = tuple(input_shape[:-1]) + (kept,)
        for layer in self.inner_layers:
            if not layer.built:  # e.g. already built from a saved config
                layer.build(shape)
            shape = layer.compute_output_shape(shape)
        if tuple(shape[1:]) != tuple(input_shape[1:-1]) + (kept,):
            raise ValueError("FactorOut's inner layers must give back the shape "
                             f"they receive; they map {input_shape[1:-1] + (kept,)}"
                             f" to {tuple(shape[1:])}")
        self._kept = kept
        super().build(input_shape)

    @property
    def needs_initialization(self):
        return any(layer.needs_initialization for layer in self.inner_layers)

    def initialize_from(self, x, context=None):
        h = x[..., :self._kept]
        for layer in self.inner_layers:
            h = layer.initialize_from(h, context)
        return super().initialize_from(x, context)

    def make_bijector(self, context=None):
        inner = tfb.Chain([l.make_bijector(context) for l in self.inner_layers])
        return tfb_.FactorOut(inner, self._kept,
                              event_ndims=self._built_event_ndims, name=self.name)

    def get_config(self):
        return {**super().get_config(), "fraction": self.fraction,
                "layers": [_without_build_config(l) for l in self.inner_layers]}


def _without_build_config(layer):
    """A layer's serialization minus its `build_config`: `FactorOut.build`
    builds its inner layers, so the config stays the same before and after."""
    config = keras.saving.serialize_keras_object(layer)
    config.pop("build_config", None)
    return config


@keras.saving.register_keras_serializable(package="tfflows")
class Logit(FlowLayer):
    """Image preprocessing `[0, 1] -> logit space` (`tfflows.bijectors.Logit`),
    its log-det counted in `log_prob` and bits/dim.

    Args:
      alpha: margin keeping the logit finite at 0 and 1 (default 0.05).
    """

    def __init__(self, alpha=0.05, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def make_bijector(self, context=None):
        return tfb_.Logit(self.alpha, event_ndims=self._built_event_ndims,
                          name=self.name)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="tfflows")
class Scale(FlowLayer):
    """NICE's learned diagonal rescaling, `z = x * exp(-log_scale)`
    (`tfp.bijectors.Scale(log_scale=...)` latent -> data)."""

    def build(self, input_shape):
        self.log_scale = self.add_weight(shape=tuple(input_shape[1:]),
                                         initializer="zeros", name="log_scale")
        super().build(input_shape)

    def make_bijector(self, context=None):
        return tfb.Scale(log_scale=bound(self.log_scale), name=self.name)
