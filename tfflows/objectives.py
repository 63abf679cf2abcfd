"""Training objectives of flows: maximum likelihood, flow matching, reverse KL.

Every training loop of tfflows computes its loss and logged figures here:
`Flow.train_step` / `test_step` (through `Flow.objective`, a
`MaximumLikelihood`), `tfflows.train.distributed_fit` and the command line
(the same object), and `tfflows.vi` (`ReverseKL`).

- `MaximumLikelihood`: fit a flow to data. The loss is the negative
  log-likelihood `-mean log p(x)`; image flows (`num_bins` set) see their
  pixels with uniform dequantization noise of one bin, and their `bits_per_dim`
  counts the bin width, so it bounds the discrete data's likelihood.
- `FlowMatching`: fit a continuous flow's velocity field to the
  optimal-transport path's (`tfflows.ContinuousFlow`), no ODE solve.
- `ReverseKL`: fit a flow `q` to an unnormalised log-density `log p~` from
  reparametrised samples of `q`:

  ```none
  loss = E_q[log q(x) - log p~(x)] = KL(q || p) - log Z = -ELBO
  ```

Helpers on log importance weights `log w = log p~(x) - log q(x)`, `x ~ q`:
`effective_sample_size` and `log_normalizer`.
"""

import collections

import keras
import numpy as np
import tensorflow as tf

from tfflows._checks import integer
from tfflows._hashing import MODULUS, keyed_stream, mix
from tfflows.bijectors.logit import bits_per_dim, uniform_dequantize

__all__ = ["MaximumLikelihood", "FlowMatching", "ReverseKL", "Estimate", "split_inputs",
           "effective_sample_size", "log_normalizer", "row_keyed_draws", "weighted_mean"]


Estimate = collections.namedtuple("Estimate", ["value", "stderr"])
Estimate.__doc__ = """A Monte Carlo estimate and its standard error."""


def split_inputs(inputs):
    """A flow's input, `x` or `{"x": x, "context": c}`, as `(x, context)`."""
    if isinstance(inputs, dict):
        unknown = set(inputs) - {"x", "context"}
        if unknown or "x" not in inputs:
            raise ValueError("Flow inputs must be a tensor or a dict with "
                             f"keys 'x' and 'context'. Received keys: "
                             f"{sorted(inputs)}")
        return inputs["x"], inputs.get("context")
    return inputs, None


