"""Keras 3 conditioner networks: MADE and coupling networks.

Each is zero-initialised at its output, so a fresh flow is the identity.
"""

from tfflows.nn.coupling import CouplingConvNet, CouplingMLP
from tfflows.nn.made import MADE

__all__ = ["CouplingConvNet", "CouplingMLP", "MADE"]
