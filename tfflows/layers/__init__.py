"""Keras 3 flow layers: each owns its variables and hands out a bijector.

Flows list their layers from the data side: `layer(x)` maps data -> latent
and returns `(z, log|det dz/dx|)`; `layer.forward(z)` runs the other way;
`layer.bijector` is the TFP bijector (latent -> data) bound to the layer's
variables.

`Coupling` and `MaskedAutoregressive` take `transformer="additive" |
"affine" | "spline"` (with `spline_bins`, `tail_bound`);
`AdditiveCoupling` and `AffineCoupling` are `Coupling` with the transformer
fixed, under the names `.keras` files have always used.
"""

from tfflows.layers.actnorm import ActNorm
from tfflows.layers.base import FlowLayer
from tfflows.layers.continuous import Continuous
from tfflows.layers.coupling import AdditiveCoupling, AffineCoupling, Coupling
from tfflows.layers.invertible_conv1x1 import InvertibleConv1x1
from tfflows.layers.masked_autoregressive import MaskedAutoregressive
from tfflows.layers.multiscale import FactorOut, Logit, Scale
from tfflows.layers.planar import Planar, Radial
from tfflows.layers.structure import Permutation, Squeeze, Unsqueeze

__all__ = [
    "ActNorm", "AdditiveCoupling", "AffineCoupling", "Continuous", "Coupling",
    "FactorOut",
    "FlowLayer",
    "InvertibleConv1x1", "Logit", "MaskedAutoregressive", "Permutation",
    "Planar", "Radial", "Scale", "Squeeze", "Unsqueeze",
]
