"""Glow's invertible 1x1 convolution with an LU-parametrised weight."""

import tensorflow as tf
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import tensor_util

from tfflows.bijectors import lu
from tfflows.bijectors._base import FlowBijector

__all__ = ["InvertibleConv1x1"]


def _channel_matmul(x, weight):
    """`y[..., i] = sum_j W[i, j] x[..., j]` over the last axis.

    One `[N, C] x [C, C]` matmul (no einsum ellipsis, which tf2onnx rejects).
    """
    flat = tf.reshape(x, [-1, tf.shape(weight)[-1]])
    return tf.reshape(tf.matmul(flat, weight, transpose_b=True), tf.shape(x))


class InvertibleConv1x1(FlowBijector):
    """A learned invertible linear map of the channels, shared by all pixels.

    ```none
    W = P L (U + diag(sign * exp(log_abs_diag)))
    forward:  y[..., :] = W x[..., :]       at every pixel
    inverse:  x[..., :] = W^-1 y[..., :]    (two triangular solves)
    log|det dy/dx| = (H * W) * sum(log_abs_diag)      -- O(C)
    ```

    `P` is a fixed permutation, `L` unit lower-triangular (the strictly-lower
    part of `lower` is used), `U` strictly upper-triangular (the
    strictly-upper part of `upper`), and the diagonal is kept as a fixed sign
    and a free `log|s|`, so `W` stays invertible whatever the parameters.
    On vectors (`event_ndims=1`) it is a learned invertible linear map with
    `H * W = 1`. `tfflows.bijectors.lu.lu_decompose` turns any invertible
    matrix (e.g. `lu.random_rotation(C)`, Glow's initialisation) into these
    parameters.

    References:
      Diederik P. Kingma, Prafulla Dhariwal (2018). Glow: Generative Flow with
      Invertible 1x1 Convolutions. https://arxiv.org/abs/1807.03039

    Args:
      lower: float `[C, C]`.
      upper: float `[C, C]`.
      log_abs_diag: float `[C]`.
      sign: float `[C]` of +-1; default all +1.
      permutation: int `[C]`, a permutation of `range(C)`; default identity.
      event_ndims: 1 for vectors `[..., C]`, 3 for NHWC images.
      validate_args: check inputs are finite.
      name: bijector name.
    """

    def __init__(self, lower, upper, log_abs_diag, sign=None, permutation=None,
                 event_ndims=3, validate_args=False,
                 name="invertible_conv1x1"):
        parameters = dict(locals())
        if event_ndims not in (1, 3):
            raise ValueError("event_ndims must be 1 (vectors) or 3 (NHWC "
                             f"images). Received: event_ndims={event_ndims!r}")
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype(
                [lower, upper, log_abs_diag, sign], tf.float32)
            convert = tensor_util.convert_nonref_to_tensor
            self._lower = convert(lower, dtype=dtype, name="lower")
            self._upper = convert(upper, dtype=dtype, name="upper")
            self._log_abs_diag = convert(log_abs_diag, dtype=dtype,
                                         name="log_abs_diag")
            channels = self._check_shapes()
            self._sign = (tf.ones([channels], dtype) if sign is None else
                          convert(sign, dtype=dtype, name="sign"))
            self._permutation = (
                tf.range(channels) if permutation is None else
                convert(permutation, dtype=tf.int32, name="permutation"))
            for arg in ("sign", "permutation"):
                shape = tuple(getattr(self, "_" + arg).shape)
                if shape != (channels,):
                    raise ValueError(f"{arg} must have shape [{channels}]. "
                                     f"Received: {arg}.shape={shape}")
            self._channels = channels
            self._event_ndims = event_ndims
            super().__init__(forward_min_event_ndims=event_ndims,
                             is_constant_jacobian=True,
                             validate_args=validate_args, dtype=dtype,
                             parameters=parameters, name=name)

    def _check_shapes(self):
        shapes = {arg: tuple(getattr(self, "_" + arg).shape)
                  for arg in ("lower", "upper", "log_abs_diag")}
        for arg in ("lower", "upper"):
            shape = shapes[arg]
            if len(shape) != 2 or shape[0] != shape[1]:
                raise ValueError(f"{arg} must be a square [C, C] LU factor. "
                                 f"Received: {arg}.shape={shape}")
        channels = shapes["lower"][0]
        if shapes["upper"][0] != channels or shapes["log_abs_diag"] != (channels,):
            raise ValueError(
                "lower, upper and log_abs_diag must be [C, C], [C, C], [C] with "
                f"one C. Received: shapes {shapes}")
        return channels

    def _params(self):
        return (self._permutation, tf.convert_to_tensor(self._lower),
                tf.convert_to_tensor(self._upper),
                tf.convert_to_tensor(self._log_abs_diag),
                tf.convert_to_tensor(self._sign))

    @property
    def weight(self):
        """The `[C, C]` matrix `W`."""
        return lu.lu_weight(*self._params())

    def _log_det(self, x):
        log_det = tf.reduce_sum(self._log_abs_diag)
        if self._event_ndims == 1:
            return log_det
        spatial = tf.cast(tf.reduce_prod(tf.shape(x)[-3:-1]), x.dtype)
        return spatial * log_det

    def _check_channels(self, t, name):
        self._check_event_shape(
            t, (None,) * (self._event_ndims - 1) + (self._channels,), name)

    def _forward_and_log_det(self, x):
        self._check_channels(x, "x")
        y = _channel_matmul(x, lu.lu_weight(*self._params()))
        return y, self._log_det(x)

    def _inverse_and_log_det(self, y):
        self._check_channels(y, "y")
        x = _channel_matmul(y, lu.lu_inverse_weight(*self._params()))
        return x, -self._log_det(y)
