"""tfflows: normalizing flows for TensorFlow and Keras 3.

    import tfflows as tff
    tff.bijectors.AffineCoupling   # TFP bijectors
    tff.callbacks.FlowHealth       # numerical health while training
    tff.nn.MADE                    # Keras 3 conditioner networks
    tff.testing                    # the bijector contract, for your own bijectors
    tff.data                       # embedded datasets and loaders
    tff.distributions              # base distributions (StandardNormal)
    tff.objectives                 # maximum likelihood, reverse KL
    tff.vi                         # variational inference: fit a flow to a density
    tff.imputation                 # fill in missing entries (flow.impute)
    tff.ood                        # out-of-distribution detection, calibrated
    tff.latent                     # latent interpolation and reconstruction
"""

from tfflows import bijectors
from tfflows import data
from tfflows import distributions
from tfflows import nn
from tfflows import layers
from tfflows import objectives
from tfflows.flow import Flow
from tfflows.continuous import ContinuousFlow
from tfflows import models
from tfflows import callbacks
from tfflows import export
from tfflows import testing
from tfflows import train
from tfflows import vi
from tfflows import imputation
from tfflows import latent
from tfflows import ood

__version__ = "0.1.0"

__all__ = ["ContinuousFlow", "Flow", "bijectors", "callbacks", "data", "distributions", "export", "imputation", "latent", "layers", "models", "nn", "objectives", "ood", "testing", "train", "vi", "__version__"]
