"""tfflows: normalizing flows for TensorFlow and Keras 3.

    import tfflows as tff
    tff.bijectors.AffineCoupling   # TFP bijectors
    tff.nn.MADE                    # Keras 3 conditioner networks
    tff.testing                    # the bijector contract, for your own bijectors
    tff.data                       # embedded datasets and loaders
    tff.distributions              # base distributions (StandardNormal)
    tff.objectives                 # maximum likelihood, reverse KL
    tff.vi                         # variational inference: fit a flow to a density
"""

from tfflows import bijectors
from tfflows import data
from tfflows import distributions
from tfflows import nn
from tfflows import layers
from tfflows import objectives
from tfflows.flow import Flow
from tfflows import models
from tfflows import export
from tfflows import testing
from tfflows import train
from tfflows import vi

__version__ = "0.1.0"

__all__ = ["Flow", "bijectors", "data", "distributions", "export", "layers", "models", "nn", "objectives", "testing", "train", "vi", "__version__"]
