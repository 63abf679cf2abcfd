"""Multi-scale factor-out: transform some channels, keep the rest in place."""

import tensorflow as tf

from tfflows.bijectors._base import FlowBijector

__all__ = ["FactorOut"]


class FactorOut(FlowBijector):
    """Applies `inner` to the first `num_channels` channels only.

    ```none
    forward:  y = concat(inner.forward(x[..., :k]), x[..., k:])
    inverse:  x = concat(inner.inverse(y[..., :k]), y[..., k:])
    log|det J| = inner's log-det on the first k channels
    ```

    This is RealNVP's and Glow's multi-scale split with the factored-out
    channels kept in place (as TFP's `Glow` does): deeper levels see only
    `x[..., :k]`, the rest goes to the base distribution untouched, and the
    latent keeps the data's shape. Condition kwargs are passed to `inner`.

    References:
      Laurent Dinh, Jascha Sohl-Dickstein, Samy Bengio (2017). Density
      estimation using Real NVP, section 3.6. https://arxiv.org/abs/1605.08803

    Args:
      inner: a bijector on `[..., k]`-channel events of the same rank, which
        keeps the shape of its input.
      num_channels: k, at least 1.
      event_ndims: event rank (3 for NHWC images, 1 for vectors).
      name: bijector name.
    """

    def __init__(self, inner, num_channels, event_ndims=3, validate_args=False,
                 name="factor_out"):
        parameters = dict(locals())
        if not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError("num_channels must be a positive integer. "
                             f"Received: num_channels={num_channels!r}")
        self._inner = inner
        self._num_channels = num_channels
        self._event_ndims = event_ndims
        super().__init__(forward_min_event_ndims=event_ndims,
                         validate_args=validate_args, parameters=parameters,
                         name=name)

    @property
    def inner(self):
        return self._inner

    def _apply(self, t, inverse, kwargs):
        channels = t.shape[-1]
        if channels is not None and channels <= self._num_channels:
            raise ValueError(
                f"FactorOut(num_channels={self._num_channels}) needs more "
                f"channels than it transforms. Received: shape={tuple(t.shape)}")
        kept, rest = t[..., :self._num_channels], t[..., self._num_channels:]
        if inverse:
            out = self._inner.inverse(kept, **kwargs)
            ldj = self._inner.inverse_log_det_jacobian(
                kept, event_ndims=self._event_ndims, **kwargs)
        else:
            out = self._inner.forward(kept, **kwargs)
            ldj = self._inner.forward_log_det_jacobian(
                kept, event_ndims=self._event_ndims, **kwargs)
        return tf.concat([out, rest], axis=-1), ldj

    def _forward_and_log_det(self, x, **kwargs):
        return self._apply(x, False, kwargs)

    def _inverse_and_log_det(self, y, **kwargs):
        return self._apply(y, True, kwargs)
