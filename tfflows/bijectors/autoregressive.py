"""One autoregressive bijector (MAF / IAF) for every elementwise transformer."""

import tensorflow as tf

from tfflows.bijectors import transformers as transformers_
from tfflows.bijectors._base import FlowBijector, call_conditioner

__all__ = ["Autoregressive"]


class Autoregressive(FlowBijector):
    """Autoregressive bijector, `forward` latent -> data (MAF; IAF with `iaf=True`).

    With `theta(x)` autoregressive (the parameters of entry `i` depend only
    on the entries before `i` in some order, as a MADE's do) and an
    elementwise transformer `tau`:

    ```none
    forward (sampling, D passes):   x_i = tau(z_i; theta_i(x_<i))
    inverse (density, one pass):    z_i = tau^-1(x_i; theta_i(x))
    log|det dx/dz| = sum_i log|tau'(z_i; theta_i)|
    ```

    With `iaf=True` the two directions swap (the bijector is `tfb.Invert`
    of the one above): sampling is one pass and the density of a new point
    takes D passes, as in IAF. The sequential direction runs either
    `solve_fn` (e.g. `tfflows.nn.MADE.solve`: D static steps, each computing
    only what the next entry needs) or a `tf.while_loop` of exactly D
    network calls, the
    last of which also yields the log-det; the one-pass direction calls the
    network once.

    References:
      George Papamakarios, Theo Pavlakou, Iain Murray (2017). Masked
      Autoregressive Flow for Density Estimation.
      https://arxiv.org/abs/1705.07057
      Diederik P. Kingma, Tim Salimans, Rafal Jozefowicz, Xi Chen, Ilya
      Sutskever, Max Welling (2016). Improved Variational Inference with
      Inverse Autoregressive Flow. https://arxiv.org/abs/1606.04934
      Conor Durkan, Artur Bekasov, Iain Murray, George Papamakarios (2019).
      Neural Spline Flows. https://arxiv.org/abs/1906.04032

    Args:
      conditioner: callable `x -> theta`, `[..., D, num_params]` or a
        tuple of `num_params` tensors `[..., D]`, with the autoregressive
        property (e.g. `tfflows.nn.MADE` with the transformer's
        `num_params`, or its `planes`). Condition kwargs such as `context`
        are forwarded to it.
      transformer: a `tfflows.bijectors.transformers.Transformer`, or its
        name ("additive", "affine", "spline") with defaults.
      event_size: D, if known; checked against inputs.
      iaf: swap directions (IAF: one-pass sampling).
      solve_fn: optional callable, `solve_fn(z, transform,
        **condition_kwargs) -> (x, log_det)`, solving the sequential
        direction itself (as `tfflows.nn.MADE.solve`, given the conditioner's
        MADE): `transform(z_d, params)` is the transformer's forward on the
        entries of one input and their parameters, a tuple of `num_params`
        tensors; `log_det` is the summed per-entry log-det or None. Needs
        `event_size`.
      validate_args: check inputs are finite.
      name: bijector name.
      parameters: for subclasses, their own `dict(locals())` (TFP's
        `parameters`); None records this constructor's arguments.
    """

    def __init__(self, conditioner, transformer="affine", event_size=None,
                 iaf=False, solve_fn=None, validate_args=False,
                 name="autoregressive", parameters=None):
        parameters = dict(locals()) if parameters is None else parameters
        if not callable(conditioner):
            raise ValueError(f"The conditioner must be callable. Received: "
                             f"{conditioner!r}")
        if event_size is not None and (isinstance(event_size, bool)
                                       or not isinstance(event_size, int)
                                       or event_size < 1):
            raise ValueError("event_size must be a positive integer or None. "
                             f"Received: event_size={event_size!r}")
        if solve_fn is not None and (event_size is None or not callable(solve_fn)):
            raise ValueError("solve_fn must be callable and needs event_size. "
                             f"Received: solve_fn={solve_fn!r}, "
                             f"event_size={event_size!r}")
        self._fn = conditioner
        self._transformer = transformers_.get(transformer)
        self._solve_fn = solve_fn
        self._event_size = event_size
        self._iaf = bool(iaf)
        super().__init__(
            forward_min_event_ndims=1,
            is_constant_jacobian=self._transformer.is_constant_jacobian,
            validate_args=validate_args, parameters=parameters, name=name)

    @property
    def iaf(self):
        return self._iaf

    @property
    def transformer(self):
        return self._transformer

    def _params(self, x, kwargs):
        """The conditioner's `[..., D, num_params]` at `x`, checked."""
        return self._check_params(self._params_raw(x, kwargs),
                                  (x.shape[-1], self._transformer.num_params))

    def _params_raw(self, x, kwargs):
        return call_conditioner(self._fn, x, kwargs)

    def _step_params(self, params):
        """Hook: the parameters `solve_fn` hands its `transform`, checked."""
        return self._check_params(params, (self._transformer.num_params,))

    def _check_params(self, params, expected):
        """`params` if it is `[..., *expected]`, or `expected[-1]` tensors
        `[..., *expected[:-1]]` (the transformer's planes); raises if not."""
        if isinstance(params, (tuple, list)):
            if len(params) != expected[-1]:
                raise ValueError(
                    f"{type(self).__name__}'s network returned {len(params)} tensors; "
                    f"{self._transformer!r} takes {expected[-1]} parameters per entry "
                    f"(a tensor [..., {', '.join(map(str, expected))}] or "
                    f"{expected[-1]} tensors)")
            return tuple(self._check_params(plane, expected[:-1]) for plane in params)
        shape = getattr(params, "shape", None)
        if shape is None:
            raise ValueError(f"{type(self).__name__}'s network must return a "
                             f"tensor. Received: {type(params).__name__}")
        if shape.rank is not None:
            trailing = tuple(shape[-len(expected):])
            if len(trailing) < len(expected) or any(
                    t is not None and e is not None and t != e
                    for t, e in zip(trailing, expected)):
                raise ValueError(
                    f"{type(self).__name__}'s network must return parameters "
                    f"[..., {', '.join(map(str, expected))}] for "
                    f"{self._transformer!r}. Received: shape={tuple(shape)}")
        return params

    @staticmethod
    def _sum(log_det, like):
        if log_det is None:
            return tf.zeros([], like.dtype)
        return tf.reduce_sum(log_det, -1)

    def _one_pass(self, x, kwargs):
        """z = tau^-1(x; theta(x)); returns (z, log|det dz/dx|)."""
        z, log_det = self._transformer.inverse(x, self._params(x, kwargs))
        return z, self._sum(log_det, x)

    def _solved(self, z, kwargs):
        """Solves x from z by `solve_fn` (one input at a time)."""
        def transform(entries, params):
            return self._transformer.forward(entries, self._step_params(params))

        x, log_det = self._solve_fn(z, transform, **kwargs)
        if log_det is None or self._transformer.is_constant_jacobian:
            return x, tf.zeros([], z.dtype)
        return x, log_det

    def _sequential(self, z, kwargs):
        """Solves x from z = tau^-1(x; theta(x)) in D network passes.

        After pass k the first k entries (in the autoregressive order) of
        `x` are exact; the log-det of pass D depends only on exact inputs,
        so it needs no further pass.
        """
        event_size = tf.shape(z)[-1]

        def body(x, unused_log_det):
            out, log_det = self._transformer.forward(z, self._params(x, kwargs))
            return out, (tf.zeros_like(z) if log_det is None else log_det)

        x, log_det = tf.while_loop(
            cond=lambda *_: True, body=body,
            loop_vars=(tf.zeros_like(z), tf.zeros_like(z)),
            maximum_iterations=event_size)
        if self._transformer.is_constant_jacobian:
            return x, tf.zeros([], z.dtype)
        return x, tf.reduce_sum(log_det, -1)

    def _run(self, t, name, one_pass, kwargs):
        if self._event_size is not None:
            self._check_event_shape(t, (self._event_size,), name)
        if one_pass:
            return self._one_pass(t, kwargs)
        if self._solve_fn is not None:
            return self._solved(t, kwargs)
        return self._sequential(t, kwargs)

    def _forward_and_log_det(self, x, **kwargs):
        return self._run(x, "x", self._iaf, kwargs)

    def _inverse_and_log_det(self, y, **kwargs):
        return self._run(y, "y", not self._iaf, kwargs)
