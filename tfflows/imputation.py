"""Filling in missing entries from a flow's own conditional `p(x_miss | x_obs)`.

`impute(flow, x)` (also `flow.impute(x)`) treats NaN entries of `x` as
missing and draws them from the flow's conditional density given the
observed entries, which stay exactly as given. A flow has no closed-form
conditional, but its joint density is exact, and

```none
p(x_miss | x_obs) ∝ p(x_miss, x_obs) = flow.log_prob(x) (up to a constant in x_miss)
```

is all that Markov chain Monte Carlo needs: the No-U-Turn sampler over the
missing coordinates, with `flow.log_prob` (observed entries held fixed) as
the target, samples the conditional exactly in the limit. Image flows
(`num_bins` set) are sampled in logit space, `x_miss = sigmoid(u)`, with the
sigmoid's Jacobian added to the target, so every draw stays in (0, 1): the
flow's conditional restricted to the pixel range.

References:
  Radford M. Neal (2011). MCMC using Hamiltonian dynamics. Handbook of
  Markov Chain Monte Carlo. https://arxiv.org/abs/1206.1901
  Matthew D. Hoffman, Andrew Gelman (2014). The No-U-Turn Sampler, section
  3.2 (dual-averaging step-size adaptation). https://arxiv.org/abs/1111.4246
  Aki Vehtari et al. (2021). Rank-normalization, folding, and localization:
  an improved R-hat. https://arxiv.org/abs/1903.08008
"""

import collections
import math
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfflows._checks import integer
from tfflows._tracing import traced_once
from tfflows.distributions import stateless_seed

__all__ = ["impute", "ImputeDiagnostics"]

ImputeDiagnostics = collections.namedtuple(
    "ImputeDiagnostics",
    ["r_hat", "acceptance", "step_size", "leapfrogs", "mcmc_rows", "jumps"])
ImputeDiagnostics.__doc__ = """Per-row convergence figures of `impute`.

`r_hat`: the largest split R-hat (`tfp.mcmc.potential_scale_reduction` over
the chains) among a row's missing entries, `[rows]`; near 1 when the chains
agree, above about 1.1 when they have not mixed. `acceptance`: HMC's
acceptance rate after burn-in; `step_size`: the adapted leapfrog step (in
the rescaled coordinates); `leapfrogs`: the mean leapfrog steps per NUTS
step (the cost).
`mcmc_rows`: bool `[rows]`, rows that were sampled by MCMC (the others,
with nothing or everything missing, have NaN figures).
`jumps`: the fraction of steps whose independence move (to a fresh draw
of the proposal) was accepted; near 0 when the missing part is
high-dimensional, where NUTS alone does the work.
"""

_KDE_CENTERS = 256  # joint draws per row behind the proposal density
_PIXEL_MARGIN = 1e-3  # chains start at least this far inside (0, 1)


class _Kde:
    """A weighted Gaussian kernel density over each row's missing
    coordinates, in the sampler's space: `[n, rows, D]` centers with
    `[n, rows]` normalised log-weights and one `[rows, D]` bandwidth.
    Observed coordinates (`mask` 0) are not proposed: `sample` gives 0 there
    and `log_prob` is the density of the missing ones alone."""

    def __init__(self, centers, log_weights, bandwidth, mask):
        self._mask = mask
        self._bandwidth = tf.where(mask > 0, bandwidth, tf.ones_like(bandwidth))
        self._shift = tf.reduce_mean(centers, axis=0)  # conditions the expansion below
        self._centers = self._whiten(centers)  # [n, rows, D]
        self._log_weights = tf.transpose(log_weights)  # [rows, n]
        self._center_norms = tf.transpose(tf.reduce_sum(tf.square(self._centers), -1))
        dims = tf.reduce_sum(mask, axis=-1)
        self._log_normalizer = (tf.reduce_sum(tf.math.log(self._bandwidth) * mask, -1)
                                + 0.5 * math.log(2 * math.pi) * dims)  # [rows]

    def _whiten(self, u):
        return (u - self._shift) / self._bandwidth * self._mask

    def sample(self, count, seed):
        """`[count, rows, D]` draws: a center by weight, plus its noise."""
        pick_seed, noise_seed = tfp.random.split_seed(seed, n=2)
        index = tf.random.stateless_categorical(self._log_weights, count, pick_seed)
        picked = tf.gather(tf.transpose(self._centers, [1, 0, 2]), index,
                           batch_dims=1)  # [rows, count, D]
        noise = tf.random.stateless_normal(tf.shape(picked), noise_seed,
                                           dtype=picked.dtype)
        white = tf.transpose(picked + noise * self._mask[:, None], [1, 0, 2])
        return (white * self._bandwidth + self._shift) * self._mask

    def log_prob(self, u):
        """`[count, rows]` log-densities of `[count, rows, D]` points."""
        white = self._whiten(u)
        cross = tf.einsum("crd,nrd->crn", white, self._centers)
        squared = (tf.reduce_sum(tf.square(white), -1)[..., None] - 2.0 * cross
                   + self._center_norms[None])
        return (tf.reduce_logsumexp(self._log_weights[None] - 0.5 * squared, axis=-1)
                - self._log_normalizer)