class MaximumLikelihood:
    """Negative log-likelihood, with dequantization and bits/dim for images.

    ```none
    loss = -mean_i log p(x_i)                       (nats per example)
    bits_per_dim = (-log p(x) + D log(num_bins)) / (D log 2)
    ```

    For image flows (`num_bins` set) the pixels `k / num_bins` are
    dequantized to `(k + u) / num_bins`, `u ~ U[0, 1)`, before the density
    is taken (training and validation batches alike), so the logged
    `bits_per_dim` is an honest bound on the discrete data's NLL (Theis et
    al. 2016, https://arxiv.org/abs/1511.01844).

    Args:
      event_shape: the flow's event shape.
      num_bins: pixel levels of an image flow, or None (no dequantization,
        no bits/dim).
      dtype: the dtype pixels are cast to before the noise is added (the
        flow's compute dtype).
    """

    def __init__(self, event_shape, num_bins=None, dtype="float32"):
        self.event_shape = tuple(int(d) for d in event_shape)
        self.num_bins = num_bins
        self.dtype = tf.as_dtype(dtype)
        self.num_dims = int(np.prod(self.event_shape))
        # Set by training loops whose noise must be a function of their
        # state (tfflows.resume): a callable returning a stateless seed.
        self.noise_seed_fn = None

    @property
    def metric_names(self):
        """Names of the figures `metrics` returns: `nll` (+ `bits_per_dim`)."""
        return ["nll"] + (["bits_per_dim"] if self.num_bins else [])

    def dequantize(self, x, seed=None):
        """`x` plus one bin of uniform noise for image flows, else `x` unchanged.

        Args:
          x: pixels `k / num_bins`.
          seed: a pair for stateless noise, or None.
        """
        if not self.num_bins:
            return x
        x = tf.cast(tf.convert_to_tensor(x), self.dtype)
        return uniform_dequantize(x, self.num_bins, seed=seed)

    def _batch_seed(self, seed):
        if seed is None and self.num_bins and self.noise_seed_fn is not None:
            return self.noise_seed_fn()
        return seed

    def inputs(self, data, seed=None):
        """A Keras batch (`x`, `{"x", "context"}`, or a tuple of them with
        targets / weights) as `(x, context)`, `x` dequantized.

        `seed`: a pair for stateless noise; None uses `noise_seed_fn` if a
        training loop set one, else fresh noise.
        """
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        x, context = split_inputs(x)
        return self.dequantize(x, seed=self._batch_seed(seed)), context

    def prepare(self, data, seed=None):
        """A Keras batch with its pixels dequantized, in the same structure
        (`seed` as in `inputs`)."""
        if not self.num_bins:
            return data
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        pixels, context = split_inputs(x)
        pixels = self.dequantize(pixels, seed=self._batch_seed(seed))
        x = pixels if context is None else {"x": pixels, "context": context}
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def per_example_loss(self, log_prob):
        """`-log p(x)` per example."""
        return -tf.convert_to_tensor(log_prob)

    def loss(self, log_prob, sample_weight=None):
        """The mean negative log-likelihood of a batch (weighted by
        `sample_weight`, `[batch]`, if given: `weighted_mean`)."""
        return weighted_mean(self.per_example_loss(log_prob), sample_weight)

    def bits_per_dim(self, log_prob):
        """Discrete-data bits per dimension of each example (image flows)."""
        if not self.num_bins:
            raise ValueError("bits_per_dim needs num_bins (an image flow); "
                             "this objective has num_bins=None")
        return bits_per_dim(log_prob, self.num_dims, self.num_bins)

    def metrics(self, log_prob):
        """`{name: per-example values}` for `metric_names`."""
        values = {"nll": self.per_example_loss(log_prob)}
        if self.num_bins:
            values["bits_per_dim"] = self.bits_per_dim(log_prob)
        return values


def weighted_mean(values, sample_weight=None):
    """The mean of per-example `values`, or with `sample_weight` (`[batch]`,
    non-negative) their weighted mean `sum(w v) / sum(w)`; rows of weight 0
    count for nothing, even where their value is not finite, and all-zero
    weights give 0."""
    values = tf.convert_to_tensor(values)
    if sample_weight is None:
        return tf.reduce_mean(values)
    weights = tf.cast(sample_weight, values.dtype)
    kept = tf.where(weights > 0, values, tf.zeros_like(values))
    return tf.math.divide_no_nan(tf.reduce_sum(weights * kept), tf.reduce_sum(weights))


