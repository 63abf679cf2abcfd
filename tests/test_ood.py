"""tff.ood: likelihood threshold and the typicality test, calibrated."""

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import tfflows as tff


def test_typicality_catches_too_likely_rows_that_likelihood_misses():
    """The typical set, where the mass of a density in many dimensions lies,
    is not where it peaks: rows near the mode (here test rows shrunk 4x
    toward the mean: low-variance rows) are far more likely than any row
    the flow was trained on, so a likelihood threshold calls every one of
    them normal, while the typicality test on batches of 10 flags them."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((16, 16)) / 4 + np.eye(16)
    x = (rng.standard_normal((3000, 16)) @ mixing).astype(np.float32)
    train, val, test = x[:2000], x[2000:2500], x[2500:]
    flow = tff.models.maf(16, num_layers=2, hidden_units=(32,))
    flow.compile(keras.optimizers.Adam(3e-3), jit_compile=False)
    flow.fit(train, batch_size=128, epochs=5, verbose=0)
    near_mode = train.mean(0) + (test - train.mean(0)) / 4

    likelihood = tff.ood.LikelihoodThreshold.fit(flow, val, fpr=0.05)
    auc_likelihood = roc_auc_score(np.r_[np.zeros(500), np.ones(500)],
                                   np.r_[likelihood.score(test), likelihood.score(near_mode)])
    assert auc_likelihood < 0.05, auc_likelihood
    assert not likelihood.flag(near_mode).any()

    typicality = tff.ood.TypicalityTest.fit(flow, train, val, batch_size=10, fpr=0.05)
    batches_in = test[rng.integers(0, 500, (200, 10))]
    batches_out = near_mode[rng.integers(0, 500, (200, 10))]
    auc_typicality = roc_auc_score(np.r_[np.zeros(200), np.ones(200)],
                                   np.r_[typicality.score(batches_in),
                                         typicality.score(batches_out)])
    assert auc_typicality > 0.99, auc_typicality
    assert typicality.flag(batches_out).mean() > 0.95
    assert typicality.flag(batches_in).mean() < 0.12  # about the 5% asked for


def test_threshold_has_the_false_positive_rate_asked_for():
    flow = tff.models.realnvp(event_dim=2, num_layers=2, hidden_units=(8,))  # N(0, I)
    rng = np.random.default_rng(0)
    scorer = tff.ood.LikelihoodThreshold.fit(flow, rng.standard_normal((999, 2)), fpr=0.1)
    fresh = rng.standard_normal((20000, 2)).astype(np.float32)
    assert abs(scorer.flag(fresh).mean() - 0.1) < 0.03
    # The exact threshold: log N at radius^2 = chi2(2) 90% quantile = 4.605.
    assert scorer.threshold == pytest.approx(-np.log(2 * np.pi) - 4.605 / 2, abs=0.15)


@pytest.mark.parametrize("call, match", [
    (lambda f, x: tff.ood.LikelihoodThreshold.fit(f, x, fpr=0.0), r"fpr must be a number in \(0, 1\)"),
    (lambda f, x: tff.ood.LikelihoodThreshold.fit(f, x[:50], fpr=0.01), "needs at least 99 validation rows; received 50"),
    (lambda f, x: tff.ood.LikelihoodThreshold.fit(f, np.where(x > 2, np.nan, x)), "rows with NaN or Inf"),
    (lambda f, x: tff.ood.TypicalityTest.fit(f, x, x, batch_size=0), "batch_size must be a positive integer"),
    (lambda f, x: tff.ood.TypicalityTest.fit(f, x, x, batch_size=4).flag(x[:12].reshape(2, 6, 2)),
     "calibrated for batches of 4; received batches of 6"),
    (lambda f, x: tff.ood.TypicalityTest.fit(f, x, x, batch_size=4).flag(x[:8]), r"batches must have shape \[num_batches, 4, 2\]"),
])
def test_bad_calls_are_clear_errors(call, match):
    flow = tff.models.realnvp(event_dim=2, num_layers=2, hidden_units=(8,))
    x = np.random.default_rng(0).standard_normal((200, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        call(flow, x)
