"""Coupling layers (NICE, RealNVP) that own their conditioner network."""

import keras

from tfflows import bijectors as tfb_
from tfflows import nn
from tfflows.bijectors.masks import make_mask
from tfflows.layers.base import FlowLayer, build_network

__all__ = ["AdditiveCoupling", "AffineCoupling"]


class _Coupling(FlowLayer):
    """Builds the mask from the input shape and a matching network."""

    conditional = True
    _bijector_cls = None
    _num_params = None

    def __init__(self, mask="half", flip=False, num_masked=None,
                 hidden_units=(64, 64), hidden_channels=64, context_dim=None,
                 **kwargs):
        super().__init__(context_dim=context_dim, **kwargs)
        self.mask = mask
        self.flip = bool(flip)
        self.num_masked = num_masked
        self.hidden_units = tuple(hidden_units)
        self.hidden_channels = hidden_channels
        self.network = None

    @property
    def xla_on_cpu(self):
        """Convolutional networks (images) gain from XLA; dense ones (vectors)
        lose to TensorFlow's oneDNN matmuls (`FlowLayer.xla_on_cpu`)."""
        if self.network is None:  # not built: the mask tells images apart
            return self.mask != "half"
        return isinstance(self.network, nn.CouplingConvNet)

    def build(self, input_shape):
        event_shape = tuple(input_shape[1:])
        probe = make_mask(self.mask, event_shape, self.num_masked, self.flip)
        out_shape = probe.transformed_shape
        if len(event_shape) == 1:
            in_size = (probe.num_masked if self.mask == "half"
                       else event_shape[-1])
            self.network = nn.CouplingMLP(
                out_shape[-1], num_params=self._num_params,
                hidden_units=self.hidden_units, context_dim=self.context_dim,
                dtype=self.dtype_policy, name="network")
            net_input = (None, in_size)
        else:
            in_channels = (event_shape[-1] if self.mask == "checkerboard"
                           else event_shape[-1] - out_shape[-1])
            self.network = nn.CouplingConvNet(
                out_shape[-1], num_params=self._num_params,
                hidden_channels=self.hidden_channels,
                context_dim=self.context_dim, dtype=self.dtype_policy,
                name="network")
            net_input = (None,) + event_shape[:-1] + (in_channels,)
        build_network(self.network, net_input, self.context_dim, self.compute_dtype)
        self._event_shape = event_shape
        super().build(input_shape)

    def make_bijector(self, context=None):
        net = self.network
        fn = net if context is None else (lambda x_a: net(x_a, context=context))
        return self._bijector_cls(fn, self._event_shape, mask=self.mask,
                                  num_masked=self.num_masked, flip=self.flip,
                                  name=self.name)

    def get_config(self):
        return {**super().get_config(), "mask": self.mask, "flip": self.flip,
                "num_masked": self.num_masked,
                "hidden_units": list(self.hidden_units),
                "hidden_channels": self.hidden_channels}


@keras.saving.register_keras_serializable(package="tfflows")
class AdditiveCoupling(_Coupling):
    """NICE's additive coupling (`tfflows.bijectors.AdditiveCoupling`) with its
    own network: a dense `CouplingMLP` for vectors, a `CouplingConvNet` for
    NHWC images, zero-initialised so the layer starts as the identity.

    Args:
      mask: "half" (vectors), "checkerboard" or "channel" (images).
      flip: swap which part conditions.
      num_masked: "half" only: entries that condition (default D // 2).
      hidden_units: dense widths (vectors).
      hidden_channels: conv width (images).
      context_dim: size of a conditioning input, or None.
    """

    _bijector_cls = tfb_.AdditiveCoupling
    _num_params = 1


@keras.saving.register_keras_serializable(package="tfflows")
class AffineCoupling(_Coupling):
    """RealNVP's affine coupling (`tfflows.bijectors.AffineCoupling`) with its
    own network, zero-initialised so the layer starts as the identity.

    Args: as `AdditiveCoupling`.
    """

    _bijector_cls = tfb_.AffineCoupling
    _num_params = 2
