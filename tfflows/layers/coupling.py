"""Coupling layers that own their conditioner network: one class for every
transformer, and NICE's and RealNVP's under their own names."""

import keras

from tfflows import bijectors as tfb_
from tfflows import nn
from tfflows._checks import widths
from tfflows.bijectors.masks import make_mask
from tfflows.bijectors import transformers
from tfflows.layers._transformer import (make_transformer, transformer_config,
                                         upgrade_config)
from tfflows.layers.base import FlowLayer, build_network

__all__ = ["AdditiveCoupling", "AffineCoupling", "Coupling"]


@keras.saving.register_keras_serializable(package="tfflows")
class Coupling(FlowLayer):
    """Coupling layer, `call` data -> latent (its `.bijector`'s forward runs latent -> data).

    Owns the conditioner of a `tfflows.bijectors.Coupling`: a dense
    `CouplingMLP` for vectors, a `CouplingConvNet` for NHWC images, sized
    from the mask (`conditioner_input_shape` in, the transformer's
    `num_params` per transformed entry out) and zero-initialised at its
    output, so the layer starts as the identity for every transformer.

    Args:
      transformer: "additive" (NICE), "affine" (RealNVP), "spline"
        (rational-quadratic, NSF-C) or a
        `tfflows.bijectors.transformers.Transformer`.
      spline_bins: "spline" only: bins K (default 8).
      tail_bound: "spline" only: the spline acts on `[-B, B]`, identity
        outside (default 3).
      mask: "half" (vectors), "checkerboard" or "channel" (images).
      flip: swap which part conditions.
      num_masked: "half" only: entries that condition (default D // 2).
      hidden_units: dense widths (vectors).
      hidden_channels: conv width (images).
      context_dim: size of a conditioning input, or None.
    """

    conditional = True

    def __init__(self, transformer="affine", spline_bins=None, tail_bound=None,
                 mask="half", flip=False, num_masked=None, hidden_units=(64, 64),
                 hidden_channels=64, context_dim=None, **kwargs):
        super().__init__(context_dim=context_dim, **kwargs)
        self._transformer = make_transformer(transformer, spline_bins, tail_bound)
        self.mask = mask
        self.flip = bool(flip)
        self.num_masked = num_masked
        self.hidden_units = widths("hidden_units", hidden_units)
        self.hidden_channels = hidden_channels
        self.network = None

    @property
    def transformer(self):
        """The elementwise transformer (a `Transformer` object)."""
        return self._transformer

    @property
    def xla_on_cpu(self):
        """Convolutional networks (images) gain from XLA; dense ones (vectors)
        lose to TensorFlow's oneDNN matmuls (`FlowLayer.xla_on_cpu`), unless
        the transformer gains from XLA itself (splines)."""
        if self._transformer.xla_on_cpu:
            return True
        if self.network is None:  # not built: the mask tells images apart
            return self.mask != "half"
        return isinstance(self.network, nn.CouplingConvNet)

    def build(self, input_shape):
        event_shape = tuple(input_shape[1:])
        layout = make_mask(self.mask, event_shape, self.num_masked, self.flip)
        in_shape, out_shape = layout.conditioner_input_shape, layout.transformed_shape
        common = dict(num_params=self._transformer.num_params,
                      context_dim=self.context_dim,
                      dtype=self.dtype_policy, name="network")
        if len(event_shape) == 1:
            self.network = nn.CouplingMLP(out_shape[-1],
                                          hidden_units=self.hidden_units, **common)
        else:
            self.network = nn.CouplingConvNet(
                out_shape[-1], hidden_channels=self.hidden_channels, **common)
        build_network(self.network, (None,) + tuple(in_shape), self.context_dim,
                      self.compute_dtype)
        self._event_shape = event_shape
        super().build(input_shape)

    def make_bijector(self, context=None):
        net = self.network

        def fn(x_a):
            # The network's parameter-major output split in place: a tuple
            # (a bare tensor if there is one parameter), the transformer's
            # planes.
            params = net(x_a) if context is None else net(x_a, context=context)
            return params if isinstance(params, tuple) else (params,)

        return tfb_.Coupling(fn, self._event_shape, transformer=self._transformer,
                             mask=self.mask, num_masked=self.num_masked,
                             flip=self.flip, name=self.name)

    def get_config(self):
        return {**super().get_config(),
                "transformer": transformer_config(self._transformer),
                "mask": self.mask, "flip": self.flip,
                "num_masked": self.num_masked,
                "hidden_units": list(self.hidden_units),
                "hidden_channels": self.hidden_channels}

    @classmethod
    def from_config(cls, config):
        return cls(**upgrade_config(config))


class _FixedCoupling(Coupling):
    """A `Coupling` whose transformer is fixed by the class (and not in its
    config, which stays the one these layers always had)."""

    _transformer_name = None

    def __init__(self, mask="half", flip=False, num_masked=None,
                 hidden_units=(64, 64), hidden_channels=64, context_dim=None,
                 transformer_options=None, **kwargs):
        super().__init__(transformers.get(self._transformer_name,
                                          **(transformer_options or {})),
                         mask=mask, flip=flip,
                         num_masked=num_masked, hidden_units=hidden_units,
                         hidden_channels=hidden_channels,
                         context_dim=context_dim, **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["transformer"]
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfflows")
class AdditiveCoupling(_FixedCoupling):
    """NICE's additive coupling layer, `call` data -> latent: `Coupling` with
    `transformer="additive"`, its network zero-initialised so the layer
    starts as the identity.

    Args:
      mask: "half" (vectors), "checkerboard" or "channel" (images).
      flip: swap which part conditions.
      num_masked: "half" only: entries that condition (default D // 2).
      hidden_units: dense widths (vectors).
      hidden_channels: conv width (images).
      context_dim: size of a conditioning input, or None.
    """

    _transformer_name = "additive"


@keras.saving.register_keras_serializable(package="tfflows")
class AffineCoupling(_FixedCoupling):
    """RealNVP's affine coupling layer, `call` data -> latent: `Coupling` with
    `transformer="affine"`, its network zero-initialised so the layer starts
    as the identity.

    Args: as `AdditiveCoupling`, and
      shift: "latent" (default) or "data", where the network's shift applies
        (`tfflows.bijectors.transformers.Affine`); configs saved before
        this argument existed load as "data".
      clamp_form: "rational" (default) or "tanh", the form of the
        log-scale's soft clamp (`Affine`); configs saved before this
        argument existed load as "tanh".
    """

    _transformer_name = "affine"

    def __init__(self, mask="half", flip=False, num_masked=None,
                 hidden_units=(64, 64), hidden_channels=64, context_dim=None,
                 shift="latent", clamp_form="rational", **kwargs):
        super().__init__(mask=mask, flip=flip, num_masked=num_masked,
                         hidden_units=hidden_units,
                         hidden_channels=hidden_channels,
                         context_dim=context_dim,
                         transformer_options={"shift": shift,
                                              "clamp_form": clamp_form},
                         **kwargs)

    def get_config(self):
        return {**super().get_config(), "shift": self.transformer.shift,
                "clamp_form": self.transformer.clamp_form}

    @classmethod
    def from_config(cls, config):
        return cls(**{**transformers.Affine.LEGACY_DEFAULTS, **config})
