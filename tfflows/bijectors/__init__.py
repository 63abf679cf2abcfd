"""TFP bijectors for normalizing flows (`forward` maps latent -> data).

Every class here is a `tfp.bijectors.Bijector` with no variables of its own:
parameters are tensors (or variables owned by a Keras layer) and networks are
callables. They compose with `tfb.Chain`, `tfb.Invert` and
`tfd.TransformedDistribution`.

`Coupling` and `Autoregressive` take any elementwise transformer
(`tfflows.bijectors.transformers`: additive, affine, rational-quadratic
spline); `AdditiveCoupling`, `AffineCoupling` and `MaskedAutoregressive`
are the same two bijectors with their transformer fixed and the
conditioner signatures of NICE, RealNVP and MAF (a shift, or a pair).

`Permute` is `tfp.bijectors.Permute` with a gradient that gathers
(TensorFlow's own transposes twice; `reverse(D)` builds one), and NICE's
diagonal rescaling is TFP's `tfp.bijectors.Scale(log_scale=...)`.
"""

from tfflows.bijectors import lu
from tfflows.bijectors import masks
from tfflows.bijectors import transformers
from tfflows.bijectors._base import FlowBijector, soft_clamp
from tfflows.bijectors.actnorm import ActNorm
from tfflows.bijectors.additive_coupling import AdditiveCoupling
from tfflows.bijectors.affine_coupling import AffineCoupling
from tfflows.bijectors.autoregressive import Autoregressive
from tfflows.bijectors.coupling import Coupling
from tfflows.bijectors.factor_out import FactorOut
from tfflows.bijectors.invertible_conv1x1 import InvertibleConv1x1
from tfflows.bijectors.logit import Logit, bits_per_dim, uniform_dequantize
from tfflows.bijectors.masked_autoregressive import MaskedAutoregressive
from tfflows.bijectors.ode import ODE
from tfflows.bijectors.permute import Permute
from tfflows.bijectors.planar import Planar
from tfflows.bijectors.radial import Radial
from tfflows.bijectors.squeeze import Squeeze

__all__ = [
    "ActNorm", "AdditiveCoupling", "AffineCoupling", "Autoregressive",
    "Coupling", "FactorOut", "FlowBijector", "InvertibleConv1x1", "Logit",
    "MaskedAutoregressive", "ODE", "Permute", "Planar", "Radial", "Squeeze", "bits_per_dim",
    "lu", "masks", "reverse", "soft_clamp", "transformers", "uniform_dequantize",
]

def reverse(event_size, axis=-1, name="reverse"):
    """A `Permute` (a `tfp.bijectors.Permute`) that reverses the order along
    `axis`, by `tf.reverse`.

    Raises:
      ValueError: if `event_size` is not a positive integer.
    """
    if not isinstance(event_size, int) or event_size < 1:
        raise ValueError("event_size must be a positive integer. "
                         f"Received: event_size={event_size!r}")
    return Permute(list(range(event_size - 1, -1, -1)), axis=axis, name=name)
