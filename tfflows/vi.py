"""Variational inference: fit a flow to an unnormalised log-density.

`fit` minimises the reverse KL divergence `KL(q || p)` of the flow `q` to a
target `p = p~ / Z` known up to its normaliser, with reparametrised samples
(`flow.sample_and_log_prob`, one forward pass per step, no inverse): the loss
is `-ELBO = E_q[log q(x) - log p~(x)] = KL(q || p) - log Z`. `elbo` and
`log_normalizer` estimate the bound and `log Z` for a fitted flow.

The flow's `distribution` works with TFP's own loop too:
`tfp.vi.fit_surrogate_posterior(target, flow.distribution, optimizer,
num_steps)` finds and trains the flow's variables (`tf_keras` and Keras 3
optimizers both work there).

References:
  Danilo Jimenez Rezende, Shakir Mohamed (2015). Variational Inference with
  Normalizing Flows. https://arxiv.org/abs/1505.05770
  Diederik P. Kingma, Tim Salimans, Rafal Jozefowicz, Xi Chen, Ilya
  Sutskever, Max Welling (2016). Improved Variational Inference with
  Inverse Autoregressive Flow. https://arxiv.org/abs/1606.04934
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfflows._checks import integer
from tfflows._tracing import traced_once
from tfflows.flow import Flow, xla_by_default
from tfflows.objectives import ReverseKL

__all__ = ["fit", "elbo", "log_normalizer"]

DEFAULT_STEPS_PER_EPOCH = 100


def _check_flow(flow):
    if not isinstance(flow, Flow):
        raise ValueError("tfflows.vi fits a tfflows.Flow. Received: flow of "
                         f"type {type(flow).__name__}")


def _seed(seed):
    """An int seed: the given one, or one drawn from NumPy's global generator
    (reproducible after `keras.utils.set_random_seed`)."""
    if seed is None:
        return int(np.random.randint(0, 2**31 - 1))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int or None. Received: seed={seed!r}")
    return int(seed)


def fit(flow, target_log_prob_fn, steps, num_samples=256, optimizer="adam",
        callbacks=None, verbose="auto", context=None, seed=None,
        steps_per_epoch=None, jit_compile="auto"):
    """Fits `flow` to `target_log_prob_fn` by reverse KL (maximises the ELBO).

    Every step draws `num_samples` reparametrised samples `x ~ q` with their
    log-density in one forward pass, takes the loss

    ```none
    loss = -ELBO = mean(log q(x) - log p~(x))  ~=  KL(q || p) - log Z
    ```

    and applies its gradient with a Keras optimizer. The step (sampling,
    target, gradient, update) runs as one `tf.function`, traced once; with
    `jit_compile="auto"` it is compiled with XLA where `Flow.compile` would
    use it (on CPU-only hosts, when a layer gains from it, e.g. MADE in
    MAF/IAF).

    Epochs, for callbacks: the `steps` steps are grouped into epochs of
    `steps_per_epoch` (default 100, or `steps` if fewer; the last epoch may
    be shorter). Each epoch's logs are the means over its steps, so
    `EarlyStopping(monitor="loss", patience=...)` counts epochs of averaged,
    less noisy losses, `ModelCheckpoint` saves once per epoch, and the
    `History` holds one value per epoch. Batch-level callbacks (e.g.
    `TerminateOnNaN`) see every step's values.

    Logged: `loss` (-ELBO), `elbo`, and `ess`, the effective sample size of
    the importance weights `p~(x) / q(x)` as a fraction of `num_samples`
    (in (0, 1]; near 1 when q matches the target).

    Seeded runs are reproducible: step `i` draws with the stateless seed
    `(seed, i)`, so the same seed, flow weights and optimizer give the same
    history and weights. With `seed=None` a seed is drawn from NumPy's global
    generator (fixed by `keras.utils.set_random_seed`).

    Example:

    ```python
    flow = tff.models.iaf(event_dim=2, num_layers=4, hidden_units=(32, 32))
    target = tfd.MultivariateNormalDiag([1.0, -1.0], [0.5, 2.0]).log_prob
    history = tff.vi.fit(flow, target, steps=1000, seed=0)
    history.history["elbo"][-1]           # close to log Z = 0
    ```

    Args:
      flow: a `tfflows.Flow` (its `sample_and_log_prob` gives the samples;
        IAF samples in one pass per layer, MAF in D).
      target_log_prob_fn: `x -> log p~(x)` of shape `[num_samples]` for `x`
        of shape `[num_samples, *event_shape]`; with a conditional flow
        `(x, context) -> [num_samples]`, the context as `[num_samples, K]`.
        Must be differentiable in `x` (pathwise gradients).
      steps: number of optimizer steps.
      num_samples: Monte Carlo samples per step.
      optimizer: a Keras optimizer or its name (`keras.optimizers.get`).
      callbacks: Keras callbacks (`EarlyStopping`, `TerminateOnNaN`,
        `ModelCheckpoint`, ...).
      verbose: "auto" or 1 (progress bar), 2 (one line per epoch), 0 (silent).
      context: for a conditional flow (`context_dim=K`), `[K]` (one
        posterior) or `[num_samples, K]` (amortised: one sample per context
        row, `target_log_prob_fn` gets the same rows).
      seed: int for a reproducible run, or None.
      steps_per_epoch: steps per epoch for callbacks and logs (default
        `min(steps, 100)`).
      jit_compile: "auto", True or False: XLA for the step.

    Returns:
      A `keras.callbacks.History` with `loss`, `elbo` and `ess` per epoch.

    Raises:
      ValueError: not a Flow; non-positive `steps`, `num_samples` or
        `steps_per_epoch`; a context missing for a conditional flow (or given
        to an unconditional one) or of the wrong shape; a target returning
        another shape than `[num_samples]`.
    """
    _check_flow(flow)
    steps = integer("steps", steps)
    objective = ReverseKL(target_log_prob_fn, num_samples)
    num_samples = objective.num_samples
    steps_per_epoch = integer(
        "steps_per_epoch", min(steps, DEFAULT_STEPS_PER_EPOCH)
        if steps_per_epoch is None else steps_per_epoch)
    if jit_compile not in ("auto", True, False):
        raise ValueError("jit_compile must be 'auto', True or False. "
                         f"Received: jit_compile={jit_compile!r}")
    if verbose == "auto":
        verbose = 1
    context = flow.check_context(context, num_samples)
    variables = flow.trainable_variables
    if not variables:
        raise ValueError(f"The flow '{flow.name}' has no trainable variables")
    optimizer = keras.optimizers.get(optimizer)
    if not optimizer.built:
        optimizer.build(variables)
    seed = tf.constant(_seed(seed), tf.int64)
    if jit_compile == "auto":
        jit_compile = xla_by_default(flow.flow_layers)
    step_fn = _make_step(flow, objective, optimizer, variables, context, seed,
                         jit_compile if jit_compile in (True, False) else None)

    epochs = math.ceil(steps / steps_per_epoch)
    history = keras.callbacks.History()
    callbacks = keras.callbacks.CallbackList(
        list(callbacks or []) + [history], add_history=True,
        add_progbar=verbose != 0, model=flow, verbose=verbose, epochs=epochs,
        steps=steps_per_epoch)
    flow.stop_training = False
    callbacks.on_train_begin()
    step = 0
    for epoch in range(epochs):
        callbacks.on_epoch_begin(epoch)
        totals, count = {}, 0
        for batch in range(min(steps_per_epoch, steps - step)):
            callbacks.on_train_batch_begin(batch)
            logs = {k: float(v) for k, v in step_fn(
                tf.constant(step, tf.int64)).items()}
            step += 1
            count += 1
            for k, v in logs.items():
                totals[k] = totals.get(k, 0.0) + v
            callbacks.on_train_batch_end(batch, logs)
            if flow.stop_training:
                break
        callbacks.on_epoch_end(epoch, {k: v / count for k, v in totals.items()})
        if flow.stop_training:
            break
    callbacks.on_train_end()
    return history


def _make_step(flow, objective, optimizer, variables, context, seed, jit_compile):
    def train_step(step):
        with tf.GradientTape() as tape:
            _, log_weights = objective.log_weights(
                flow, seed=tf.stack([seed, step]), context=context)
            loss = objective.loss(log_weights)
            if flow.losses:
                loss = loss + tf.add_n(flow.losses)
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return objective.metrics(log_weights)

    return traced_once(tf.function(  # once per fit
        train_step, jit_compile=jit_compile, autograph=False,
        input_signature=[tf.TensorSpec([], tf.int64)]))


def _log_weights(flow, target_log_prob_fn, num_samples, seed, context):
    _check_flow(flow)
    objective = ReverseKL(target_log_prob_fn, num_samples)
    _, log_weights = objective.log_weights(flow, seed=seed, context=context)
    return objective, log_weights


def elbo(flow, target_log_prob_fn, num_samples, seed=None, context=None):
    """Monte Carlo ELBO of `flow` for an unnormalised target, with its error.

    ```none
    ELBO = E_q[log p~(x) - log q(x)] = log Z - KL(q || p)  <=  log Z
    ```

    Args:
      flow: a `tfflows.Flow`.
      target_log_prob_fn: as in `fit`.
      num_samples: samples of the flow.
      seed: int for a reproducible estimate, or None.
      context: for conditional flows, `[K]` or `[num_samples, K]`.

    Returns:
      `Estimate(value, stderr)`: the mean of `log p~(x) - log q(x)` and its
      standard error `std / sqrt(num_samples)` (scalar tensors).
    """
    objective, log_weights = _log_weights(flow, target_log_prob_fn, num_samples,
                                          seed, context)
    return objective.elbo(log_weights)


def log_normalizer(flow, target_log_prob_fn, num_samples, seed=None,
                   context=None):
    """Importance-weighted estimate of `log Z`, the target's log-normaliser.

    ```none
    log Z ~= logsumexp_i(log p~(x_i) - log q(x_i)) - log n,   x_i ~ q
    ```

    Consistent as `n` grows, and a lower bound in expectation (Burda et al.
    2016, https://arxiv.org/abs/1509.00519); tight when `q` is close to the
    target (high effective sample size).

    Args:
      flow: a `tfflows.Flow` (the proposal).
      target_log_prob_fn: as in `fit`.
      num_samples: `n`.
      seed: int for a reproducible estimate, or None.
      context: for conditional flows, `[K]` or `[num_samples, K]`.

    Returns:
      `Estimate(value, stderr)`, the standard error by the delta method
      `std(w) / (sqrt(n) mean(w))` (scalar tensors).
    """
    objective, log_weights = _log_weights(flow, target_log_prob_fn, num_samples,
                                          seed, context)
    return objective.log_normalizer(log_weights)
