"""The affine transformer of RealNVP, MAF and IAF (and the math of actnorm)."""

import tensorflow as tf

from tfflows.bijectors._base import soft_clamp, validate_clamp
from tfflows.bijectors.transformers._base import Transformer

__all__ = ["Affine", "affine_forward", "affine_inverse"]


def affine_forward(x, shift, log_scale):
    """`x * exp(log_scale) + shift`."""
    return x * tf.exp(log_scale) + shift


def affine_inverse(y, shift, log_scale):
    """`(y - shift) * exp(-log_scale)`, the inverse of `affine_forward`."""
    return (y - shift) * tf.exp(-log_scale)


class Affine(Transformer):
    """A scale and a shift, the log-scale soft-clamped.

    ```none
    s = c * tanh(s_raw / c)                  (c = log_scale_clamp)
    forward:  y = x * exp(s) + t
    inverse:  x = (y - t) * exp(-s)
    log|dy/dx| = s
    ```

    Parameters per entry: 2, in the order `[t, s_raw]` (shift, raw
    log-scale); zeros are the identity.

    References:
      Laurent Dinh, Jascha Sohl-Dickstein, Samy Bengio (2017). Density
      estimation using Real NVP. https://arxiv.org/abs/1605.08803

    Args:
      log_scale_clamp: bound `c` of the soft clamp (default 5, so `exp(s)`
        stays in `[e^-5, e^5]`); None disables it.
    """

    name = "affine"

    def __init__(self, log_scale_clamp=5.0):
        self.log_scale_clamp = validate_clamp(log_scale_clamp)

    @property
    def num_params(self):
        return 2

    def shift_and_log_scale(self, params):
        """`(t, s)` from raw parameters `[..., 2]`, the log-scale clamped."""
        return params[..., 0], soft_clamp(params[..., 1], self.log_scale_clamp)

    def _forward(self, x, params):
        shift, log_scale = self.shift_and_log_scale(params)
        return affine_forward(x, shift, log_scale), log_scale

    def _inverse(self, y, params):
        shift, log_scale = self.shift_and_log_scale(params)
        return affine_inverse(y, shift, log_scale), -log_scale

    def get_config(self):
        return {"log_scale_clamp": self.log_scale_clamp}
