"""Training beyond `Flow.fit`: a custom loop for multi-worker strategies."""

import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfflows._tracing import traced_once
from tfflows.flow import Flow
from tfflows.objectives import FlowMatching, split_inputs

__all__ = ["distributed_fit"]


def distributed_fit(flow, dataset, strategy, epochs, checkpoint_dir,
                    steps_per_epoch=None, verbose=1):
    """Trains a `Flow` by its objective under any `tf.distribute` strategy.

    Why this exists: Keras 3's `Model.fit` does not run under
    `tf.distribute.MultiWorkerMirroredStrategy` (keras-team/keras#20585).
    This loop uses TF's public distribution API instead
    (`strategy.experimental_distribute_dataset`, `strategy.run`,
    `strategy.reduce`) with the flow's own objective (`flow.objective`, a
    `tfflows.objectives.MaximumLikelihood`, as `fit` uses), so one flow trains the
    same way on one device, many devices (`MirroredStrategy`; there plain
    `flow.fit` works too) or many machines. Every replica minimises
    `-flow.log_prob(x)` summed over its examples and divided by the global
    batch size (`tf.nn.compute_average_loss`); image flows (`num_bins` set)
    add uniform dequantization noise of one bin to every batch, as `fit`
    does; the gradients are summed across replicas and applied with
    `flow.optimizer`. A flow-matched continuous flow
    (`tfflows.ContinuousFlow`) minimises its flow-matching loss instead and
    logs `fm_loss`, as its `fit` does: every replica takes the flow's own
    training output (`flow(x, training=True)`).

    Before the first step every actnorm layer is initialised eagerly from the
    first batch of the (undistributed) `dataset` with `flow.initialize`, as
    `fit` does; the weights are then averaged across replicas, so all workers
    start identical even if their copies of `dataset` shuffle differently.

    After every epoch the flow, its optimizer and the epoch count are saved
    with `tf.train.CheckpointManager` in `checkpoint_dir`; called again with
    the same `checkpoint_dir` (e.g. after a worker restarts, or a process
    killed mid-epoch), training resumes from the latest checkpoint and skips
    the completed epochs. The resumed run ends with the weights and logs of
    an uninterrupted one when called with the same arguments: the dataset is
    brought to the state the completed epochs left it in (a reshuffling
    dataset gives the next epoch the order it would have had), and image
    flows draw their dequantization noise from the optimizer's step count
    and a seed drawn from NumPy's global generator (the same after
    `keras.utils.set_random_seed`). A kill during a save leaves the
    previous checkpoint the latest (TF writes the `checkpoint` file last). In multi-worker
    training every worker saves (saving may need collective ops) but only the
    chief writes to `checkpoint_dir`; the others write to a temporary
    directory that is deleted straight away. Every worker restores from
    `checkpoint_dir`, so it must be on storage all workers can read.

    Example:

    ```python
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        flow = tff.models.realnvp(event_dim=2, num_layers=8)
        flow.compile(optimizer="adam")
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(256)
    history = tff.train.distributed_fit(flow, dataset, strategy, epochs=10,
                                        checkpoint_dir="/shared/ckpt")
    history.history["nll"]
    ```

    Args:
      flow: a `tfflows.Flow`, created and compiled (with an optimizer) inside
        `strategy.scope()`.
      dataset: a `tf.data.Dataset` of batches of `x` (or of
        `{"x": x, "context": c}` for conditional flows), batched with the
        global batch size. In multi-worker training every worker must build
        the same dataset; it is split across replicas by
        `strategy.experimental_distribute_dataset`.
      strategy: a `tf.distribute.Strategy` (e.g. `MirroredStrategy`,
        `MultiWorkerMirroredStrategy`, or `tf.distribute.get_strategy()`).
      epochs: the epoch to train up to (as in `fit`), counted from the start
        of training, not from the resumed checkpoint.
      checkpoint_dir: directory for the checkpoints (created if missing).
      steps_per_epoch: batches per epoch; None runs through `dataset` once
        per epoch. When set, one iterator is kept across epochs and restarted
        when the dataset runs out.
      verbose: 0 = silent, 1 = a `keras.utils.Progbar` per epoch.

    Returns:
      A `keras.callbacks.History`: `history.history` maps `"nll"` (mean
      negative log-likelihood in nats per example, over the epoch's training
      batches) and, for image flows, `"bits_per_dim"` to one value per epoch
      run in this call; `history.epoch` lists those epochs (0-based). A
      resumed run holds only the epochs it ran.

    Raises:
      ValueError: if `flow` is not a compiled `Flow` created in
        `strategy.scope()`, or `dataset` is not a `tf.data.Dataset`.
    """
    _check_args(flow, dataset, strategy, epochs, steps_per_epoch)

    # Optimizer slots must exist before a restore can fill them.
    with strategy.scope():
        flow.optimizer.build(flow.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False,
                                name="epoch")
    checkpoint = tf.train.Checkpoint(model=flow, optimizer=flow.optimizer,
                                     epoch=epoch_var)
    chief = strategy.extended.should_checkpoint
    manager = (tf.train.CheckpointManager(checkpoint, checkpoint_dir,
                                          max_to_keep=3) if chief else None)
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
    start = int(epoch_var.numpy())
    if strategy.num_replicas_in_sync > 1:  # every worker must agree
        mean, mean_sq = (float(t) for t in _all_reduce(
            strategy, tf.distribute.ReduceOp.MEAN,
            [float(start), float(start) ** 2]))
        if mean_sq - mean ** 2 > 1e-3:
            raise ValueError(
                f"The workers found different checkpoints in {checkpoint_dir} "
                f"(this one: epoch {start}; mean over replicas: {mean:g}): "
                "checkpoint_dir must be on storage every worker can read")

    history = keras.callbacks.History()
    history.set_model(flow)
    history.on_train_begin()
    flow.history = history
    if start >= epochs:
        if verbose:
            print(f"distributed_fit: {checkpoint_dir} already holds "
                  f"{start} epochs (epochs={epochs}); nothing to do")
        return history

    # Restored actnorm layers are initialised already and left alone.
    x, context = split_inputs(keras.utils.unpack_x_y_sample_weight(
        next(iter(dataset)))[0])
    flow.initialize(x, context)
    _average_across_replicas(strategy, [v for v in flow.variables
                                        if tf.as_dtype(v.dtype).is_floating])

    dist_dataset = strategy.experimental_distribute_dataset(dataset)
    # Image flows' dequantization and flow matching's (t, z): the noise of a
    # step is a function of this seed and the optimizer's step count, so a
    # resumed run draws what an uninterrupted one would have (the same seed
    # after keras.utils.set_random_seed).
    noisy = flow.num_bins or isinstance(flow.objective, FlowMatching)
    noise_seed = int(np.random.randint(0, 2**31 - 1)) if noisy else None
    step = _make_step(flow, strategy, dist_dataset.element_spec, noise_seed)

    if verbose and start:
        print(f"distributed_fit: resuming from {latest} at epoch {start + 1}")
    names = flow.objective.metric_names
    iterator = _skip_done_epochs(dist_dataset, start, steps_per_epoch)
    for epoch in range(start, epochs):
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}")
        bar = keras.utils.Progbar(steps_per_epoch, verbose=verbose,
                                  stateful_metrics=names)
        totals = np.zeros(len(names))
        count, seen = 0.0, 0
        batches = iter(dist_dataset) if iterator is None else iterator
        while steps_per_epoch is None or seen < steps_per_epoch:
            try:
                batch = next(batches)
            except StopIteration:  # the end of an epoch's own iterator
                break
            sums, n = step(batch)
            totals += np.array([float(s) for s in sums])
            count += float(n)
            seen += 1
            bar.update(seen, [(k, v / max(count, 1.0))
                              for k, v in zip(names, totals)])
        if seen == 0:
            raise ValueError("dataset yields no batches")
        logs = {k: float(v / count) for k, v in zip(names, totals)}
        if steps_per_epoch is None:  # a known target finalises by itself
            bar.update(seen, list(logs.items()), finalize=True)
        epoch_var.assign(epoch + 1)
        _save(checkpoint, manager, epoch + 1)
        history.on_epoch_end(epoch, logs)
    return history


