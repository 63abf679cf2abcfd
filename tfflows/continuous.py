"""`ContinuousFlow`: a `Flow` over an ODE, trained by flow matching."""

import keras
import numpy as np
import tensorflow as tf

from tfflows.flow import Flow, _as_graph_when_eager
from tfflows.layers.continuous import Continuous
from tfflows.objectives import (VALIDATION_SEED, FlowMatching, MaximumLikelihood,
                                split_inputs)

OBJECTIVES = ("flow_matching", "likelihood")

__all__ = ["ContinuousFlow"]


@keras.saving.register_keras_serializable(package="tfflows")
class ContinuousFlow(Flow):
    """A continuous normalizing flow, `dx/dt = v(x, t[, context])`, trained by flow matching or likelihood.

    A `Flow` whose transform is one `tfflows.layers.Continuous` layer: the
    latent at t=0, the data at t=1. Everything a flow offers goes through
    the ODE bijector (`tfflows.bijectors.ODE`): `encode` / `decode` solve
    the ODE one way or the other, `log_prob` integrates the state and its
    log-density together (the instantaneous change of variables, exact
    trace for D <= 10, Hutchinson above), `sample`, `distribution`,
    conditional flows, `.keras` files.

    Training, `objective="flow_matching"` (default): `fit` minimises the
    conditional flow-matching loss on the
    optimal-transport path (`tfflows.objectives.FlowMatching`): one network
    call per step on `draws` (t, z) pairs per example, no ODE solve. It
    logs `loss` = `fm_loss` (the mean squared velocity error, not a
    likelihood). Training draws fresh noise every step; `evaluate` and the
    validation figures are the same loss with draws keyed by each row's
    values (`tfflows.objectives.row_keyed_draws`), so the same rows score
    the same in every epoch and `val_loss` (= `val_fm_loss`) can drive
    `keras.callbacks.EarlyStopping("val_loss", restore_best_weights=True)`
    (Keras's automatic `mode` knows `val_loss`; for `val_fm_loss` pass
    `mode="min"`). For a held-out NLL use `-flow.log_prob(x_val).mean()`,
    which solves the ODE; as an early-stopping signal it chose the same
    epochs as `val_loss` on breast cancer at 30x the cost (BENCHMARKS.md).
    `predict` returns `log_prob`, as for every flow.

    `draws` (8 by default) pairs each example of a batch with that many
    times and base points: the network sees `draws` times the batch, the
    gradient's variance from the random path falls, and a held-out NLL at
    a fixed epoch budget improves (two moons, 50 epochs: 1.95 / 2.03
    nats with 1 draw, 1.44 / 1.77 with 8, seeds 0 / 1) for 2x the time of
    an epoch. `draws=1` is plain flow matching.

    Training, `objective="likelihood"` (FFJORD, Grathwohl et al. 2018,
    https://arxiv.org/abs/1810.01367): `fit` minimises `-log_prob(x)` with
    the ODE solved inside the step (the layer's RK4 `steps`, gradients by
    backpropagation through the solver's loop) and logs `loss` = `nll`, as
    other flows do; validation and `evaluate` report the NLL too. The trace
    follows the layer's `trace` rule: exact for D <= 10 (deterministic, D
    copies of the batch per evaluation, at most 2.5x the 4 probes'
    cost, no variance in the gradient), Hutchinson above with fresh probes
    every training step (a new stateless seed per step, as FFJORD draws
    them), the fixed `probe_seed` outside training. Cost: measured on 2-D
    data, 3x64 network, batch 256, 2 shared CPU cores, ms per step of
    `fit` (machine shared with a test run, so figures are high but
    comparable): flow matching 4.4; likelihood, 8 RK4 steps with the exact
    trace, 166 (38x); 32 steps, about 1300. Three epochs of 4096 points at
    8 steps bring a correlated Gaussian's held-out NLL to 2.552 (optimum
    2.548; flow matching's same three epochs: 2.88). Flow matching reaches a comparable NLL for far less; use
    likelihood when the model must be fitted to the data's density itself
    (e.g. to fine-tune a flow-matched CNF) or when flow matching's path does
    not suit the data.

    `encode`, `decode` and `sample` solve the state alone (one network call
    per evaluation); `encode_and_log_det`, `log_prob` and
    `sample_and_log_prob` run one joint solve (see `tfflows.bijectors.ODE`).
    `flow.distribution.log_prob` goes through TFP's `Chain`, which asks for
    the point before its log-det: a state-only solve plus the joint one.

    Args:
      layers: `[Continuous(...)]`, one continuous layer.
      event_shape: `(D,)`.
      context_dim: size of the conditioning input, or None.
      sigma_min: the flow-matching path's width at the data (0 by default).
      objective: "flow_matching" (default) or "likelihood"; saved in the
        config, so `.keras` files keep it.
      draws: flow matching's (t, z) draws per example and step (8).
      **kwargs: as `Flow` (`name`, `dtype`).
    """

    def __init__(self, layers, event_shape, context_dim=None, sigma_min=0.0,
                 objective="flow_matching", draws=8, **kwargs):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}. "
                             f"Received: objective={objective!r}")
        self._objective_name = objective
        if kwargs.get("num_bins") is not None:
            raise ValueError("ContinuousFlow takes vector data (num_bins=None). "
                             f"Received: num_bins={kwargs['num_bins']!r}")
        kwargs.pop("num_bins", None)
        super().__init__(layers, event_shape, context_dim=context_dim, **kwargs)
        if (len(self.flow_layers) != 1
                or not isinstance(self.flow_layers[0], Continuous)):
            raise ValueError("ContinuousFlow takes one tfflows.layers.Continuous "
                             f"layer. Received: {self.flow_layers!r}")
        matching = FlowMatching(self.event_shape, sigma_min, draws)
        self._sigma_min, self._draws = matching.sigma_min, matching.draws
        if objective == "flow_matching":
            self.objective = matching
        self._flow_matching_in_test = False

    def _default_objective(self):
        if self._objective_name == "likelihood":
            return MaximumLikelihood(self.event_shape, None, dtype=self.compute_dtype)
        return FlowMatching(self.event_shape)

    @property
    def objective_name(self):
        """"flow_matching" or "likelihood"."""
        return self._objective_name

    @property
    def sigma_min(self):
        return self._sigma_min

    @property
    def continuous_layer(self):
        """The `tfflows.layers.Continuous` layer (velocity network, solver)."""
        return self.flow_layers[0]

    def velocity(self, x, t, context=None):
        """The field `v(x, t[, context])`; `t` a scalar or `[batch]`."""
        return self.continuous_layer.velocity(x, t, context)

    def _ode(self, context, probe_seed=None):
        if probe_seed is None:
            return self.continuous_layer.make_bijector(context)
        return self.continuous_layer.make_bijector(context, probe_seed=probe_seed)

    def _log_det_first(self, ode, x, inverse):
        """`(output, log-det)` from one joint solve: the log-det is asked
        first, so the ODE hands its output to TFP's cache (asked second,
        the point would cost a state-only solve of its own)."""
        if inverse:
            ldj = ode.inverse_log_det_jacobian(x, event_ndims=1)
            return ode.inverse(x), ldj
        ldj = ode.forward_log_det_jacobian(x, event_ndims=1)
        return ode.forward(x), ldj

    @_as_graph_when_eager
    def encode_and_log_det(self, x, context=None):
        """data -> latent: `(z, log|det dz/dx|)`, one joint solve."""
        x = self._check_x(x)
        context = self.check_context(context, tf.shape(x)[0])
        return self._log_det_first(self._ode(context), x, inverse=True)

    @_as_graph_when_eager
    def encode(self, x, context=None):
        """data -> latent, the state alone (no trace)."""
        x = self._check_x(x)
        context = self.check_context(context, tf.shape(x)[0])
        return self._ode(context).inverse(x)

    @_as_graph_when_eager
    def sample_and_log_prob(self, num_samples, seed=None, context=None):
        """Draws and their log-density from one joint forward solve."""
        z = self.base.sample(num_samples, 1.0, seed)
        context = self.check_context(context, tf.shape(z)[0])
        x, log_det = self._log_det_first(self._ode(context), z, inverse=False)
        return x, self.base.log_prob(z) - log_det

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
        """Flow matching: per-example errors when training (and in
        `evaluate`). Likelihood: `log_prob`, with fresh Hutchinson probes
        when training (if the trace is Hutchinson's). Else `log_prob`."""
        x, context = split_inputs(inputs)
        if self._objective_name == "likelihood":
            if training and self.continuous_layer.resolved_trace() == "hutchinson":
                seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
                context = self.check_context(context, tf.shape(x)[0])
                z, ldj = self._log_det_first(self._ode(context, seed), x,
                                             inverse=True)
                return self.base_log_prob(z) + ldj
            return self.log_prob(x, context)
        if training:
            return self.objective.residuals(self.velocity, x, context)
        if self._flow_matching_in_test:
            return self.objective.residuals(self.velocity, x, context,
                                            row_seed=VALIDATION_SEED)
        return super().call(inputs, training=training)

    def test_step(self, data):
        if self._objective_name == "likelihood":
            return super().test_step(data)
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
        return {**config, "sigma_min": self.sigma_min,
                "objective": self._objective_name, "draws": self._draws}
