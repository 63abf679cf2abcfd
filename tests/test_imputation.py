"""flow.impute: MCMC draws from the flow's own p(x_missing | x_observed)."""

import keras
import numpy as np
import pytest

import tfflows as tff


def _gaussian_flow():
    """A flow whose density is exactly a correlated Gaussian: actnorm and an
    LU-parametrised linear map with fixed weights, x = A z + b."""
    rng = np.random.default_rng(0)
    flow = tff.Flow([tff.layers.ActNorm(), tff.layers.InvertibleConv1x1(seed=3)], (3,))
    actnorm, linear = flow.flow_layers
    actnorm.loc.assign([1.0, -2.0, 0.5])
    actnorm.log_scale.assign([0.3, -0.5, 0.8])
    actnorm.initialized.assign(1.0)
    linear.lower.assign(linear.lower.numpy() + np.tril(rng.normal(0, 0.8, (3, 3)), -1))
    linear.upper.assign(linear.upper.numpy() + np.triu(rng.normal(0, 0.8, (3, 3)), 1))
    b = np.asarray(flow.decode(np.zeros((1, 3), np.float32)), np.float64)[0]
    A = (np.asarray(flow.decode(np.eye(3, dtype=np.float32)), np.float64) - b).T
    return flow, b, A @ A.T


def _conditional(mean, cov, x, missing):
    o, m = ~missing, missing
    gain = cov[np.ix_(m, o)] @ np.linalg.inv(cov[np.ix_(o, o)])
    return (mean[m] + gain @ (x[o] - mean[o]),
            cov[np.ix_(m, m)] - gain @ cov[np.ix_(o, m)])