def _scott_kde(points, log_weights, mask):
    """A `_Kde` on `points` with Scott's bandwidth from their weighted
    spread: `std * ess**(-1 / (d + 4))`, `d` the row's missing count."""
    weights = tf.exp(log_weights)[..., None]  # [n, rows, 1], sums to 1 per row
    mean = tf.reduce_sum(weights * points, axis=0)
    std = tf.sqrt(tf.reduce_sum(weights * tf.square(points - mean), axis=0))
    ess = 1.0 / tf.reduce_sum(tf.square(weights[..., 0]), axis=0)  # [rows]
    dims = tf.reduce_sum(mask, axis=-1)
    bandwidth = std * (ess ** (-1.0 / (dims + 4.0)))[:, None]
    return _Kde(points, log_weights, tf.maximum(bandwidth, 1e-4), mask)


class _Proposal:
    """The independence proposal for the chains' starts and jumps, fixed
    before sampling: half a kernel density estimate over the flow's own
    joint draws (their missing coordinates follow the flow's marginal,
    which covers every mode of any conditional), half one over those draws
    importance-weighted toward the row's conditional (each mode in
    proportion to its mass, where the weights allow)."""

    def __init__(self, centers, missing, target, seed):
        # centers: [n, rows, D] in the sampler's space; missing: [rows, D] bool;
        # target: [n, rows, D] -> [n, rows] log p(x_miss, x_obs).
        mask = tf.cast(missing, centers.dtype)
        n = tf.shape(centers)[0]
        uniform = tf.fill(tf.shape(centers)[:2], -tf.math.log(tf.cast(n, centers.dtype)))
        self._marginal = _scott_kde(centers, uniform, mask)
        trial = self._marginal.sample(n, seed)
        log_w = target(trial) - self._marginal.log_prob(trial)
        log_w = tf.where(tf.math.is_finite(log_w), log_w,
                         tf.fill(tf.shape(log_w), tf.constant(-np.inf, log_w.dtype)))
        self.trial, self.trial_log_weights = trial, log_w
        total = tf.reduce_logsumexp(log_w, 0)
        # A row whose trial draws all have zero density keeps even weights.
        normalised = tf.where(tf.math.is_finite(total)[None], log_w - total, uniform)
        self._conditional = _scott_kde(trial, normalised, mask)

    def sample(self, count, seed):
        which_seed, a_seed, b_seed = tfp.random.split_seed(seed, n=3)
        a = self._marginal.sample(count, a_seed)
        b = self._conditional.sample(count, b_seed)
        pick = tf.random.stateless_uniform(tf.shape(a)[:2], which_seed) < 0.5
        return tf.where(pick[..., None], a, b)

    def log_prob(self, u):
        return (tf.reduce_logsumexp(tf.stack([self._marginal.log_prob(u),
                                              self._conditional.log_prob(u)]), 0)
                - math.log(2.0))


_JumpResults = collections.namedtuple("_JumpResults", ["inner_results", "jumped"])


