"""The elementwise-transformer interface shared by coupling and autoregressive
bijectors."""

import tensorflow as tf

__all__ = ["Transformer"]


class Transformer:
    """A stateless, invertible, elementwise map `y = tau(x; theta)`.

    A coupling or autoregressive bijector asks its conditioner network for
    `num_params` numbers per transformed entry and hands them over as one
    tensor `params` of shape `[..., num_params]`, the entry axes in front
    (`x` of shape `[...]`), or as a tuple of `num_params` tensors shaped
    like `x`, one per parameter (`planes`): what a network whose output is
    parameter-major splits into without moving any value (`MADE.planes`,
    `CouplingMLP`), where stacking would cost a transpose each way of a
    training step. The transformer owns the rest:

    ```none
    forward(x, params)  -> (y, log|dy/dx|)      elementwise, shaped like x
    inverse(y, params)  -> (x, log|dx/dy|)      elementwise, shaped like y
    ```

    The log-dets are `None` for volume-preserving maps
    (`is_constant_jacobian`). Parameters are raw network outputs: a
    transformer maps all-zero parameters (`identity_params`) to the
    identity, so a conditioner whose last layer starts at zero makes a fresh
    flow the identity.

    Subclasses set `name` (its registry key in
    `tfflows.bijectors.transformers.get`) and implement `num_params`,
    `_forward`, `_inverse` and `get_config` (the keyword arguments of
    `__init__`).
    """

    name = None
    is_constant_jacobian = False
    # True if the transformer's many small elementwise ops make XLA pay on a
    # CPU-only host whatever the network (read by the layers'
    # `xla_on_cpu`); None leaves the choice to the network.
    xla_on_cpu = None

    @property
    def num_params(self):
        """Parameters per transformed entry."""
        raise NotImplementedError

    def identity_params(self, shape, dtype=tf.float32):
        """The parameters of the identity map for entries of `shape`: zeros
        `[*shape, num_params]`, the value a zero-initialised network gives."""
        return tf.zeros(list(shape) + [self.num_params], dtype)

    def forward(self, x, params):
        """`(y, log|dy/dx|)`, elementwise; the log-det is None if constant 0."""
        x, params = self._check(x, params)
        return self._forward(x, params)

    def inverse(self, y, params):
        """`(x, log|dx/dy|)`, elementwise; the log-det is None if constant 0."""
        y, params = self._check(y, params)
        return self._inverse(y, params)

    def planes(self, params):
        """`params` as a tuple of `num_params` tensors shaped like the
        entries: a tuple as it is, a tensor `[..., num_params]` unstacked."""
        if isinstance(params, tuple):
            return params
        return tuple(tf.unstack(params, self.num_params, axis=-1))

    def _forward(self, x, params):
        raise NotImplementedError

    def _inverse(self, y, params):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        """The transformer `get_config` describes."""
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return (type(self) is type(other)
                and self.get_config() == other.get_config())

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def _check(self, x, params):
        x = tf.convert_to_tensor(x)
        if isinstance(params, (tuple, list)):
            if len(params) != self.num_params:
                raise ValueError(
                    f"{type(self).__name__} takes {self.num_params} parameters per "
                    f"entry: a tensor [..., {self.num_params}] or {self.num_params} "
                    f"tensors shaped like the entries. Received: {len(params)} tensors")
            return x, tuple(tf.cast(tf.convert_to_tensor(p, dtype_hint=x.dtype), x.dtype)
                            for p in params)
        params = tf.convert_to_tensor(params, dtype_hint=x.dtype)
        params = tf.cast(params, x.dtype)
        last = params.shape[-1] if params.shape.rank else None
        if params.shape.rank == 0 or (last is not None and last != self.num_params):
            raise ValueError(
                f"{type(self).__name__} takes {self.num_params} parameters per "
                f"entry on the last axis (params [..., {self.num_params}]). "
                f"Received: params.shape={tuple(params.shape)}")
        return x, params
