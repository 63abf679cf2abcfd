"""RealNVP's affine coupling: `Coupling` with the affine transformer."""

import tensorflow as tf

from tfflows.bijectors.coupling import Coupling
from tfflows.bijectors.transformers import Affine

__all__ = ["AffineCoupling"]


class AffineCoupling(Coupling):
    """Affine coupling bijector, `forward` latent -> data: scale and shift one part given the other.

    With the event split by a mask into a conditioning part `x_a` and a
    transformed part `x_b`, and `(t, s_raw) = f(x_a)`:

    ```none
    s = s_raw / (1 + |s_raw| / c)               (soft clamp, c = log_scale_clamp)
    forward:  y_a = x_a,  y_b = x_b * exp(s) + t
    inverse:  x_a = y_a,  x_b = (y_b - t) * exp(-s)
    log|det dy/dx| = sum(s over the transformed entries)
    ```

    `tfflows.bijectors.Coupling` with `transformers.Affine`, for a
    conditioner returning the pair `(shift, log_scale)`. `f` is called once
    per direction: the output and its log-det come from the same call, and
    TFP's cache hands the log-det to `inverse_log_det_jacobian` without a
    second network call.

    Masks: `"half"` splits a vector `[..., D]` (`num_masked` entries condition,
    the first ones, or the last with `flip=True`); `"channel"` splits the
    channels of an NHWC image in half; `"checkerboard"` alternates pixels.

    References:
      Laurent Dinh, Jascha Sohl-Dickstein, Samy Bengio (2017). Density
      estimation using Real NVP. https://arxiv.org/abs/1605.08803

    Args:
      shift_and_log_scale_fn: callable `x_a -> (shift, log_scale)` (plus
        condition kwargs such as `context`), each shaped like the transformed
        part (`[..., D - num_masked]` for `half`, `[..., H, W, C/2]` for
        `channel`, `[..., H, W, C]` for `checkerboard`).
      event_shape: `[D]` for `mask="half"`; `[H, W, C]` for image masks.
      mask: `"half"`, `"checkerboard"` or `"channel"`.
      num_masked: `half` only, in `[1, D - 1]`; default `D // 2`.
      flip: swap which part conditions.
      log_scale_clamp: bound `c` of the soft clamp (default 5, so
        `exp(s)` stays in `(e^-5, e^5)`); `None` disables it.
      clamp_form: "rational" (default, above) or "tanh" (`c tanh(s_raw / c)`);
        see `tfflows.bijectors.soft_clamp`.
      validate_args: check inputs are finite.
      name: bijector name.

    Example:
      >>> import tensorflow as tf, tfflows as tff
      >>> net = lambda xa: (tf.zeros_like(xa), 0.5 * tf.ones_like(xa))
      >>> b = tff.bijectors.AffineCoupling(net, event_shape=[2])
      >>> b.forward_log_det_jacobian(tf.zeros([1, 2]), event_ndims=1).numpy()
      array([0.45454544], dtype=float32)
    """

    def __init__(self, shift_and_log_scale_fn, event_shape, mask="half",
                 num_masked=None, flip=False, log_scale_clamp=5.0,
                 validate_args=False, name="affine_coupling",
                 clamp_form="rational"):
        parameters = dict(locals())
        super().__init__(shift_and_log_scale_fn, event_shape,
                         transformer=Affine(log_scale_clamp, "data", clamp_form), mask=mask,
                         num_masked=num_masked, flip=flip,
                         validate_args=validate_args, name=name,
                         parameters=parameters)

    def _params(self, params):
        if not isinstance(params, (tuple, list)) or len(params) != 2:
            raise ValueError(
                "AffineCoupling's conditioner must return a pair "
                f"(shift, log_scale). Received: {type(params).__name__}")
        shape = self._mask.transformed_shape
        self._check_param_shape(params[0], "shift", shape)
        self._check_param_shape(params[1], "log_scale", shape)
        shift = tf.convert_to_tensor(params[0])
        log_scale = tf.convert_to_tensor(params[1], shift.dtype)
        if (shift.shape.rank == log_scale.shape.rank
                and shift.shape.is_compatible_with(log_scale.shape)):
            return shift, log_scale
        shape = tf.broadcast_dynamic_shape(tf.shape(shift), tf.shape(log_scale))
        return tf.broadcast_to(shift, shape), tf.broadcast_to(log_scale, shape)
