"""Planar and radial flows: inverse accuracy on hard points, gradients of the
inverse, the reparametrisations, the builders, normalisation, save/load and
errors. The shared contract (round trips, log-dets, XLA) runs on their
registry entries in tests/test_bijector_contract.py."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfflows as tff
from tfflows import layers as L
from tfflows.bijectors.planar import planar_u_hat
from tfflows.bijectors.radial import radial_alpha_beta

tfb_ = tff.bijectors
_softplus_inv = lambda v: np.log(np.expm1(v))


def _planar_params(one_plus, size=2, seed=0, scale=1.5, b=0.4):
    """w, u, b (float64 numpy) with `1 + wᵀû = one_plus`; |w|, |û| ~ scale."""
    rng = np.random.default_rng(seed)
    w, u = scale * rng.standard_normal((2, size))
    u = u + (_softplus_inv(one_plus) - w @ u) * w / (w @ w)
    return w, u, np.float64(b)


def _planar(params, dtype):
    return tfb_.Planar(*(tf.constant(np.asarray(p, np.float32), dtype) for p in params))


def _radial(params, dtype):
    return tfb_.Radial(*(tf.constant(np.asarray(p, np.float32), dtype) for p in params))


def _hard_points(size=2, seed=1, centre=None, w=None, b=None):
    """A grid on [-10, 10]², points at |x| = 1e6, the origin, and either
    points on and near the hyperplane `wᵀx + b = 0` (planar) or `centre`
    itself and points 1e-9..1 from it (radial)."""
    rng = np.random.default_rng(seed)
    g = np.linspace(-10, 10, 81)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    unit = rng.standard_normal((400, size))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    parts = [grid, 1e6 * unit[:200], np.zeros((1, size))]
    if w is not None:
        plane = 3 * rng.standard_normal((200, size))
        plane -= ((plane @ w + b) / (w @ w))[:, None] * w
        offsets = rng.choice([-1, 1], 200) * 10 ** rng.uniform(-8, 6, 200)
        parts += [plane, plane[:1] * 0 - b * w / (w @ w),
                  plane + offsets[:, None] * w / np.linalg.norm(w)]
    if centre is not None:
        parts += [centre[None],
                  centre + unit[200:] * 10 ** rng.uniform(-9, 0, (200, 1))]
    return np.concatenate(parts).astype(np.float32)


# -- the numerical inverse -----------------------------------------------------
@pytest.mark.parametrize("one_plus", [100.0, 3.0, 0.3, 0.01],
                         ids=["wu=99", "wu=2", "wu=-0.7", "wu=-0.99"])
def test_planar_inverse_is_accurate_on_hard_points(one_plus):
    params = _planar_params(one_plus)
    w, _, b = (np.float32(p).astype(np.float64) for p in params)
    x = _hard_points(w=w, b=b)
    b64 = _planar(params, tf.float64)
    # Errors relative to the size of the terms: |x| and the shift |û|.
    u_hat = np.abs(b64.u_hat()[0].numpy()).max()
    scale = np.maximum(max(1.0, u_hat), np.abs(x).max(axis=1, keepdims=True))
    # float64: forward(inverse(x)) = x to rounding, and a round trip from z.
    z64 = b64.inverse(tf.constant(x, tf.float64)).numpy()
    back = b64.forward(tf.constant(z64)).numpy()
    assert np.max(np.abs(back - x) / scale) < 1e-14
    z = 3 * np.random.default_rng(2).standard_normal((2000, 2))
    x_of_z = b64.forward(tf.constant(z)).numpy()
    np.testing.assert_allclose(b64.inverse(tf.constant(x_of_z)).numpy(), z,
                               rtol=0, atol=1e-12)
    # float32 against the float64 solution of the same float32 problem.
    b32 = _planar(params, tf.float32)
    z32 = b32.inverse(tf.constant(x)).numpy()
    ildj = b32.inverse_log_det_jacobian(tf.constant(x), event_ndims=1).numpy()
    assert np.all(np.isfinite(z32)) and np.all(np.isfinite(ildj))
    assert np.max(np.abs(z32 - z64) / scale) < 1e-5


def test_planar_inverse_near_the_singular_limit_float64():
    """1 + wᵀû = 1e-8 (softplus(wᵀu) for wᵀu = -18.4): the map is nearly
    flat on the hyperplane; the solve still reaches the rounding level."""
    params = _planar_params(1e-8)
    w, _, b = params
    x = _hard_points(w=w, b=b).astype(np.float64)
    bij = tfb_.Planar(*(tf.constant(p) for p in params))
    z = bij.inverse(tf.constant(x)).numpy()
    scale = np.maximum(1.0, np.abs(x).max(axis=1, keepdims=True))
    assert np.max(np.abs(bij.forward(tf.constant(z)).numpy() - x) / scale) < 1e-14
    assert np.all(np.isfinite(bij.inverse_log_det_jacobian(tf.constant(x), 1).numpy()))


@pytest.mark.parametrize("alpha, alpha_plus_beta", [(0.7, 2.7), (0.7, 0.007),
                                                    (50.0, 1e-4), (0.01, 5.0)])
def test_radial_inverse_is_accurate_on_hard_points(alpha, alpha_plus_beta):
    z0 = np.random.default_rng(3).standard_normal(2)
    params = (z0, _softplus_inv(alpha), _softplus_inv(alpha_plus_beta))
    x = _hard_points(centre=np.float32(z0).astype(np.float64))
    scale = np.maximum(1.0, np.abs(x).max(axis=1, keepdims=True))
    b64 = _radial(params, tf.float64)
    z64 = b64.inverse(tf.constant(x, tf.float64)).numpy()
    assert np.max(np.abs(b64.forward(tf.constant(z64)).numpy() - x) / scale) < 1e-13
    b32 = _radial(params, tf.float32)
    z32 = b32.inverse(tf.constant(x)).numpy()
    ildj = b32.inverse_log_det_jacobian(tf.constant(x), event_ndims=1).numpy()
    assert np.all(np.isfinite(z32)) and np.all(np.isfinite(ildj))
    assert np.max(np.abs(z32 - z64) / scale) < 1e-5
    # x = z0 exactly maps to z0, with the log-det of the Jacobian (α/σ) I.
    centre = np.nonzero(np.all(x == np.float32(z0), axis=1))[0]
    np.testing.assert_array_equal(z32[centre], x[centre])
    np.testing.assert_allclose(ildj[centre], 2 * np.log(alpha / alpha_plus_beta),
                               rtol=1e-5)


# -- gradients of the inverse -------------------------------------------------
def _inverse_loss(bijector, x):
    x = tf.identity(x)  # a new tensor: TFP's cache must not answer
    z, ildj = bijector.inverse(x), bijector.inverse_log_det_jacobian(x, 1)
    weights = tf.constant([0.7, -1.3], x.dtype)
    return tf.reduce_sum(z * weights) + tf.reduce_sum(tf.sin(ildj))


@pytest.mark.parametrize("kind", ["planar", "radial"])
def test_inverse_gradients_match_finite_differences_and_the_forward(kind):
    rng = np.random.default_rng(4)
    if kind == "planar":
        w, u, b = _planar_params(0.05)
        values = [w, u, b]
        make = lambda v: tfb_.Planar(*v)
        x = rng.standard_normal((6, 2))
        x[0] -= (x[0] @ w + b) / (w @ w) * w  # on the hyperplane
    else:
        values = [rng.standard_normal(2), _softplus_inv(0.8), _softplus_inv(0.1)]
        make = lambda v: tfb_.Radial(*v)
        x = values[0] + rng.standard_normal((6, 2))
        # Near the centre (the log-det, a function of ‖x - z₀‖, has a kink
        # at z₀ itself, where finite differences are no reference; that
        # point's gradients are checked finite below).
        x[0] = values[0] + 1e-3
    params = [tf.Variable(v, dtype=tf.float64) for v in values]
    bij = make(params)
    x = tf.constant(x)

    # d inverse / dx is the inverse of the forward's Jacobian (autodiff).
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = bij.inverse(x)
    dz_dx = tape.batch_jacobian(z, x).numpy()
    z_fresh = tf.constant(z.numpy())
    with tf.GradientTape() as tape:
        tape.watch(z_fresh)
        x_again = bij.forward(z_fresh)
    dx_dz = tape.batch_jacobian(x_again, z_fresh).numpy()
    np.testing.assert_allclose(dz_dx, np.linalg.inv(dx_dz), rtol=1e-9, atol=1e-10)

    # Parameter gradients (through the solve) against central differences,
    # eagerly and under XLA.
    def gradients(x):
        with tf.GradientTape() as tape:
            loss = _inverse_loss(bij, x)
        return tape.gradient(loss, params)
    eager = [g.numpy() for g in gradients(x)]
    xla = [g.numpy() for g in tf.function(gradients, jit_compile=True)(x)]
    for j, (g, h, p) in enumerate(zip(eager, xla, values)):
        h_step = 1e-6
        flat = np.atleast_1d(np.asarray(p, np.float64)).ravel()
        numeric = []
        for i in range(flat.size):
            loss = []
            for sign in (1, -1):
                moved = flat.copy()
                moved[i] += sign * h_step
                trial = list(values)
                trial[j] = moved.reshape(np.shape(p))
                loss.append(float(_inverse_loss(make([tf.constant(t) for t in trial]), x)))
            numeric.append((loss[0] - loss[1]) / (2 * h_step))
        np.testing.assert_allclose(np.ravel(g), numeric, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(h, g, rtol=1e-9, atol=1e-12)


def test_inverse_gradients_are_finite_at_hard_points_in_float32():
    params = _planar_params(0.01)
    w, _, b = (np.float32(p).astype(np.float64) for p in params)
    variables = [tf.Variable(np.float32(p)) for p in params]
    planar = tfb_.Planar(*variables)
    z0 = np.float32(np.random.default_rng(5).standard_normal(2))
    radial_vars = [tf.Variable(z0), tf.Variable(np.float32(0.3)),
                   tf.Variable(np.float32(-5.0))]
    radial = tfb_.Radial(*radial_vars)
    for bij, variables, x in ((planar, variables, _hard_points(w=w, b=b)),
                              (radial, radial_vars, _hard_points(centre=z0))):
        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = _inverse_loss(bij, x)
        grads = tape.gradient(loss, [x] + variables)
        for g in grads:
            assert np.all(np.isfinite(g.numpy()))


# -- the reparametrisations ----------------------------------------------------
def test_planar_reparametrisation_keeps_w_dot_u_hat_above_minus_one():
    rng = np.random.default_rng(6)
    for scale in (1e-3, 1.0, 30.0):
        for _ in range(50):
            w, u = scale * rng.standard_normal((2, 3))
            u_hat, one_plus = planar_u_hat(tf.constant(w), tf.constant(u))
            w_dot = float(np.dot(w, u_hat.numpy()))
            # wᵀû > -1 exactly; computed, to rounding of its terms.
            assert float(one_plus) > 0 and w_dot >= -1 - 1e-12 * (1 + abs(w @ u))
            np.testing.assert_allclose(w_dot, float(one_plus) - 1,
                                       rtol=1e-9, atol=1e-9 * (1 + abs(w @ u)))
    # Extreme raw values: 1 + wᵀû stays positive (floored), maps stay finite.
    for wu in (-200.0, -50.0, 50.0, 200.0):
        w = np.array([1.0, 0.5], np.float32)
        u = (wu * w / (w @ w)).astype(np.float32)
        bij = tfb_.Planar(w, u, np.float32(0.0))
        _, one_plus = bij.u_hat()
        assert float(one_plus) > 0
        x = tf.constant(_hard_points(w=w.astype(np.float64), b=0.0))
        z = bij.inverse(x)
        assert np.all(np.isfinite(z.numpy()))
        assert np.all(np.isfinite(bij.inverse_log_det_jacobian(x, 1).numpy()))


def test_planar_with_w_zero_is_a_translation():
    bij = tfb_.Planar(tf.zeros(3), tf.constant([1.0, -2.0, 0.5]), tf.constant(0.3))
    z = tf.constant(np.random.default_rng(7).standard_normal((5, 3)), tf.float32)
    x = bij.forward(z)
    np.testing.assert_allclose(x - z, np.tanh(0.3) * np.array([[1.0, -2.0, 0.5]] * 5),
                               rtol=1e-6)
    np.testing.assert_allclose(bij.forward_log_det_jacobian(z, 1), 0.0, atol=1e-6)
    np.testing.assert_allclose(bij.inverse(tf.constant(x.numpy())), z, atol=1e-6)


def test_radial_reparametrisation_keeps_beta_above_minus_alpha():
    rng = np.random.default_rng(8)
    raws = np.concatenate([10 * rng.standard_normal((200, 2)),
                           [[-100.0, -100.0], [100.0, -100.0], [-100.0, 100.0]]])
    for dtype in (tf.float32, tf.float64):
        for a_raw, b_raw in raws:
            alpha, beta, sigma = (float(v) for v in radial_alpha_beta(
                tf.constant(a_raw, dtype), tf.constant(b_raw, dtype)))
            assert alpha > 0 and sigma > 0 and beta >= -alpha
    # The radius map r -> r (r + α + β) / (r + α) increases for every raw value.
    r = np.linspace(0, 20, 2001)
    for a_raw, b_raw in raws[:50]:
        alpha, beta, sigma = (float(v) for v in radial_alpha_beta(
            tf.constant(a_raw, tf.float64), tf.constant(b_raw, tf.float64)))
        assert np.all(np.diff(r * (r + sigma) / (r + alpha)) > 0)


# -- builders and flows ---------------------------------------------------------
@pytest.mark.parametrize("builder", ["planar", "radial"])
def test_fresh_flow_is_near_identity_finite_and_invertible(builder):
    keras.utils.set_random_seed(0)
    flow = getattr(tff.models, builder)(2)
    assert len(flow.flow_layers) == 17 and isinstance(flow.flow_layers[0], L.ActNorm)
    assert len(getattr(tff.models, builder)(2, actnorm=False).flow_layers) == 16
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.standard_normal((500, 2)), 5 * rng.standard_normal((200, 2)),
                        [[1e3, -1e3], [1e6, 1e6], [0.0, 0.0]]]).astype(np.float32)
    log_prob = flow.log_prob(x).numpy()
    assert np.all(np.isfinite(log_prob))
    z = flow.encode(x)
    scale = np.maximum(1.0, np.abs(x))
    assert np.max(np.abs(flow.decode(z).numpy() - x) / scale) < 1e-5
    # Close to the identity where the base has its mass.
    bulk = x[:500]
    normal = -0.5 * np.sum(bulk ** 2, axis=1) - np.log(2 * np.pi)
    assert np.max(np.abs(z.numpy()[:500] - bulk)) < 0.25
    assert np.max(np.abs(log_prob[:500] - normal)) < 0.25


def _nontrivial_flow(dtype="float64"):
    """A 2-D flow of four strongly non-linear planar layers and a radial one."""
    layers = [L.Planar(dtype=dtype) for _ in range(4)] + [L.Radial(dtype=dtype)]
    flow = tff.Flow(layers, (2,), dtype=dtype)
    for i, (layer, one_plus) in enumerate(zip(layers, (3.0, 0.1, 1.5, 0.3))):
        w, u, b = _planar_params(one_plus, seed=20 + i, scale=1.2, b=0.3 * i)
        layer.w.assign(w), layer.u.assign(u), layer.b.assign(b)
    layers[-1].z0.assign([0.5, -0.5])
    layers[-1].alpha_raw.assign(_softplus_inv(0.6))
    layers[-1].beta_raw.assign(_softplus_inv(0.3))
    return flow


def test_density_of_a_nontrivial_flow_integrates_to_one():
    flow = _nontrivial_flow()
    z = flow.encode(np.zeros((1, 2)))
    assert np.abs(z.numpy()).max() > 0.3, "the flow should not be near identity"
    step = 0.04
    g = np.arange(-12, 12, step) + step / 2
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    mass = np.sum(np.exp(flow.log_prob(grid).numpy())) * step ** 2
    assert abs(mass - 1) < 0.01, mass


@pytest.mark.parametrize("builder", ["planar", "radial"])
def test_keras_save_and_load_give_equal_log_probs(builder, tmp_path):
    keras.utils.set_random_seed(1)
    flow = getattr(tff.models, builder)(3, num_layers=3)
    rng = np.random.default_rng(10)
    for w in flow.trainable_weights:
        w.assign(w.numpy() + 0.5 * rng.standard_normal(w.shape).astype(w.dtype))
    x = rng.standard_normal((20, 3)).astype(np.float32)
    path = str(tmp_path / f"{builder}.keras")
    flow.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert [type(l) for l in loaded.flow_layers] == [type(l) for l in flow.flow_layers]
    np.testing.assert_array_equal(loaded.log_prob(x), flow.log_prob(x))


# -- errors ---------------------------------------------------------------------
@pytest.mark.parametrize("builder", ["planar", "radial"])
@pytest.mark.parametrize("kwargs, match", [
    (dict(event_dim=0), r"event_dim must be a positive integer\. Received: event_dim=0"),
    (dict(event_dim=2.5), r"Received: event_dim=2\.5"),
    (dict(event_dim=2, num_layers=0), r"num_layers must be a positive integer\. Received: num_layers=0"),
])
def test_builders_reject_bad_arguments(builder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(tff.models, builder)(**kwargs)


def test_bijector_and_layer_errors():
    with pytest.raises(ValueError, match=r"w must have a known shape \[D\]. Received: w.shape=\(2, 2\)"):
        tfb_.Planar(tf.zeros([2, 2]), tf.zeros([2, 2]), 0.0)
    with pytest.raises(ValueError, match=r"same shape.*w.shape=\(2,\), u.shape=\(3,\)"):
        tfb_.Planar(tf.zeros(2), tf.zeros(3), 0.0)
    with pytest.raises(ValueError, match=r"b must be a scalar. Received: b.shape=\(2,\)"):
        tfb_.Planar(tf.zeros(2), tf.zeros(2), tf.zeros(2))
    with pytest.raises(ValueError, match=r"z0 must have a known shape \[D\]. Received: z0.shape=\(\)"):
        tfb_.Radial(tf.zeros([]), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"alpha_raw must be a scalar. Received: alpha_raw.shape=\(1,\)"):
        tfb_.Radial(tf.zeros(2), tf.zeros(1), 0.0)
    planar = tfb_.Planar(tf.ones(3), tf.ones(3), 0.0)
    radial = tfb_.Radial(tf.ones(3), 0.0, 0.0)
    for bij in (planar, radial):
        with pytest.raises(ValueError, match=r"event shape \(3,\). Received: x.shape=\(4, 2\)"):
            bij.forward(tf.zeros([4, 2]))
        with pytest.raises(ValueError, match=r"event shape \(3,\). Received: y.shape=\(4, 5\)"):
            bij.inverse(tf.zeros([4, 5]))
    for cls in (L.Planar, L.Radial):
        with pytest.raises(ValueError, match="takes no context"):
            cls(context_dim=2)
        with pytest.raises(ValueError, match=r"works on vectors \[batch, D\].*\(None, 4, 4, 1\)"):
            cls().build((None, 4, 4, 1))


@pytest.mark.parametrize("cls", ["Planar", "Radial"])
def test_validate_args_rejects_non_finite_inputs(cls):
    bij = getattr(tfb_, cls)(tf.ones(2), tf.ones(2) if cls == "Planar" else 0.0,
                             0.0, validate_args=True)
    bad = tf.constant([[0.5, np.nan]], tf.float32)
    for direction in ("forward", "inverse"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"non-finite input"):
            getattr(bij, direction)(bad)
    getattr(bij, "inverse")(tf.constant([[0.5, 0.25]]))  # finite input passes


def test_docstrings_say_which_way_forward_runs():
    for name in ("Planar", "Radial"):
        assert "forward` latent -> data" in getattr(tfb_, name).__doc__.splitlines()[0]
        assert "data -> latent" in getattr(L, name).__doc__.splitlines()[0]


def test_radial_is_finite_for_inputs_whose_squares_overflow():
    """|x| ~ 1e20 in float32: the squared norm overflows, the norm does
    not; the map and its log-det stay finite (NaN before the scaled norm)."""
    bijector = tff.bijectors.Radial(tf.constant([0.5, -1.0, 2.0]),
                                    tf.constant(0.3), tf.constant(-0.2))
    x = tf.constant([[1e20, -1e20, 1e20], [3e37, 0.0, 0.0], [0.0, 0.0, 0.0]])
    z = bijector.inverse(x)
    log_det = bijector.inverse_log_det_jacobian(x, event_ndims=1)
    assert np.all(np.isfinite(z)) and np.all(np.isfinite(log_det))
    np.testing.assert_allclose(bijector.forward(z), x, rtol=1e-6)
