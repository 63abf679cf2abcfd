"""The continuous-flow layer: owns a velocity network, hands out an ODE bijector."""

import keras

from tfflows import bijectors as tfb_
from tfflows import nn
from tfflows._checks import integer, positive_number, widths
from tfflows.bijectors.ode import EXACT_TRACE_MAX_DIM, SOLVERS, TRACES
from tfflows.layers.base import FlowLayer

__all__ = ["Continuous"]


@keras.saving.register_keras_serializable(package="tfflows")
class Continuous(FlowLayer):
    """Continuous flow layer, `call` data -> latent (its `.bijector`'s forward, t: 0 -> 1, runs latent -> data).

    Owns a `tfflows.nn.VelocityMLP` `v(x, t[, context])` and hands out a
    `tfflows.bijectors.ODE` over it: `dx/dt = v(x, t)`, latent at `t = 0`,
    data at `t = 1`. The network's output layer is zero-initialised, so a
    fresh layer is the identity. `velocity(x, t, context)` is the field
    itself, which flow matching trains directly (`tfflows.objectives.FlowMatching`)
    without solving the ODE.

    Args:
      hidden_units: widths of the velocity network's hidden layers.
      activation: its hidden activation (smooth: "silu" by default).
      solver: "rk4" (fixed `steps`, a static graph: export) or "dopri5"
        (adaptive, `rtol` / `atol`).
      steps: RK4 steps over t in [0, 1].
      rtol, atol: Dormand-Prince tolerances.
      trace: "auto" (exact for D <= 10, else Hutchinson), "exact" or
        "hutchinson"; see `tfflows.bijectors.ODE` for their cost and accuracy.
      num_probes: Hutchinson probes per evaluation.
      probe_seed: seed of the (fixed) Hutchinson probes.
      context_dim: size of a conditioning input, or None.

    The solver settings are plain attributes read by every new bijector:
    `layer.solver = "dopri5"` or `layer.steps = 64` changes how the next
    `log_prob` / `sample` integrates, with the same weights.

    Input shape: `[batch, D]`.
    """

    conditional = True
    # The flow-matching step is one pass of a dense network, where XLA's CPU
    # matmuls lose to oneDNN's, as for dense couplings: 2.95 ms per step
    # without XLA, 3.17 with (2-D moons, 3x64 network, batch 256, 2 shared
    # CPU cores; a 2-layer 64x64 MAF: 3.35 / 2.52).
    xla_on_cpu = False

    def __init__(self, hidden_units=(64, 64, 64), activation="silu",
                 solver="rk4", steps=32, rtol=1e-5, atol=1e-5, trace="auto",
                 num_probes=4, probe_seed=0, context_dim=None, **kwargs):
        super().__init__(context_dim=context_dim, **kwargs)
        self.hidden_units = widths("hidden_units", hidden_units)
        self.activation = keras.activations.serialize(keras.activations.get(activation))
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}. Received: solver={solver!r}")
        if trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}. Received: trace={trace!r}")
        self.solver, self.trace = solver, trace
        self.steps = integer("steps", steps)
        self.rtol = positive_number("rtol", rtol)
        self.atol = positive_number("atol", atol)
        self.num_probes = integer("num_probes", num_probes)
        self.probe_seed = integer("probe_seed", probe_seed, minimum=0)
        self.network = None

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError("Continuous works on vectors [batch, D] with a known "
                             f"D. Received: input_shape={tuple(input_shape)}")
        self._event_size = int(input_shape[-1])
        self.network = nn.VelocityMLP(
            self._event_size, hidden_units=self.hidden_units,
            activation=self.activation, context_dim=self.context_dim,
            dtype=self.dtype_policy, name="velocity")
        x = keras.ops.zeros((1, self._event_size), dtype=self.compute_dtype)
        context = (None if self.context_dim is None else
                   keras.ops.zeros((1, self.context_dim), dtype=self.compute_dtype))
        self.network(x, keras.ops.zeros((1,), dtype=self.compute_dtype), context)
        super().build(input_shape)

    def velocity(self, x, t, context=None):
        """`v(x, t[, context])`: `x` `[..., D]`, `t` scalar or `[...]`."""
        self._require_built()
        return self.network(x, t, context)

    def resolved_trace(self):
        """The trace the bijector uses: "exact" or "hutchinson" ("auto" resolved)."""
        if self.trace != "auto":
            return self.trace
        return "exact" if self._event_size <= EXACT_TRACE_MAX_DIM else "hutchinson"

    def make_bijector(self, context=None, probe_seed=None):
        """The ODE bijector; `probe_seed` (an int or a `[2]` seed tensor)
        replaces the layer's `probe_seed` (training draws a fresh one)."""
        self._check_context(context)
        net = self.network
        fn = ((lambda x, t: net(x, t)) if context is None
              else (lambda x, t, c: net(x, t, c)))
        return tfb_.ODE(fn, self._event_size, solver=self.solver,
                        jvp_fn=net.jvp if net.has_jvp else None,
                        steps=self.steps, rtol=self.rtol, atol=self.atol,
                        trace=self.trace, num_probes=self.num_probes,
                        probe_seed=(self.probe_seed if probe_seed is None
                                    else probe_seed), context=context,
                        name=self.name)

    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units),
                "activation": self.activation, "solver": self.solver,
                "steps": self.steps, "rtol": self.rtol, "atol": self.atol,
                "trace": self.trace, "num_probes": self.num_probes,
                "probe_seed": self.probe_seed}
