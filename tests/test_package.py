"""The public surface promised in DESIGN.md, and the examples in docstrings."""

import doctest
import importlib

import pytest
import tensorflow_probability as tfp

import tfflows as tff

BIJECTORS = ["AdditiveCoupling", "AffineCoupling", "ActNorm",
             "InvertibleConv1x1", "MaskedAutoregressive", "Squeeze", "Logit",
             "Coupling", "Autoregressive"]


@pytest.mark.parametrize("name", BIJECTORS)
def test_bijectors_are_tfp_bijectors(name):
    assert issubclass(getattr(tff.bijectors, name), tfp.bijectors.Bijector)


def test_networks_are_exported():
    assert tff.nn.MADE and tff.nn.CouplingMLP


@pytest.mark.parametrize("module", [
    "tfflows.bijectors.additive_coupling", "tfflows.bijectors.affine_coupling",
    "tfflows.bijectors.coupling", "tfflows.bijectors.transformers",
    "tfflows.nn.made", "tfflows.testing",
])
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS
                             | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_spline_flows_and_transformer_layers_are_exported():
    assert callable(tff.models.nsf)
    assert issubclass(tff.layers.Coupling, tff.layers.FlowLayer)
    assert issubclass(tff.layers.AffineCoupling, tff.layers.Coupling)
    assert sorted(tff.bijectors.transformers.TRANSFORMERS) == [
        "additive", "affine", "spline"]


@pytest.mark.parametrize("name", ["Coupling", "Autoregressive", "AffineCoupling",
                                  "AdditiveCoupling", "MaskedAutoregressive"])
def test_shared_names_say_which_way_forward_runs(name):
    """Bijectors and layers share these names and run in opposite
    directions: the first docstring line says which."""
    bijector_doc = getattr(tff.bijectors, name).__doc__.splitlines()[0]
    assert "forward` latent -> data" in bijector_doc, bijector_doc
    layer = getattr(tff.layers, name, None)
    if layer is not None:
        assert "data -> latent" in layer.__doc__.splitlines()[0], layer.__doc__
