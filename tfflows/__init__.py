"""tfflows: normalizing flows for TensorFlow and Keras 3.

>>> import tfflows as tff
>>> tff.bijectors.AffineCoupling   # TFP bijectors
>>> tff.nn.MADE                    # Keras 3 conditioner networks
"""

from tfflows import bijectors
from tfflows import nn

__version__ = "0.1.0"

__all__ = ["bijectors", "nn", "__version__"]
