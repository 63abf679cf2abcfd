"""The rational-quadratic spline transformer: identity at zero, accurate
inverse, and the failures other libraries have shipped, each pinned.

- nflows#72: an "identity" initialisation that is not the identity.
- nflows#87: a negative discriminant in the inverse while sampling.
- BayesFlow#721: NaN losses and gradients on heavy-tailed data, because the
  spline branch is evaluated outside its domain before being masked.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfflows.bijectors import transformers as T
from tfflows.bijectors.transformers import rational_quadratic as rq


def _spline(bins=8, bound=3.0):
    return T.RationalQuadraticSpline(bins=bins, tail_bound=bound)


def _grid(spline, params=None, n=20001):
    """A dense grid over [-1.5B, 1.5B] plus +-B, 0, the knots and far tails."""
    bound = spline.tail_bound
    points = [np.linspace(-1.5 * bound, 1.5 * bound, n),
              [-bound, bound, 0., 1e6, -1e6, 37.]]
    if params is not None:
        x_knots = spline.spline(tf.constant(params[:1], tf.float64))[0]
        points.append(x_knots.numpy().ravel())
    return np.concatenate(points)


def _random_params(spline, n, scale, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, scale, (n, spline.num_params))


@pytest.mark.parametrize("bins, bound", [(2, 1.0), (5, 3.0), (8, 3.0), (16, 5.0)])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=lambda d: d.name)
def test_zero_params_are_the_identity(bins, bound, dtype):  # nflows#72
    spline = _spline(bins, bound)
    x = tf.constant(_grid(spline), dtype)
    params = spline.identity_params(x.shape, dtype)
    assert params.shape == x.shape + (3 * bins - 1,)
    for direction in (spline.forward, spline.inverse):
        y, log_det = direction(x, params)
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-6)
        np.testing.assert_allclose(log_det, 0., atol=1e-6)
    # Zero maps to unit derivatives and uniform knots, exactly as designed.
    x_knots, y_knots, derivatives = spline.spline(params[:1])
    uniform = np.linspace(-bound, bound, bins + 1)
    np.testing.assert_allclose(x_knots[0], uniform, atol=1e-6)
    np.testing.assert_array_equal(x_knots, y_knots)
    np.testing.assert_allclose(derivatives, 1., atol=1e-6)


@pytest.mark.parametrize("bins", [3, 8])
@pytest.mark.parametrize("direction", ["forward-inverse", "inverse-forward"])
def test_inverse_is_accurate_in_float32(bins, direction):
    """Round trips to 1e-5 over a dense grid, the knots and the tails, for
    parameters of the scale a trained network gives (derivatives within
    about [1/20, 20])."""
    spline = _spline(bins)
    x = _grid(spline, _random_params(spline, 1, 0.5))
    params = tf.constant(_random_params(spline, 1, 0.5), tf.float32)
    params = tf.broadcast_to(params, x.shape + params.shape[-1:])
    x = tf.constant(x, tf.float32)
    first, second = ((spline.forward, spline.inverse) if direction == "forward-inverse"
                     else (spline.inverse, spline.forward))
    y, log_det = first(x, params)
    x_back, log_det_back = second(tf.identity(y), params)
    inside = np.abs(x.numpy()) <= 3.0
    np.testing.assert_allclose(x_back.numpy()[inside], x.numpy()[inside], atol=1e-5)
    np.testing.assert_array_equal(x_back.numpy()[~inside], x.numpy()[~inside])
    np.testing.assert_allclose(log_det_back, -log_det, atol=1e-4)


def test_inverse_error_is_bounded_by_the_conditioning():
    """With wild parameters (bins 1000x apart, derivatives near 1e-3) no
    float32 inverse can be better than rounding times |dx/dy|; this one is
    within 10 roundings of that bound everywhere, against the exact inverse
    of the same float32 spline."""
    spline = _spline(8)
    x = np.linspace(-3, 3, 50001)
    params32 = tf.constant(_random_params(spline, x.size, 3.0, seed=1), tf.float32)
    y32, _ = spline.forward(tf.constant(x, tf.float32), params32)
    x32, _ = spline.inverse(y32, params32)
    knots = [tf.cast(t, tf.float64) for t in spline.spline(params32)]
    exact, log_dx_dy = rq.inverse(tf.cast(y32, tf.float64),
                                  *(tf.transpose(k) for k in knots))
    bound = 10 * np.finfo(np.float32).eps * 3.0 * (1 + np.exp(log_dx_dy.numpy()))
    assert np.all(np.abs(x32.numpy() - exact.numpy()) <= bound)


def _grads(spline, x, params, direction):
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, params])
        y, log_det = getattr(spline, direction)(x, params)
        loss = tf.reduce_sum(y) + tf.reduce_sum(log_det)
    return y, log_det, tape.gradient(loss, [x, params])


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("scale", [0., 1., 30.])
def test_extremes_knots_and_edges_have_finite_values_and_gradients(direction, scale):
    spline = _spline(6, 2.0)
    params = _random_params(spline, 1, scale, seed=2)
    x_knots, y_knots, _ = spline.spline(tf.constant(params, tf.float32))
    edges = (x_knots if direction == "forward" else y_knots).numpy().ravel()
    points = np.concatenate([edges, np.nextafter(edges, 10.), np.nextafter(edges, -10.),
                             [1e6, -1e6, 3e38, -3e38, 2.0, -2.0, 0.]])
    x = tf.constant(points, tf.float32)
    params = tf.constant(np.broadcast_to(params, (points.size, params.shape[1])),
                         tf.float32)
    y, log_det, (grad_x, grad_params) = _grads(spline, x, params, direction)
    for name, value in (("y", y), ("log_det", log_det), ("dx", grad_x),
                        ("dparams", grad_params)):
        assert np.all(np.isfinite(value.numpy())), name
    # The spline meets its knots and the identity tails continuously.
    own, other = (x_knots, y_knots) if direction == "forward" else (y_knots, x_knots)
    at_knots, _ = getattr(spline, direction)(own[0], params[:own.shape[1]])
    np.testing.assert_allclose(at_knots, other[0], atol=1e-5)
    np.testing.assert_array_equal(y.numpy()[-7:-3], x.numpy()[-7:-3])


def test_heavy_tailed_data_gives_finite_loss_and_gradients():  # BayesFlow#721
    """Cauchy data far outside [-B, B]: the spline branch, computed on
    clamped inputs, leaves no NaN in the loss or its gradient."""
    spline = _spline(8, 3.0)
    rng = np.random.default_rng(3)
    x = tf.constant(np.concatenate([rng.standard_cauchy(512) * 10,
                                    [1e6, -1e6, 1e15]]), tf.float32)
    weights = tf.Variable(rng.normal(0, 1, (1, spline.num_params)), dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        params = tf.tanh(x[:, None]) * weights * 5.  # params depend on x too
        z, log_det = spline.inverse(x, params)
        loss = tf.reduce_mean(0.5 * tf.square(z) - log_det)
    grad_x, grad_w = tape.gradient(loss, [x, weights])
    assert np.isfinite(loss.numpy())
    assert np.all(np.isfinite(grad_x.numpy())) and np.all(np.isfinite(grad_w.numpy()))
    outside = np.abs(x.numpy()) > 3.0
    assert outside.sum() > 100
    np.testing.assert_array_equal(z.numpy()[outside], x.numpy()[outside])


def test_stable_root_survives_a_negative_discriminant():  # nflows#87
    """Rounding can push `b^2 - 4ac` just below 0; the clamped root stays
    finite, with finite gradients, and equals the double root -b / 2a."""
    a = tf.constant([1.0, 1.0, 2.0], tf.float32)
    b = tf.constant([-2.0, -2.0, 1e-3], tf.float32)
    c = tf.constant([1.0 + 1e-6, 1.0, 0.0], tf.float32)  # b^2 - 4ac = -4e-6, 0, 1e-6
    with tf.GradientTape() as tape:
        tape.watch([a, b, c])
        root = rq.stable_root(a, b, c)
        total = tf.reduce_sum(root)
    grads = tape.gradient(total, [a, b, c])
    assert np.all(np.isfinite(root.numpy()))
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    np.testing.assert_allclose(root.numpy()[:2], 1.0, atol=1e-6)
    np.testing.assert_allclose(root.numpy()[2], 0.0, atol=1e-7)


def test_sampling_from_steep_splines_stays_finite():  # nflows#87
    """The inverse of splines with extreme bins (what a long-trained NSF
    samples through), at latents on and next to every knot, stays finite
    and inside the right bin."""
    spline = _spline(8, 3.0)
    params = tf.constant(_random_params(spline, 256, 8.0, seed=4), tf.float32)
    _, y_knots, _ = spline.spline(params)
    y = tf.concat([y_knots, y_knots + 1e-6, y_knots - 1e-6], axis=-1)  # [256, 27]
    x, log_det = spline.inverse(y, params[:, None, :])
    assert np.all(np.isfinite(x.numpy())) and np.all(np.isfinite(log_det.numpy()))
    y_back, _ = spline.forward(x, params[:, None, :])
    # Rounding of x times dy/dx, no more.
    bound = 1e-5 * (1 + np.exp(-log_det.numpy()))
    assert np.all(np.abs(y_back.numpy() - y.numpy()) <= bound)


def test_no_searchsorted_in_the_graph():
    """The bin search compares and sums (tf2onnx converts it); no
    searchsorted (LowerBound / UpperBound), no batched gather."""
    spline = _spline(4)
    spec = [tf.TensorSpec([None, 3], tf.float32),
            tf.TensorSpec([None, 3, spline.num_params], tf.float32)]
    for direction in (spline.forward, spline.inverse):
        graph = tf.function(direction).get_concrete_function(*spec).graph
        ops = {op.type for op in graph.get_operations()}
        assert not ops & {"LowerBound", "UpperBound", "GatherV2", "GatherNd"}, ops


def test_config_and_registry():
    spline = T.get("spline", bins=5, tail_bound=2.5)
    assert spline.num_params == 14
    assert T.deserialize(T.serialize(spline)) == spline
    assert T.get(T.serialize(T.Affine(3.0))).log_scale_clamp == 3.0
    assert T.get("additive").num_params == 1 and T.get("affine").num_params == 2
    with pytest.raises(ValueError, match=r"bins must be an integer >= 2\. Received: bins=1"):
        T.get("spline", bins=1)
    with pytest.raises(ValueError, match=r"tail_bound=-1"):
        T.get("spline", tail_bound=-1)
    with pytest.raises(ValueError, match=r"min_bin_width=0.2, bins=8"):
        T.get("spline", min_bin_width=0.2)
    with pytest.raises(ValueError, match=r"transformer must be one of .*'cubic'"):
        T.get("cubic")
    with pytest.raises(ValueError, match=r"Received: params.shape=\(3, 4\)"):
        spline.forward(tf.zeros([3]), tf.zeros([3, 4]))