VALIDATION_SEED = 0
def row_keyed_draws(x, context, seed, draws=1):
    """Flow matching's `(t, z)` for each row, keyed by the row's values.

    Each row's key hashes the float32 bits of its values and of its
    context (each word scrambled with its position and `seed`, summed,
    scrambled again: `tfflows._hashing`); its time and base point are
    counter-based draws from that key: `D + 1` hashed counters as uniforms
    in (0, 1), the base point through the normal quantile. So a row gets
    the same draws in any batch, batch size, order or epoch (rows with
    the same values share them), as a validation loss that is compared
    across epochs needs; no random op or state is involved, and the graph
    is XLA-compilable (int64 multiplications and remainders only).

    Args:
      x: `[batch, *event_shape]`.
      context: `[batch, K]` or None.
      seed: a Python int.

    Returns:
      `(t [batch], z [batch, *event_shape])` in `x`'s dtype.
    """
    x = tf.convert_to_tensor(x)
    batch = tf.shape(x)[0]
    words = [tf.reshape(tf.cast(x, tf.float32), [batch, -1])]
    if context is not None:
        words.append(tf.reshape(tf.cast(context, tf.float32), [batch, -1]))
    words = tf.cast(tf.bitcast(tf.concat(words, -1), tf.int32), tf.int64)
    positions = tf.range(tf.shape(words)[1], dtype=tf.int64)
    salts = mix(tf.math.floormod(positions * 48271 + int(seed) % MODULUS, MODULUS))
    key = mix(tf.math.floormod(tf.reduce_sum(
        keyed_stream(salts, tf.math.floormod(words, MODULUS)), axis=-1), MODULUS))
    size = tf.reduce_prod(tf.shape(x)[1:])
    counters = tf.range(tf.cast(draws * (size + 1), tf.int64), dtype=tf.int64)
    bits = keyed_stream(key[:, None], counters[None, :])
    # Centred in their bin, and kept off 1 in float32 (the largest bins
    # round up to it): uniforms in (0, 1), never 0 or 1.
    uniform = tf.clip_by_value(
        tf.cast((tf.cast(bits, tf.float64) + 0.5) / MODULUS, tf.float32),
        0.0, 1.0 - 2.0**-24)
    if draws > 1:  # draw-major rows: [draws * batch, size + 1]
        # (reordered in float32: on int64, oneDNN's transpose logs
        # "oneDNN supports DT_INT64 only on platforms with AVX-512")
        uniform = tf.reshape(tf.transpose(tf.reshape(uniform, [batch, draws, size + 1]),
                                          [1, 0, 2]), [draws * batch, size + 1])
        x = tf.concat([x] * draws, 0)
    t = tf.cast(uniform[:, 0], x.dtype)
    z = tf.reshape(tf.cast(tf.math.ndtri(uniform[:, 1:]), x.dtype), tf.shape(x))
    return t, z


