"""Behaviour beyond the contract: one network call per direction, condition
kwargs, identity at start, MAF/IAF pass counts, LU and masks helpers."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfflows as tff
from tests.bijector_cases import RandomConditioner

tfb, tfd = tfp.bijectors, tfp.distributions


class Counting:
    """Wraps a conditioner and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def _standard_normal(shape):
    return tfd.Sample(tfd.Normal(0., 1.), shape)


@pytest.mark.parametrize("cls", [tff.bijectors.AffineCoupling,
                                 tff.bijectors.AdditiveCoupling])
def test_coupling_calls_its_network_once_per_direction(cls):
    params = 2 if cls is tff.bijectors.AffineCoupling else 1
    net = Counting(RandomConditioner([2], [2], params, tf.float32))
    bijector = cls(net, event_shape=[4])
    dist = tfd.TransformedDistribution(_standard_normal([4]), bijector)
    y = tf.random.normal([8, 4])
    dist.log_prob(y)
    assert net.calls == 1  # inverse and its log-det share one call
    x = tf.random.normal([8, 4])
    bijector.forward(x)
    bijector.forward_log_det_jacobian(x, event_ndims=1)
    assert net.calls == 2


@pytest.mark.parametrize("iaf, sample_calls, density_calls",
                         [(False, 5, 1), (True, 1, 5)])
def test_maf_and_iaf_pass_counts(iaf, sample_calls, density_calls):
    made = tff.nn.MADE(5, num_params=2, hidden_units=(8,))
    net = Counting(lambda x: tuple(tf.unstack(made(x), axis=-1)))
    bijector = tff.bijectors.MaskedAutoregressive(net, event_size=5, iaf=iaf)
    dist = tfd.TransformedDistribution(_standard_normal([5]), bijector)
    x = dist.sample(7, seed=(1, 2))
    assert net.calls == sample_calls  # sample = forward
    net.calls = 0
    dist.log_prob(tf.constant(x.numpy()))
    assert net.calls == density_calls  # log_prob = inverse + its log-det


def test_fresh_made_flow_is_identity():
    made = tff.nn.MADE(3, num_params=2, hidden_units=(8,))
    bijector = tff.bijectors.MaskedAutoregressive(
        lambda x: tuple(tf.unstack(made(x), axis=-1)))
    x = tf.random.normal([4, 3])
    np.testing.assert_allclose(bijector.forward(x), x, atol=1e-6)
    np.testing.assert_allclose(bijector.forward_log_det_jacobian(x, 1), 0.)


def test_condition_kwargs_reach_the_conditioner_through_chain():
    def shift_and_log_scale(x_a, context):
        return context[..., :2] + 0. * x_a, 0.5 * context[..., 2:] + 0. * x_a

    coupling = tff.bijectors.AffineCoupling(shift_and_log_scale, [4],
                                            name="cond_coupling")
    chain = tfb.Chain([tfb.Shift(1.), coupling])
    x, context = tf.zeros([3, 4]), tf.ones([3, 4])
    y = chain.forward(x, cond_coupling={"context": context})
    np.testing.assert_allclose(y[:, 2:], 2.)  # 0 * e^0.5 + 1, then + 1
    np.testing.assert_allclose(y[:, :2], 1.)
    ldj = chain.forward_log_det_jacobian(x, 1, cond_coupling={"context": context})
    np.testing.assert_allclose(ldj, 2 * 0.5 / (1 + 0.5 / 5.), rtol=1e-6)


@pytest.mark.parametrize("form", ["rational", "tanh"])
def test_soft_clamp_bounds_the_log_scale(form):
    big = lambda x_a: (tf.zeros_like(x_a), 1e7 * tf.ones_like(x_a))
    bijector = tff.bijectors.AffineCoupling(big, [2], log_scale_clamp=3.0,
                                            clamp_form=form)
    y = bijector.forward(tf.ones([1, 2]))
    assert np.all(np.isfinite(y)) and float(y[0, 1]) == pytest.approx(math.exp(3.), rel=1e-5)
    unclamped = tff.bijectors.AffineCoupling(lambda x: (x, x), [2], log_scale_clamp=None)
    assert float(unclamped.forward_log_det_jacobian(tf.fill([1, 2], 7.), 1)[0]) == pytest.approx(7.)


def test_soft_clamp_forms():
    s = tf.constant([-40., -2., -0.1, 0., 0.1, 2., 40.], tf.float64)
    rational = tff.bijectors.soft_clamp(s, 5.0)  # the default form
    np.testing.assert_allclose(rational, s / (1 + np.abs(s) / 5), rtol=1e-12)
    tanh = tff.bijectors.soft_clamp(s, 5.0, form="tanh")
    np.testing.assert_allclose(tanh, 5 * np.tanh(s / 5), rtol=1e-12)
    for clamped in (rational, tanh):  # bounded, odd, increasing, slope 1 at 0
        assert np.all(np.abs(clamped) < 5) and np.all(np.diff(clamped) > 0)
        np.testing.assert_allclose(clamped, -clamped[::-1])
    with tf.GradientTape() as tape:
        tape.watch(s)
        y = tff.bijectors.soft_clamp(s, 5.0)
    np.testing.assert_allclose(tape.gradient(y, s), 1 / (1 + np.abs(s) / 5) ** 2, rtol=1e-12)
    assert tff.bijectors.soft_clamp(s, None) is s
    with pytest.raises(ValueError, match=r"clamp_form=.*'sigmoid'"):
        tff.bijectors.soft_clamp(s, 5.0, form="sigmoid")
    with pytest.raises(ValueError, match=r"clamp_form=.*'sigmoid'"):
        tff.bijectors.transformers.Affine(clamp_form="sigmoid")