def test_draws_match_the_exact_gaussian_conditional():
    flow, mean, cov = _gaussian_flow()
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    assert abs(corr[0, 1]) > 0.9  # a strongly correlated case
    x = np.array(flow.sample(26, seed=1), np.float64)
    truth = x.copy()
    patterns = [[0], [2], [0, 1], [0, 2]]  # 6 rows each
    for i in range(24):
        x[i, patterns[i // 6]] = np.nan
    x[24] = np.nan  # nothing observed; row 25 complete
    draws, info = flow.impute(x, num_samples=400, seed=0, return_diagnostics=True)
    assert draws.shape == (400, 26, 3)
    np.testing.assert_array_equal(draws[:, 25], np.broadcast_to(truth[25], (400, 3)))
    assert info.mcmc_rows.sum() == 24 and np.isnan(info.r_hat[24:]).all()
    assert np.all(info.r_hat[:24] < 1.2), info.r_hat
    # Whitened by the exact conditional, the draws of every row are N(0, I):
    # pooled over 6 rows x 400 draws the mean is within 0.15 and the spread
    # within 15% (Monte Carlo error ~0.02-0.04 with autocorrelated chains).
    for p, cols in enumerate(patterns):
        missing = np.zeros(3, bool)
        missing[cols] = True
        white = []
        for i in range(6 * p, 6 * p + 6):
            observed = ~np.isnan(x[i])
            np.testing.assert_array_equal(draws[:, i, observed],
                                          np.broadcast_to(x[i, observed], (400, observed.sum())))
            m, c = _conditional(mean, cov, x[i], missing)
            white.append(np.linalg.solve(np.linalg.cholesky(c), (draws[:, i, missing] - m).T).T)
        white = np.concatenate(white)
        np.testing.assert_allclose(white.mean(0), 0, atol=0.15, err_msg=str(cols))
        np.testing.assert_allclose(white.std(0), 1, atol=0.15, err_msg=str(cols))
        if len(cols) == 2:
            assert abs(np.corrcoef(white.T)[0, 1]) < 0.15
    # A row with nothing observed: plain samples of the Gaussian itself.
    error = (draws[:, 24].mean(0) - mean) / np.sqrt(np.diag(cov) / 400)
    assert np.all(np.abs(error) < 4), error
    # Seeded draws repeat.
    again = flow.impute(x[:2], num_samples=8, seed=5)
    np.testing.assert_array_equal(again, flow.impute(x[:2], num_samples=8, seed=5))


def _modes(density):
    """Indices of the two highest local maxima of a gridded density and of
    the lowest point between them."""
    peaks = np.flatnonzero((density[1:-1] > density[:-2]) & (density[1:-1] >= density[2:])) + 1
    if len(peaks) < 2:
        return None
    a, b = sorted(peaks[np.argsort(density[peaks])[-2:]])
    return a, b, a + int(np.argmin(density[a:b + 1]))


def test_a_bimodal_conditional_gets_both_modes_in_proportion():
    # Two moons: a vertical slice through them crosses both arcs, so
    # p(x1 | x0) has two separated modes. The truth is the flow's own
    # conditional by quadrature on a fine grid; chains that never leave
    # their first mode get the modes' masses wrong and disagree (R-hat).
    keras.utils.set_random_seed(0)
    x = tff.data.two_moons(4096, seed=0)
    flow = tff.models.maf(2, num_layers=4, hidden_units=(64, 64))
    flow.compile(keras.optimizers.Adam(3e-3))
    flow.fit(x, epochs=30, batch_size=256, verbose=0)
    grid = np.linspace(-3, 3, 6001, dtype=np.float32)
    cases = []
    for x0 in np.linspace(-1.2, 1.2, 13, dtype=np.float32):
        lp = np.asarray(flow.log_prob(np.stack([np.full_like(grid, x0), grid], 1)),
                        np.float64)
        density = np.exp(lp - lp.max())
        density /= density.sum()
        modes = _modes(density)
        if modes is None:
            continue
        a, b, low = modes
        minor = min(density[:low].sum(), density[low:].sum())
        if minor > 0.1 and density[low] < 0.05 * min(density[a], density[b]):
            cases.append((x0, grid[low], density[low:].sum(), np.cumsum(density)))
    assert len(cases) >= 2, "the trained flow has no clearly bimodal slice"
    cases = cases[::2][:4]
    rows = np.array([[x0, np.nan] for x0, *_ in cases], np.float32)
    draws, info = flow.impute(rows, num_samples=1000, seed=0, return_diagnostics=True)
    assert np.all(info.r_hat < 1.2), info.r_hat
    assert np.all(info.jumps > 0.05), info.jumps
    for i, (x0, split, upper, cdf) in enumerate(cases):
        filled = np.sort(draws[:, i, 1])
        # The mass above the split between the modes, within 0.1 (the
        # draws' Monte Carlo error is ~0.025 at this chain length; chains
        # kept in their first modes are off by 0.1-0.2) ...
        assert abs((filled > split).mean() - upper) < 0.1, (x0, (filled > split).mean(), upper)
        # ... and the whole distribution: Kolmogorov-Smirnov distance.
        empirical = np.searchsorted(filled, grid, side="right") / len(filled)
        assert np.abs(empirical - cdf).max() < 0.15, x0


@pytest.mark.parametrize("make, kwargs, match", [
    (lambda x: np.where(np.arange(3) == 1, np.inf, x), {}, "infinite entries .* NaN marks a missing entry"),
    (lambda x: x[:, :2], {}, r"x must have shape \[batch, 3\]"),
    (lambda x: x, {"num_samples": 0}, "num_samples must be a positive integer. Received: num_samples=0"),
    (lambda x: x, {"num_samples": 2.5}, "num_samples must be a positive integer"),
    (lambda x: x.astype(str), {}, "x must be numeric"),
    (lambda x: x, {"target_accept_prob": 1.5}, r"target_accept_prob must be in \(0, 1\)"),
])
def test_bad_inputs_are_clear_errors(make, kwargs, match):
    flow, _, _ = _gaussian_flow()
    x = np.array([[np.nan, 0.5, 1.0], [0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match=match):
        flow.impute(make(x), **kwargs)


def test_inpainting_a_digit_keeps_pixels_in_range(digits_glow):
    flow, (_, _, x_test) = digits_glow
    x = x_test[:3].copy()
    x[:, :3] = np.nan  # the top three rows of each digit
    draws, info = flow.impute(x, num_samples=8, seed=0, num_burnin_steps=40,
                              max_tree_depth=4, r_hat_warning=np.inf,
                              return_diagnostics=True)
    assert draws.shape == (8, 3, 8, 8, 1)
    np.testing.assert_array_equal(draws[:, :, 3:], np.broadcast_to(x[:, 3:], (8, 3, 5, 8, 1)))
    filled = draws[:, :, :3]
    assert np.all(filled > 0) and np.all(filled < 1)
    assert np.all(filled.std(axis=0).mean(axis=(1, 2, 3)) > 0.01)  # draws differ
    assert info.mcmc_rows.all() and np.all(np.isfinite(info.r_hat))
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        flow.impute(np.where(np.isnan(x), np.nan, 2.0 * x + 0.5))
