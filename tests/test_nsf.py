"""Neural spline flows: the `nsf` builder (NSF-AR and NSF-C), spline
couplings in RealNVP and Glow, saving, and the layers' transformer argument."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfflows as tff
from tests.helpers import copy, perturb
from tfflows import layers as L


def _vectors(n=16, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32) * 1.5


def _spline_layers(layers):
    for layer in layers:
        yield from _spline_layers(getattr(layer, "inner_layers", []))
        transformer = getattr(layer, "transformer", None)
        if transformer is not None:
            yield layer


BUILDERS = {
    "nsf-ar": lambda: tff.models.nsf(3, num_layers=2, hidden_units=(8,), spline_bins=4),
    "nsf-c": lambda: tff.models.nsf(3, num_layers=2, hidden_units=(8,), spline_bins=4,
                                    coupling=True),
    "nsf-ar-conditional": lambda: tff.models.nsf(3, num_layers=2, hidden_units=(8,),
                                                 spline_bins=4, context_dim=2),
    "nsf-c-conditional": lambda: tff.models.nsf(3, num_layers=2, hidden_units=(8,),
                                                spline_bins=4, coupling=True,
                                                context_dim=2),
}


def _flow_and_inputs(name):
    keras.utils.set_random_seed(0)  # the networks' initial weights
    flow = BUILDERS[name]()
    x = _vectors()
    kwargs = {}
    if name.endswith("conditional"):
        kwargs["context"] = np.random.default_rng(1).normal(size=(16, 2)).astype(np.float32)
    flow.initialize(x, kwargs.get("context"))
    perturb(flow, scale=0.1)
    return flow, x, kwargs


@pytest.mark.parametrize("name", list(BUILDERS))
def test_nsf_is_a_spline_flow_with_exact_inverses(name):
    flow, x, kwargs = _flow_and_inputs(name)
    splines = list(_spline_layers(flow.flow_layers))
    assert len(splines) == 2
    assert all(l.transformer.name == "spline" and l.transformer.bins == 4
               for l in splines)
    kind = L.Coupling if "nsf-c" in name else L.MaskedAutoregressive
    assert all(isinstance(l, kind) for l in splines)
    z = flow.encode(x, **kwargs)
    assert not np.allclose(z, x, atol=1e-3)
    np.testing.assert_allclose(flow.decode(copy(z), **kwargs), x, atol=1e-5)
    # (The layers' log-dets meet autodiff in the contract harness.)
    log_prob = flow.log_prob(x, **kwargs)
    dist = (flow.distribution_given(kwargs["context"]) if kwargs
            else flow.distribution)
    np.testing.assert_allclose(dist.log_prob(copy(x)), log_prob, rtol=1e-5, atol=1e-4)
    assert np.abs(log_prob - flow.base_log_prob(z)).max() > 1e-2
    sample = flow.sample(5, seed=2, **({"context": kwargs["context"][:5]} if kwargs else {}))
    assert sample.shape == (5, 3) and np.all(np.isfinite(sample))
    if kwargs:  # the context matters
        other = flow.log_prob(x, context=kwargs["context"][::-1])
        assert not np.allclose(other, log_prob, atol=1e-3)


@pytest.mark.parametrize("name", ["nsf-ar", "nsf-c-conditional"])
def test_nsf_keras_round_trip(name, tmp_path):
    flow, x, kwargs = _flow_and_inputs(name)
    data = x if not kwargs else {"x": x, "context": kwargs["context"]}
    flow.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    flow.fit(data, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "nsf.keras"
    flow.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    expected = flow.log_prob(x, **kwargs).numpy()
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(loaded.log_prob(x, **kwargs), expected, atol=1e-6)
    assert [l.get_config() for l in _spline_layers(loaded.flow_layers)] == \
        [l.get_config() for l in _spline_layers(flow.flow_layers)]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_fresh_nsf_is_exactly_the_identity(name):  # nflows#72, at the flow level
    """NSF-C's coupling networks and NSF-AR's MADE output kernels start at
    zero: every fresh spline layer maps each point to itself, both ways, so
    the flow is its permutations alone, with log-det 0."""
    keras.utils.set_random_seed(0)
    flow = BUILDERS[name]()
    x = _vectors(64, seed=2) * 2
    context = (np.random.default_rng(3).normal(size=(64, 2)).astype(np.float32)
               if name.endswith("conditional") else None)
    for layer in _spline_layers(flow.flow_layers):
        for direction in (layer.inverse, layer.forward):
            y, log_det = direction(x, context)
            np.testing.assert_allclose(y, x, atol=1e-6)
            np.testing.assert_allclose(log_det, np.zeros(64), atol=1e-6)
    kwargs = {} if context is None else {"context": context}
    np.testing.assert_allclose(flow.encode_and_log_det(x, **kwargs)[1],
                               np.zeros(64), atol=1e-6)


def test_nsf_ar_samples_by_the_stepwise_made_solve():
    """The layer's sampling direction runs MADE's solve; it equals
    the while-loop solve of D full passes."""
    flow, _, _ = _flow_and_inputs("nsf-ar")
    layer = next(_spline_layers(flow.flow_layers))
    z = tf.constant(_vectors(8, seed=3))
    stepwise = layer.bijector
    assert stepwise._solve_fn is not None
    loop = tff.bijectors.Autoregressive(layer.made, layer.transformer, event_size=3)
    np.testing.assert_allclose(stepwise.forward(z), loop.forward(copy(z)), atol=1e-5)
    np.testing.assert_allclose(stepwise.forward_log_det_jacobian(z, 1),
                               loop.forward_log_det_jacobian(copy(z), 1), atol=1e-5)


@pytest.mark.parametrize("builder", [
    lambda: tff.models.realnvp(image_shape=(4, 4, 1), levels=1, hidden_channels=4,
                               num_bins=17, transformer="spline", spline_bins=4),
    lambda: tff.models.glow((4, 4, 1), levels=1, steps_per_level=2,
                            hidden_channels=4, num_bins=17, transformer="spline"),
    lambda: tff.models.realnvp(event_dim=3, num_layers=2, hidden_units=(8,),
                               transformer="spline", tail_bound=4.0),
], ids=["realnvp-image", "glow", "realnvp-vector"])
def test_realnvp_and_glow_take_spline_couplings(builder):
    flow = builder()
    couplings = [l for l in _spline_layers(flow.flow_layers)
                 if isinstance(l, L.Coupling)]
    assert couplings and all(l.transformer.name == "spline" for l in couplings)
    shape = (6,) + flow.event_shape
    rng = np.random.default_rng(0)
    x = (rng.uniform(0.05, 0.95, shape) if flow.num_bins else rng.normal(size=shape))
    x = tf.constant(x.astype(np.float32))
    flow.initialize(x)
    perturb(flow, scale=0.2)
    z = flow.encode(x)
    np.testing.assert_allclose(flow.decode(copy(z)), x, atol=1e-5)
    assert np.all(np.isfinite(flow.log_prob(x)))


def test_default_builders_keep_their_affine_layers():
    """The default flows are what they were: same classes, same configs."""
    flow = tff.models.realnvp(event_dim=3, num_layers=2, hidden_units=(8,))
    couplings = [l for l in flow.flow_layers if isinstance(l, L.Coupling)]
    assert [type(l) for l in couplings] == [L.AffineCoupling] * 2
    assert "transformer" not in couplings[0].get_config()
    glow = tff.models.glow((4, 4, 1), levels=1, steps_per_level=1, hidden_channels=4)
    assert any(type(l) is L.AffineCoupling for l in glow.flow_layers)


def test_transformer_arguments_are_checked():
    with pytest.raises(ValueError, match=r"transformer=.spline. only.*transformer=.affine., spline_bins=4"):
        L.Coupling("affine", spline_bins=4)
    with pytest.raises(ValueError, match=r"transformer must be one of .*'quadratic'"):
        L.MaskedAutoregressive(transformer="quadratic")
    with pytest.raises(ValueError, match=r"spline_bins must be None or an integer >= 2\. Received: spline_bins=1"):
        tff.models.nsf(3, spline_bins=1)
    with pytest.raises(ValueError, match=r"event_dim >= 2.*event_dim=1"):
        tff.models.nsf(1, coupling=True)
    layer = L.Coupling("spline", spline_bins=5, tail_bound=2.0, hidden_units=(4,))
    config = layer.get_config()
    assert config["transformer"] == {"name": "spline", "config": {
        "bins": 5, "tail_bound": 2.0, "min_bin_width": 1e-3,
        "min_bin_height": 1e-3, "min_derivative": 1e-3}}
    assert L.Coupling.from_config(config).transformer == layer.transformer
    layer.build((None, 4))
    assert layer.network.get_config()["num_params"] == 14


@pytest.mark.parametrize("cls, args, shape", [
    (tff.nn.CouplingMLP, dict(output_size=3, hidden_units=(8,)), (5, 2)),
    (tff.nn.CouplingConvNet, dict(output_channels=2, hidden_channels=4), (5, 4, 4, 1)),
], ids=["mlp", "conv"])
def test_stacked_networks_give_the_tuple_outputs_stacked(cls, args, shape):
    """Coupling layers use stacked networks; the weights and their layout
    (parameter-major output units) are those of the tuple form, so the
    .keras files of affine layers still load (tests/test_legacy_files.py)."""
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    as_tuple, stacked = cls(num_params=3, **args), cls(num_params=3, stacked=True, **args)
    as_tuple(x), stacked(x)
    perturb(as_tuple, scale=0.3)
    stacked.set_weights(as_tuple.get_weights())
    np.testing.assert_allclose(stacked(x), tf.stack(as_tuple(x), axis=-1), atol=1e-6)
    assert stacked.get_config()["stacked"] is True


def test_spline_couplings_ask_for_xla_on_cpu():
    """Splines are many small elementwise ops: XLA halves a training step on
    CPU even with dense networks (figures in transformers/spline.py)."""
    assert L.Coupling("spline").xla_on_cpu is True
    assert L.Coupling("affine").xla_on_cpu is False
    assert L.MaskedAutoregressive(transformer="spline").xla_on_cpu is True


def test_affine_layers_shift_in_the_latent_and_old_configs_keep_the_data_form():
    """New affine layers put the shift in the latent (zuko's form, measured
    better in transformers/affine.py); configs written before the option
    (bare "affine", no transformer key, no `shift`) load in the data form
    they were trained with, and new configs say which form they hold."""
    T = tff.bijectors.transformers
    assert T.Affine().shift == "latent"
    assert L.AffineCoupling().transformer.shift == "latent"
    assert L.MaskedAutoregressive().transformer.shift == "latent"
    assert L.MaskedAutoregressive(iaf=True).transformer.shift == "data"  # for VI
    assert T.deserialize({"name": "affine", "config": {"log_scale_clamp": 5.0}}).shift == "data"
    old_ar = {k: v for k, v in L.MaskedAutoregressive(hidden_units=(4,)).get_config().items()
              if k != "transformer"}
    assert L.MaskedAutoregressive.from_config(old_ar).transformer.shift == "data"
    assert L.MaskedAutoregressive.from_config(
        {**old_ar, "transformer": "affine"}).transformer.shift == "data"
    old_coupling = {k: v for k, v in L.AffineCoupling().get_config().items() if k != "shift"}
    assert L.AffineCoupling.from_config(old_coupling).transformer.shift == "data"
    assert L.Coupling.from_config(
        {**L.Coupling("additive").get_config(), "transformer": "affine"}
    ).transformer.shift == "data"
    for layer in (L.AffineCoupling(shift="data"), L.Coupling(T.Affine(shift="data")),
                  L.MaskedAutoregressive(transformer=T.Affine(shift="data"))):
        assert type(layer).from_config(layer.get_config()).transformer == layer.transformer
    # The two forms are different maps for the same parameters.
    params = tf.constant([[0.5, 0.3]])
    x = tf.constant([1.0])
    data_form, _ = T.Affine(shift="data").forward(x, params)
    latent_form, _ = T.Affine(shift="latent").forward(x, params)
    np.testing.assert_allclose(data_form, np.exp(0.3 / (1 + 0.3 / 5)) + 0.5, rtol=1e-6)
    np.testing.assert_allclose(latent_form, (1.0 - 0.5) * np.exp(0.3 / (1 + 0.3 / 5)), rtol=1e-6)


def test_affine_layers_clamp_rationally_and_old_configs_keep_tanh():
    """New affine layers and bijectors soft-clamp the log-scale in the
    rational form (measured better in transformers/affine.py); configs
    written before the option load with the tanh clamp they were trained
    with, and new configs say which form they hold."""
    T = tff.bijectors.transformers
    for layer in (L.AffineCoupling(), L.Coupling("affine"), L.MaskedAutoregressive(),
                  L.MaskedAutoregressive(iaf=True)):
        assert layer.transformer.clamp_form == "rational"
    for bijector in (tff.bijectors.AffineCoupling(lambda x: (x, x), [2]),
                     tff.bijectors.MaskedAutoregressive(lambda x: (x, x))):
        assert bijector.transformer.clamp_form == "rational"
    assert T.deserialize({"name": "affine", "config": {"log_scale_clamp": 5.0,
                                                       "shift": "latent"}}).clamp_form == "tanh"
    made = L.MaskedAutoregressive(hidden_units=(4,)).get_config()
    old_ar = {**made, "transformer": {"name": "affine", "config": {
        "log_scale_clamp": 5.0, "shift": "latent"}}}
    assert L.MaskedAutoregressive.from_config(old_ar).transformer.clamp_form == "tanh"
    assert L.MaskedAutoregressive.from_config(
        {k: v for k, v in made.items() if k != "transformer"}).transformer.clamp_form == "tanh"
    old_coupling = {k: v for k, v in L.AffineCoupling().get_config().items()
                    if k != "clamp_form"}
    assert L.AffineCoupling.from_config(old_coupling).transformer.clamp_form == "tanh"
    for layer in (L.AffineCoupling(clamp_form="tanh"), L.AffineCoupling(),
                  L.Coupling(T.Affine(clamp_form="tanh")),
                  L.MaskedAutoregressive(transformer=T.Affine(clamp_form="tanh"))):
        assert type(layer).from_config(layer.get_config()).transformer == layer.transformer
    # The two forms are different maps for the same parameters.
    params = tf.constant([[0.0, 2.0]])
    x = tf.constant([1.0])
    np.testing.assert_allclose(T.Affine().forward(x, params)[1], 2 / (1 + 2 / 5), rtol=1e-6)
    np.testing.assert_allclose(T.Affine(clamp_form="tanh").forward(x, params)[1],
                               5 * np.tanh(2 / 5), rtol=1e-6)
    with pytest.raises(ValueError, match=r"shift must be one of .*Received: shift='both'"):
        T.Affine(shift="both")


@pytest.mark.parametrize("name", ["additive", "affine", "spline"])
def test_transformers_take_planes_as_they_take_stacked_params(name):
    transformer = tff.bijectors.transformers.get(name)
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(6, 5)) * 2.0)
    params = tf.constant(rng.normal(size=(6, 5, transformer.num_params)))
    planes = tuple(params[..., p] for p in range(transformer.num_params))
    for direction in ("forward", "inverse"):
        stacked_out = getattr(transformer, direction)(x, params)
        planes_out = getattr(transformer, direction)(x, planes)
        for a, b in zip(stacked_out, planes_out):
            if a is None:
                assert b is None
            else:
                np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match=f"takes {transformer.num_params} parameters"):
        transformer.forward(x, planes + (planes[0],))


def test_couplings_and_mafs_hand_their_transformers_planes():
    """The layers pass each parameter as its own tensor (no stacking
    transpose): the bijectors accept that form, and a wrong count is named."""
    conditioner = lambda x_a: (tf.zeros_like(x_a),) * 3
    coupling = tff.bijectors.Coupling(conditioner, [4], transformer="affine")
    with pytest.raises(ValueError, match="returned 3 tensors"):
        coupling.forward(tf.zeros([2, 4]))
    made = tff.nn.MADE(4, 2, hidden_units=(8,))
    made(np.zeros((1, 4), "float32"))
    bijector = tff.bijectors.Autoregressive(made.planes, transformer="affine",
                                            event_size=4)
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 4)), tf.float32)
    np.testing.assert_allclose(bijector.inverse(x).numpy(), x.numpy())  # zero output
    wrong = tff.bijectors.Autoregressive(lambda x: made.planes(x)[:1],
                                         transformer="affine", event_size=4)
    with pytest.raises(ValueError, match="returned 1 tensors"):
        wrong.inverse(x)
