"""NICE's additive coupling: `Coupling` with the additive transformer."""

import tensorflow as tf

from tfflows.bijectors.coupling import Coupling
from tfflows.bijectors.transformers import Additive

__all__ = ["AdditiveCoupling"]


class AdditiveCoupling(Coupling):
    """Additive coupling bijector, `forward` latent -> data: a volume-preserving shift of one part by the other.

    With the event split by a mask into a conditioning part `x_a` and a
    transformed part `x_b`:

    ```none
    forward:  y_a = x_a,  y_b = x_b + m(x_a)
    inverse:  x_a = y_a,  x_b = y_b - m(y_a)
    log|det J| = 0
    ```

    `tfflows.bijectors.Coupling` with `transformers.Additive`, for a
    conditioner returning the shift itself. `m` (`shift_fn`) is any
    callable, e.g. a Keras network; it is called once per direction and
    never needs to be inverted.

    References:
      Laurent Dinh, David Krueger, Yoshua Bengio (2015). NICE: Non-linear
      Independent Components Estimation. https://arxiv.org/abs/1410.8516

    Args:
      shift_fn: callable `x_a -> shift` (plus condition kwargs such as
        `context`, forwarded from `forward(x, **kwargs)`), returning a tensor
        shaped like the transformed part.
      event_shape: `[D]` for `mask="half"`; `[H, W, C]` for image masks.
      mask: `"half"`, `"checkerboard"` or `"channel"` (see `tfflows.bijectors.masks`).
      num_masked: `half` only: entries that condition, in `[1, D - 1]`
        (default `D // 2`).
      flip: swap which part conditions.
      validate_args: check inputs are finite.
      name: bijector name.

    Example:
      >>> import tensorflow as tf, tfflows as tff
      >>> b = tff.bijectors.AdditiveCoupling(lambda xa: 2. * xa, event_shape=[4])
      >>> b.forward(tf.ones([3, 4])).shape
      TensorShape([3, 4])
    """

    def __init__(self, shift_fn, event_shape, mask="half", num_masked=None,
                 flip=False, validate_args=False, name="additive_coupling"):
        parameters = dict(locals())
        super().__init__(shift_fn, event_shape, transformer=Additive(),
                         mask=mask, num_masked=num_masked, flip=flip,
                         validate_args=validate_args, name=name,
                         parameters=parameters)

    def _params(self, shift):
        self._check_param_shape(shift, "shift", self._mask.transformed_shape)
        return (tf.convert_to_tensor(shift),)
