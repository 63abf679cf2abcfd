"""The coupling skeleton shared by additive (NICE) and affine (RealNVP) layers."""

import tensorflow as tf

from tfflows.bijectors._base import FlowBijector, call_conditioner
from tfflows.bijectors.masks import make_mask

__all__ = ["Coupling"]


class Coupling(FlowBijector):
    """Split with a mask, transform part `b` given part `a`, merge.

    Subclasses implement `_transform(x_b, params, inverse)` returning the new
    `b` and its elementwise log-det (or None for a volume-preserving map), and
    `_check_params(params, shape)`.
    """

    def __init__(self, conditioner, event_shape, mask, num_masked, flip,
                 is_constant_jacobian, validate_args, parameters, name):
        if not callable(conditioner):
            raise ValueError("The conditioner must be callable. Received: "
                             f"{type(conditioner).__name__} {conditioner!r}")
        self._conditioner = conditioner
        self._mask_kind = mask
        self._mask = make_mask(mask, event_shape, num_masked, flip)
        self._event_shape_in = self._mask.event_shape
        super().__init__(
            forward_min_event_ndims=len(self._event_shape_in),
            is_constant_jacobian=is_constant_jacobian,
            validate_args=validate_args,
            parameters=parameters,
            name=name)

    @property
    def conditioner(self):
        return self._conditioner

    @property
    def mask(self):
        """The mask kind: "half", "checkerboard" or "channel"."""
        return self._mask_kind

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
        params = call_conditioner(self._conditioner, x_a, kwargs)
        self._check_params(params, self._mask.transformed_shape)
        y_b, elementwise_ldj = self._transform(x_b, params, inverse)
        y = self._mask.merge(x, x_a, y_b)
        if elementwise_ldj is None:
            return y, tf.zeros([], dtype=x.dtype)
        event_axes = list(range(-len(self._event_shape_in), 0))
        ldj = tf.reduce_sum(self._mask.select(elementwise_ldj), axis=event_axes)
        return y, ldj

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
                f"{tuple(shape)} (mask={self._mask_kind!r})")