class _WithJumps(tfp.mcmc.TransitionKernel):
    """After each step of `inner` (step-size-adapted NUTS), an independence
    Metropolis-Hastings move to a fresh draw of `proposal`, accepted with
    probability `min(1, p(y) q(x) / (p(x) q(y)))`.

    NUTS moves within a mode of the conditional; the independence move lets
    a chain reach another mode it would never cross to (the conditionals of
    multimodal data, e.g. a vertical slice through two moons). Both moves
    leave the target invariant, so their cycle does too. Where a move is
    accepted, NUTS's cached log-density and gradient are replaced by the new
    state's.
    """

    def __init__(self, inner, target_log_prob_fn, propose, proposal_log_prob):
        self._inner = inner
        self._target = target_log_prob_fn
        self._propose = propose  # (state, seed) -> proposed state
        self._proposal_log_prob = proposal_log_prob  # state -> [chains, rows]

    @property
    def is_calibrated(self):
        return True

    @property
    def parameters(self):
        return {"inner_kernel": self._inner}

    def bootstrap_results(self, init_state):
        inner = self._inner.bootstrap_results(init_state)
        return _JumpResults(inner, tf.zeros_like(inner.inner_results.target_log_prob,
                                                 dtype=tf.bool))

    def one_step(self, current_state, previous_kernel_results, seed=None):
        inner_seed, propose_seed, accept_seed = tfp.random.split_seed(seed, n=3)
        state, inner = self._inner.one_step(
            current_state, previous_kernel_results.inner_results, seed=inner_seed)
        nuts = inner.inner_results
        proposed = self._propose(state, propose_seed)
        log_prob, grads = tfp.math.value_and_gradient(self._target, proposed)
        log_ratio = (log_prob - self._proposal_log_prob(proposed)
                     - nuts.target_log_prob + self._proposal_log_prob(state))
        uniform = tf.random.stateless_uniform(tf.shape(log_ratio), accept_seed,
                                              dtype=log_ratio.dtype)
        jumped = tf.math.log(uniform) < log_ratio  # False where NaN
        wide = tf.reshape(jumped, tf.concat(
            [tf.shape(jumped), tf.ones([tf.rank(state) - 2], tf.int32)], 0))
        state = tf.where(wide, proposed, state)
        nuts = nuts._replace(
            target_log_prob=tf.where(jumped, log_prob, nuts.target_log_prob),
            grads_target_log_prob=[tf.where(wide, grads, g)
                                   for g in nuts.grads_target_log_prob])
        return state, _JumpResults(inner._replace(inner_results=nuts), jumped)



def _check_inputs(flow, x):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"x must be numeric, with NaN for missing entries. "
                         f"Received dtype {x.dtype}")
    x = x.astype(np.dtype(flow.compute_dtype))
    flow._check_shape(x.shape, "x")
    infinite = np.isinf(x)
    if infinite.any():
        row = int(np.argmax(infinite.reshape(len(x), -1).any(axis=1)))
        raise ValueError(f"x has {int(infinite.sum())} infinite entries (first in "
                         f"row {row}): NaN marks a missing entry, Inf is not a value")
    if flow.num_bins:
        seen = x[~np.isnan(x)]
        if seen.size and (seen.min() < 0 or seen.max() > 1):
            raise ValueError(f"image flows take pixels in [0, 1]; the observed "
                             f"entries span [{seen.min():g}, {seen.max():g}]")
    return x


def _seeds(seed, count):
    """`count` int32 seed pairs from an int, a pair, or None (NumPy's global
    generator, so `keras.utils.set_random_seed` makes runs reproducible)."""
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    pair = tf.cast(stateless_seed(seed), tf.int32)
    return tfp.random.split_seed(pair, n=count)


