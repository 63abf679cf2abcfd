"""The contract harness must fail on broken bijectors, or it proves nothing."""

import numpy as np
import pytest
import tensorflow as tf

import tfflows as tff
from tfflows import testing
from tests.bijector_cases import RandomConditioner


def _affine(cls, dtype=tf.float64):
    net = RandomConditioner([3], [3], 2, dtype)
    return cls(net, event_shape=[6]), tf.constant(
        np.random.default_rng(0).standard_normal((4, 6)), dtype)


class WrongLogDet(tff.bijectors.AffineCoupling):
    def _forward_and_log_det(self, x, **kwargs):
        y, ldj = super()._forward_and_log_det(x, **kwargs)
        return y, 1.001 * ldj

    def _inverse_and_log_det(self, y, **kwargs):
        x, ldj = super()._inverse_and_log_det(y, **kwargs)
        return x, 1.001 * ldj


class WrongInverse(tff.bijectors.AffineCoupling):
    def _inverse_and_log_det(self, y, **kwargs):
        x, ldj = super()._inverse_and_log_det(y, **kwargs)
        return x + 1e-4, ldj


class InconsistentLogDets(tff.bijectors.AffineCoupling):
    """Each log-det matches autodiff in its own direction on its own, but the
    inverse one is evaluated at the wrong point."""

    def _inverse_and_log_det(self, y, **kwargs):
        x, _ = super()._inverse_and_log_det(y, **kwargs)
        _, ldj = super()._inverse_and_log_det(y + 0.1, **kwargs)
        return x, ldj


def test_harness_accepts_a_correct_bijector():
    testing.assert_bijector_contract(*_affine(tff.bijectors.AffineCoupling), 1)


@pytest.mark.parametrize("cls, match", [
    (WrongLogDet, "log_det_jacobian vs autodiff"),
    (InconsistentLogDets, "inverse_log_det_jacobian vs autodiff"),
])
def test_harness_catches_wrong_log_det(cls, match):
    bijector, x = _affine(cls)
    with pytest.raises(AssertionError, match=match):
        testing.check_log_det(bijector, x, 1)


def test_harness_catches_wrong_inverse_despite_the_cache():
    # bijector.inverse(bijector.forward(x)) would return x from TFP's cache;
    # the harness feeds back copies so the broken inverse is really run.
    bijector, x = _affine(WrongInverse)
    with pytest.raises(AssertionError, match="inverse"):
        testing.check_round_trip(bijector, x)


def test_harness_catches_parameters_without_gradient():
    bijector, x = _affine(tff.bijectors.AffineCoupling)
    orphan = tf.Variable(1.0, dtype=tf.float64, name="orphan")
    with pytest.raises(AssertionError, match="orphan"):
        testing.check_finite_gradients(bijector, x, 1, variables=[orphan])
