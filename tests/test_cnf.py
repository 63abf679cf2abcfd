"""Continuous normalizing flows: flow matching through fit, the ODE's
round trip and log-density (exact and Hutchinson traces), conditional
CNFs and `.keras` files."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfflows as tff
from tfflows import layers as L


@pytest.fixture(scope="module")
def moons_cnf():
    """A CNF trained by flow matching on two moons (a few seconds)."""
    keras.utils.set_random_seed(0)
    x = tff.data.two_moons(4096, seed=0)
    flow = tff.models.cnf(2, hidden_units=(64, 64, 64))
    flow.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = flow.fit(x, batch_size=256, epochs=30, verbose=0)
    return flow, x, history


def test_fit_logs_the_flow_matching_loss(moons_cnf):
    flow, x, history = moons_cnf
    loss, fm = history.history["loss"], history.history["fm_loss"]
    assert np.allclose(loss, fm) and loss[0] > 0
    assert loss[-1] < 0.8 * loss[0]
    metrics = flow.evaluate(x[:512], verbose=0, return_dict=True)
    assert set(metrics) == {"loss", "fm_loss"} and metrics["loss"] > 0


def test_validation_loss_is_the_same_every_time(moons_cnf):
    # The validation draws (t, z) are keyed by each row's values: the same
    # rows give the same val_fm_loss in any evaluation, batch size or order.
    flow, x, _ = moons_cnf
    first = flow.evaluate(x[:512], verbose=0, return_dict=True)["fm_loss"]
    again = flow.evaluate(x[:512], verbose=0, return_dict=True)["fm_loss"]
    assert first == again
    shuffled = flow.evaluate(x[:512][::-1], batch_size=100, verbose=0,
                             return_dict=True)["fm_loss"]
    np.testing.assert_allclose(shuffled, first, rtol=1e-5)
    other_rows = flow.evaluate(x[512:1024], verbose=0, return_dict=True)["fm_loss"]
    assert other_rows != first


def test_row_keyed_draws_depend_on_the_row_alone():
    from tfflows.objectives import row_keyed_draws
    x = np.random.default_rng(0).standard_normal((20_000, 3)).astype(np.float32)
    t, z = (np.asarray(v) for v in row_keyed_draws(x, None, seed=0))
    t_one, z_one = row_keyed_draws(x[7:8], None, seed=0)
    assert t_one[0] == t[7] and np.array_equal(z_one[0], z[7])
    # U(0, 1) and N(0, I), independent of each other and of the seed's twin
    assert abs(t.mean() - 0.5) < 0.01 and abs(t.var() - 1 / 12) < 0.003
    assert np.abs(z.mean(0)).max() < 0.03 and np.abs(z.std(0) - 1).max() < 0.03
    assert np.abs(np.corrcoef(np.column_stack([t, z]).T) - np.eye(4)).max() < 0.03
    t_other, _ = row_keyed_draws(x, None, seed=1)
    assert abs(np.corrcoef(t, t_other)[0, 1]) < 0.03
    # with a context, the context is part of the key
    t_c, _ = row_keyed_draws(x[:100], np.ones((100, 2), np.float32), seed=0)
    assert not np.array_equal(np.asarray(t_c), t[:100])
    # several draws per row: the batch repeated, draw-major, all different
    t4, z4 = row_keyed_draws(x[:100], None, seed=0, draws=4)
    assert t4.shape == (400,) and z4.shape == (400, 3)
    np.testing.assert_array_equal(t4[:100], t[:100])
    assert len(np.unique(np.asarray(t4))) == 400


def test_early_stopping_keeps_the_best_validation_loss():
    # Deterministic validation: the restored weights score exactly the best
    # val_fm_loss the history logged (fresh noise would not reproduce it).
    keras.utils.set_random_seed(1)
    x = tff.data.two_moons(1536, seed=1)
    flow = tff.models.cnf(2, hidden_units=(16, 16))
    flow.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = flow.fit(x[:1024], batch_size=128, epochs=12, verbose=0,
                       validation_data=x[1024:], callbacks=[
                           keras.callbacks.EarlyStopping(
                               "val_loss", patience=3, restore_best_weights=True)])
    val = history.history["val_fm_loss"]
    assert np.allclose(val, history.history["val_loss"])
    best = flow.evaluate(x[1024:], verbose=0, return_dict=True)["fm_loss"]
    np.testing.assert_allclose(best, min(val), rtol=1e-5)


def test_fresh_cnf_is_the_identity():
    flow = tff.models.cnf(3, hidden_units=(8,))
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(flow.encode(x), x, atol=1e-6)
    np.testing.assert_allclose(
        flow.log_prob(x), tff.distributions.StandardNormal((3,)).log_prob(x),
        atol=1e-5)


def test_round_trip(moons_cnf):
    flow, x, _ = moons_cnf
    z = flow.encode(x[:1000])
    assert np.abs(flow.decode(z) - x[:1000]).max() < 1e-3
    x_new = flow.sample(500, seed=1)
    assert np.abs(flow.decode(flow.encode(x_new)) - x_new).max() < 1e-3


def test_density_integrates_to_one_on_a_grid(moons_cnf):
    flow, x, _ = moons_cnf
    grid = np.linspace(-4.0, 4.0, 161)
    gx, gy = np.meshgrid(grid, grid)
    points = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    mass = np.exp(flow.log_prob(points)).sum() * (grid[1] - grid[0]) ** 2
    assert abs(mass - 1.0) < 0.03
    # and it has learnt the moons: better than a standard normal
    assert -np.mean(flow.log_prob(x[:1000])) < 2.2


def test_held_out_nll_beats_the_best_gaussian(moons_cnf):
    flow, x, _ = moons_cnf
    test = tff.data.two_moons(1000, seed=5)
    nll = -float(np.mean(flow.log_prob(test)))
    assert nll < tff.data.gaussian_nll(x, test) - 0.6


def test_dormand_prince_agrees_with_rk4(moons_cnf):
    flow, x, _ = moons_cnf
    layer = flow.continuous_layer
    rk4 = flow.log_prob(x[:200])
    dopri = layer.make_bijector()
    dopri._solver = "dopri5"
    z = dopri.inverse(tf.constant(x[:200]))
    ildj = dopri.inverse_log_det_jacobian(tf.constant(x[:200]), event_ndims=1)
    np.testing.assert_allclose(flow.base_log_prob(z) + ildj, rk4, atol=2e-3)


def _trained_field(d, seed=0):
    """A random time-dependent field: a layer with perturbed weights."""
    keras.utils.set_random_seed(seed)
    layer = L.Continuous(hidden_units=(16, 16), steps=8)
    layer.build((None, d))
    rng = np.random.default_rng(seed)
    for w in layer.trainable_weights:
        w.assign(w.numpy() + 0.3 * rng.standard_normal(w.shape).astype(w.dtype))
    return layer


def _dense_trace(layer, x, t):
    with tf.GradientTape() as tape:
        tape.watch(x)
        v = layer.velocity(x, t)
    return tf.linalg.trace(tape.batch_jacobian(v, x))


def test_exact_trace_equals_the_dense_jacobians():
    layer = _trained_field(3)
    x = tf.constant(np.random.default_rng(1).standard_normal((16, 3)), tf.float32)
    t = tf.constant(0.3)
    bijector = layer.make_bijector()
    assert bijector.trace == "exact"
    probes, weight = bijector._probes(16, tf.float32)
    v, trace = bijector._velocity_and_trace(x, t, probes, weight, None)
    np.testing.assert_allclose(v, layer.velocity(x, t), atol=1e-6)
    np.testing.assert_allclose(trace, _dense_trace(layer, x, t), atol=1e-5)


def test_hutchinson_is_unbiased_within_its_error_bars():
    d, seeds = 12, 400
    layer = _trained_field(d)
    layer.num_probes = 1
    x = tf.constant(np.random.default_rng(2).standard_normal((8, d)), tf.float32)
    t = tf.constant(0.6)
    exact = _dense_trace(layer, x, t).numpy()
    estimates = []
    for seed in range(seeds):
        layer.probe_seed = seed
        bijector = layer.make_bijector()
        assert bijector.trace == "hutchinson"  # auto: D > 10
        probes, weight = bijector._probes(8, tf.float32)
        estimates.append(bijector._velocity_and_trace(x, t, probes, weight, None)[1])
    estimates = np.stack(estimates)
    stderr = estimates.std(0) / np.sqrt(seeds)
    assert (stderr > 0).all()
    assert np.all(np.abs(estimates.mean(0) - exact) < 4 * stderr)


def test_hutchinson_log_prob_is_close_to_the_exact_one(moons_cnf):
    flow, x, _ = moons_cnf
    layer = flow.continuous_layer
    exact = flow.log_prob(x[:256]).numpy()
    layer.trace, layer.num_probes = "hutchinson", 16
    try:
        estimate = flow.bijector().inverse_log_det_jacobian(
            tf.constant(x[:256]), event_ndims=1)
        z = flow.encode(x[:256])  # cached graph: still the exact trace
    finally:
        layer.trace, layer.num_probes = "auto", 4
    estimate = flow.base_log_prob(z).numpy() + estimate.numpy()
    assert abs(np.mean(estimate - exact)) < 0.05
    assert np.std(estimate - exact) < 0.3


def test_conditional_cnf_learns_a_known_conditional():
    """x | c ~ N((c, -c), 0.5² I), c ~ U(-2, 2)."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(0)
    c = rng.uniform(-2, 2, (4096, 1)).astype(np.float32)
    x = (np.concatenate([c, -c], 1) + 0.5 * rng.standard_normal((4096, 2))
         ).astype(np.float32)
    flow = tff.models.cnf(2, hidden_units=(64, 64), context_dim=1)
    flow.compile(optimizer=keras.optimizers.Adam(3e-3))
    flow.fit({"x": x, "context": c}, batch_size=256, epochs=30, verbose=0)
    draws = flow.sample(2000, seed=0, context=[1.0]).numpy()
    np.testing.assert_allclose(draws.mean(0), [1.0, -1.0], atol=0.1)
    np.testing.assert_allclose(draws.std(0), [0.5, 0.5], atol=0.1)
    truth = (-np.log(2 * np.pi * 0.25)
             - ((x[:500] - np.concatenate([c[:500], -c[:500]], 1)) ** 2).sum(1) / 0.5)
    model = flow.log_prob(x[:500], context=c[:500]).numpy()
    assert abs(model.mean() - truth.mean()) < 0.15


