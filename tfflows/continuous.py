"""`ContinuousFlow`: a `Flow` over an ODE, trained by flow matching."""

import keras

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