def _mcmc_function(flow, num_rows, num_samples, num_chains, num_burnin_steps,
                   max_tree_depth, thinning, target_accept_prob, conditional):
    """One cached `tf.function` that imputes `num_rows` partly observed rows.

    The row count is static: TFP's step-size adaptation needs the per-row
    step sizes' shape known, so a new count traces a new graph.
    """
    key = ("impute", num_rows, num_samples, num_chains, num_burnin_steps,
           max_tree_depth, thinning, target_accept_prob, conditional)
    # Kept out of Keras' attribute tracking, as Flow's own graph cache is.
    functions = flow.__dict__.setdefault("_graph_functions", {})
    if key in functions:
        return functions[key]
    dtype = tf.as_dtype(flow.compute_dtype)
    event_shape = list(flow.event_shape)
    event_axes = list(range(2, 2 + len(event_shape)))
    image = bool(flow.num_bins)
    chains = num_chains
    draws_per_chain = -(-num_samples // chains)
    centers = _KDE_CENTERS
    rows = num_rows
    size = int(np.prod(event_shape))

    def run(x, missing, seed, context=None):
        observed = tf.where(missing, tf.zeros_like(x), x)
        init_seed, proposal_seed, sample_seed = tf.unstack(
            tfp.random.split_seed(seed, n=3))
        flat_missing = tf.reshape(missing, [rows, size])

        def stacked_context(copies):
            # The rows' contexts for `copies` stacked copies of the batch.
            return None if context is None else tf.tile(context, [copies, 1])

        def complete(values):  # [copies, rows, *event]: observed put back
            return tf.where(missing, values, observed)

        if image:
            to_state = lambda v: tf.math.log(v) - tf.math.log(1 - v)
            from_state = tf.math.sigmoid
        else:
            to_state = from_state = lambda v: v

        def flat(u):
            return tf.reshape(u, [-1, rows, size])

        def unflat(u):
            return tf.reshape(u, tf.concat([[-1, rows], event_shape], 0))

        # The flow's own joint draws, in the sampler's space: the proposal's
        # centers.
        pool = flow.sample(centers * rows, seed=init_seed,
                           context=stacked_context(centers))
        pool = tf.reshape(pool, tf.concat([[centers, rows], event_shape], 0))
        if image:
            pool = tf.clip_by_value(pool, _PIXEL_MARGIN, 1 - _PIXEL_MARGIN)
        pool = tf.where(missing, to_state(pool), tf.zeros_like(pool))

        def target(u):
            copies = tf.shape(u)[0]
            full = tf.reshape(complete(from_state(u)), tf.concat([[-1], event_shape], 0))
            lp = tf.reshape(flow.log_prob(full, context=stacked_context(copies)),
                            [copies, rows])
            if image:  # log |dx/du| of x = sigmoid(u), missing entries only
                jac = tf.math.log_sigmoid(u) + tf.math.log_sigmoid(-u)
                lp += tf.reduce_sum(tf.where(missing, jac, tf.zeros_like(jac)),
                                    axis=event_axes)
            # The state holds every entry; the observed ones (put back by
            # `complete`) get an independent N(0, spread^2) of their own, so
            # the sampler's trajectories turn in every coordinate (a
            # coordinate with no force would keep NUTS at its largest tree).
            dummy = -0.5 * tf.square(u / spread)
            return lp + tf.reduce_sum(tf.where(missing, tf.zeros_like(u), dummy),
                                      axis=event_axes)

        # The joint draws' spread over each row's missing entries, [rows, 1, ...]:
        # the first step size is a quarter of it.
        event_sum = list(range(1, 1 + len(event_shape)))
        spread = tf.math.reduce_std(tf.where(missing, pool, 0.5 * tf.ones_like(pool)),
                                    axis=0)
        spread = (tf.reduce_sum(tf.where(missing, spread, tf.zeros_like(spread)), event_sum)
                  / tf.reduce_sum(tf.cast(missing, dtype), event_sum))
        spread = tf.reshape(tf.maximum(spread, 1e-3), [rows] + [1] * len(event_shape))

        proposal_seed, gumbel_seed = tfp.random.split_seed(proposal_seed, n=2)
        proposal = _Proposal(flat(pool), flat_missing,
                             lambda u: target(unflat(u)), proposal_seed)

        # Chain starts: sampling-importance-resampling. Of the proposal's
        # own weighted trial draws, `chains` are drawn without replacement
        # (Gumbel top-k), so the starts already follow the conditional,
        # modes in proportion, when the weights are even.
        weights = proposal.trial_log_weights
        gumbel = -tf.math.log(-tf.math.log(tf.random.stateless_uniform(
            tf.shape(weights), gumbel_seed, minval=1e-12, maxval=1.0, dtype=dtype)))
        best = tf.math.top_k(tf.transpose(weights + gumbel), k=chains).indices
        trial = unflat(proposal.trial)
        start = tf.gather(tf.transpose(trial, [1, 0] + event_axes), best, batch_dims=1)
        init = tf.transpose(start, [1, 0] + event_axes)  # [chains, rows, *event]

        def nuts_chain(log_prob_fn, init, step, burnin, results, seed, scale):
            kernel = _WithJumps(
                tfp.mcmc.DualAveragingStepSizeAdaptation(
                    tfp.mcmc.NoUTurnSampler(log_prob_fn, step_size=step,
                                            max_tree_depth=max_tree_depth),
                    num_adaptation_steps=int(0.8 * burnin),
                    target_accept_prob=tf.cast(target_accept_prob, dtype)),
                log_prob_fn,
                lambda v, seed: tf.where(
                    missing, unflat(proposal.sample(chains, seed)) / scale, v),
                lambda v: proposal.log_prob(flat(v * scale)))
            return tfp.mcmc.sample_chain(
                results, init, kernel=kernel, num_burnin_steps=burnin,
                num_steps_between_results=thinning - 1,
                trace_fn=lambda _, r: (r.inner_results.inner_results.is_accepted,
                                       r.inner_results.new_step_size,
                                       r.inner_results.inner_results.leapfrogs_taken,
                                       r.jumped),
                seed=seed)

        # Warm-up: the first half of burn-in, in the sampler's space, gives
        # each entry's conditional scale (over chains and steps). The rest
        # runs in coordinates rescaled by it (a diagonal mass matrix), so
        # one step size per row suits entries of very different spreads.
        warm_seed, main_seed = tf.unstack(tfp.random.split_seed(sample_seed, n=2))
        warmup = max(num_burnin_steps // 2, 1)
        ones = tf.ones_like(init[0])
        warm, _ = nuts_chain(target, init, 0.5 * spread, 0, warmup, warm_seed, ones)
        scale = tf.math.reduce_std(warm[warmup // 2:], axis=[0, 1])
        scale = tf.where(missing, tf.maximum(scale, 1e-3 * spread), spread * ones)
        rescaled, (accepted, step_size, leapfrogs, jumped) = nuts_chain(
            lambda v: target(v * scale), warm[-1] / scale,
            0.5 * tf.ones_like(spread), num_burnin_steps - warmup, draws_per_chain,
            main_seed, scale)
        states = rescaled * scale
        # R-hat in the sampler's own space (logits for images, where a
        # chain deep in a pixel's tail moves although its pixel hardly does).
        if draws_per_chain >= 2:
            r_hat = tfp.mcmc.potential_scale_reduction(
                states, independent_chain_ndims=1, split_chains=draws_per_chain >= 4)
        else:  # one draw per chain: no within-chain variance to compare
            r_hat = np.nan * tf.ones_like(states[0, 0])
        draws = complete(from_state(states))  # [draws_per_chain, chains, rows, *event]
        r_hat = tf.where(missing, r_hat, tf.zeros_like(r_hat))
        r_hat = tf.reduce_max(tf.reshape(r_hat, [rows, -1]), axis=1)
        acceptance = tf.reduce_mean(tf.cast(accepted, dtype), axis=[0, 1])
        leapfrogs = tf.reduce_mean(tf.cast(leapfrogs, dtype), axis=[0, 1])
        jumps = tf.reduce_mean(tf.cast(jumped, dtype), axis=[0, 1])
        step_size = tf.reshape(step_size[-1], [rows])
        # Draw i is chain i % chains at its step i // chains.
        draws = tf.reshape(draws, tf.concat([[-1, rows], event_shape], 0))[:num_samples]
        return draws, r_hat, acceptance, step_size, leapfrogs, jumps

    shape = [rows] + event_shape
    signature = [tf.TensorSpec(shape, dtype), tf.TensorSpec(shape, tf.bool),
                 tf.TensorSpec([2], tf.int32)]
    if conditional:
        signature.append(tf.TensorSpec([rows, flow.context_dim], dtype))
    functions[key] = traced_once(
        tf.function(run, input_signature=signature, autograph=False))
    return functions[key]


def impute(flow, x, num_samples=100, seed=None, context=None, num_chains=4,
           num_burnin_steps=200, max_tree_depth=5, thinning=1,
           target_accept_prob=0.75, r_hat_warning=1.1, return_diagnostics=False):
    """Draws the missing (NaN) entries of `x` from the flow's `p(x_miss | x_obs)`.

    Rows with some entries missing are sampled by the No-U-Turn sampler
    (`tfp.mcmc.NoUTurnSampler`, Hamiltonian Monte Carlo with adaptive path
    lengths) over their missing coordinates, all rows at once in one
    `tf.function`, each row and chain an independent chain with its own
    step size. The target is `flow.log_prob` of the row with the observed
    entries held fixed, which is `log p(x_miss | x_obs)` up to a constant.

    NUTS moves within a mode of the conditional but seldom crosses to
    another (a vertical slice through two moons has two), so each step
    also tries an independence Metropolis-Hastings move to a fresh draw of
    a proposal with a known density, fixed before sampling: per row, half
    a Gaussian kernel density estimate over the missing coordinates of 256
    of the flow's joint draws (the flow's marginal, which covers every
    mode), half one over 256 draws of that estimate importance-weighted by
    `p(x) / q(x)` toward the row's conditional. The chains start from
    those weighted draws, `num_chains` picked without replacement in
    proportion to their weights (Gumbel top-k), so when the weights are
    even the starts already follow the conditional, modes in proportion.
    Where the missing part is high-dimensional (image inpainting) the
    moves are rarely accepted and NUTS alone does the work
    (`ImputeDiagnostics.jumps` reports the rate).

    Burn-in: in its first half the step size adapts by dual averaging (to
    `target_accept_prob`) and each entry's conditional spread is measured
    over the chains; the second half and the draws run in coordinates
    rescaled by that spread (a diagonal mass matrix), the step size
    adapting again. Each chain then keeps every `thinning`-th state until
    there are `num_samples` draws over all chains. Image flows are sampled
    in logit space, so draws stay in (0, 1) (the conditional restricted to
    the pixel range).

    Convergence check: the split R-hat over the chains
    (`tfp.mcmc.potential_scale_reduction`) of every missing entry, in the
    sampler's space (NaN unless `num_samples >= 2 * num_chains`); a
    `RuntimeWarning` names the rows whose largest R-hat exceeds
    `r_hat_warning`, and `return_diagnostics=True` returns the figures.

    Rows with nothing missing come back unchanged (no MCMC for them); rows
    with nothing observed get `flow.sample` draws (clipped to [0, 1] for
    image flows, whose logit margin puts a little mass just outside).

    Cost per partly observed row: `num_chains * (num_burnin_steps +
    thinning * ceil(num_samples / num_chains))` steps, each a NUTS step of
    up to `2**max_tree_depth - 1` evaluations of `log_prob` and its
    gradient (`ImputeDiagnostics.leapfrogs` reports the mean) plus one for
    the independence move, and 256 joint samples and 256 log-densities for
    the proposal and the starts. With the defaults and `num_samples=100`: 4
    chains x 225 steps x (4-9 leapfrogs + 1 on the 2-D and 3-D tests,
    31 + 1 for a digit with its top three rows missing) = 4,500-29,000
    gradient evaluations per row, batched over rows and chains. A row with
    nothing observed costs `num_samples` samples. The row count is part of
    the traced graph: a new number of partly observed rows traces anew.

    Accuracy (tests/test_imputation.py): on a flow whose density is exactly
    a correlated 3-D Gaussian, draws whitened by the exact conditional have
    mean within 0.03 of 0 and spread 0.98-1.01; on two moons, against the
    flow's own conditional by quadrature, the masses of the two modes of a
    vertical slice come out within 0.1 and the whole distribution within
    a Kolmogorov-Smirnov distance of 0.15, R-hat below 1.2.

    Args:
      flow: a `tfflows.Flow`.
      x: `[rows, *event_shape]` with NaN where an entry is missing.
      num_samples: draws per row.
      seed: int or pair for reproducible draws, or None.
      context: for conditional flows, `[K]` (every row) or `[rows, K]`.
      num_chains: chains per row (at least 2 for R-hat to mean much).
      num_burnin_steps: NUTS steps per chain discarded while the chains
        approach the conditional and adapt (see above).
      max_tree_depth: NUTS's largest tree, `2**depth - 1` leapfrog steps.
      thinning: keep one state in `thinning`.
      target_accept_prob: the acceptance rate the step size adapts to.
      r_hat_warning: warn when a row's largest R-hat exceeds this.
      return_diagnostics: also return an `ImputeDiagnostics`.

    Returns:
      `[num_samples, rows, *event_shape]` float draws (a NumPy array), the
      observed entries equal to `x`'s; with `return_diagnostics`, the pair
      `(draws, ImputeDiagnostics)`.

    Raises:
      ValueError: `x` of the wrong shape or dtype, infinite entries, image
        pixels outside [0, 1], or a bad count.
    """
    num_samples = integer("num_samples", num_samples)
    num_chains = integer("num_chains", num_chains)
    num_burnin_steps = integer("num_burnin_steps", num_burnin_steps)
    max_tree_depth = integer("max_tree_depth", max_tree_depth)
    thinning = integer("thinning", thinning)
    if not 0 < float(target_accept_prob) < 1:
        raise ValueError("target_accept_prob must be in (0, 1). Received: "
                         f"target_accept_prob={target_accept_prob!r}")
    x = _check_inputs(flow, x)
    rows = len(x)
    context = flow.check_context(context, rows)
    missing = np.isnan(x)
    per_row = missing.reshape(rows, -1).sum(axis=1)
    size = int(np.prod(flow.event_shape))
    empty, partial = per_row == size, (per_row > 0) & (per_row < size)
    draws = np.broadcast_to(x, (num_samples,) + x.shape).copy()
    nan = np.full(rows, np.nan, np.float32)
    diagnostics = ImputeDiagnostics(nan.copy(), nan.copy(), nan.copy(), nan.copy(),
                                    partial, nan.copy())
    mcmc_seed, sample_seed = _seeds(seed, 2)
    if empty.any():
        index = np.flatnonzero(empty)
        row_context = None if context is None else tf.repeat(
            tf.gather(context, index), num_samples, axis=0)
        fresh = np.asarray(flow.sample(num_samples * len(index), seed=sample_seed,
                                       context=row_context))
        fresh = fresh.reshape((len(index), num_samples) + flow.event_shape)
        if flow.num_bins:
            fresh = np.clip(fresh, 0.0, 1.0)
        draws[:, index] = np.swapaxes(fresh, 0, 1)
    if partial.any():
        index = np.flatnonzero(partial)
        run = _mcmc_function(flow, len(index), num_samples, num_chains, num_burnin_steps,
                             max_tree_depth, thinning, float(target_accept_prob),
                             context is not None)
        args = [tf.constant(np.nan_to_num(x[index])), tf.constant(missing[index]),
                mcmc_seed]
        if context is not None:
            args.append(tf.gather(context, index))
        filled, r_hat, acceptance, step_size, leapfrogs, jumps = run(*args)
        draws[:, index] = np.where(missing[index], np.asarray(filled), x[index])
        diagnostics.r_hat[index] = np.asarray(r_hat)
        diagnostics.acceptance[index] = np.asarray(acceptance)
        diagnostics.step_size[index] = np.asarray(step_size)
        diagnostics.leapfrogs[index] = np.asarray(leapfrogs)
        diagnostics.jumps[index] = np.asarray(jumps)
        high = np.flatnonzero(diagnostics.r_hat > r_hat_warning)
        if len(high):
            warnings.warn(
                f"impute: R-hat above {r_hat_warning} in {len(high)} of "
                f"{len(index)} sampled rows (row indices {high[:10].tolist()}, largest "
                f"{float(np.nanmax(diagnostics.r_hat)):.3f}): the chains may not "
                "have converged; raise num_burnin_steps, num_chains or thinning",
                RuntimeWarning, stacklevel=2)
    return (draws, diagnostics) if return_diagnostics else draws
