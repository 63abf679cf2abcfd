"""Keras flow layers: bound bijectors, round trips, configs, actnorm, context."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfflows import layers as L
from tfflows.nn import MADE
from tests.bijector_cases import LAYER_CASES, built_layer, layer_data
from tests.helpers import copy, perturb

# The layer entries of the one registry (tests/bijector_cases.py), whose
# bijectors test_bijector_contract.py runs through the shared harness.
CASES = LAYER_CASES


def _data(shape, domain, batch=6, seed=0):
    return layer_data(shape, domain, batch, seed)


def _built(name, random_weights=True):
    entry = CASES[name]
    return built_layer(entry, random_weights=random_weights), entry.shape, entry.domain


@pytest.mark.parametrize("name", list(CASES))
def test_layer_round_trip_and_bound_bijector(name):
    layer, shape, domain = _built(name)
    ndims = len(shape)
    data = _data(shape, domain)

    # data -> latent -> data round trip, fed a copy so no cache answers.
    z, ldj = layer.inverse(data)
    assert ldj.shape == (6,)
    x_back, fldj = layer.forward(copy(z))
    np.testing.assert_allclose(x_back, data, atol=1e-5)
    np.testing.assert_allclose(fldj, -ldj, rtol=1e-5, atol=1e-4)

    # .bijector is a TFP bijector agreeing with the layer's log-det.
    bijector = layer.bijector
    assert isinstance(bijector, tfp.bijectors.Bijector)
    ildj = bijector.inverse_log_det_jacobian(copy(data), event_ndims=ndims)
    np.testing.assert_allclose(tf.broadcast_to(ildj, [6]), ldj, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(bijector.inverse(copy(data)), z, atol=1e-6)

    # Several batch dimensions: the same values, reshaped.
    z2, ldj2 = layer.inverse(tf.reshape(copy(data), (2, 3) + shape))
    assert ldj2.shape == (2, 3)
    np.testing.assert_allclose(tf.reshape(z2, z.shape), z, atol=1e-5)
    np.testing.assert_allclose(tf.reshape(ldj2, [6]), ldj, rtol=1e-5, atol=1e-4)

    # Bound to the variables: a bijector made before an assignment sees it.
    if layer.weights:
        before = bijector.inverse(copy(data)).numpy()
        rng = np.random.default_rng(7)
        for w in layer.weights:
            value = w.numpy()
            if np.issubdtype(value.dtype, np.integer):
                w.assign(value[::-1].copy())  # another permutation
            else:
                w.assign(value + 0.3 + 0.2 * rng.standard_normal(value.shape)
                         .astype(value.dtype))
        after = bijector.inverse(copy(data)).numpy()
        assert not np.allclose(before, after, atol=1e-4), (
            f"{name}: the bijector did not follow its layer's variables")


@pytest.mark.parametrize("name", list(CASES))
def test_config_round_trip_and_build_keeps_config(name):
    shape = CASES[name].shape
    layer = CASES[name].layer()
    before = layer.get_config()
    layer.build((None,) + shape)
    config = layer.get_config()
    assert config == before, "build() changed the config"
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # Through Keras's own (de)serialisation too, and the clone builds.
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer)
    assert revived.get_config() == config
    clone.build((None,) + shape)
    assert clone.get_config() == config


@pytest.mark.parametrize("name", list(CASES))
def test_unbuilt_layer_bijector_raises(name):
    layer = CASES[name].layer()
    with pytest.raises(ValueError, match="not built"):
        layer.bijector


# -- ActNorm -----------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3,), (4, 4, 3)], ids=["vector", "image"])
def test_actnorm_initialisation(shape):
    rng = np.random.default_rng(0)
    channels = shape[-1]
    x = (rng.standard_normal((64,) + shape) * np.linspace(0.1, 5, channels)
         + np.linspace(-3, 7, channels)).astype(np.float32)
    layer = L.ActNorm()
    layer.build((None,) + shape)
    assert float(layer.initialized.numpy()) == 0.0
    assert layer.initialize(tf.constant(x)) is True
    assert float(layer.initialized.numpy()) == 1.0
    z = layer.inverse(tf.constant(x))[0].numpy()
    axes = tuple(range(z.ndim - 1))
    np.testing.assert_allclose(z.mean(axis=axes), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=axes), 1.0, atol=1e-3)

    # A second initialisation is a no-op.
    loc, log_scale = layer.loc.numpy(), layer.log_scale.numpy()
    assert layer.initialize(tf.constant(x * 10 + 5)) is False
    np.testing.assert_array_equal(layer.loc.numpy(), loc)
    np.testing.assert_array_equal(layer.log_scale.numpy(), log_scale)


def test_actnorm_zero_variance_channel_is_finite():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 4, 4, 2)).astype(np.float32)
    x[..., 1] = 3.0  # a constant channel
    layer = L.ActNorm()
    layer.build((None, 4, 4, 2))
    layer.initialize(tf.constant(x))
    assert np.all(np.isfinite(layer.log_scale.numpy()))
    z, ldj = layer.inverse(tf.constant(x))
    assert np.all(np.isfinite(z.numpy())) and np.all(np.isfinite(ldj.numpy()))
    np.testing.assert_allclose(z.numpy()[..., 1], 0.0, atol=1e-6)
    x_back = layer.forward(copy(z))[0]
    np.testing.assert_allclose(x_back, x, atol=1e-5)


# -- conditional layers ------------------------------------------------------
CONDITIONAL = {
    "affine-half": (lambda: L.AffineCoupling(mask="half", hidden_units=(8,),
                                             context_dim=2), (4,)),
    "affine-checkerboard": (lambda: L.AffineCoupling(
        mask="checkerboard", hidden_channels=8, context_dim=2), (4, 4, 1)),
    "maf": (lambda: L.MaskedAutoregressive(hidden_units=(8,), context_dim=2,
                                           seed=1), (3,)),
    "iaf": (lambda: L.MaskedAutoregressive(hidden_units=(8,), iaf=True,
                                           context_dim=2, seed=1), (3,)),
    "spline-coupling-half": (lambda: L.Coupling(
        "spline", spline_bins=4, hidden_units=(8,), context_dim=2), (4,)),
    "spline-coupling-checkerboard": (lambda: L.Coupling(
        "spline", spline_bins=4, mask="checkerboard", hidden_channels=8,
        context_dim=2), (4, 4, 1)),
    "continuous": (lambda: L.Continuous(hidden_units=(8,), steps=16,
                                        context_dim=2), (3,)),
    "spline-maf": (lambda: L.MaskedAutoregressive(
        hidden_units=(8,), context_dim=2, seed=1, transformer="spline",
        spline_bins=4), (3,)),
}


@pytest.mark.parametrize("name", list(CONDITIONAL))
def test_conditional_layer(name):
    factory, shape = CONDITIONAL[name]
    # Seeded: the networks' initial weights otherwise come from whatever
    # state earlier tests left the global generator in (adding registry
    # entries changed it, and one spline draw then missed the 1e-5 bound).
    keras.utils.set_random_seed(0)
    layer = factory()
    layer.build((None,) + shape)
    # Spline weights at 0.3 make bins 100x apart, whose float32 round trips
    # lose more than 1e-5 to conditioning alone (tests/test_spline.py).
    perturb(layer, scale=0.1 if "spline" in name else 0.3)
    x = _data(shape, "real")
    rng = np.random.default_rng(3)
    c1 = tf.constant(rng.standard_normal((6, 2)).astype(np.float32))
    c2 = tf.constant(rng.standard_normal((6, 2)).astype(np.float32))

    z1, ldj1 = layer.inverse(x, context=c1)
    z2, _ = layer.inverse(copy(x), context=c2)
    assert not np.allclose(z1, z2, atol=1e-4), "output ignores the context"
    x_back, fldj = layer.forward(copy(z1), context=c1)
    np.testing.assert_allclose(x_back, x, atol=1e-5)
    np.testing.assert_allclose(fldj, -ldj1, rtol=1e-5, atol=1e-4)

    # One shared context [K] is the same as that context on every row.
    shared = layer.inverse(copy(x), context=c1[0])[0]
    rows = layer.inverse(copy(x), context=tf.tile(c1[:1], [6, 1]))[0]
    np.testing.assert_allclose(shared, rows, atol=1e-6)

    with pytest.raises(ValueError, match="needs a `context`"):
        layer.inverse(copy(x))
    with pytest.raises(ValueError, match="needs a `context`"):
        layer.forward(copy(z1))


@pytest.mark.parametrize("name", ["layer_affine_half", "layer_maf",
                                  "layer_actnorm_vector",
                                  "layer_permutation_reverse"])
def test_non_conditional_layer_rejects_context(name):
    layer, shape, domain = _built(name, random_weights=False)
    x = _data(shape, domain)
    context = tf.ones((6, 2))
    with pytest.raises(ValueError, match="not conditional"):
        layer.inverse(x, context=context)
    with pytest.raises(ValueError, match="not conditional"):
        layer.forward(x, context=context)


@pytest.mark.parametrize("cls", [L.ActNorm, L.Permutation, L.Squeeze, L.Logit])
def test_context_dim_on_unconditional_layer_type_raises(cls):
    with pytest.raises(ValueError, match="takes no context"):
        cls(context_dim=2)


def test_unseeded_layers_are_reproducible_after_set_random_seed():
    # Layers built without a seed draw one from NumPy's global generator,
    # which keras.utils.set_random_seed seeds: the same flow every time.
    def build():
        keras.utils.set_random_seed(7)
        return (L.InvertibleConv1x1().seed,
                L.MaskedAutoregressive(hidden_units=(4,), input_order="random").seed,
                MADE(3, 2, hidden_units=(4,), input_order="random").seed)
    first = build()
    assert build() == first
    keras.utils.set_random_seed(8)
    assert L.InvertibleConv1x1().seed != first[0]
