"""One coupling bijector for every elementwise transformer."""

import tensorflow as tf

from tfflows.bijectors import transformers as transformers_
from tfflows.bijectors._base import FlowBijector, call_conditioner
from tfflows.bijectors.masks import make_mask

__all__ = ["Coupling"]


class Coupling(FlowBijector):
    """Coupling bijector, `forward` latent -> data: part `b` transformed given part `a`.

    A mask splits the event into a conditioning part `x_a` and a transformed
    part `x_b`; the conditioner maps `x_a` to `theta`, `num_params` raw
    parameters per entry of `x_b`, and an elementwise transformer `tau`
    (additive, affine, rational-quadratic spline, ...) does the rest:

    ```none
    forward:  y_a = x_a,  y_b = tau(x_b; theta(x_a))
    inverse:  x_a = y_a,  x_b = tau^-1(y_b; theta(y_a))
    log|det dy/dx| = sum over the transformed entries of log|tau'(x_b)|
    ```

    The conditioner is called once per direction; TFP's cache hands the
    log-det computed with the output to `*_log_det_jacobian`. A conditioner
    whose last layer starts at zero makes a fresh coupling the identity.

    References:
      Laurent Dinh, David Krueger, Yoshua Bengio (2015). NICE: Non-linear
      Independent Components Estimation. https://arxiv.org/abs/1410.8516
      Conor Durkan, Artur Bekasov, Iain Murray, George Papamakarios (2019).
      Neural Spline Flows. https://arxiv.org/abs/1906.04032

    Args:
      conditioner: callable `x_a -> theta` (plus condition kwargs such as
        `context`), `theta` shaped `[..., *mask_shape_b, num_params]`; the
        mask's `conditioner_input_shape` is the event shape of `x_a`.
      event_shape: `[D]` for `mask="half"`; `[H, W, C]` for image masks.
      transformer: a `tfflows.bijectors.transformers.Transformer`, or its
        name ("additive", "affine", "spline") with defaults.
      mask: "half", "checkerboard" or "channel"
        (`tfflows.bijectors.masks`).
      num_masked: "half" only: entries that condition, in `[1, D - 1]`
        (default `D // 2`).
      flip: swap which part conditions.
      validate_args: check inputs are finite.
      name: bijector name.
      parameters: for subclasses, their own `dict(locals())` (TFP's
        `parameters`); None records this constructor's arguments.

    Example:
      >>> import tensorflow as tf, tfflows as tff
      >>> spline = tff.bijectors.transformers.get("spline", bins=4)
      >>> net = lambda xa: tf.zeros(xa.shape[:-1] + (2, spline.num_params))
      >>> b = tff.bijectors.Coupling(net, event_shape=[4], transformer=spline)
      >>> b.forward(tf.ones([3, 4])).numpy()[0]
      array([1., 1., 1., 1.], dtype=float32)
    """

    def __init__(self, conditioner, event_shape, transformer="affine",
                 mask="half", num_masked=None, flip=False, validate_args=False,
                 name="coupling", parameters=None):
        parameters = dict(locals()) if parameters is None else parameters
        if not callable(conditioner):
            raise ValueError("The conditioner must be callable. Received: "
                             f"{type(conditioner).__name__} {conditioner!r}")
        self._conditioner = conditioner
        self._transformer = transformers_.get(transformer)
        self._mask_kind = mask
        self._mask = make_mask(mask, event_shape, num_masked, flip)
        self._event_shape_in = self._mask.event_shape
        super().__init__(
            forward_min_event_ndims=len(self._event_shape_in),
            is_constant_jacobian=self._transformer.is_constant_jacobian,
            validate_args=validate_args, parameters=parameters, name=name)

    @property
    def conditioner(self):
        return self._conditioner

    @property
    def transformer(self):
        return self._transformer

    @property
    def mask(self):
        """The mask kind: "half", "checkerboard" or "channel"."""
        return self._mask_kind

    @property
    def mask_layout(self):
        """The mask object (`split`, `merge`, `conditioner_input_shape`...)."""
        return self._mask

    @property
    def event_shape(self):
        return self._event_shape_in

    def _forward_and_log_det(self, x, **kwargs):
        return self._couple(x, inverse=False, name="x", kwargs=kwargs)

    def _inverse_and_log_det(self, y, **kwargs):
        return self._couple(y, inverse=True, name="y", kwargs=kwargs)

    def _couple(self, x, inverse, name, kwargs):
        self._check_event_shape(x, self._event_shape_in, name)
        x_a, x_b = self._mask.split(x)
        params = self._params(call_conditioner(self._conditioner, x_a, kwargs))
        apply = self._transformer.inverse if inverse else self._transformer.forward
        y_b, elementwise_ldj = apply(x_b, params)
        y = self._mask.merge(x, x_a, y_b)
        if elementwise_ldj is None:
            return y, tf.zeros([], dtype=x.dtype)
        event_axes = list(range(-len(self._event_shape_in), 0))
        ldj = tf.reduce_sum(self._mask.select(elementwise_ldj), axis=event_axes)
        return y, ldj

    def _params(self, params):
        """Checks the conditioner's output: `[..., *shape_b, num_params]`, or
        `num_params` tensors `[..., *shape_b]` (the transformer's planes)."""
        shape = tuple(self._mask.transformed_shape)
        count = self._transformer.num_params
        if isinstance(params, (tuple, list)):
            if len(params) != count:
                raise ValueError(
                    f"{type(self).__name__}'s conditioner returned {len(params)} "
                    f"tensors; {self._transformer!r} takes {count} parameters per "
                    f"entry (a tensor [..., *shape, {count}] or {count} tensors)")
            for plane in params:
                self._check_param_shape(plane, "parameter", shape)
            return tuple(params)
        self._check_param_shape(params, "params", shape + (count,))
        return params

    def _check_param_shape(self, value, what, shape):
        """Raises if a conditioner output cannot act on part `b`."""
        value_shape = getattr(value, "shape", None)
        if value_shape is None:
            raise ValueError(
                f"{type(self).__name__}'s conditioner must return tensors; its "
                f"{what} is {type(value).__name__}")
        rank = len(shape)
        if value_shape.rank is None or value_shape.rank < rank:
            return
        trailing = tuple(value_shape[-rank:])
        if any(t is not None and t != s for t, s in zip(trailing, shape)):
            raise ValueError(
                f"{type(self).__name__}'s conditioner returned a {what} with "
                f"event shape {trailing}; the transformed part has shape "
                f"{tuple(shape)} (mask={self._mask_kind!r}, "
                f"transformer={self._transformer!r})")
