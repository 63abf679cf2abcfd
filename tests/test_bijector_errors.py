"""Impossible configurations and bad inputs get errors that name the problem."""

import numpy as np
import pytest
import tensorflow as tf

import tfflows as tff

tfb_ = tff.bijectors


def _pair(x):
    return tf.zeros_like(x), tf.zeros_like(x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(event_shape=[4, 4, 3], mask="channel"), r"even channel count.*3 channels"),
    (dict(event_shape=[6], num_masked=7), r"num_masked must be in \[1, 5\] for event size 6\. Received: num_masked=7"),
    (dict(event_shape=[6], num_masked=0), r"num_masked=0"),
    (dict(event_shape=[4, 4], mask="half"), r"event_shape must be \[D\]"),
    (dict(event_shape=[8], mask="checkerboard"), r"event_shape must be \[H, W, C\]"),
    (dict(event_shape=[4, 4, 2], mask="stripes"), r"mask must be one of .*'stripes'"),
    (dict(event_shape=[4, 4, 2], mask="channel", num_masked=1), r"num_masked only applies"),
    (dict(event_shape=[6], log_scale_clamp=-1.0), r"log_scale_clamp=-1.0"),
])
def test_coupling_configuration_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfb_.AffineCoupling(_pair, **kwargs)


def test_coupling_rejects_non_callable_conditioner():
    with pytest.raises(ValueError, match="callable"):
        tfb_.AdditiveCoupling(3.0, event_shape=[4])


def test_coupling_wrong_input_shape_is_named():
    bijector = tfb_.AffineCoupling(_pair, event_shape=[6])
    with pytest.raises(ValueError, match=r"event shape \(6,\).*\(2, 5\)"):
        bijector.forward(tf.zeros([2, 5]))


def test_coupling_conditioner_output_shape_is_checked():
    bad = lambda xa: (tf.zeros_like(xa)[..., :1], tf.zeros_like(xa)[..., :1])
    bijector = tfb_.AffineCoupling(bad, event_shape=[6])
    with pytest.raises(ValueError, match=r"conditioner returned a shift with event shape \(1,\).*\(3,\)"):
        bijector.forward(tf.zeros([2, 6]))


def test_affine_conditioner_must_return_a_pair():
    bijector = tfb_.AffineCoupling(lambda xa: xa, event_shape=[4])
    with pytest.raises(ValueError, match=r"pair \(shift, log_scale\)"):
        bijector.forward(tf.zeros([1, 4]))


@pytest.mark.parametrize("lower, upper, log_abs, match", [
    (np.zeros((3, 4)), np.zeros((3, 3)), np.zeros(3), r"lower must be a square \[C, C\] LU factor\. Received: lower.shape=\(3, 4\)"),
    (np.zeros((3, 3)), np.zeros((3,)), np.zeros(3), r"upper must be a square .*upper.shape=\(3,\)"),
    (np.zeros((3, 3)), np.zeros((4, 4)), np.zeros(3), r"one C"),
    (np.zeros((3, 3)), np.zeros((3, 3)), np.zeros(2), r"one C"),
])
def test_conv1x1_shape_errors(lower, upper, log_abs, match):
    with pytest.raises(ValueError, match=match):
        tfb_.InvertibleConv1x1(lower, upper, log_abs)


def test_conv1x1_event_rank_and_channels():
    eye = np.eye(3)
    with pytest.raises(ValueError, match="event_ndims=2"):
        tfb_.InvertibleConv1x1(eye, eye, np.zeros(3), event_ndims=2)
    with pytest.raises(ValueError, match=r"permutation must have shape \[3\]"):
        tfb_.InvertibleConv1x1(eye, eye, np.zeros(3), permutation=[0, 1])
    conv = tfb_.InvertibleConv1x1(eye, eye, np.zeros(3))
    with pytest.raises(ValueError, match=r"Received: x.shape=\(1, 2, 2, 4\)"):
        conv.forward(tf.zeros([1, 2, 2, 4], tf.float64))


def test_actnorm_errors():
    with pytest.raises(ValueError, match="event_ndims=0"):
        tfb_.ActNorm([0.], [0.], event_ndims=0)
    with pytest.raises(ValueError, match=r"loc must have shape \[C\]"):
        tfb_.ActNorm([[0.]], [[0.]])
    with pytest.raises(ValueError, match="same shape"):
        tfb_.ActNorm([0., 0.], [0.])
    with pytest.raises(ValueError, match=r"Received: x.shape=\(5, 3\)"):
        tfb_.ActNorm([0., 0.], [0., 0.]).forward(tf.zeros([5, 3]))


def test_masked_autoregressive_errors():
    with pytest.raises(ValueError, match="callable"):
        tfb_.MaskedAutoregressive(None)
    with pytest.raises(ValueError, match="event_size=0"):
        tfb_.MaskedAutoregressive(_pair, event_size=0)
    maf = tfb_.MaskedAutoregressive(_pair, event_size=4)
    with pytest.raises(ValueError, match=r"Received: y.shape=\(2, 3\)"):
        maf.inverse(tf.zeros([2, 3]))


def test_squeeze_errors():
    with pytest.raises(ValueError, match="factor=1"):
        tfb_.Squeeze(factor=1)
    with pytest.raises(ValueError, match=r"height divisible by 2\. Received: x.shape=\(1, 3, 4, 1\)"):
        tfb_.Squeeze().forward(tf.zeros([1, 3, 4, 1]))
    with pytest.raises(ValueError, match="channels divisible by 4"):
        tfb_.Squeeze().inverse(tf.zeros([1, 2, 2, 3]))
    with pytest.raises(ValueError, match=r"NHWC"):
        tfb_.Squeeze().forward(tf.zeros([4, 4]))


def test_logit_errors():
    with pytest.raises(ValueError, match="alpha=0.5"):
        tfb_.Logit(alpha=0.5)
    with pytest.raises(ValueError, match="event_size=0"):
        tfb_.reverse(0)


def _validated_bijectors():
    eye = np.eye(2, dtype=np.float32)
    return {
        "affine": (tfb_.AffineCoupling(_pair, [4], validate_args=True), [3, 4]),
        "additive": (tfb_.AdditiveCoupling(tf.zeros_like, [4], validate_args=True), [3, 4]),
        "actnorm": (tfb_.ActNorm(tf.zeros(2), tf.zeros(2), validate_args=True), [3, 2]),
        "conv1x1": (tfb_.InvertibleConv1x1(eye, eye, np.zeros(2, np.float32), event_ndims=1, validate_args=True), [3, 2]),
        "maf": (tfb_.MaskedAutoregressive(_pair, validate_args=True), [3, 4]),
        "squeeze": (tfb_.Squeeze(validate_args=True), [1, 2, 2, 4]),
        "logit": (tfb_.Logit(validate_args=True), [1, 2, 2, 1]),
    }


@pytest.mark.parametrize("name", sorted(_validated_bijectors()))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_validate_args_rejects_non_finite_inputs(name, bad, direction):
    bijector, shape = _validated_bijectors()[name]
    x = np.full(shape, 0.5, np.float32)
    x.flat[1] = bad
    fn = getattr(bijector, direction)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"non-finite input .*\(NaN or Inf\)"):
        fn(tf.constant(x))
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        tf.function(fn)(tf.constant(x))
    fn(tf.constant(np.full(shape, 0.5, np.float32)))  # finite input passes
