"""Structural promises of the Flow: one network call per layer and direction,
and a latent with the data's shape."""

import numpy as np
import pytest
import tensorflow as tf

import tfflows as tff


def _count_calls(layer, attr):
    """Counts the passes of `layer`'s network: its `call`, or for a MADE
    the output pass that `call` and `planes` (what the flow layers use)
    both run."""
    network = getattr(layer, attr)
    method = "_output" if isinstance(network, tff.nn.MADE) else "call"
    original = getattr(network, method)
    counter = {"n": 0}

    def counted(*args, **kwargs):
        counter["n"] += 1
        return original(*args, **kwargs)

    setattr(network, method, counted)
    return counter


def _conditioned_layers(layers):
    for layer in layers:
        if isinstance(layer, tff.layers.FactorOut):
            yield from _conditioned_layers(layer.inner_layers)
        elif hasattr(layer, "network") or hasattr(layer, "made"):
            yield layer


@pytest.mark.parametrize("builder, x", [
    (lambda: tff.models.realnvp(event_dim=3, num_layers=4, hidden_units=(8,)),
     np.random.default_rng(0).normal(size=(5, 3))),
    (lambda: tff.models.maf(event_dim=3, num_layers=3, hidden_units=(8,)),
     np.random.default_rng(0).normal(size=(5, 3))),
    (lambda: tff.models.glow(image_shape=(4, 4, 1), levels=2, steps_per_level=2,
                             hidden_channels=4, num_bins=17),
     np.random.default_rng(0).uniform(size=(5, 4, 4, 1))),
], ids=["realnvp", "maf", "glow"])
def test_log_prob_calls_each_network_once(builder, x):
    flow = builder()
    counters = [_count_calls(l, "network" if hasattr(l, "network") else "made")
                for l in _conditioned_layers(flow.flow_layers)]
    assert counters
    lp = flow.log_prob(x.astype("float32"))
    assert lp.shape == (5,)
    assert [c["n"] for c in counters] == [1] * len(counters)
    # And in a compiled graph, the traced function calls each network once.
    for c in counters:
        c["n"] = 0
    tf.function(flow.log_prob)(tf.constant(x, tf.float32))
    assert [c["n"] for c in counters] == [1] * len(counters)


def test_iaf_samples_in_one_pass_per_layer():
    flow = tff.models.iaf(event_dim=4, num_layers=3, hidden_units=(8,))
    counters = [_count_calls(l, "made") for l in _conditioned_layers(flow.flow_layers)]
    flow.sample(7, seed=0)
    assert [c["n"] for c in counters] == [1, 1, 1]


@pytest.mark.parametrize("builder", [
    lambda: tff.models.realnvp(image_shape=(8, 8, 2), levels=3, hidden_channels=4),
    lambda: tff.models.glow(image_shape=(8, 8, 3), levels=3, steps_per_level=1,
                            hidden_channels=4),
], ids=["realnvp", "glow"])
def test_multiscale_latent_has_the_data_shape(builder):
    flow = builder()
    x = tf.random.stateless_uniform([2] + list(flow.event_shape), seed=(1, 2))
    z = flow.encode(x)
    assert z.shape == x.shape
    np.testing.assert_allclose(flow.decode(tf.constant(z.numpy())), x, atol=1e-5)


def test_builders_reject_impossible_shapes():
    with pytest.raises(ValueError, match="divisible by 8"):
        tff.models.glow(image_shape=(12, 12, 1), levels=3)
    with pytest.raises(ValueError, match="exactly one of event_dim"):
        tff.models.realnvp()
    with pytest.raises(ValueError, match="event_dim >= 2"):
        tff.models.realnvp(event_dim=1)
    with pytest.raises(ValueError, match="num_layers=0"):
        tff.models.maf(event_dim=3, num_layers=0)
