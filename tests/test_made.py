"""Tests for tfflows.nn.made.MADE: autoregressive property, shapes, serialization."""

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfflows.nn import made as made_module
from tfflows.nn.made import MADE


def _order(made):
    return np.asarray(made.get_config()["input_order"])


def _randomize(layer, seed=0):
    """Sets every weight (incl. the zero-initialised output layer) to N(0, 1)."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(rng.normal(size=w.shape).astype(w.dtype))


def _paths(masks, num_params, param_major=True):
    """paths[j, i, p]: whether some path links input j to output (i, p)."""
    conn = np.eye(masks[0].shape[0], dtype=np.int64)
    for m in masks:
        conn = (conn @ m.astype(np.int64) > 0).astype(np.int64)
    if param_major:  # column p * D + i
        return conn.reshape(conn.shape[0], num_params, -1).transpose(0, 2, 1) > 0
    return conn.reshape(conn.shape[0], -1, num_params).astype(bool)


def _jacobian(made, x, context=None):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = made(x, context=context) if context is not None else made(x)
    return tape.batch_jacobian(y, x).numpy()  # [B, D, P, D]


ORDERS = ["natural", "reversed", "random", "explicit"]


def _make_order(kind, d):
    return list(np.random.default_rng(d).permutation(d) + 1) if kind == "explicit" else kind


@pytest.mark.parametrize("d", [1, 2, 5])
@pytest.mark.parametrize("order_kind", ORDERS)
@pytest.mark.parametrize("hidden_degrees", ["equal", "random"])
@pytest.mark.parametrize("num_params, param_major", [(1, True), (2, True), (3, False)])
def test_autoregressive_property(d, order_kind, hidden_degrees, num_params, param_major):
    made = MADE(d, num_params, hidden_units=(7, 6), input_order=_make_order(order_kind, d),
                hidden_degrees=hidden_degrees, activation="tanh", seed=3, dtype="float64",
                param_major=param_major)
    x = tf.constant(np.random.default_rng(1).normal(size=(4, d)))
    made(x)
    _randomize(made)
    order = _order(made)
    assert sorted(order) == list(range(1, d + 1))
    # Masks, checked against a brute-force path enumeration through the network.
    masks = made.masks
    assert [m.shape for m in masks] == [(d, 7), (7, 6), (6, d * num_params)]
    assert all(set(np.unique(m)) <= {0.0, 1.0} for m in masks)
    paths = _paths(masks, num_params, param_major)
    allowed = order[:, None] < order[None, :]  # [j, i]: order[j] < order[i]
    assert not np.any(paths & ~allowed[:, :, None])
    if hidden_degrees == "equal":  # every hidden width >= D - 1: all allowed paths exist
        assert np.array_equal(paths, np.broadcast_to(allowed[:, :, None], paths.shape))
    # The Jacobian: exactly zero off the allowed pattern, non-zero along every path.
    jac = _jacobian(made, x)
    for i in range(d):
        for p in range(num_params):
            for j in range(d):
                if order[j] >= order[i] or not paths[j, i, p]:
                    assert np.all(jac[:, i, p, j] == 0.0), (i, p, j)
                else:
                    assert np.all(jac[:, i, p, j] != 0.0), (i, p, j)
    if d >= 2:
        assert np.any(jac != 0.0)


def _transform(z, params):
    """An invertible map of the entries `z` that reads every parameter."""
    log_scale = tf.tanh(params[0])
    return z * tf.exp(log_scale) + sum(params[1:], tf.zeros([], z.dtype)), log_scale


def _solve_by_full_passes(made, z, context):
    """x with x_d = _transform(z_d, theta_d(x)): D passes of the whole network."""
    x = np.zeros_like(z)
    for _ in range(made.event_size):
        theta = made(x, context=context).numpy().astype(z.dtype)
        x, log_det = (t.numpy() for t in _transform(
            z, [theta[..., p] for p in range(made.num_params)]))
    return x, log_det.sum(-1)


@pytest.mark.parametrize("d", [1, 2, 5])
@pytest.mark.parametrize("order_kind", ORDERS)
# (16, 16) keeps a running sum over the output (D * num_params <= 16); the
# narrower ones keep the last hidden layer's activations instead.
@pytest.mark.parametrize("hidden_units", [(7,), (7, 6), (3, 9, 4), (16, 16)])
@pytest.mark.parametrize("context_dim", [None, 2])
@pytest.mark.parametrize("num_params, param_major", [(2, True), (3, False)])
@pytest.mark.parametrize("unroll", [True, False])
def test_solve_equals_d_passes_of_the_network(d, order_kind, hidden_units, context_dim,
                                              num_params, param_major, unroll):
    made = MADE(d, num_params, hidden_units=hidden_units,
                input_order=_make_order(order_kind, d), context_dim=context_dim,
                activation="tanh", seed=3, dtype="float64", param_major=param_major)
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 3, d))  # two batch dims; the context broadcasts
    context = None if context_dim is None else tf.constant(rng.normal(size=(3, 2)))
    made(z, context=context)
    _randomize(made)
    x, log_det = made.solve(tf.constant(z), _transform, context, unroll=unroll)
    expected_x, expected_log_det = _solve_by_full_passes(made, z, context)
    assert x.shape == z.shape and log_det.shape == z.shape[:-1]
    np.testing.assert_allclose(x, expected_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(log_det, expected_log_det, rtol=1e-12, atol=1e-12)


def test_solve_traces_with_an_unknown_batch_and_passes_a_none_log_det_on():
    made = MADE(4, 1, hidden_units=(8,), input_order="random", seed=2, dtype="float64")
    made(np.zeros((1, 4)))
    _randomize(made)

    def shift(z, params):
        return z + params[0], None

    solve = tf.function(lambda z: made.solve(z, shift),
                        input_signature=[tf.TensorSpec([None, 4], tf.float64)])
    z = np.random.default_rng(0).normal(size=(6, 4))
    x, log_det = solve(z)
    assert log_det is None
    np.testing.assert_allclose(x, z + made(x).numpy()[..., 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_looped_solve_matches_unrolled_in_graphs_with_gradients(jit_compile):
    """The looped solve is one step in a tf.while_loop: traced with an
    unknown batch, compiled by XLA, differentiated (IAF's density trains
    through it), it gives the unrolled solve's values and gradients."""
    made = MADE(5, 2, hidden_units=(9, 6), input_order="reversed", context_dim=2,
                seed=1, dtype="float64")
    rng = np.random.default_rng(0)
    z, context = rng.normal(size=(6, 5)), rng.normal(size=(6, 2))
    made(z, context=context)
    _randomize(made)
    spec = [tf.TensorSpec([None, 5], tf.float64), tf.TensorSpec([None, 2], tf.float64)]
    results = []
    for unroll in (True, False):
        @tf.function(input_signature=spec, jit_compile=jit_compile)
        def solve(z, context):
            with tf.GradientTape() as tape:
                x, log_det = made.solve(z, _transform, context, unroll=unroll)
                loss = tf.reduce_sum(x ** 2) + tf.reduce_sum(log_det)
            return x, log_det, tape.gradient(loss, made.trainable_variables)

        results.append(solve(tf.constant(z), tf.constant(context)))
    for unrolled, looped in zip(tf.nest.flatten(results[0]), tf.nest.flatten(results[1])):
        np.testing.assert_allclose(looped, unrolled, rtol=1e-10, atol=1e-12)
    assert any(np.abs(g).max() > 0 for g in results[1][2])


