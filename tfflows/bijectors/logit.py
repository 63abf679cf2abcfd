"""Image preprocessing: pixels in [0, 1] to logit space, log-det counted."""

import math

import tensorflow as tf

from tfflows.bijectors._base import FlowBijector

__all__ = ["Logit", "uniform_dequantize", "bits_per_dim"]


class Logit(FlowBijector):
    """RealNVP's logit preprocessing of dequantized pixels.

    Data `x` in `[0, 1]` (dequantized pixels `(k + u) / num_bins`) is squeezed
    into `[alpha, 1 - alpha]` before the logit, so the latent stays finite at
    the image borders:

    ```none
    inverse (data -> latent):  p = alpha + (1 - 2 alpha) x,  z = log p - log(1 - p)
    forward (latent -> data):  x = (sigmoid(z) - alpha) / (1 - 2 alpha)
    log|det dz/dx| = sum( log(1 - 2 alpha) - log p - log(1 - p) )
    ```

    The log-det is part of `log_prob`, so densities and bits/dim refer to the
    pixels themselves, as papers report them. Only plain `log`/`sigmoid`
    ops are used (no `log1p`), so the graph converts to ONNX.

    References:
      Laurent Dinh, Jascha Sohl-Dickstein, Samy Bengio (2017). Density
      estimation using Real NVP, section 4.1. https://arxiv.org/abs/1605.08803

    Args:
      alpha: margin in `[0, 0.5)` (default 0.05, as in RealNVP).
      event_ndims: event rank to sum the log-det over (3 for NHWC images).
      validate_args: check inputs are finite.
      name: bijector name.
    """

    def __init__(self, alpha=0.05, event_ndims=3, validate_args=False,
                 name="logit"):
        parameters = dict(locals())
        if not isinstance(alpha, (int, float)) or not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5). Received: alpha={alpha!r}")
        if not isinstance(event_ndims, int) or event_ndims < 1:
            raise ValueError("event_ndims must be a positive integer. "
                             f"Received: event_ndims={event_ndims!r}")
        self._alpha = float(alpha)
        self._event_ndims = event_ndims
        super().__init__(forward_min_event_ndims=event_ndims,
                         validate_args=validate_args, parameters=parameters,
                         name=name)

    @property
    def alpha(self):
        return self._alpha

    def _sum_event(self, t):
        return tf.reduce_sum(t, axis=list(range(-self._event_ndims, 0)))

    def _log_det_dz_dx(self, p):
        width = 1. - 2. * self._alpha
        return self._sum_event(
            math.log(width) - tf.math.log(p) - tf.math.log(1. - p))

    def _forward_and_log_det(self, z):
        p = tf.math.sigmoid(z)
        x = (p - self._alpha) / (1. - 2. * self._alpha)
        return x, -self._log_det_dz_dx(p)

    def _inverse_and_log_det(self, x):
        p = self._alpha + (1. - 2. * self._alpha) * x
        z = tf.math.log(p) - tf.math.log(1. - p)
        return z, self._log_det_dz_dx(p)


def uniform_dequantize(x, num_bins, seed=None):
    """Adds uniform noise of one bin's width to pixels `x = k / num_bins`.

    Returns `(k + u) / num_bins` with `u ~ U[0, 1)`, a continuous variable
    whose density lower-bounds the discrete data's likelihood (Theis et al.
    2016, https://arxiv.org/abs/1511.01844).
    """
    x = tf.convert_to_tensor(x)
    noise = (tf.random.uniform(tf.shape(x), dtype=x.dtype) if seed is None else
             tf.random.stateless_uniform(tf.shape(x), seed, dtype=x.dtype))
    return x + noise / num_bins


def bits_per_dim(log_prob, num_dims, num_bins):
    """Discrete-data bits per dimension from the density of pixels in [0, 1].

    `bpd = (-log_prob + D log(num_bins)) / (D log 2)`: the `num_bins` term is
    the Jacobian of `x = (k + u) / num_bins`, so a uniform model scores
    exactly `log2(num_bins)`.
    """
    log_prob = tf.convert_to_tensor(log_prob)
    num_dims = tf.cast(num_dims, log_prob.dtype)
    return ((-log_prob + num_dims * math.log(num_bins))
            / (num_dims * math.log(2.)))
