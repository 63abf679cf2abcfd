"""Glow's activation normalisation as a bijector."""

import tensorflow as tf
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import tensor_util

from tfflows.bijectors._base import FlowBijector
from tfflows.bijectors.transformers.affine import affine_forward, affine_inverse

__all__ = ["ActNorm"]


def _spatial_size(x, event_ndims):
    """Number of positions sharing one channel's scale: H*W for images."""
    if event_ndims == 1:
        return tf.ones([], x.dtype)
    spatial = tf.shape(x)[-event_ndims:-1]
    return tf.cast(tf.reduce_prod(spatial), x.dtype)


class ActNorm(FlowBijector):
    """Per-channel affine map with a log-parametrised scale.

    ```none
    forward:  y = x * exp(log_scale) + loc        (latent -> data)
    inverse:  x = (y - loc) * exp(-log_scale)     (data -> latent)
    log|det dy/dx| = (H * W) * sum_c log_scale[c] (1 for vectors)
    ```

    `loc` and `log_scale` have shape `[C]` and act on the last axis of
    `[..., C]` vectors (`event_ndims=1`) or NHWC images (`event_ndims=3`).
    With Glow's data-dependent initialisation (`loc` = channel mean,
    `log_scale` = log channel std of the first batch, done by
    `tfflows.layers.ActNorm`) the inverse direction outputs zero-mean,
    unit-variance channels. Cost of the log-det: O(C).

    References:
      Diederik P. Kingma, Prafulla Dhariwal (2018). Glow: Generative Flow with
      Invertible 1x1 Convolutions. https://arxiv.org/abs/1807.03039

    Args:
      loc: float tensor (or variable) `[C]`.
      log_scale: float tensor (or variable) `[C]`, same dtype.
      event_ndims: 1 for vectors, 2 for sequences `[L, C]`, 3 for images.
      validate_args: check inputs are finite.
      name: bijector name.
    """

    def __init__(self, loc, log_scale, event_ndims=1, validate_args=False,
                 name="actnorm"):
        parameters = dict(locals())
        if event_ndims not in (1, 2, 3):
            raise ValueError(
                "event_ndims must be 1 (vectors), 2 ([L, C]) or 3 (NHWC "
                f"images). Received: event_ndims={event_ndims!r}")
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype([loc, log_scale], tf.float32)
            self._loc = tensor_util.convert_nonref_to_tensor(
                loc, dtype=dtype, name="loc")
            self._log_scale = tensor_util.convert_nonref_to_tensor(
                log_scale, dtype=dtype, name="log_scale")
            for arg, value in (("loc", self._loc),
                               ("log_scale", self._log_scale)):
                if value.shape.rank != 1:
                    raise ValueError(
                        f"{arg} must have shape [C]. "
                        f"Received: {arg}.shape={tuple(value.shape)}")
            if self._loc.shape != self._log_scale.shape:
                raise ValueError(
                    "loc and log_scale must have the same shape [C]. Received: "
                    f"loc.shape={tuple(self._loc.shape)}, "
                    f"log_scale.shape={tuple(self._log_scale.shape)}")
            self._event_ndims = event_ndims
            super().__init__(forward_min_event_ndims=event_ndims,
                             is_constant_jacobian=True,
                             validate_args=validate_args, dtype=dtype,
                             parameters=parameters, name=name)

    @property
    def loc(self):
        return self._loc

    @property
    def log_scale(self):
        return self._log_scale

    def _log_det(self, x, log_scale):
        return _spatial_size(x, self._event_ndims) * tf.reduce_sum(log_scale)

    def _forward_and_log_det(self, x):
        self._check_channels(x, "x")
        log_scale = tf.convert_to_tensor(self._log_scale)
        y = affine_forward(x, self._loc, log_scale)
        return y, self._log_det(x, log_scale)

    def _inverse_and_log_det(self, y):
        self._check_channels(y, "y")
        log_scale = tf.convert_to_tensor(self._log_scale)
        x = affine_inverse(y, self._loc, log_scale)
        return x, -self._log_det(y, log_scale)

    def _check_channels(self, t, name):
        self._check_event_shape(
            t, (None,) * (self._event_ndims - 1) + tuple(self._loc.shape), name)