def test_keras_file_round_trip(moons_cnf, tmp_path):
    flow, x, _ = moons_cnf
    path = str(tmp_path / "cnf.keras")
    flow.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, tff.ContinuousFlow)
    same = lambda c: json.loads(json.dumps(c))  # tuples and lists alike
    assert same(loaded.get_config()) == same(flow.get_config())
    assert loaded.sigma_min == flow.sigma_min
    np.testing.assert_allclose(loaded.log_prob(x[:100]), flow.log_prob(x[:100]),
                               atol=1e-6)
    loaded.fit(x[:512], batch_size=256, epochs=1, verbose=0)  # compiled on load


def test_layer_config_round_trip():
    layer = L.Continuous(hidden_units=(8,), solver="dopri5", steps=5, trace="exact",
                         context_dim=2)
    config = layer.get_config()
    assert L.Continuous.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="solver must be one of"):
        L.Continuous(solver="euler")
    with pytest.raises(ValueError, match="trace must be one of"):
        L.Continuous(trace="approximate")


def test_likelihood_training_reaches_the_gaussian_optimum(tmp_path):
    """objective="likelihood": fit minimises -log_prob through the ODE; on a
    correlated Gaussian the held-out NLL nears the true entropy."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 1.2], [1.2, 1.0]])
    chol = np.linalg.cholesky(cov)
    x = (rng.standard_normal((4096, 2)) @ chol.T + [1.0, -0.5]).astype(np.float32)
    x_val = (rng.standard_normal((1000, 2)) @ chol.T + [1.0, -0.5]).astype(np.float32)
    optimum = 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * cov))  # 2.548
    base = -np.mean(tff.distributions.StandardNormal((2,)).log_prob(x_val))  # 3.9
    flow = tff.models.cnf(2, hidden_units=(64, 64, 64), steps=8, objective="likelihood")
    flow.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = flow.fit(x, batch_size=256, epochs=3, verbose=0)
    loss, nll = history.history["loss"], history.history["nll"]
    assert np.allclose(loss, nll) and min(loss) > 1.0
    held_out = -np.mean(flow.log_prob(x_val))
    assert held_out < base - 1.0
    assert held_out < optimum + 0.1  # measured: 2.55 against 2.548
    metrics = flow.evaluate(x_val, verbose=0, return_dict=True)
    assert set(metrics) == {"loss", "nll"}
    assert abs(metrics["nll"] - held_out) < 0.02
    path = str(tmp_path / "ll.keras")
    flow.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.objective_name == "likelihood"
    assert loaded.get_config()["objective"] == "likelihood"
    np.testing.assert_allclose(loaded.log_prob(x_val[:50]), flow.log_prob(x_val[:50]),
                               atol=1e-5)
    assert tff.models.cnf(2).objective_name == "flow_matching"
    with pytest.raises(ValueError, match="objective must be one of"):
        tff.models.cnf(2, objective="kl")


def test_likelihood_training_draws_fresh_hutchinson_probes():
    flow = tff.models.cnf(12, hidden_units=(8,), steps=2, objective="likelihood")
    layer = flow.continuous_layer
    rng = np.random.default_rng(0)
    for w in layer.trainable_weights:
        w.assign(w.numpy() + 0.3 * rng.standard_normal(w.shape).astype(w.dtype))
    assert layer.resolved_trace() == "hutchinson"
    x = tf.constant(rng.standard_normal((4, 12)), tf.float32)
    train = [flow(x, training=True).numpy() for _ in range(2)]
    test = [flow(x, training=False).numpy() for _ in range(2)]
    assert np.abs(train[0] - train[1]).max() > 1e-4
    np.testing.assert_array_equal(test[0], test[1])


def test_probes_of_a_row_do_not_depend_on_the_batch():
    layer = _trained_field(12)
    bijector = layer.make_bijector()
    small, _ = bijector._probes(3, tf.float32)
    large, _ = bijector._probes(50, tf.float32)
    np.testing.assert_array_equal(small, large[:, :3])


class _Counting:
    """A velocity field that counts the rows it evaluates."""

    def __init__(self):
        self.rows = 0

    def __call__(self, x, t):
        self.rows += int(x.shape[0])
        return tf.sin(x) * t


@pytest.mark.parametrize("inverse", [False, True])
def test_state_alone_costs_one_call_and_log_det_first_one_solve(inverse):
    """`forward` alone: one call per evaluation (2 steps x 4 = 8 per row);
    the exact trace doubles it at D=2 (16); log-det then output: 16 in all."""
    x = tf.constant(np.random.default_rng(0).standard_normal((5, 2)), tf.float32)
    field = _Counting()
    fresh = lambda: tff.bijectors.ODE(field, 2, steps=2, trace="exact")
    out = (lambda b, v: b.inverse(v)) if inverse else (lambda b, v: b.forward(v))
    ldj = ((lambda b, v: b.inverse_log_det_jacobian(v, 1)) if inverse
           else (lambda b, v: b.forward_log_det_jacobian(v, 1)))
    out(fresh(), x)
    assert field.rows == 8 * 5
    field.rows = 0
    bijector = fresh()
    log_det = ldj(bijector, x)
    point = out(bijector, x)
    assert field.rows == 16 * 5
    joint = (fresh()._inverse_and_log_det(x) if inverse
             else fresh()._forward_and_log_det(x))
    np.testing.assert_allclose(point, joint[0], atol=1e-6)
    np.testing.assert_allclose(log_det, joint[1], atol=1e-6)
    np.testing.assert_allclose(out(fresh(), x), joint[0], atol=1e-6)


def test_sample_and_log_prob_agrees_with_log_prob(moons_cnf):
    flow, _, _ = moons_cnf
    x, log_q = flow.sample_and_log_prob(200, seed=3)
    np.testing.assert_allclose(log_q, flow.log_prob(x), atol=2e-3)
    np.testing.assert_allclose(flow.sample(200, seed=3), x, atol=1e-5)

def test_trajectory_runs_from_the_latent_to_decode(moons_cnf):
    flow, _, _ = moons_cnf
    z = np.random.default_rng(3).standard_normal((200, 2)).astype(np.float32)
    path = flow.trajectory(z, [0.0, 0.5, 1.0]).numpy()
    assert path.shape == (3, 200, 2)
    np.testing.assert_allclose(path[0], z)
    # RK4 at the layer's own 32 steps: the same arithmetic as decode's loop.
    np.testing.assert_allclose(path[-1], flow.decode(z).numpy(), atol=1e-4)
    assert np.abs(path[1] - path[0]).mean() > 0.1  # it moved on the way
    with pytest.raises(ValueError, match="increasing"):
        flow.trajectory(z, [0.5, 0.2])


@pytest.mark.parametrize("activation", ["silu", "tanh", "softplus", "sigmoid", "elu"])
@pytest.mark.parametrize("context_dim", [None, 2])
def test_forward_mode_jvp_equals_the_autodiff_jacobian(activation, context_dim):
    rng = np.random.default_rng(4)
    net = tff.nn.VelocityMLP(3, (8, 8), activation=activation,
                             context_dim=context_dim, dtype="float64")
    x = tf.constant(rng.standard_normal((5, 3)))
    context = None if context_dim is None else tf.constant(rng.standard_normal((5, 2)))
    t = tf.constant(0.3, tf.float64)
    net(x, t, context)
    for w in net.weights:
        w.assign(0.7 * rng.standard_normal(w.shape))
    tangents = tf.constant(rng.standard_normal((4, 5, 3)))
    v, jv = net.jvp(x, t, tangents, context)
    with tf.GradientTape() as tape:
        tape.watch(x)
        reference = net(x, t, context)
    jacobian = tape.batch_jacobian(reference, x)
    np.testing.assert_allclose(v, reference, atol=1e-12)
    np.testing.assert_allclose(
        jv, tf.einsum("nij,pnj->pni", jacobian, tangents), atol=1e-12)


def test_jvp_refuses_an_activation_without_a_known_derivative():
    net = tff.nn.VelocityMLP(2, (4,), activation="gelu")
    x = tf.zeros((3, 2))
    net(x, tf.zeros((3,)))
    assert not net.has_jvp
    with pytest.raises(ValueError, match="VelocityMLP.jvp needs an activation"):
        net.jvp(x, 0.0, tf.ones((1, 3, 2)))
    # The layer's ODE then takes its trace with a GradientTape.
    layer = L.Continuous(hidden_units=(4,), activation="gelu")
    layer.build((None, 2))
    assert layer.make_bijector()._jvp_fn is None


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_forward_mode_and_tape_traces_agree(trace):
    """The ODE's two ways to the trace (the network's jvp, or a tape's
    VJP on the stacked probes) give one log-det for the same probes."""
    layer = _trained_field(12)
    layer.trace = trace
    x = tf.constant(np.random.default_rng(5).standard_normal((6, 12)), tf.float32)
    net = layer.network
    with_jvp = tff.bijectors.ODE(lambda x, t: net(x, t), 12, steps=4, trace=trace,
                                 jvp_fn=net.jvp)
    with_tape = tff.bijectors.ODE(lambda x, t: net(x, t), 12, steps=4, trace=trace)
    a = with_jvp.inverse_log_det_jacobian(x, 1)
    b = with_tape.inverse_log_det_jacobian(x, 1)
    assert np.abs(b).min() > 1e-2
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)


def test_rademacher_signs_look_independent_and_fair():
    n, probes, d = 20_000, 4, 16
    signs = tff.bijectors.ode.rademacher(n, probes, d, 0).numpy()
    assert signs.shape == (probes, n, d) and set(np.unique(signs)) == {-1, 1}
    assert abs(signs.mean()) < 4 / np.sqrt(signs.size)
    rows = np.transpose(signs, (1, 0, 2)).reshape(n, probes * d).astype(float)
    corr = rows.T @ rows / n
    off = corr[~np.eye(probes * d, dtype=bool)]
    # Independent fair signs: each off-diagonal entry ~ N(0, 1/n).
    assert 0.9 < off.std() * np.sqrt(n) < 1.1
    assert np.abs(off).max() * np.sqrt(n) < 5
    for seed in (1, tf.constant([0, 1]), tf.constant([-3, 2**40])):
        other = tff.bijectors.ode.rademacher(n, probes, d, seed).numpy()
        assert abs(np.mean(other * signs)) < 4 / np.sqrt(signs.size)
    # One graph, under XLA too, gives the same signs.
    xla = tf.function(lambda n: tff.bijectors.ode.rademacher(n, probes, d, 0),
                      jit_compile=True)
    np.testing.assert_array_equal(xla(tf.constant(n)), signs)