def test_checkerboard_leaves_its_squares_untouched():
    mask = tff.bijectors.masks.make_mask("checkerboard", [2, 2, 3])
    conditioning, _ = mask.split(tf.ones([1, 2, 2, 3]))
    np.testing.assert_array_equal(conditioning[0, ..., 0], [[1., 0.], [0., 1.]])
    flipped = tff.bijectors.masks.make_mask("checkerboard", [2, 2, 3], flip=True)
    np.testing.assert_array_equal(flipped.split(tf.ones([1, 2, 2, 3]))[0][0, ..., 1],
                                  [[0., 1.], [1., 0.]])


def test_squeeze_matches_space_to_depth_layout():
    x = tf.reshape(tf.range(16.), [1, 4, 4, 1])
    y = tff.bijectors.Squeeze().forward(x)
    assert y.shape == (1, 2, 2, 4)
    np.testing.assert_array_equal(y[0, 0, 0], [0., 1., 4., 5.])
    dist = tfd.TransformedDistribution(_standard_normal([4, 4, 1]), tff.bijectors.Squeeze())
    assert dist.event_shape == (2, 2, 4)
    assert dist.sample(2, seed=(0, 1)).shape == (2, 2, 2, 4)


def test_lu_round_trip_and_log_det():
    matrix = tff.bijectors.lu.random_rotation(6, seed=0) + 0.5 * np.eye(6)
    params = tff.bijectors.lu.lu_decompose(matrix.astype(np.float64))
    np.testing.assert_allclose(tff.bijectors.lu.lu_weight(**params), matrix, atol=1e-12)
    np.testing.assert_allclose(tff.bijectors.lu.lu_inverse_weight(**params),
                               np.linalg.inv(matrix), atol=1e-12)
    assert float(tf.reduce_sum(params["log_abs_diag"])) == pytest.approx(
        np.linalg.slogdet(matrix)[1])


def test_uniform_model_scores_log2_num_bins():
    # The uniform density on [0, 1]^D has log_prob 0 everywhere.
    bpd = tff.bijectors.bits_per_dim(tf.zeros([3]), num_dims=64, num_bins=17)
    np.testing.assert_allclose(bpd, math.log2(17), rtol=1e-6)
    x = tf.constant(np.arange(17.) / 17.)
    noisy = tff.bijectors.uniform_dequantize(x, num_bins=17, seed=(1, 2))
    assert np.all((noisy >= x) & (noisy < x + 1 / 17.))


def _random_made(event_size, context_dim=None, seed=0):
    made = tff.nn.MADE(event_size, num_params=2, hidden_units=(16,),
                       context_dim=context_dim, activation="tanh")
    made.build((None, event_size), None if context_dim is None else (None, context_dim))
    rng = np.random.default_rng(seed)
    made.set_weights([rng.normal(0, 0.3, w.shape) for w in made.get_weights()])
    return made


def test_iaf_flag_equals_tfp_invert_of_maf():
    made = _random_made(4)
    fn = lambda x: tuple(tf.unstack(made(x), axis=-1))
    iaf = tff.bijectors.MaskedAutoregressive(fn, iaf=True)
    inverted = tfb.Invert(tff.bijectors.MaskedAutoregressive(fn))
    x = tf.random.stateless_normal([6, 4], seed=(3, 4))
    np.testing.assert_allclose(iaf.forward(x), inverted.forward(x), atol=1e-6)
    np.testing.assert_allclose(iaf.forward_log_det_jacobian(x, 1),
                               inverted.forward_log_det_jacobian(x, 1), atol=1e-5)


def test_conditional_maf_through_transformed_distribution():
    made = _random_made(3, context_dim=2)
    fn = lambda x, context: tuple(tf.unstack(made(x, context=context), axis=-1))
    maf = tff.bijectors.MaskedAutoregressive(fn, event_size=3)
    dist = tfd.TransformedDistribution(_standard_normal([3]), maf)
    x = tf.random.stateless_normal([5, 3], seed=(5, 6))
    c0, c1 = tf.zeros([5, 2]), tf.ones([5, 2])
    lp0 = dist.log_prob(x, bijector_kwargs={"context": c0})
    lp1 = dist.log_prob(x, bijector_kwargs={"context": c1})
    assert float(tf.reduce_max(tf.abs(lp0 - lp1))) > 1e-3  # context matters
    z = maf.inverse(x, context=c1)
    np.testing.assert_allclose(maf.forward(tf.constant(z.numpy()), context=c1), x,
                               atol=1e-5)


def test_permute_matches_tfp_and_differentiates_by_gathers():
    permutation = [2, 0, 3, 1]
    ours, theirs = tff.bijectors.Permute(permutation), tfp.bijectors.Permute(permutation)
    x = tf.constant(np.random.default_rng(0).normal(size=(5, 4)))
    weights = tf.constant(np.arange(1.0, 5.0))
    for direction in ("forward", "inverse"):
        results = []
        for bijector in (ours, theirs):
            with tf.GradientTape() as outer:
                outer.watch(x)
                with tf.GradientTape() as inner:
                    inner.watch(x)
                    y = getattr(bijector, direction)(x)
                    loss = tf.reduce_sum(weights * y ** 3)
                grad = inner.gradient(loss, x)
                second = tf.reduce_sum(grad ** 2)
            results.append((y, grad, outer.gradient(second, x)))
        for a, b in zip(*results):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert isinstance(tff.bijectors.reverse(4), tfp.bijectors.Permute)
