"""Masked autoregressive flows: MAF, and IAF as its inverse."""

import tensorflow as tf

from tfflows.bijectors._base import (FlowBijector, call_conditioner,
                                     soft_clamp, validate_clamp)

__all__ = ["MaskedAutoregressive"]


class MaskedAutoregressive(FlowBijector):
    """An affine autoregressive transform driven by a MADE-like network.

    With `(mu, s) = f(x)` autoregressive (output `i` depends only on the
    inputs before `i` in some order), MAF's two directions are:

    ```none
    forward (sampling, D passes):   x_i = z_i * exp(s_i(x_<i)) + mu_i(x_<i)
    inverse (density, one pass):    z = (x - mu(x)) * exp(-s(x))
    log|det dx/dz| = sum_i s_i(x)
    ```

    With `iaf=True` the two directions swap (the bijector is
    `tfb.Invert` of the MAF above): sampling is one pass and density
    evaluation of a new point takes D passes, as in IAF. Either way, the
    sequential direction runs a `tf.while_loop` of exactly D network calls,
    the last of which also yields the log-det; the one-pass direction calls
    the network once. `s` is soft-clamped (`c * tanh(s / c)`).

    References:
      George Papamakarios, Theo Pavlakou, Iain Murray (2017). Masked
      Autoregressive Flow for Density Estimation.
      https://arxiv.org/abs/1705.07057
      Diederik P. Kingma, Tim Salimans, Rafal Jozefowicz, Xi Chen, Ilya
      Sutskever, Max Welling (2016). Improved Variational Inference with
      Inverse Autoregressive Flow. https://arxiv.org/abs/1606.04934

    Args:
      shift_and_log_scale_fn: callable `x -> (shift, log_scale)`, each
        `[..., D]`, with the autoregressive property (e.g. `tfflows.nn.MADE`
        with `num_params=2`, unstacked on the last axis). Condition kwargs
        such as `context` are forwarded to it.
      event_size: D, if known; checked against inputs.
      make_step_fn: optional callable, `make_step_fn(**condition_kwargs)`
        returning `step_fn(x, step) -> ((shift, log_scale), column)`, the
        parameters of the input of degree `step + 1` alone (as
        `tfflows.nn.MADE.step_fn`). Called once per sequential solve. With it
        and `event_size`, the sequential direction runs D static steps that
        each compute only what that input needs, instead of D full passes.
      iaf: swap directions (IAF: one-pass sampling).
      log_scale_clamp: soft clamp bound `c` (default 5); None disables it.
      validate_args: check inputs are finite.
      name: bijector name.
    """

    def __init__(self, shift_and_log_scale_fn, event_size=None, iaf=False,
                 log_scale_clamp=5.0, make_step_fn=None, validate_args=False,
                 name="masked_autoregressive"):
        parameters = dict(locals())
        if not callable(shift_and_log_scale_fn):
            raise ValueError(
                "shift_and_log_scale_fn must be callable. Received: "
                f"{shift_and_log_scale_fn!r}")
        if event_size is not None and (not isinstance(event_size, int)
                                       or event_size < 1):
            raise ValueError("event_size must be a positive integer or None. "
                             f"Received: event_size={event_size!r}")
        if make_step_fn is not None and (event_size is None
                                         or not callable(make_step_fn)):
            raise ValueError("make_step_fn must be callable and needs event_size. "
                             f"Received: make_step_fn={make_step_fn!r}, "
                             f"event_size={event_size!r}")
        self._fn = shift_and_log_scale_fn
        self._make_step_fn = make_step_fn
        self._event_size = event_size
        self._iaf = bool(iaf)
        self._log_scale_clamp = validate_clamp(log_scale_clamp)
        super().__init__(forward_min_event_ndims=1,
                         validate_args=validate_args,
                         parameters=parameters, name=name)

    @property
    def iaf(self):
        return self._iaf

    def _shift_and_log_scale(self, x, kwargs):
        params = call_conditioner(self._fn, x, kwargs)
        if not isinstance(params, (tuple, list)) or len(params) != 2:
            raise ValueError(
                "MaskedAutoregressive's network must return a pair "
                f"(shift, log_scale). Received: {type(params).__name__}")
        shift, log_scale = params
        log_scale = soft_clamp(tf.convert_to_tensor(log_scale, x.dtype),
                               self._log_scale_clamp)
        return shift, log_scale

    def _one_pass(self, x, kwargs):
        """z = (x - mu(x)) * exp(-s(x)); returns (z, log|det dz/dx|)."""
        shift, log_scale = self._shift_and_log_scale(x, kwargs)
        return (x - shift) * tf.exp(-log_scale), -tf.reduce_sum(log_scale, -1)

    def _stepwise(self, z, kwargs):
        """Solves x from z one input at a time: D static steps, step k
        filling the input of degree k + 1 from the ones before it."""
        step_fn = self._make_step_fn(**kwargs)
        x = tf.zeros_like(z)
        log_det = tf.zeros(tf.shape(z)[:-1], z.dtype)
        for step in range(self._event_size):
            (shift, log_scale), column = step_fn(x, step)
            log_scale = soft_clamp(tf.convert_to_tensor(log_scale, z.dtype),
                                   self._log_scale_clamp)
            value = z[..., column] * tf.exp(log_scale) + shift
            x = x + value[..., tf.newaxis] * tf.one_hot(column, self._event_size,
                                                        dtype=z.dtype)
            log_det = log_det + log_scale
        return x, log_det

    def _sequential(self, z, kwargs):
        """Solves x from z = (x - mu(x)) * exp(-s(x)) in D network passes.

        After pass k the first k dimensions (in the autoregressive order) of
        `x` are exact; the log-scale of pass D depends only on exact inputs,
        so it gives the log-det without another pass.
        """
        event_size = tf.shape(z)[-1]

        def body(x, unused_log_scale):
            shift, log_scale = self._shift_and_log_scale(x, kwargs)
            return z * tf.exp(log_scale) + shift, log_scale

        x, log_scale = tf.while_loop(
            cond=lambda *_: True,
            body=body,
            loop_vars=(tf.zeros_like(z), tf.zeros_like(z)),
            maximum_iterations=event_size)
        return x, tf.reduce_sum(log_scale, -1)

    def _run(self, t, name, one_pass, kwargs):
        if self._event_size is not None:
            self._check_event_shape(t, (self._event_size,), name)
        if one_pass:
            return self._one_pass(t, kwargs)
        if self._make_step_fn is not None:
            return self._stepwise(t, kwargs)
        return self._sequential(t, kwargs)

    def _forward_and_log_det(self, x, **kwargs):
        return self._run(x, "x", self._iaf, kwargs)

    def _inverse_and_log_det(self, y, **kwargs):
        return self._run(y, "y", not self._iaf, kwargs)