def _check_args(flow, dataset, strategy, epochs, steps_per_epoch):
    if not isinstance(flow, Flow):
        raise ValueError("distributed_fit trains a tfflows.Flow. Received: "
                         f"flow of type {type(flow).__name__}")
    if getattr(flow, "optimizer", None) is None:
        raise ValueError("Compile the flow with an optimizer inside "
                         "strategy.scope() first: with strategy.scope(): "
                         "flow.compile(optimizer='adam')")
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError("dataset must be a batched tf.data.Dataset. Received: "
                         f"{type(dataset).__name__}")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1. Received: epochs={epochs}")
    if steps_per_epoch is not None and int(steps_per_epoch) < 1:
        raise ValueError("steps_per_epoch must be None or >= 1. Received: "
                         f"steps_per_epoch={steps_per_epoch}")
    outside = [v.path for v in flow.variables
               if not strategy.extended.variable_created_in_scope(
                   getattr(v, "value", v))]
    if outside:
        raise ValueError("The flow must be created inside strategy.scope() "
                         f"(variables such as {outside[0]!r} were not). Build "
                         "and compile it under `with strategy.scope():`")
    iterations = getattr(flow.optimizer.iterations, "value",
                         flow.optimizer.iterations)
    if not strategy.extended.variable_created_in_scope(iterations):
        raise ValueError("The flow must be compiled inside strategy.scope() "
                         "so its optimizer belongs to the strategy: "
                         "with strategy.scope(): flow.compile(optimizer=...)")