def test_solve_under_mixed_precision_returns_the_inputs_dtype():
    made = MADE(3, 2, hidden_units=(8,), dtype="mixed_float16")
    z = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    made(z)
    _randomize(made)
    x, log_det = made.solve(tf.constant(z), _transform)
    assert x.dtype == log_det.dtype == tf.float32
    expected_x, expected_log_det = _solve_by_full_passes(made, z, None)
    np.testing.assert_allclose(x, expected_x, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(log_det, expected_log_det, rtol=1e-2, atol=1e-2)


def test_solve_needs_a_built_made_with_sorted_hidden_degrees():
    made = MADE(4, 2, hidden_units=(8,))
    with pytest.raises(ValueError, match="not built"):
        made.solve(tf.zeros((1, 4)), _transform)
    made = MADE(4, 2, hidden_units=(8,), hidden_degrees="random", seed=0)
    made(np.zeros((1, 4), "float32"))
    assert not made.supports_solve  # seed 0 draws unsorted degrees
    with pytest.raises(ValueError, match="unsorted hidden degrees"):
        made.solve(tf.zeros((1, 4)), _transform)


def test_solve_checks_its_inputs_like_call():
    made = MADE(4, 2, hidden_units=(8,), context_dim=3)
    made(np.zeros((1, 4), "float32"), context=np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match=r"Expected `z` of shape \(\.\.\., 4\)"):
        made.solve(tf.zeros((1, 5)), _transform, tf.zeros((1, 3)))
    with pytest.raises(ValueError, match="requires `context`"):
        made.solve(tf.zeros((1, 4)), _transform)
    with pytest.raises(ValueError, match=r"Expected `context` of shape \(\.\.\., 3\)"):
        made.solve(tf.zeros((1, 4)), _transform, tf.zeros((1, 2)))


def test_masks_match_degree_rule_and_narrow_hidden_layers():
    made = MADE(6, 2, hidden_units=(3, 2, 4), input_order="random",
                hidden_degrees="random", seed=11, activation="tanh", dtype="float64")
    degrees, masks = made.degrees, made.masks
    np.testing.assert_array_equal(degrees[0], _order(made))
    for k in range(3):
        for a in range(len(degrees[k])):
            for b in range(len(degrees[k + 1])):
                assert masks[k][a, b] == float(degrees[k + 1][b] >= degrees[k][a])
    out_degrees = np.tile(degrees[0], 2)  # parameter-major: column p * D + d
    for a in range(4):
        for b in range(12):
            assert masks[3][a, b] == float(out_degrees[b] > degrees[3][a])
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 6)))
    made(x)
    _randomize(made, 5)
    order = degrees[0]
    jac = _jacobian(made, x)
    forbidden = order[None, :] >= order[:, None]  # [i, j]
    assert np.all(jac.transpose(0, 1, 3, 2)[:, forbidden] == 0.0)


