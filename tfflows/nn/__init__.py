"""Keras 3 conditioner networks: MADE, coupling networks, velocity fields.

Each is zero-initialised at its output, so a fresh flow is the identity.
"""

from tfflows.nn.coupling import CouplingConvNet, CouplingMLP
from tfflows.nn.made import MADE
from tfflows.nn.velocity import VelocityMLP

__all__ = ["CouplingConvNet", "CouplingMLP", "MADE", "VelocityMLP"]