class FlowMatching:
    """Conditional flow matching on the optimal-transport path (Lipman et al. 2022).

    With data `x`, noise `z ~ N(0, I)` and `t ~ U[0, 1)` drawn per example
    (`draws` pairs `(t, z)` per example, the loss averaged over them):

    ```none
    x_t = (1 - (1 - σ_min) t) z + t x           (the path from z at t=0 to x at t=1)
    u_t = x - (1 - σ_min) z                      (its velocity)
    loss = mean_i ||v(x_t, t) - u_t||²           (summed over the event)
    ```

    Its minimiser is the velocity field whose flow carries `N(0, I)` to
    the data distribution (at `σ_min = 0`), so a continuous flow trained
    on it is a density model without any ODE solve during training: one
    network call per step. The loss is not a likelihood (its floor is the
    path's own variance, not 0); measure held-out `-log_prob` for that.

    References:
      Yaron Lipman, Ricky T. Q. Chen, Heli Ben-Hamu, Maximilian Nickel,
      Matt Le (2022). Flow Matching for Generative Modeling.
      https://arxiv.org/abs/2210.02747

    Args:
      event_shape: the flow's event shape.
      sigma_min: width left around each data point at t=1 (0 by default:
        the path ends at `x`), in [0, 1).
      draws: `(t, z)` pairs per example (1): the batch is repeated `draws`
        times (one network call on all of it) and each example's loss is
        the mean over its draws, a lower-variance estimate of the same
        loss for `draws` times the arithmetic.
    """

    num_bins = None
    metric_names = ["fm_loss"]

    def __init__(self, event_shape, sigma_min=0.0, draws=1):
        self.event_shape = tuple(int(d) for d in event_shape)
        self.draws = integer("draws", draws)
        sigma_min = float(sigma_min)
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError("sigma_min must be in [0, 1). Received: "
                             f"sigma_min={sigma_min!r}")
        self.sigma_min = sigma_min
        # As `MaximumLikelihood`'s: a callable returning a stateless seed,
        # set by training loops whose noise must be a function of their state.
        self.noise_seed_fn = None

    def dequantize(self, x, seed=None):
        """`x` unchanged (vector data; here for the training loops' sake)."""
        return x

    def prepare(self, data, seed=None):
        """The batch unchanged."""
        return data

    def inputs(self, data, seed=None):
        """A Keras batch as `(x, context)`."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return split_inputs(x)

    def residuals(self, velocity_fn, x, context=None, seed=None, row_seed=None):
        """`||v(x_t, t) - u_t||²` per example, `[batch]`.

        Args:
          velocity_fn: `(x, t, context) -> v`, `t` of shape `[batch]`.
          x: data `[batch, *event_shape]`.
          context: `[batch, K]` or None.
          seed: a pair for stateless noise; None uses `noise_seed_fn` if a
            training loop set one, else fresh noise.
          row_seed: an int: each row's `(t, z)` is a function of this seed
            and of the row's values (and context) alone
            (`row_keyed_draws`), the same in any batch, order or epoch;
            `seed` and `noise_seed_fn` are then unused. Validation
            (`ContinuousFlow.test_step`) passes `VALIDATION_SEED`.
        """
        x = tf.convert_to_tensor(x)
        rows = tf.shape(x)[:1]
        if row_seed is not None:
            t, z = row_keyed_draws(x, context, row_seed, self.draws)
        if self.draws > 1:  # the batch `draws` times over, draw-major
            x = tf.concat([x] * self.draws, 0)
            if context is not None:
                context = tf.concat([tf.convert_to_tensor(context)] * self.draws, 0)
        batch = tf.shape(x)[:1]
        if row_seed is None:
            if seed is None and self.noise_seed_fn is not None:
                seed = self.noise_seed_fn()
            if seed is None:
                z = tf.random.normal(tf.shape(x), dtype=x.dtype)
                t = tf.random.uniform(batch, dtype=x.dtype)
            else:
                seeds = tf.random.experimental.stateless_split(seed, 2)
                z = tf.random.stateless_normal(tf.shape(x), seeds[0], dtype=x.dtype)
                t = tf.random.stateless_uniform(batch, seeds[1], dtype=x.dtype)
        shrink = 1.0 - self.sigma_min
        t_event = tf.reshape(t, tf.concat([batch, tf.ones([len(self.event_shape)],
                                                          tf.int32)], 0))
        x_t = (1.0 - shrink * t_event) * z + t_event * x
        target = x - shrink * z
        error = tf.convert_to_tensor(velocity_fn(x_t, t, context)) - target
        squares = tf.reduce_sum(tf.reshape(tf.square(error), tf.concat([batch, [-1]], 0)),
                                axis=-1)
        if self.draws > 1:
            squares = tf.reduce_mean(tf.reshape(squares, tf.concat([[self.draws], rows], 0)), 0)
        return squares

    def per_example_loss(self, residuals):
        return tf.convert_to_tensor(residuals)

    def loss(self, residuals, sample_weight=None):
        """The batch's mean squared velocity error (weighted as in
        `MaximumLikelihood.loss`)."""
        return weighted_mean(residuals, sample_weight)

    def metrics(self, residuals):
        """`{"fm_loss": per-example squared errors}`."""
        return {"fm_loss": tf.convert_to_tensor(residuals)}


def effective_sample_size(log_weights):
    """Kish's effective sample size of importance weights, as a fraction.

    ```none
    ESS / n = (sum w)^2 / (n sum w^2)   in (0, 1]
    ```

    1 when all weights are equal (q is the target), `1/n` when one weight
    dominates. Computed from log-weights in log space.
    """
    log_weights = tf.convert_to_tensor(log_weights)
    n = tf.cast(tf.shape(log_weights)[-1], log_weights.dtype)
    log_ess = (2.0 * tf.reduce_logsumexp(log_weights, axis=-1)
               - tf.reduce_logsumexp(2.0 * log_weights, axis=-1))
    return tf.exp(log_ess) / n


def log_normalizer(log_weights):
    """Importance-weighted estimate of `log Z` from log-weights, with its error.

    ```none
    log Z ~= logsumexp(log w) - log n
    stderr ~= std(w) / (sqrt(n) mean(w))      (delta method)
    ```

    The estimate is consistent but biased low by about `stderr^2 / 2`
    (Jensen); the error is meaningful while the effective sample size is
    not tiny. Returns an `Estimate` of scalar tensors.
    """
    log_weights = tf.convert_to_tensor(log_weights)
    n = tf.cast(tf.shape(log_weights)[-1], log_weights.dtype)
    value = tf.reduce_logsumexp(log_weights, axis=-1) - tf.math.log(n)
    # w / mean(w) = exp(log w - value); its variance over n samples.
    relative = tf.exp(log_weights - value[..., tf.newaxis])
    stderr = tf.math.reduce_std(relative, axis=-1) / tf.sqrt(n - 1.0)
    return Estimate(value, stderr)


class ReverseKL:
    """Reverse KL to an unnormalised density, from reparametrised samples of q.

    With `x ~ q` drawn through the flow (`flow.sample_and_log_prob`, one
    forward pass) and `log w = log p~(x) - log q(x)`:

    ```none
    loss = -ELBO = E_q[log q(x) - log p~(x)] = KL(q || p) - log Z
    ELBO = mean(log w),   ESS = (sum w)^2 / (n sum w^2)
    ```

    The gradient flows through the samples (the pathwise estimator), so the
    target must be differentiable in `x`.

    References:
      Danilo Jimenez Rezende, Shakir Mohamed (2015). Variational Inference
      with Normalizing Flows. https://arxiv.org/abs/1505.05770

    Args:
      target_log_prob_fn: `x -> log p~(x)`, shape `[num_samples]`, for an
        unconditional flow; `(x, context) -> [num_samples]` for a conditional
        one (the context broadcast to `[num_samples, K]`).
      num_samples: samples per estimate.
    """

    def __init__(self, target_log_prob_fn, num_samples=256):
        if not callable(target_log_prob_fn):
            raise ValueError("target_log_prob_fn must be callable. Received: "
                             f"{target_log_prob_fn!r}")
        if (isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer))
                or num_samples < 1):
            raise ValueError("num_samples must be a positive integer. Received: "
                             f"num_samples={num_samples!r}")
        self.target_log_prob_fn = target_log_prob_fn
        self.num_samples = int(num_samples)

    def log_weights(self, flow, seed=None, context=None):
        """`(x, log w)`: `num_samples` draws of the flow and their log-weights.

        Args:
          flow: a `tfflows.Flow`.
          seed: int or pair for stateless draws, or None.
          context: for conditional flows, `[K]` or `[num_samples, K]`.
        """
        n = self.num_samples
        context = flow.check_context(context, n)
        x, log_q = flow.sample_and_log_prob(n, seed=seed, context=context)
        target = (self.target_log_prob_fn(x) if context is None
                  else self.target_log_prob_fn(x, context))
        target = tf.convert_to_tensor(target, dtype_hint=log_q.dtype)
        if target.shape.rank is not None and tuple(target.shape) not in ((n,), (None,)):
            raise ValueError(
                "target_log_prob_fn must return one log-density per sample, "
                f"shape [{n}] for x of shape {tuple(x.shape)}. Received: "
                f"shape {tuple(target.shape)}")
        return x, tf.cast(target, log_q.dtype) - log_q

    def loss(self, log_weights):
        """`-ELBO`, the mean of `log q - log p~`."""
        return -tf.reduce_mean(log_weights)

    def metrics(self, log_weights):
        """`{"loss": -ELBO, "elbo": ELBO, "ess": ESS / n}` (scalars)."""
        elbo = tf.reduce_mean(log_weights)
        return {"loss": -elbo, "elbo": elbo,
                "ess": effective_sample_size(log_weights)}

    def elbo(self, log_weights):
        """The ELBO and its standard error, `std(log w) / sqrt(n)`."""
        n = tf.cast(tf.shape(log_weights)[-1], log_weights.dtype)
        return Estimate(tf.reduce_mean(log_weights),
                        tf.math.reduce_std(log_weights) / tf.sqrt(n - 1.0))

    def log_normalizer(self, log_weights):
        """`log_normalizer(log_weights)`: the importance-weighted `log Z`."""
        return log_normalizer(log_weights)