def test_fresh_network_outputs_zero():
    made = MADE(4, 3, hidden_units=(16, 16), input_order="random", seed=0)
    y = made(np.random.default_rng(0).normal(size=(8, 4)).astype("float32"))
    assert np.all(y.numpy() == 0.0)
    made_c = MADE(4, 2, hidden_units=(8,), context_dim=3)
    y = made_c(np.ones((2, 4), "float32"), context=np.ones((2, 3), "float32"))
    assert np.all(y.numpy() == 0.0)


@pytest.mark.parametrize("batch", [(5,), (2, 3), ()])
def test_output_shape(batch):
    made = MADE(3, 2, hidden_units=(8, 8))
    y = made(np.zeros(batch + (3,), "float32"))
    assert tuple(y.shape) == batch + (3, 2)
    assert y.dtype == tf.float32


def test_float64():
    made = MADE(3, 2, hidden_units=(8,), dtype="float64")
    y = made(np.ones((2, 3)))
    assert y.dtype == tf.float64
    assert all(w.dtype == "float64" for w in made.weights)


def test_jit_compile_matches_eager():
    made = MADE(4, 2, hidden_units=(16, 16), input_order="reversed", context_dim=2)
    x = tf.constant(np.random.default_rng(0).normal(size=(6, 4)), tf.float32)
    c = tf.constant(np.random.default_rng(1).normal(size=(6, 2)), tf.float32)
    made(x, context=c)
    _randomize(made)
    fn = tf.function(lambda x, c: made(x, context=c), jit_compile=True,
                     autograph=False)
    np.testing.assert_allclose(fn(x, c).numpy(), made(x, context=c).numpy(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d", [1, 4])
def test_conditional(d):
    made = MADE(d, 2, hidden_units=(8, 8), input_order="random", context_dim=3,
                activation="tanh", seed=2, dtype="float64")
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(5, d)))
    c1, c2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    made(x, context=c1)
    _randomize(made)
    y1, y2 = made(x, context=c1).numpy(), made(x, context=c2).numpy()
    assert np.all(y1 != y2)  # every output sees the context
    order = _order(made)
    jac = _jacobian(made, x, context=tf.constant(c1))
    forbidden = order[None, :] >= order[:, None]  # [i, j]
    assert np.all(jac.transpose(0, 1, 3, 2)[:, forbidden] == 0.0)
    if d >= 2:
        assert np.any(jac != 0.0)
    # Context batch dims broadcast against x's.
    xb = rng.normal(size=(2, 5, d))
    assert tuple(made(xb, context=c1).shape) == (2, 5, d, 2)
    assert tuple(made(xb, context=c1[:1]).shape) == (2, 5, d, 2)
    with pytest.raises(ValueError, match="context"):
        made(x)
    with pytest.raises(ValueError, match="context"):
        made(x, context=rng.normal(size=(5, 2)))


