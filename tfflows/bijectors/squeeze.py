"""Space-to-depth squeeze for multi-scale image flows."""

import tensorflow as tf

from tfflows.bijectors._base import FlowBijector

__all__ = ["Squeeze"]


def _flatten_batch(t):
    """[..., H, W, C] -> [N, H, W, C], plus the batch shape to restore."""
    shape = tf.shape(t)
    return tf.reshape(t, tf.concat([[-1], shape[-3:]], 0)), shape[:-3]


def _restore_batch(t, batch_shape):
    return tf.reshape(t, tf.concat([batch_shape, tf.shape(t)[1:]], 0))


class Squeeze(FlowBijector):
    """Trades space for channels: `[H, W, C] -> [H/f, W/f, f*f*C]`.

    ```none
    forward:  y[i, j, (a*f + b)*C + c] = x[f*i + a, f*j + b, c]   (space-to-depth)
    inverse:  depth-to-space, the exact inverse
    log|det J| = 0   (a permutation of the entries)
    ```

    Forward is space-to-depth, as the name says; a multi-scale flow whose
    forward direction runs latent -> data uses `tfb.Invert(Squeeze())`.
    Uses `tf.nn.space_to_depth`, which maps to ONNX's SpaceToDepth.

    References:
      Laurent Dinh, Jascha Sohl-Dickstein, Samy Bengio (2017). Density
      estimation using Real NVP. https://arxiv.org/abs/1605.08803

    Args:
      factor: block size f (default 2); H and W must be multiples of it.
      validate_args: check inputs are finite.
      name: bijector name.
    """

    def __init__(self, factor=2, validate_args=False, name="squeeze"):
        parameters = dict(locals())
        if not isinstance(factor, int) or factor < 2:
            raise ValueError("factor must be an integer >= 2. "
                             f"Received: factor={factor!r}")
        self._factor = factor
        super().__init__(forward_min_event_ndims=3, is_constant_jacobian=True,
                         validate_args=validate_args, parameters=parameters,
                         name=name)

    @property
    def factor(self):
        return self._factor

    def _squeezed_shape(self, shape, name):
        """Static event shape after space-to-depth; checks divisibility."""
        shape = tf.TensorShape(shape)
        if shape.rank is not None and shape.rank < 3:
            raise ValueError(f"Squeeze needs NHWC images [..., H, W, C]. "
                             f"Received: {name}.shape={tuple(shape)}")
        if shape.rank is None:
            return tf.TensorShape(None)
        h, w, c = shape[-3:]
        f = self._factor
        for dim, size in (("height", h), ("width", w)):
            if size is not None and size % f:
                raise ValueError(
                    f"Squeeze(factor={f}) needs {dim} divisible by {f}. "
                    f"Received: {name}.shape={tuple(shape)}")
        div = lambda d: None if d is None else d // f
        mul = lambda d: None if d is None else d * f * f
        return shape[:-3].concatenate([div(h), div(w), mul(c)])

    def _unsqueezed_shape(self, shape, name):
        shape = tf.TensorShape(shape)
        if shape.rank is None:
            return shape
        if shape.rank < 3:
            raise ValueError(f"Squeeze needs NHWC images [..., H, W, C]. "
                             f"Received: {name}.shape={tuple(shape)}")
        h, w, c = shape[-3:]
        f = self._factor
        if c is not None and c % (f * f):
            raise ValueError(
                f"Squeeze(factor={f}).inverse needs channels divisible by "
                f"{f * f}. Received: {name}.shape={tuple(shape)}")
        mul = lambda d: None if d is None else d * f
        div = lambda d: None if d is None else d // (f * f)
        return shape[:-3].concatenate([mul(h), mul(w), div(c)])

    def _forward_and_log_det(self, x):
        self._squeezed_shape(x.shape, "x")
        flat, batch = _flatten_batch(x)
        y = _restore_batch(tf.nn.space_to_depth(flat, self._factor), batch)
        return y, tf.zeros([], x.dtype)

    def _inverse_and_log_det(self, y):
        self._unsqueezed_shape(y.shape, "y")
        flat, batch = _flatten_batch(y)
        x = _restore_batch(tf.nn.depth_to_space(flat, self._factor), batch)
        return x, tf.zeros([], y.dtype)

    def _forward_event_shape(self, input_shape):
        return self._squeezed_shape(input_shape, "x")

    def _inverse_event_shape(self, output_shape):
        return self._unsqueezed_shape(output_shape, "y")

    def _forward_event_shape_tensor(self, input_shape):
        f = self._factor
        return tf.concat([input_shape[:-3], input_shape[-3:-1] // f,
                          input_shape[-1:] * f * f], 0)

    def _inverse_event_shape_tensor(self, output_shape):
        f = self._factor
        return tf.concat([output_shape[:-3], output_shape[-3:-1] * f,
                          output_shape[-1:] // (f * f)], 0)
