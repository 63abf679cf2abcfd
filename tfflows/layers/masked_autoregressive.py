"""The autoregressive layer (MAF / IAF, any transformer) over a MADE network."""

import keras
import numpy as np

from tfflows import bijectors as tfb_
from tfflows import nn
from tfflows._checks import draw_seed, widths
from tfflows.bijectors import transformers
from tfflows.layers._transformer import (make_transformer, transformer_config,
                                         upgrade_config)
from tfflows.layers.base import FlowLayer, build_network

__all__ = ["MaskedAutoregressive"]

# The sequential direction (MAF sampling, IAF density) runs `MADE.solve`:
# D steps that together do the matmuls of about one pass, not D. They are
# written out into the graph (`unroll=True`, the fastest to run) while the
# steps hand the transformer at most this many parameters in all (event
# size times `num_params`: a 16-D affine MAF), and looped over one copy of
# the step beyond: an unrolled graph grows with D times the transformer's
# size, and so do its tracing, XLA compile and export. Measured on 2
# cores, first `decode` call (trace included) unrolled: 16-D affine MAF
# (5 MADEs) 2.6 s, 32-D 6.0 s; NSF-AR (8 bins) 5-D 4.2 s, 16-D 14.5 s,
# 32-D 31 s; looped, about 1-1.4 s each, and sampling 10,000 rows then
# takes about 1.5-2x as long as unrolled.
UNROLL_MAX_PARAMS = 32


@keras.saving.register_keras_serializable(package="tfflows")
class MaskedAutoregressive(FlowLayer):
    """Masked autoregressive layer, `call` data -> latent (MAF; IAF with `iaf=True`) on vectors.

    Owns the `tfflows.nn.MADE` of a `tfflows.bijectors.Autoregressive`,
    with the transformer's `num_params` outputs per dimension: 2 (shift and
    log-scale) for "affine" (MAF), 1 for "additive", `3K - 1` for "spline"
    (NSF-AR). With the spline the output kernel starts at zero, so a fresh
    NSF-AR layer is exactly the identity: held-out NLL of 3-layer NSF-ARs
    (32 x 32) at output scale 0 / 0.1, seeds 0 / 1 / 2, reshuffled batches:
    two moons 1.42 / 1.40 / 1.38 against 1.35 / 1.42 / 1.40, whitened breast
    cancer (5 layers) 39.05 / 38.24 / 41.64 against 39.10 / 38.23 / 41.73,
    no cost. With the other transformers the output kernel starts random at
    about a third of Glorot-uniform's range (variance scale 0.1), so a fresh
    layer is a mild random autoregressive map, not the identity. Held-out NLL of
    5-layer affine MAFs (`python -m benchmarks` data, median of three seeds) for
    output variance scales 0 / 0.01 / 0.1 / 0.3 / 1 (Glorot, TFP's MADE):
    two moons 1.8-2.0 (one seed) / 1.75 / 1.51 / 1.49 / 1.35; whitened
    breast cancer - / 38.85 / 38.94 / 39.06 / 39.80; digits bits/dim - /
    2.277 / 2.276 / 2.282 / 2.317. At 0 no gradient reaches the hidden
    layers at the first step; a full Glorot start suits 2-D data and hurts
    in 26 and 64 dimensions; 0.1 is near the best on all three. MAF
    evaluates densities in one MADE pass and samples in D; IAF the reverse.

    Args:
      hidden_units: MADE hidden widths.
      iaf: one-pass sampling (IAF) instead of one-pass density (MAF).
      input_order: MADE's order: "natural", "reversed", "random" or explicit.
      activation: MADE hidden activation.
      context_dim: size of a conditioning input, or None.
      seed: MADE's seed for random orders (drawn and kept if None).
      transformer: "affine" (default, MAF/IAF: the shift in the latent for
        MAF, in the data for IAF, see `transformers.Affine`), "additive", "spline"
        (rational-quadratic, NSF-AR) or a
        `tfflows.bijectors.transformers.Transformer`.
      spline_bins: "spline" only: bins K (default 8).
      tail_bound: "spline" only: the spline acts on `[-B, B]` (default 3).
      param_major: MADE's output column order (`tfflows.nn.MADE`); layers
        saved before this option existed load with False.
    """

    conditional = True

    @property
    def xla_on_cpu(self):
        """An affine MAF's one-pass training step runs faster without XLA
        (TensorFlow's oneDNN matmuls); an IAF's, which trains through the
        D-step solve, and a spline's many elementwise ops gain from it
        (`FlowLayer.xla_on_cpu`)."""
        return bool(self.iaf or self._transformer.xla_on_cpu)

    def __init__(self, hidden_units=(64, 64), iaf=False, input_order="natural",
                 activation="relu", context_dim=None, seed=None,
                 transformer="affine", spline_bins=None, tail_bound=None,
                 param_major=True, **kwargs):
        super().__init__(context_dim=context_dim, **kwargs)
        self.hidden_units = widths("hidden_units", hidden_units)
        self.iaf = bool(iaf)
        self.input_order = input_order
        self.activation = activation
        if seed is None:  # realised now, so the config reproduces the order
            seed = draw_seed()
        self.seed = int(seed)
        self.param_major = bool(param_major)
        if transformer == "affine":
            # The shift goes last in the layer's one-pass direction: the
            # density for MAF (trained by likelihood), sampling for IAF
            # (trained by reverse KL). Measured in transformers/affine.py.
            transformer = transformers.Affine(shift="data" if iaf else "latent")
        self._transformer = make_transformer(transformer, spline_bins, tail_bound)
        self.made = None

    @property
    def transformer(self):
        """The elementwise transformer (a `Transformer` object)."""
        return self._transformer

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError("MaskedAutoregressive acts on vectors [batch, D]. "
                             f"Received: input_shape={tuple(input_shape)}")
        event_size = input_shape[-1]
        output_init = ("zeros" if isinstance(self._transformer,
                                             transformers.RationalQuadraticSpline)
                       else keras.initializers.VarianceScaling(
                           scale=0.1, mode="fan_avg", distribution="uniform"))
        self.made = nn.MADE(event_size, num_params=self._transformer.num_params,
                            hidden_units=self.hidden_units,
                            input_order=self.input_order,
                            activation=self.activation,
                            context_dim=self.context_dim, seed=self.seed,
                            output_kernel_initializer=output_init,
                            param_major=self.param_major,
                            dtype=self.dtype_policy, name="made")
        build_network(self.made, input_shape, self.context_dim,
                      self.compute_dtype)
        self._event_size = event_size
        super().build(input_shape)

    def make_bijector(self, context=None):
        made = self.made

        def params(x):
            return made.planes(x, context)

        unroll = self._event_size * made.num_params <= UNROLL_MAX_PARAMS

        def solve(z, transform):
            return made.solve(z, transform, context, unroll=unroll)

        return tfb_.Autoregressive(
            params, transformer=self._transformer, event_size=self._event_size,
            iaf=self.iaf,
            solve_fn=solve if made.supports_solve else None,
            name=self.name)

    def get_config(self):
        order = self.input_order
        return {**super().get_config(), "hidden_units": list(self.hidden_units),
                "iaf": self.iaf,
                "input_order": order if isinstance(order, str) else list(order),
                "activation": self.activation, "seed": self.seed,
                "transformer": transformer_config(self._transformer),
                "param_major": self.param_major}

    @classmethod
    def from_config(cls, config):
        config = upgrade_config(config)
        config.setdefault("param_major", False)  # saved before the option
        return cls(**config)
