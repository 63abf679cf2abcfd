"""The base distribution and the objectives: one owner each, used everywhere."""

import ast
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfflows as tff
from tfflows import layers as L

tfd = tfp.distributions
ROOT = pathlib.Path(tff.__file__).parent


def test_standard_normal_matches_its_tfp_view_and_keeps_the_seeded_numbers():
    base = tff.distributions.StandardNormal((3, 2))
    z = tf.random.stateless_normal([5, 3, 2], seed=[1, 2])
    np.testing.assert_allclose(base.log_prob(z), base.distribution.log_prob(z),
                               rtol=1e-6)
    assert base.log_prob(z).shape == (5,)
    # The numbers Flow.sample has always drawn for an int seed.
    np.testing.assert_array_equal(
        base.sample(4, temperature=0.5, seed=7),
        0.5 * tf.random.stateless_normal([4, 3, 2], seed=[7, 0]))
    np.testing.assert_array_equal(base.sample(4, seed=[7, 3]),
                                  tf.random.stateless_normal([4, 3, 2], [7, 3]))


def test_standard_normal_graph_has_only_onnx_friendly_ops():
    base = tff.distributions.StandardNormal((4,))
    graph = tf.function(base.log_prob).get_concrete_function(
        tf.TensorSpec([None, 4])).graph
    ops = {op.type for op in graph.get_operations()}
    assert not ops & {"BroadcastArgs", "Log1p"}, ops
    # TFP's own Sample(Normal) would not pass this check.
    tfp_graph = tf.function(base.distribution.log_prob).get_concrete_function(
        tf.TensorSpec([None, 4])).graph
    assert {op.type for op in tfp_graph.get_operations()} != ops


def test_a_tfp_base_is_wrapped_and_used_by_the_flow():
    base = tfd.Sample(tfd.Logistic(0.5, 2.0), sample_shape=[2])
    flow = tff.Flow([L.Permutation("reverse")], (2,), base_distribution=base)
    assert isinstance(flow.base, tff.distributions.TFPBase)
    assert flow.base_distribution is base
    x = np.array([[0.1, -3.0], [2.0, 1.0]], "float32")
    np.testing.assert_allclose(flow.log_prob(x), base.log_prob(x[:, ::-1]), rtol=1e-6)
    sample = flow.sample(3, seed=4)
    np.testing.assert_array_equal(sample, flow.sample(3, seed=4))
    x, log_q = flow.sample_and_log_prob(3, seed=4)
    np.testing.assert_allclose(log_q, flow.log_prob(x), rtol=1e-6)
    with pytest.raises(ValueError, match="cannot be serialized"):
        flow.get_config()


def test_base_of_the_wrong_shape_or_kind_is_refused():
    with pytest.raises(ValueError, match=r"event shape \(3,\)"):
        tff.Flow([L.Permutation()], (3,),
                 base_distribution=tfd.Sample(tfd.Normal(0., 1.), [2]))
    with pytest.raises(ValueError, match="must be a TFP distribution"):
        tff.Flow([L.Permutation()], (3,), base_distribution="normal")


def test_maximum_likelihood_objective():
    objective = tff.objectives.MaximumLikelihood((4, 4, 1), num_bins=16)
    assert objective.metric_names == ["nll", "bits_per_dim"]
    # A uniform density on [0, 1]^16 (log p = 0) scores log2(num_bins).
    np.testing.assert_allclose(objective.bits_per_dim(tf.zeros([3])), 4.0, rtol=1e-6)
    pixels = np.random.default_rng(0).integers(0, 16, (8, 4, 4, 1)) / 16
    noisy = objective.dequantize(pixels, seed=(1, 2)).numpy()
    assert noisy.dtype == np.float32
    assert np.all((noisy >= pixels) & (noisy < pixels + 1 / 16))
    assert np.all(noisy > pixels)
    x, context = objective.inputs(({"x": pixels, "context": np.ones((8, 2))},))
    assert context.shape == (8, 2) and np.all(x.numpy() > pixels)
    vectors = tff.objectives.MaximumLikelihood((2,))
    assert vectors.metric_names == ["nll"]
    assert vectors.dequantize(pixels) is pixels
    np.testing.assert_allclose(vectors.loss([-1.0, -3.0]), 2.0)
    with pytest.raises(ValueError, match="needs num_bins"):
        vectors.bits_per_dim([0.0])


def test_importance_weight_statistics():
    ess = tff.objectives.effective_sample_size
    assert float(ess(tf.fill([10], -3.0))) == pytest.approx(1.0)
    assert float(ess(tf.constant([0.0] + [-1e4] * 9))) == pytest.approx(0.1)
    log_w = tf.math.log(tf.constant([1.0, 2.0, 3.0, 6.0]))
    estimate = tff.objectives.log_normalizer(log_w)
    assert float(estimate.value) == pytest.approx(np.log(3.0))
    w = np.array([1.0, 2.0, 3.0, 6.0])
    assert float(estimate.stderr) == pytest.approx(
        w.std(ddof=1) / np.sqrt(4) / w.mean(), rel=1e-5)


def test_no_module_reaches_into_flow_private_methods():
    """The objective and the base have owners: nobody outside flow.py calls
    Flow's private helpers, and no `_custom_base` branch is left."""
    private = {"_split_inputs", "_dequantize", "_custom_base"}
    for path in ROOT.rglob("*.py"):
        names = {node.attr for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Attribute)}
        assert not names & private, f"{path.relative_to(ROOT)} uses {names & private}"


def test_weighted_mean_leaves_out_rows_of_weight_zero():
    values = tf.constant([1.0, 3.0, np.inf, 5.0])
    weights = tf.constant([1.0, 1.0, 0.0, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(values)
        mean = tff.objectives.weighted_mean(values, weights)
    assert float(mean) == pytest.approx((1.0 + 3.0 + 10.0) / 4.0)
    np.testing.assert_allclose(tape.gradient(mean, values), [0.25, 0.25, 0.0, 0.5])
    assert float(tff.objectives.weighted_mean(values[:2])) == 2.0
    assert float(tff.objectives.weighted_mean(values, tf.zeros(4))) == 0.0
    nll = tff.objectives.MaximumLikelihood((1,)).loss(-values[:2], tf.constant([1.0, 0.0]))
    assert float(nll) == 1.0
