"""`ContinuousFlow`: a `Flow` over an ODE, trained by flow matching."""

import keras
import numpy as np
import tensorflow as tf

from tfflows.flow import Flow
from tfflows.layers.continuous import Continuous
from tfflows.objectives import FlowMatching, split_inputs

__all__ = ["ContinuousFlow"]


@keras.saving.register_keras_serializable(package="tfflows")
class ContinuousFlow(Flow):
    """A continuous normalizing flow, `dx/dt = v(x, t[, context])`, trained by flow matching.

    A `Flow` whose transform is one `tfflows.layers.Continuous` layer: the
    latent at t=0, the data at t=1. Everything a flow offers goes through
    the ODE bijector (`tfflows.bijectors.ODE`): `encode` / `decode` solve
    the ODE one way or the other, `log_prob` integrates the state and its
    log-density together (the instantaneous change of variables, exact
    trace for D <= 10, Hutchinson above), `sample`, `distribution`,
    conditional flows, `.keras` files.

    Training: `fit` minimises the conditional flow-matching loss on the
    optimal-transport path (`tfflows.objectives.FlowMatching`): one network
    call per step, no ODE solve. It logs `loss` = `fm_loss` (the mean
    squared velocity error, not a likelihood); `evaluate` and the
    validation figures are the same loss on the validation data (cheap).
    For a held-out NLL use `-flow.log_prob(x_val).mean()`, which solves the
    ODE. `predict` returns `log_prob`, as for every flow.

    Args:
      layers: `[Continuous(...)]`, one continuous layer.
      event_shape: `(D,)`.
      context_dim: size of the conditioning input, or None.
      sigma_min: the flow-matching path's width at the data (0 by default).
      **kwargs: as `Flow` (`name`, `dtype`).
    """

    def __init__(self, layers, event_shape, context_dim=None, sigma_min=0.0,
                 **kwargs):
        if kwargs.get("num_bins") is not None:
            raise ValueError("ContinuousFlow takes vector data (num_bins=None). "
                             f"Received: num_bins={kwargs['num_bins']!r}")
        kwargs.pop("num_bins", None)
        super().__init__(layers, event_shape, context_dim=context_dim, **kwargs)
        if (len(self.flow_layers) != 1
                or not isinstance(self.flow_layers[0], Continuous)):
            raise ValueError("ContinuousFlow takes one tfflows.layers.Continuous "
                             f"layer. Received: {self.flow_layers!r}")
        self.objective = FlowMatching(self.event_shape, sigma_min)
        self._flow_matching_in_test = False

    def _default_objective(self):
        return FlowMatching(self.event_shape)

    @property
    def sigma_min(self):
        return self.objective.sigma_min

    @property
    def continuous_layer(self):
        """The `tfflows.layers.Continuous` layer (velocity network, solver)."""
        return self.flow_layers[0]

    def velocity(self, x, t, context=None):
        """The field `v(x, t[, context])`; `t` a scalar or `[batch]`."""
        return self.continuous_layer.velocity(x, t, context)

    def trajectory(self, z, times, context=None):
        """Points of the ODE's paths from the latent `z` (t=0) at `times`.

        Integrates `dx/dt = v(x, t)` with RK4 at the layer's step size
        (`1 / steps`; each interval between consecutive times gets
        `ceil(steps * length)` equal steps), without the log-density: for
        pictures of how the flow carries base points to the data.
        `trajectory(z, [1.0])[0]` is `decode(z)` up to the solver's error
        (exactly so with `solver="rk4"` and the same `steps`).

        Args:
          z: latent points `[n, D]`.
          times: increasing times in [0, 1], e.g. `np.linspace(0, 1, 5)`.
          context: as for `decode`, or None.

        Returns:
          `[len(times), n, D]` float32 tensor.
        """
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        if (times.size == 0 or times[0] < 0 or times[-1] > 1
                or np.any(np.diff(times) < 0)):
            raise ValueError("times must be increasing values in [0, 1]. "
                             f"Received: times={times.tolist()}")
        x = tf.convert_to_tensor(z, self.compute_dtype)
        if context is not None:
            context = tf.broadcast_to(
                tf.convert_to_tensor(context, self.compute_dtype),
                [tf.shape(x)[0], self.context_dim])
        steps = self.continuous_layer.steps

        def v(x, t):
            return self.velocity(x, tf.constant(t, x.dtype), context)

        points, t = [], 0.0
        for target in times:
            count = int(np.ceil(steps * (target - t) - 1e-9))
            if count > 0:
                h = (target - t) / count
                for i in range(count):
                    s = t + i * h
                    k1 = v(x, s)
                    k2 = v(x + h / 2 * k1, s + h / 2)
                    k3 = v(x + h / 2 * k2, s + h / 2)
                    k4 = v(x + h * k3, s + h)
                    x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            t = target
            points.append(x)
        return tf.stack(points)

    def call(self, inputs, training=None):
        """Per-example flow-matching errors when training (and in
        `evaluate`), else `log_prob`."""
        if training or self._flow_matching_in_test:
            x, context = split_inputs(inputs)
            return self.objective.residuals(self.velocity, x, context)
        return super().call(inputs, training=training)

    def test_step(self, data):
        # Traced once: Keras's test step calls `self(x, training=False)`,
        # which the flag routes to the flow-matching loss.
        self._flow_matching_in_test = True
        try:
            return super().test_step(data)
        finally:
            self._flow_matching_in_test = False

    def get_config(self):
        config = super().get_config()
        config.pop("num_bins", None)
        return {**config, "sigma_min": self.sigma_min}