def _all_reduce(strategy, op, tensors):
    """`tensors` all-reduced across replicas (and workers), as eager values."""
    tensors = [tf.convert_to_tensor(t) for t in tensors]

    @tf.function(autograph=False)
    def reduce():
        def fn():
            ctx = tf.distribute.get_replica_context()
            return ctx.all_reduce(op, [tf.identity(t) for t in tensors])
        return strategy.run(fn)

    return strategy.experimental_local_results(traced_once(reduce)())[0]


def _average_across_replicas(strategy, variables):
    """Makes every replica (and worker) hold the same values: their mean."""
    if strategy.num_replicas_in_sync == 1 or not variables:
        return
    variables = [getattr(v, "value", v) for v in variables]
    values = _all_reduce(strategy, tf.distribute.ReduceOp.MEAN, variables)
    for v, value in zip(variables, values):
        v.assign(value)


def _stream(dist_dataset):
    """The batches of `dist_dataset` without end: a new iterator whenever
    one runs out (an error if a new one yields nothing)."""
    while True:
        empty = True
        for batch in dist_dataset:
            empty = False
            yield batch
        if empty:
            raise ValueError("dataset yields no batches")


def _skip_done_epochs(dist_dataset, epochs, steps_per_epoch):
    """Brings `dist_dataset` to where an uninterrupted run would have it
    after `epochs` epochs; returns the batch stream kept across epochs when
    `steps_per_epoch` is set (else None: each epoch makes its own iterator).

    A dataset that reshuffles (`shuffle(..., reshuffle_each_iteration=True)`,
    seeded or after `tf.random.set_seed`) draws each new iterator's order
    from a generator that its previous iterators advanced; a resumed run
    makes and drops one iterator per completed epoch, so its next epoch gets
    the order the uninterrupted run's got. With `steps_per_epoch` the
    completed epochs' batches are read and dropped.
    """
    if not steps_per_epoch:
        for _ in range(epochs):
            iter(dist_dataset)  # advances the dataset's seed generators
        return None
    stream = _stream(dist_dataset)
    for _ in range(epochs * steps_per_epoch):
        next(stream)
    return stream


def _make_step(flow, strategy, element_spec, noise_seed=None):
    objective = flow.objective

    def batch_seed():
        if noise_seed is None:
            return None
        step = tf.cast(flow.optimizer.iterations, tf.int64)
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return tf.random.experimental.stateless_fold_in(
            tf.stack([tf.constant(noise_seed, tf.int64), step]),
            tf.cast(replica, tf.int64))

    def replica_step(batch):
        seed = batch_seed()
        x, context = objective.inputs(batch, seed=seed)
        # The true global batch size, so a ragged last batch split unevenly
        # across replicas still weighs every example the same.
        size = tf.cast(tf.shape(x)[0], tf.float32)
        global_size = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, size)
        # The flow's training output, as `fit` takes it: log-densities, or a
        # flow-matched CNF's residuals, whose noise (like dequantization's)
        # is keyed on this step's seed.
        inputs = x if context is None else {"x": x, "context": context}
        keyed = seed is not None and hasattr(objective, "noise_seed_fn")
        previous = getattr(objective, "noise_seed_fn", None)
        if keyed:
            objective.noise_seed_fn = lambda: seed
        try:
            with tf.GradientTape() as tape:
                output = flow(inputs, training=True)
                loss = tf.nn.compute_average_loss(
                    objective.per_example_loss(output),
                    global_batch_size=tf.cast(global_size, tf.int64))
                if flow.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(flow.losses))
        finally:
            if keyed:
                objective.noise_seed_fn = previous
        variables = flow.trainable_variables
        gradients = tape.gradient(loss, variables)
        flow.optimizer.apply_gradients(zip(gradients, variables))
        values = objective.metrics(output)
        sums = [tf.reduce_sum(values[name]) for name in objective.metric_names]
        return sums, tf.cast(tf.shape(output)[0], output.dtype)

    @tf.function(input_signature=[element_spec], autograph=False)
    def step(batch):
        sums, n = strategy.run(replica_step, args=(batch,))
        total = lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t,
                                          axis=None)
        return [total(s) for s in sums], total(n)

    return traced_once(step)  # one per fit


def _save(checkpoint, manager, number):
    if manager is not None:
        manager.save(checkpoint_number=number)
        return
    # A non-chief worker takes part in the save (it may need collective ops)
    # but writes to a throwaway directory, deleted straight away.
    temp = tempfile.mkdtemp(prefix="tfflows-worker-")
    try:
        tf.train.CheckpointManager(checkpoint, temp, max_to_keep=1).save(
            checkpoint_number=number)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
