"""Radial flow (Rezende & Mohamed 2015) as a bijector, inverse in closed form."""

import numpy as np
import tensorflow as tf
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import tensor_util

from tfflows.bijectors._base import FlowBijector

__all__ = ["Radial", "radial_alpha_beta"]


def radial_alpha_beta(alpha_raw, beta_raw):
    """The reparametrisation `(α, β, α + β)`: `α = softplus(alpha_raw) > 0`,
    `β = -α + softplus(beta_raw) >= -α`. `α + β` is returned as computed
    (no cancellation); `α` and `α + β` are floored at the dtype's smallest
    normal number."""
    tiny = np.finfo(alpha_raw.dtype.as_numpy_dtype).tiny
    alpha = tf.maximum(tf.math.softplus(alpha_raw), tiny)
    alpha_plus_beta = tf.maximum(tf.math.softplus(beta_raw), tiny)
    return alpha, alpha_plus_beta - alpha, alpha_plus_beta


def _norm(d):
    """`‖d‖` over the last axis, with a zero (not NaN) gradient at `d = 0`.

    Computed as `m ‖d / m‖` with `m = max|d_i|`, so the squares cannot
    overflow: finite for every finite `d` whose norm is representable (a
    plain sum of squares is Inf from |d| ~ 1e19 in float32, and the
    inverse's root then NaN)."""
    scale = tf.reduce_max(tf.abs(d), axis=-1, keepdims=True)
    safe_scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    unit = d / safe_scale
    square = tf.reduce_sum(unit * unit, axis=-1)
    positive = square > 0
    one = tf.ones_like(square)
    return tf.where(positive, safe_scale[..., 0] * tf.sqrt(
        tf.where(positive, square, one)), tf.zeros_like(square))


def _log_det(r, alpha, sigma, size):
    """`(D-1) log(1 + βh) + log(1 + βh + βh'r)` at radius `r` (σ = α + β):
    `1 + βh = (r + σ)/(r + α)` and `1 + βh + βh'r = q(1 + p) + pσ/(α + r)`
    with `q = r/(α + r)`, `p = α/(α + r)`: sums of non-negative terms, no
    cancellation as β -> -α and no overflow for large r."""
    scale = alpha + r
    q, p = r / scale, alpha / scale
    radial = tf.math.log(q * (1 + p) + p * (sigma / scale))
    if size == 1:
        return radial
    return (size - 1) * (tf.math.log(r + sigma) - tf.math.log(scale)) + radial


class Radial(FlowBijector):
    """Radial flow, `forward` latent -> data: `x = z + β (z - z₀) / (α + ‖z - z₀‖)`.

    ```none
    forward:  x = z + β h(r) (z - z₀),  r = ‖z - z₀‖,  h(r) = 1 / (α + r)
    inverse:  ρ = ‖x - z₀‖;  r = the positive root of r² + (α + β - ρ) r - αρ = 0;
              z = x - β (x - z₀) / (r + α + β)
    log|det dx/dz| = (D - 1) log(1 + βh(r)) + log(1 + βh(r) + βh'(r) r)
    α = softplus(alpha_raw) > 0,  β = -α + softplus(beta_raw) >= -α
    ```

    Contracts (β < 0) or expands (β > 0) space around `z₀`. With `β >= -α`
    the radius `ρ = r (r + α + β) / (r + α)` increases with `r`, so the map
    is a bijection for every parameter value. Solving `ρ(r) = ‖x - z₀‖` is
    the quadratic above, so the inverse is closed-form (no iterations): the
    root is taken in the form without cancellation and with terms scaled by
    `α + β + ρ`, so it is accurate to a few ulps and finite for any finite
    input; `x = z₀` maps to `z₀` with finite gradients. Cost: O(D) both ways.

    References:
      Danilo Jimenez Rezende, Shakir Mohamed (2015). Variational Inference
      with Normalizing Flows. https://arxiv.org/abs/1505.05770

    Args:
      z0: float tensor (or variable) `[D]`, the centre.
      alpha_raw: float scalar (or variable); `α = softplus(alpha_raw)`.
      beta_raw: float scalar (or variable); `β = softplus(beta_raw) - α`.
      validate_args: check inputs are finite.
      name: bijector name.
    """

    def __init__(self, z0, alpha_raw, beta_raw, validate_args=False, name="radial"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype([z0, alpha_raw, beta_raw], tf.float32)
            self._z0 = tensor_util.convert_nonref_to_tensor(z0, dtype=dtype, name="z0")
            self._alpha_raw = tensor_util.convert_nonref_to_tensor(
                alpha_raw, dtype=dtype, name="alpha_raw")
            self._beta_raw = tensor_util.convert_nonref_to_tensor(
                beta_raw, dtype=dtype, name="beta_raw")
            if self._z0.shape.rank != 1 or self._z0.shape[0] is None:
                raise ValueError("z0 must have a known shape [D]. "
                                 f"Received: z0.shape={tuple(self._z0.shape)}")
            for arg, value in (("alpha_raw", self._alpha_raw),
                               ("beta_raw", self._beta_raw)):
                if value.shape.rank != 0:
                    raise ValueError(f"{arg} must be a scalar. "
                                     f"Received: {arg}.shape={tuple(value.shape)}")
            super().__init__(forward_min_event_ndims=1, validate_args=validate_args,
                             dtype=dtype, parameters=parameters, name=name)

    @property
    def z0(self):
        return self._z0

    @property
    def alpha_raw(self):
        return self._alpha_raw

    @property
    def beta_raw(self):
        return self._beta_raw

    def alpha_beta(self):
        """`(α, β, α + β)` for the current parameters (`radial_alpha_beta`)."""
        return radial_alpha_beta(tf.convert_to_tensor(self._alpha_raw),
                                 tf.convert_to_tensor(self._beta_raw))

    def _forward_and_log_det(self, z):
        self._check_event_shape(z, self._z0.shape, "x")
        alpha, beta, sigma = self.alpha_beta()
        d = z - self._z0
        r = _norm(d)
        x = z + (beta / (alpha + r))[..., tf.newaxis] * d
        return x, _log_det(r, alpha, sigma, self._z0.shape[0])

    def _inverse_and_log_det(self, x):
        self._check_event_shape(x, self._z0.shape, "y")
        alpha, beta, sigma = self.alpha_beta()
        d = x - self._z0
        rho = _norm(d)
        # r² - b r - αρ = 0 with b = ρ - σ, in units of s = α + σ + ρ > 0.
        s = alpha + sigma + rho
        b = (rho - sigma) / s
        root = tf.sqrt(b * b + 4 * (rho / s) * (alpha / s))
        negative = b < 0
        r = s * tf.where(negative, 2 * (rho / s) * (alpha / s)
                         / tf.where(negative, root - b, tf.ones_like(b)),
                         0.5 * (b + root))
        z = x - (beta / (r + sigma))[..., tf.newaxis] * d
        return z, -_log_det(r, alpha, sigma, self._z0.shape[0])
