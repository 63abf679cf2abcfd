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

from tfflows.distributions import stateless_seed

__all__ = ["impute", "ImputeDiagnostics"]

ImputeDiagnostics = collections.namedtuple(
    "ImputeDiagnostics", ["r_hat", "acceptance", "step_size", "leapfrogs", "mcmc_rows"])
ImputeDiagnostics.__doc__ = """Per-row convergence figures of `impute`.

`r_hat`: the largest split R-hat (`tfp.mcmc.potential_scale_reduction` over
the chains) among a row's missing entries, `[rows]`; near 1 when the chains
agree, above about 1.1 when they have not mixed. `acceptance`: HMC's
acceptance rate after burn-in; `step_size`: the adapted leapfrog step (in
the rescaled coordinates); `leapfrogs`: the mean leapfrog steps per NUTS
step (the cost).
`mcmc_rows`: bool `[rows]`, rows that were sampled by MCMC (the others,
with nothing or everything missing, have NaN figures).
"""

_CANDIDATES_PER_CHAIN = 8
_PIXEL_MARGIN = 1e-3  # chains start at least this far inside (0, 1)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: "
                         f"{name}={value!r}")
    return int(value)


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
    candidates = _CANDIDATES_PER_CHAIN * chains

    rows = num_rows

    def run(x, missing, seed, context=None):
        observed = tf.where(missing, tf.zeros_like(x), x)
        init_seed, sample_seed = tf.unstack(tfp.random.split_seed(seed, n=2))

        def stacked_context(copies):
            # The rows' contexts for `copies` stacked copies of the batch.
            return None if context is None else tf.tile(context, [copies, 1])

        def log_prob(full, copies):
            flat = tf.reshape(full, tf.concat([[-1], event_shape], 0))
            lp = flow.log_prob(flat, context=stacked_context(copies))
            return tf.reshape(lp, [copies, rows])

        def complete(values):  # [copies, rows, *event]: observed put back
            return tf.where(missing, values, observed)

        # Chain starts: for each row, the `chains` best of `candidates` of the
        # flow's own joint draws with the observed entries put in (a cheap
        # conditional proposal, distinct starts for R-hat to compare).
        pool = flow.sample(candidates * rows, seed=init_seed,
                           context=stacked_context(candidates))
        pool = tf.reshape(pool, tf.concat([[candidates, rows], event_shape], 0))
        if image:
            pool = tf.clip_by_value(pool, _PIXEL_MARGIN, 1 - _PIXEL_MARGIN)
        pool = complete(pool)
        scores = log_prob(pool, candidates)
        scores = tf.where(tf.math.is_finite(scores), scores, -np.inf * tf.ones_like(scores))
        best = tf.math.top_k(tf.transpose(scores), k=chains).indices  # [rows, chains]
        start = tf.gather(tf.transpose(pool, [1, 0] + event_axes), best,
                          batch_dims=1)
        start = tf.transpose(start, [1, 0] + event_axes)  # [chains, rows, *event]

        if image:
            to_state = lambda v: tf.math.log(v) - tf.math.log(1 - v)
            from_state = tf.math.sigmoid
        else:
            to_state = from_state = lambda v: v

        # The candidates' spread over each row's missing entries, [rows, 1, ...]:
        # the first step size is a quarter of it.
        event_sum = list(range(1, 1 + len(event_shape)))
        pool_state = to_state(tf.where(missing, pool, 0.5 * tf.ones_like(pool)))
        spread = tf.math.reduce_std(pool_state, axis=0)
        spread = (tf.reduce_sum(tf.where(missing, spread, tf.zeros_like(spread)), event_sum)
                  / tf.reduce_sum(tf.cast(missing, dtype), event_sum))
        spread = tf.reshape(tf.maximum(spread, 1e-3), [rows] + [1] * len(event_shape))

        def target(u):
            lp = log_prob(complete(from_state(u)), chains)
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

        def nuts_chain(log_prob_fn, init, step, burnin, results, seed):
            kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
                tfp.mcmc.NoUTurnSampler(log_prob_fn, step_size=step,
                                        max_tree_depth=max_tree_depth),
                num_adaptation_steps=int(0.8 * burnin),
                target_accept_prob=tf.cast(target_accept_prob, dtype))
            return tfp.mcmc.sample_chain(
                results, init, kernel=kernel, num_burnin_steps=burnin,
                num_steps_between_results=thinning - 1,
                trace_fn=lambda _, r: (r.inner_results.is_accepted, r.new_step_size,
                                       r.inner_results.leapfrogs_taken),
                seed=seed)

        # Warm-up: the first half of burn-in, in the sampler's space, gives
        # each entry's conditional scale (over chains and steps). The rest
        # runs in coordinates rescaled by it (a diagonal mass matrix), so
        # one step size per row suits entries of very different spreads.
        warm_seed, main_seed = tf.unstack(tfp.random.split_seed(sample_seed, n=2))
        warmup = max(num_burnin_steps // 2, 1)
        init = tf.where(missing, to_state(start), tf.zeros_like(start))
        warm, _ = nuts_chain(target, init, 0.5 * spread, 0, warmup, warm_seed)
        scale = tf.math.reduce_std(warm[warmup // 2:], axis=[0, 1])
        scale = tf.where(missing, tf.maximum(scale, 1e-3 * spread), spread * tf.ones_like(scale))
        rescaled, (accepted, step_size, leapfrogs) = nuts_chain(
            lambda v: target(v * scale), warm[-1] / scale,
            0.5 * tf.ones_like(spread), num_burnin_steps - warmup, draws_per_chain,
            main_seed)
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
        step_size = tf.reshape(step_size[-1], [rows])
        # Draw i is chain i % chains at its step i // chains.
        draws = tf.reshape(draws, tf.concat([[-1, rows], event_shape], 0))[:num_samples]
        return draws, r_hat, acceptance, step_size, leapfrogs

    shape = [rows] + event_shape
    signature = [tf.TensorSpec(shape, dtype), tf.TensorSpec(shape, tf.bool),
                 tf.TensorSpec([2], tf.int32)]
    if conditional:
        signature.append(tf.TensorSpec([rows, flow.context_dim], dtype))
    function = tf.function(run, input_signature=signature, autograph=False)
    function._omit_frequent_tracing_warning = True
    functions[key] = function
    return function


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
    Per row, `num_chains` chains start from the best of `8 * num_chains` of
    the flow's joint draws with the observed entries put in (a cheap
    conditional proposal). Burn-in: in its first half the step size adapts
    by dual averaging (to `target_accept_prob`) and each entry's
    conditional spread is measured over the chains; the second half and
    the draws run in coordinates rescaled by that spread (a diagonal mass
    matrix), the step size adapting again. Each chain then keeps every
    `thinning`-th state until there are `num_samples` draws over all
    chains. Image flows are sampled in logit space, so draws stay in (0, 1)
    (the conditional restricted to the pixel range).

    Convergence check: the split R-hat over the chains
    (`tfp.mcmc.potential_scale_reduction`) of every missing entry, in the
    sampler's space (NaN unless `num_samples >= 2 * num_chains`); a
    `RuntimeWarning` names the rows whose largest R-hat exceeds
    `r_hat_warning`, and `return_diagnostics=True` returns the figures.

    Rows with nothing missing come back unchanged (no MCMC for them); rows
    with nothing observed get `flow.sample` draws (clipped to [0, 1] for
    image flows, whose logit margin puts a little mass just outside).

    Cost per partly observed row: `num_chains * (num_burnin_steps +
    thinning * ceil(num_samples / num_chains))` NUTS steps of up to
    `2**max_tree_depth - 1` evaluations of `log_prob` and its gradient
    each (`ImputeDiagnostics.leapfrogs` reports the mean), plus
    `8 * num_chains` joint samples and log-densities for the starts. With
    the defaults and `num_samples=100`: 4 chains x 225 steps x (about 7
    leapfrogs on the 3-D Gaussians of the tests, 20-31 for a digit with
    half its pixels missing) = 6,000-28,000 gradient evaluations per row,
    batched over rows and chains. A row with
    nothing observed costs `num_samples` samples. The row count is part of
    the traced graph: a new number of partly observed rows traces anew.

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
    num_samples = _positive_int("num_samples", num_samples)
    num_chains = _positive_int("num_chains", num_chains)
    num_burnin_steps = _positive_int("num_burnin_steps", num_burnin_steps)
    max_tree_depth = _positive_int("max_tree_depth", max_tree_depth)
    thinning = _positive_int("thinning", thinning)
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
                                    partial)
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
        filled, r_hat, acceptance, step_size, leapfrogs = run(*args)
        draws[:, index] = np.where(missing[index], np.asarray(filled), x[index])
        diagnostics.r_hat[index] = np.asarray(r_hat)
        diagnostics.acceptance[index] = np.asarray(acceptance)
        diagnostics.step_size[index] = np.asarray(step_size)
        diagnostics.leapfrogs[index] = np.asarray(leapfrogs)
        high = np.flatnonzero(diagnostics.r_hat > r_hat_warning)
        if len(high):
            warnings.warn(
                f"impute: R-hat above {r_hat_warning} in {len(high)} of "
                f"{len(index)} sampled rows (rows {high[:10].tolist()}, largest "
                f"{float(np.nanmax(diagnostics.r_hat)):.3f}): the chains may not "
                "have converged; raise num_burnin_steps, num_chains or thinning",
                RuntimeWarning, stacklevel=2)
    return (draws, diagnostics) if return_diagnostics else draws
