"""The base class of every tfflows bijector: one primitive per direction.

A subclass implements `_forward_and_log_det(x)` and `_inverse_and_log_det(y)`,
each returning the output and the log-det reduced to the batch shape (distrax's
pair). TFP's greedy-attribute cache stores the log-det computed alongside the
output, so `inverse(y)` followed by `inverse_log_det_jacobian(y)` (what
`TransformedDistribution.log_prob` does) runs the conditioner network once.
"""

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

__all__ = ["FlowBijector", "soft_clamp"]


class FlowBijector(tfp.bijectors.Bijector):
    """A `tfp.bijectors.Bijector` defined by its two `(output, log_det)` maps.

    Subclasses implement:

    - `_forward_and_log_det(x, **kwargs) -> (y, log|det dy/dx|)`
    - `_inverse_and_log_det(y, **kwargs) -> (x, log|det dx/dy|)`

    with log-dets reduced over `forward_min_event_ndims` (or a scalar when the
    Jacobian is constant). Everything else (`forward`, `inverse`, both log-det
    methods, caching) derives from these two.

    With `validate_args=True` every input is checked to be finite, and the
    error says whether NaN or Inf was found.
    """

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
            forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    # Identity, not parameter values, decides equality and hashing (TFP
    # hashes parameters, and its cache is shared by equal bijectors): two
    # bijectors bound to the same variables must not share cached outputs,
    # or a result computed before a training step would be served after it.
    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other

    # A subclass whose output alone is cheaper than the output with its
    # log-det (a continuous flow: the trace costs D or P extra network
    # copies) sets `_state_only = True` and implements `_forward_only` /
    # `_inverse_only`. Then `forward(x)` alone runs `_forward_only`, and a
    # log-det request runs the pair once and hands its output to TFP's cache
    # (so `forward_log_det_jacobian(x)` then `forward(x)` is one call; the
    # other order is `_forward_only` plus the pair).
    _state_only = False
    _handoff = None

    def _forward_only(self, x, **kwargs):
        raise NotImplementedError

    def _inverse_only(self, y, **kwargs):
        raise NotImplementedError

    def _forward_and_log_det(self, x, **kwargs):
        raise NotImplementedError

    def _inverse_and_log_det(self, y, **kwargs):
        raise NotImplementedError

    # -- TFP's hooks, all derived from the pair above. -------------------------
    def _augmented_forward(self, x, **kwargs):
        handoff = self._handoff
        if handoff is not None and handoff[0] is x:
            return handoff[1], {"ildj": -handoff[2], "output": handoff[1]}
        x = self._check_finite(x, "x")
        if self._state_only:
            return self._forward_only(x, **kwargs), {}
        y, fldj = self._forward_and_log_det(x, **kwargs)
        return y, {"ildj": -fldj}

    def _augmented_inverse(self, y, **kwargs):
        handoff = self._handoff
        if handoff is not None and handoff[0] is y:
            return handoff[1], {"ildj": handoff[2], "output": handoff[1]}
        y = self._check_finite(y, "y")
        if self._state_only:
            return self._inverse_only(y, **kwargs), {}
        x, ildj = self._inverse_and_log_det(y, **kwargs)
        return x, {"ildj": ildj}

    def _hand_to_cache(self, direction, key, output, log_det, kwargs):
        """Stores `output` for `key` in TFP's cache (if that entry has no
        output yet) by serving it to the cache's own call. The cache holds
        outputs weakly; the entry's attributes keep this one alive as long
        as `key` is (eagerly, nothing else holds it)."""
        self._handoff = (key, output, log_det)
        try:
            getattr(self._cache, direction)(key, **kwargs)
        finally:
            self._handoff = None

    def _forward(self, x, **kwargs):
        return self._augmented_forward(x, **kwargs)[0]

    def _inverse(self, y, **kwargs):
        return self._augmented_inverse(y, **kwargs)[0]

    def _forward_log_det_jacobian(self, x, **kwargs):
        if not self._state_only:
            return -self._augmented_forward(x, **kwargs)[1]["ildj"]
        y, fldj = self._forward_and_log_det(self._check_finite(x, "x"), **kwargs)
        self._hand_to_cache("forward", x, y, fldj, kwargs)
        return fldj

    def _inverse_log_det_jacobian(self, y, **kwargs):
        if not self._state_only:
            return self._augmented_inverse(y, **kwargs)[1]["ildj"]
        x, ildj = self._inverse_and_log_det(self._check_finite(y, "y"), **kwargs)
        self._hand_to_cache("inverse", y, x, ildj, kwargs)
        return ildj

    @classmethod
    def _parameter_properties(cls, dtype):
        # Parameters carry no batch dimensions: one transform for the whole batch.
        return dict()

    def _check_finite(self, t, name):
        if not self.validate_args:
            return t
        message = (f"{type(self).__name__} received a non-finite input `{name}` "
                              "(NaN or Inf); clean or mask the data before the flow")
        return tf.debugging.check_numerics(t, message)

    def _check_event_shape(self, t, expected, name):
        """Raises ValueError if the static event shape of `t` is not `expected`."""
        expected = tuple(expected)
        rank = len(expected)
        shape = t.shape
        if shape.rank is not None and shape.rank < rank:
            raise ValueError(
                    f"{type(self).__name__} expects `{name}` with event shape {expected} "
                    f"(rank >= {rank}). Received: {name}.shape={tuple(shape)}")
        if shape.rank is None:
            return
        actual = tuple(shape[-rank:]) if rank else ()
        for a, e in zip(actual, expected):
            if a is not None and e is not None and a != e:
                raise ValueError(
                        f"{type(self).__name__} expects `{name}` with event shape "
                        f"{expected}. Received: {name}.shape={tuple(shape)}")


CLAMP_FORMS = ("rational", "tanh")


def soft_clamp(log_scale, clamp, form="rational"):
    """A smooth bound on a log-scale: the identity near 0, `|.| < clamp`.

    ```none
    form="rational" (default):  s / (1 + |s| / c)
    form="tanh":                c * tanh(s / c)
    ```

    Both keep `exp(log_scale)` finite without the dead gradients of a hard
    clip. Their slopes differ away from 0: `1 / (1 + |s|/c)^2` falls off as
    a power of `|s|`, `1 - tanh^2(s/c)` exponentially; the rational form
    (zuko's) trains affine flows to better held-out likelihoods (measured in
    `tfflows.bijectors.transformers.Affine`). `clamp=None` returns
    `log_scale` unchanged.
    """
    validate_clamp_form(form)
    if clamp is None:
        return log_scale
    clamp = tf.cast(clamp, log_scale.dtype)
    if form == "tanh":
        return clamp * tf.math.tanh(log_scale / clamp)
    return log_scale / (1 + tf.abs(log_scale) / clamp)


def validate_clamp_form(form):
    """Checks a `clamp_form` argument; returns it."""
    if form not in CLAMP_FORMS:
        raise ValueError(f"clamp_form must be one of {CLAMP_FORMS}. Received: "
                         f"clamp_form={form!r}")
    return form


def validate_clamp(clamp):
    """Checks a `log_scale_clamp` argument; returns it as a float or None."""
    if clamp is None:
        return None
    if not isinstance(clamp, (int, float)) or clamp <= 0:
        raise ValueError("log_scale_clamp must be a positive number or None. "
                         f"Received: log_scale_clamp={clamp!r}")
    return float(clamp)


def call_conditioner(fn, inputs, kwargs):
    """Calls a conditioner, passing condition kwargs (e.g. context) if any."""
    return fn(inputs, **kwargs) if kwargs else fn(inputs)
