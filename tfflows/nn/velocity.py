"""The velocity network of continuous flows."""

import keras
from keras import ops

from tfflows._checks import integer, widths
from tfflows.nn.coupling import _with_context

__all__ = ["VelocityMLP", "ACTIVATION_DERIVATIVES"]


def _sigmoid_derivative(a):
    s = ops.sigmoid(a)
    return s * (1 - s)


def _silu_derivative(a):
    s = ops.sigmoid(a)
    return s * (1 + a * (1 - s))


# `activation name -> (a -> activation'(a))`, in plain elementwise ops: what
# `VelocityMLP.jvp` pushes tangents through. Other activations have no
# forward-mode path; the ODE then takes its trace with a GradientTape.
ACTIVATION_DERIVATIVES = {
    "silu": _silu_derivative,
    "tanh": lambda a: 1 - ops.square(ops.tanh(a)),
    "sigmoid": _sigmoid_derivative,
    "softplus": ops.sigmoid,
    "elu": lambda a: ops.where(a > 0, ops.ones_like(a), ops.exp(ops.minimum(a, 0))),
    "relu": lambda a: ops.cast(a > 0, a.dtype),
    "linear": ops.ones_like,
}


@keras.saving.register_keras_serializable(package="tfflows")
class VelocityMLP(keras.layers.Layer):
    """A dense velocity field `v(x, t[, context])`, zero at start.

    Maps `[x, t, context]` through `hidden_units` dense layers to a velocity
    of `x`'s size. The last layer is zero-initialised, so a fresh
    continuous flow is the identity. Smooth activations (the default
    `"silu"`, or `"tanh"`, `"softplus"`) keep the ODE smooth, which the
    fixed-step solver's accuracy relies on; ReLU gives a piecewise-constant
    Jacobian.

    Args:
      event_size: `D`, the size of `x` and of the velocity.
      hidden_units: widths of the hidden layers.
      activation: hidden activation.
      context_dim: size of the context input, or None.

    Input shape:
      `x` `[..., D]`; `t` a scalar, `[...]` or `[..., 1]`; `context`
      `[..., context_dim]` (or `[context_dim]`) if set.

    Output shape:
      `[..., D]`.

    `jvp(x, t, tangents, context)` gives `v` and the Jacobian-vector
    products `(∂v/∂x) ε` for a stack of tangents `ε` in one forward pass
    of plain ops (matmuls and the activation's derivative, no
    GradientTape): the continuous flow's trace `Σ_p ε_pᵀ J ε_p` without a
    backward pass, and a graph tf2onnx converts inside the solver's loop.
    Available for the activations of `ACTIVATION_DERIVATIVES`
    (`has_jvp`).
    """

    def __init__(self, event_size, hidden_units=(64, 64, 64), activation="silu",
                 context_dim=None, **kwargs):
        super().__init__(**kwargs)
        self.event_size = integer("event_size", event_size)
        self.hidden_units = widths("hidden_units", hidden_units)
        self.activation = keras.activations.get(activation)
        self.context_dim = integer("context_dim", context_dim, optional=True)
        self._hidden = [keras.layers.Dense(u, activation=self.activation,
                                           dtype=self.dtype_policy)
                        for u in self.hidden_units]
        self._out = keras.layers.Dense(self.event_size, kernel_initializer="zeros",
                                       bias_initializer="zeros",
                                       dtype=self.dtype_policy)

    def call(self, x, t, context=None):
        batch_shape = tuple(ops.shape(x)[:-1])
        t = ops.cast(t, x.dtype)
        if len(t.shape) == len(x.shape) - 1:
            t = ops.expand_dims(t, -1)
        t = ops.broadcast_to(t, batch_shape + (1,))
        h = _with_context(self, ops.concatenate([x, t], axis=-1), context,
                          batch_shape)
        h = ops.reshape(h, (-1, h.shape[-1]))
        for layer in self._hidden:
            h = layer(h)
        return ops.reshape(self._out(h), batch_shape + (self.event_size,))

    @property
    def has_jvp(self):
        """Whether `jvp` is available (the activation has a known derivative)."""
        return keras.activations.serialize(self.activation) in ACTIVATION_DERIVATIVES

    def jvp(self, x, t, tangents, context=None):
        """`(v [n, D], J ε [P, n, D])`: the velocity and its Jacobian in `x`
        applied to each tangent, by forward-mode differentiation written out.

        Args:
          x: `[n, D]`.
          t: a scalar or `[n]`.
          tangents: `[P, n, D]` (or broadcastable, e.g. `[P, 1, D]`).
          context: `[n, context_dim]` or None.
        """
        if not self.has_jvp:
            raise ValueError(
                f"VelocityMLP.jvp needs an activation of {sorted(ACTIVATION_DERIVATIVES)}. "
                f"Received: activation={keras.activations.serialize(self.activation)!r}")
        derivative = ACTIVATION_DERIVATIVES[keras.activations.serialize(self.activation)]
        n = ops.shape(x)[0]
        t = ops.cast(t, x.dtype)
        if len(t.shape) == 1:
            t = ops.expand_dims(t, -1)
        h = _with_context(self, ops.concatenate(
            [x, ops.broadcast_to(t, (n, 1))], axis=-1), context, (n,))
        dtype = x.dtype
        tangents = ops.cast(tangents, dtype)
        count = ops.shape(tangents)[0]
        tangents = ops.broadcast_to(tangents, (count, n, self.event_size))
        dh = None
        for i, layer in enumerate(self._hidden):
            kernel = ops.cast(layer.kernel, dtype)
            a = ops.matmul(h, kernel) + ops.cast(layer.bias, dtype)
            # The tangent enters through x's rows of the first kernel only
            # (t and the context do not move with x).
            da = (ops.matmul(ops.reshape(tangents, (-1, self.event_size)),
                             kernel[:self.event_size]) if i == 0
                  else ops.matmul(dh, kernel))
            h = self.activation(a)
            dh = ops.reshape(da, (count, n, -1)) * derivative(a)
            dh = ops.reshape(dh, (count * n, -1))
        out_kernel = ops.cast(self._out.kernel, dtype)
        v = ops.matmul(h, out_kernel) + ops.cast(self._out.bias, dtype)
        jv = ops.matmul(dh, out_kernel)  # hidden_units is never empty
        return v, ops.reshape(jv, (count, n, self.event_size))

    def get_config(self):
        return {**super().get_config(), "event_size": self.event_size,
                "hidden_units": list(self.hidden_units),
                "activation": keras.activations.serialize(self.activation),
                "context_dim": self.context_dim}