def test_context_without_context_dim_raises():
    made = MADE(3, 2, hidden_units=(8,))
    with pytest.raises(ValueError, match="context_dim=None"):
        made(np.ones((2, 3), "float32"), context=np.ones((2, 2), "float32"))


def test_wrong_event_size_raises():
    made = MADE(3, 2, hidden_units=(8,))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\).*x.shape=\(2, 4\)"):
        made(np.ones((2, 4), "float32"))  # in build
    made(np.ones((2, 3), "float32"))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\).*x.shape=\(2, 5\)"):
        made(np.ones((2, 5), "float32"))  # in call


def test_config_round_trip():
    made = MADE(5, 2, hidden_units=(9, 7), input_order="random",
                hidden_degrees="random", context_dim=2, activation="tanh",
                kernel_initializer="he_normal", name="m")
    config = made.get_config()
    assert isinstance(config["input_order"], list) and isinstance(config["seed"], int)
    clone = MADE.from_config(config)
    assert clone.get_config() == config
    for a, b in zip(made.masks, clone.masks):
        np.testing.assert_array_equal(a, b)
    explicit = MADE(3, 1, hidden_units=(4,), input_order=[2, 3, 1])
    assert explicit.get_config()["input_order"] == [2, 3, 1]
    assert explicit.get_config()["seed"] is None
    assert MADE.from_config(explicit.get_config()).get_config() == explicit.get_config()
    # Configs saved before `param_major` existed had input-major columns.
    legacy = {k: v for k, v in config.items() if k != "param_major"}
    assert config["param_major"] and not MADE.from_config(legacy).param_major


def test_save_and_load(tmp_path):
    x_in, c_in = keras.Input((4,)), keras.Input((2,))
    made = MADE(4, 2, hidden_units=(8, 8), input_order="random",
                hidden_degrees="random", context_dim=2)
    model = keras.Model([x_in, c_in], made(x_in, context=c_in))
    _randomize(made)
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(6, 4)).astype("float32"), rng.normal(size=(6, 2)).astype("float32")
    expected = model.predict([x, c], verbose=0)
    assert np.any(expected != 0.0)
    path = str(tmp_path / "made.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict([x, c], verbose=0), expected, rtol=1e-6)
    loaded_made = [layer for layer in loaded.layers if isinstance(layer, MADE)][0]
    assert loaded_made.get_config() == made.get_config()


@pytest.mark.parametrize("kwargs, name", [
    (dict(event_size=0), "event_size"),
    (dict(event_size=-2), "event_size"),
    (dict(event_size=2.5), "event_size"),
    (dict(event_size=True), "event_size"),
    (dict(num_params=0), "num_params"),
    (dict(hidden_units=()), "hidden_units"),
    (dict(hidden_units=(8, 0)), "hidden_units"),
    (dict(hidden_units=(-4,)), "hidden_units"),
    (dict(hidden_units=8), "hidden_units"),
    (dict(hidden_units="64"), "hidden_units"),
    (dict(input_order="left-to-right"), "input_order"),
    (dict(input_order=[1, 2]), "input_order"),
    (dict(input_order=[1, 1, 2]), "input_order"),
    (dict(input_order=[0, 1, 2]), "input_order"),
    (dict(input_order=[1, 2, 3.5]), "input_order"),
    (dict(hidden_degrees="uniform"), "hidden_degrees"),
    (dict(context_dim=0), "context_dim"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments(kwargs, name):
    args = dict(event_size=3, num_params=2, hidden_units=(8,))
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"{name}.*Received: {name}="):
        MADE(**args)


def test_docstring_example():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(made_module.MADE, globs=vars(made_module)):
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 1


@pytest.mark.parametrize("param_major", [True, False])
@pytest.mark.parametrize("context_dim", [None, 2])
def test_planes_are_the_output_unstacked(param_major, context_dim):
    made = MADE(4, 3, hidden_units=(8,), param_major=param_major,
                context_dim=context_dim, seed=1, dtype="float64")
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(5, 4)))
    context = None if context_dim is None else tf.constant(rng.normal(size=(5, 2)))
    made(x, context=context)
    _randomize(made)
    stacked = made(x, context=context).numpy()
    planes = made.planes(x, context)
    assert isinstance(planes, tuple) and len(planes) == 3
    for p, plane in enumerate(planes):
        np.testing.assert_array_equal(plane.numpy(), stacked[..., p])


def test_planes_need_a_built_network():
    with pytest.raises(ValueError, match="not built"):
        MADE(4, 2, hidden_units=(8,)).planes(np.zeros((2, 4), "float32"))
