"""Exploding inverses (Behrmann et al. 2020, arXiv:2006.09347): what the
clamps guarantee for trained flows on inputs far from their data.

The README's "Exploding inverses" section derives the bounds asserted here;
`benchmarks/inverses.py` computes them and draws the figure.
"""


import keras
import numpy as np
import pytest
import tensorflow as tf

import tfflows as tff
from benchmarks import inverses

FAR = (0, 1, 10, 100)  # distances from the data, in the data's sigma


@pytest.fixture(scope="module")
def moons_realnvp():
    """Notebook 01's RealNVP in its quick form (4 layers of 32 x 32)."""
    keras.utils.set_random_seed(0)
    x_train, _, x_test = tff.data.split(tff.data.two_moons(2048))
    flow = tff.models.realnvp(event_dim=2, num_layers=4, hidden_units=(32, 32))
    flow.compile(optimizer=keras.optimizers.Adam(3e-3, global_clipnorm=1.0))
    flow.fit(x_train, batch_size=128, epochs=20, verbose=0)
    return flow, x_test[:64]


def _check_against_bound(flow, batch):
    error = inverses.round_trip(flow, batch)
    bound, _ = inverses.round_trip_bound(flow, batch)
    assert np.all(np.isfinite(error)), error
    assert np.all(error <= bound), (error.max(), bound[np.argmax(error / bound)])
    return error, bound


def test_realnvp_round_trip_far_from_the_data_stays_under_its_bound(moons_realnvp):
    flow, x = moons_realnvp
    for distance, batch in zip(FAR, inverses.away_from(x, FAR)):
        error, bound = _check_against_bound(flow, batch)
        if distance == 0:
            assert error.max() < 1e-4  # as notebook 01 asserts
        # Both directions finite; the latent moved as far from the base's bulk.
        z = inverses.away_from(np.random.default_rng(1).standard_normal(x.shape),
                               [distance])[0]
        assert np.all(np.isfinite(inverses.round_trip(flow, z, latent=True)))


def test_glow_round_trip_on_noise_and_far_logits_stays_under_its_bound(digits_glow):
    flow, (_, _, x_test) = digits_glow
    families, _ = inverses.digit_families(flow, x_test[:32])
    checked = []
    for name, batch in families.items():
        # Far in logit space the pixels approach the logit's domain edges,
        # (-a/(1-2a), 1 + a/(1-2a)), where float32 cannot invert the
        # sigmoid: those rows are outside what is claimed (README).
        inside = np.all(np.abs(np.asarray(flow.flow_layers[0].make_bijector()
                                          .inverse(batch))) < 15, axis=(1, 2, 3))
        if inside.any():
            error, _ = _check_against_bound(flow, batch[inside])
            checked.append(name)
            if name == "0σ":
                assert error.max() < 1e-4
    assert {"0σ", "1σ", "10σ", "uniform noise", "binary noise"} <= set(checked)


def test_pixels_outside_the_logits_domain_encode_to_nan(digits_glow):
    """The logit's domain is (-a/(1-2a), 1 + a/(1-2a)), a = 0.05: beyond it
    there is no density. An eager call refuses such pixels by name; with
    the checks off (as in a graph) encode gives NaN there (README)."""
    flow, (_, _, x_test) = digits_glow
    edge = 0.05 / 0.9
    x = np.stack([x_test[0] * 0 - edge * 1.5, x_test[0] * 0 + 1 + edge * 0.5])
    with pytest.raises(ValueError, match=r"x holds pixels outside \[0, 1\]"):
        flow.encode(x)
    assert np.all(np.isfinite(flow.encode(x[1:])))
    flow.check_inputs = False
    try:
        z = np.asarray(flow.encode(x))
    finally:
        flow.check_inputs = True
    assert np.isnan(z[0]).any() and np.all(np.isfinite(z[1]))


@pytest.mark.parametrize("scale", [1e2, 1e4, 1e6])
def test_each_affine_layer_log_det_is_bounded_by_the_clamp(moons_realnvp, scale):
    """|log det| of an affine coupling <= c * (entries it transforms), for
    any input: the soft clamp's guarantee, whatever the network."""
    flow, x = moons_realnvp
    h = tf.constant(inverses.away_from(x, [scale])[0])
    for layer in flow.flow_layers:
        out, log_det = layer.inverse(h)
        assert np.all(np.isfinite(log_det))
        if isinstance(layer, tff.layers.AffineCoupling):
            clamp = layer.transformer.log_scale_clamp
            transformed = h.shape[-1] - (h.shape[-1] // 2)
            assert np.max(np.abs(log_det)) <= clamp * transformed + 1e-4
        h = out


def test_unclamped_affine_layers_have_no_bound():
    layer = tff.layers.Coupling(tff.bijectors.transformers.Affine(log_scale_clamp=None))
    with pytest.raises(ValueError, match="no round-trip bound"):
        inverses.local_error_constants(layer)


def _check_local_errors(flow, batch):
    """Each layer's own round trip, decode_k(encode_k(h)) - h, is within
    u (a |h_in| + b |h_out| + c): the per-layer constants the bound uses
    (for affine couplings b = 2 e^c, from the clamp)."""
    h = tf.constant(batch)
    for layer, make in inverses.flat_steps(flow):
        out = make().inverse(h)
        back = make().forward(out)
        a, b, c = inverses.local_error_constants(layer)
        rows = int(h.shape[0])
        size = lambda t: np.max(np.abs(np.asarray(t)).reshape(rows, -1), axis=1)
        error = size(np.asarray(back) - np.asarray(h))
        limit = 2.0**-24 * (a * size(h) + b * size(out) + c)
        assert np.all(error <= limit), (layer.name, error.max(), limit.min())
        h = out


def test_each_layers_own_round_trip_is_within_its_constants(moons_realnvp,
                                                             digits_glow):
    flow, x = moons_realnvp
    for batch in inverses.away_from(x, FAR):
        _check_local_errors(flow, batch)
    glow, (_, _, x_test) = digits_glow
    families, _ = inverses.digit_families(glow, x_test[:32])
    for name in ("0σ", "10σ", "uniform noise", "binary noise"):
        _check_local_errors(glow, families[name])
