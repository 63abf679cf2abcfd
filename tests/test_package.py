"""The public surface promised in DESIGN.md, and the examples in docstrings."""

import doctest
import importlib

import pytest
import tensorflow_probability as tfp

import tfflows as tff

BIJECTORS = ["AdditiveCoupling", "AffineCoupling", "ActNorm",
             "InvertibleConv1x1", "MaskedAutoregressive", "Squeeze", "Logit"]


@pytest.mark.parametrize("name", BIJECTORS)
def test_bijectors_are_tfp_bijectors(name):
    assert issubclass(getattr(tff.bijectors, name), tfp.bijectors.Bijector)


def test_networks_are_exported():
    assert tff.nn.MADE and tff.nn.CouplingMLP


@pytest.mark.parametrize("module", [
    "tfflows.bijectors.additive_coupling", "tfflows.bijectors.affine_coupling",
    "tfflows.nn.made", "tfflows.testing",
])
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS
                             | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
