"""Resuming an interrupted `Flow.fit` where it stopped, to the same result.

What Keras 3.15 does by itself. `keras.callbacks.BackupAndRestore`
(keras/src/callbacks/backup_and_restore.py) writes `model.save_weights` (the
weights and the optimizer's variables: step count, Adam's moments) to
`latest.weights.h5`, then `{"epoch", "batch"}` to `training_metadata.json`,
each in place. On restart, `_load_model` loads the weights and sets
`model._initial_epoch` to the saved epoch; the saved batch is not read, and
`fit` starts that epoch from its first batch
(keras/src/backend/tensorflow/trainer.py, `fit`: `initial_epoch =
self._initial_epoch or initial_epoch`). So after a save in the middle of an
epoch (`save_freq=N` batches) the resumed run:

- trains again on the batches the restored weights have already seen;
- logs for that epoch the mean over the batches after the restart only (the
  metrics' running totals are not saved);
- restarts the per-iteration randomness of `tf.data` pipelines (the epoch
  orders of a reshuffling dataset, `Flow.fit`'s included until now) at the
  first epoch's, and TF's stateful random ops (dequantization noise) at the
  start of their streams;
- records epoch 0 in the saves it makes before the end of the resumed epoch
  (`_current_epoch` is set only by `on_epoch_end`), so a second interruption
  restarts training from epoch 0 with late weights;
- can find a torn `latest.weights.h5` (an `OSError` on restart, fatal
  without `double_checkpoint`) or weights newer than the metadata, when it
  was killed during a save; and keeps `model._initial_epoch` after `fit`
  returns, so the next `fit` call on the model starts at that epoch.

What tfflows does. `Flow.fit` on arrays runs a
`keras.callbacks.BackupAndRestore` (the class itself, not a subclass) as
`BackupAndRestore` below, with the same settings and files, and gives it the
fit's `FitPosition`:

- the data order of an epoch is a function of `(seed, epoch)`, and the seed
  (drawn once per `fit` from NumPy's global generator) is saved with the
  backup;
- a save records the batches of the epoch already trained and the metrics'
  running totals; on restart the first `fit` epoch leaves those batches out
  and starts from those totals, so every batch is trained on once, in the
  order of the uninterrupted run, and the epoch's logged means are the same;
- image flows draw their dequantization noise, and continuous flows their
  flow-matching noise and times, from a stateless generator keyed on the
  seed, the optimizer's step count and the examples counted so far in the
  epoch (or evaluation), all restored by the backup;
- a save is one file, written beside the last one and renamed over it
  (`os.replace`, after `fsync`): a kill at any moment leaves the previous
  complete backup or the new one. `training_metadata.json` is still written
  (after the weights) for tools that read it; the position is read from the
  weights file.

A run resumed in a new process then does the float32 operations of the
uninterrupted run in the same order and ends with its weights and per-epoch
logs, equal to the bit on the same machine (tests/test_interrupt.py). On
data that is not arrays (a `tf.data.Dataset`, a generator)
the batches of an epoch are the dataset's, which `fit` cannot skip; there a
run resumes as Keras does, from the start of the saved epoch with the saved
weights, but the saves are still atomic and record the right epoch.
"""

import json
import os
import shutil
import warnings

import h5py
import keras
import numpy as np
import tensorflow as tf

from tfflows.staging import fsync

__all__ = ["BackupAndRestore", "FitPosition", "with_position"]

_PROGRESS = "tfflows_progress"  # attribute of the weights file's root group


class FitPosition(keras.callbacks.Callback):
    """Where a `fit` call is in its data: `[seed, epoch, skip]`.

    `variable` (int64 `[3]`) is read by the fit's dataset
    (`tfflows.flow._epoch_shuffled`) when an epoch's iterator starts; this
    callback sets it at the start of every epoch from the epoch number Keras
    passes, and from a backup's position (`restored`) in the epoch a
    `BackupAndRestore` resumed.

    Args:
      flow: the `Flow` being fitted.
      seed: the fit's shuffle seed.
      batches_per_epoch: batches in a full epoch.
    """

    def __init__(self, flow, seed, batches_per_epoch):
        super().__init__()
        self.seed = int(seed)
        self.batches_per_epoch = int(batches_per_epoch)
        self.variable = tf.Variable([self.seed, 0, 0], dtype=tf.int64,
                                    trainable=False)
        self.epoch = 0
        self.restored = None  # a backup's progress, set by BackupAndRestore
        self._start = 0
        self._warnings = None
        self._noise = _noise_seed(flow)

    def on_epoch_begin(self, epoch, logs=None):
        skip, restored = 0, self.restored
        if restored is not None:
            if restored.get("seed") is not None:
                self.seed = int(restored["seed"])
            if restored["epoch"] == epoch and restored.get("batches"):
                skip = int(restored["batches"])
                _set_metric_values(self.model, restored.get("metrics"))
                # The epoch ends at its last batch, before the number of
                # batches Keras expects: that is not "running out of data".
                self._warnings = warnings.catch_warnings()
                self._warnings.__enter__()
                warnings.filterwarnings("ignore", message="Your input ran out of data")
            self.restored = None
        self.epoch = epoch
        self.variable.assign([self.seed, epoch, skip])
        if self._noise is not None:
            self._noise.seed.assign(self.seed)
        self._start = _steps(self.model) - skip

    def on_epoch_end(self, epoch, logs=None):
        if self._warnings is not None:
            self._warnings.__exit__(None, None, None)
            self._warnings = None

    def batches_done(self):
        """Batches of the current epoch trained so far."""
        return _steps(self.model) - self._start


def _steps(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class _NoiseSeed:
    """The seed of `fit`'s noise (dequantization, flow matching): a
    function of the fit's seed, the optimizer's step count, the examples
    counted so far in the epoch or evaluation (`flow.nll_tracker.count`) and the replica, all of
    which a backup restores. One per flow, made at its first `fit`: the
    compiled training step reads this `seed` variable."""

    def __init__(self, flow):
        self.flow = flow
        self.seed = tf.Variable(0, dtype=tf.int64, trainable=False)

    def __call__(self):
        flow = self.flow
        step = tf.cast(keras.ops.convert_to_tensor(flow.optimizer.iterations), tf.int64)
        counted = tf.cast(flow.nll_tracker.count, tf.int64)
        replica = tf.distribute.get_replica_context()
        replica = 0 if replica is None else replica.replica_id_in_sync_group
        seed = tf.stack([self.seed.read_value(), step])
        for value in (counted, replica):
            seed = tf.random.experimental.stateless_fold_in(
                seed, tf.cast(value, tf.int64))
        return seed


def _noise_seed(flow):
    """The flow's `_NoiseSeed` (made on first use), or None if `fit` draws
    no noise: image flows draw dequantization noise, continuous flows the
    flow-matching noise and times (`FlowMatching`), other flows none."""
    from tfflows.objectives import FlowMatching

    objective = flow.objective
    if not (objective.num_bins or isinstance(objective, FlowMatching)):
        return None
    if not isinstance(getattr(objective, "noise_seed_fn", None), _NoiseSeed):
        objective.noise_seed_fn = _NoiseSeed(flow)
    return objective.noise_seed_fn


def with_position(callbacks, position):
    """`fit`'s callbacks: each `keras.callbacks.BackupAndRestore` replaced by
    a tfflows `BackupAndRestore` with the same settings that knows
    `position` (None for data `fit` does not batch itself), and `position`
    appended."""
    if callbacks is None:
        callbacks = []
    elif isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks  # Keras's own container: left as given
    out = []
    for callback in callbacks:
        if type(callback) is keras.callbacks.BackupAndRestore:
            callback = BackupAndRestore.like(callback)
        if isinstance(callback, BackupAndRestore):
            callback.position = position
        out.append(callback)
    return out + ([position] if position is not None else [])


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that resumes mid-epoch exactly and
    saves atomically (see the module's docstring).

    Same arguments and files as Keras's; `Flow.fit` uses it in place of a
    `keras.callbacks.BackupAndRestore` it is given.
    """

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False,
                 delete_checkpoint=True):
        super().__init__(backup_dir, save_freq=save_freq,
                         double_checkpoint=double_checkpoint,
                         delete_checkpoint=delete_checkpoint)
        self.position = None

    @classmethod
    def like(cls, callback):
        """A tfflows `BackupAndRestore` with `callback`'s settings."""
        return cls(callback.backup_dir, save_freq=callback.save_freq,
                   double_checkpoint=callback.double_checkpoint,
                   delete_checkpoint=callback.delete_checkpoint)

    def _load_model(self):
        if not self.model.built:
            raise ValueError("To use the BackupAndRestore callback, the model "
                             "must be built before you call `fit()`.")
        progress = None
        if os.path.exists(self._weights_path):
            optimizer = self.model.optimizer
            if optimizer is not None and not optimizer.built:
                optimizer.build(self.model.trainable_variables)
            with h5py.File(self._weights_path, "r") as f:  # OSError if torn
                saved = f.attrs.get(_PROGRESS)
            self.model.load_weights(self._weights_path)
            if saved is not None:
                progress = json.loads(saved)
        if progress is None and os.path.exists(self._training_metadata_path):
            # Written by Keras's own callback: resume at the epoch's start.
            with open(self._training_metadata_path) as f:
                progress = {"epoch": int(json.load(f)["epoch"])}
        if progress is None:
            return
        self._current_epoch = progress["epoch"]
        self.model._initial_epoch = progress["epoch"]
        if self.position is not None:
            self.position.restored = progress

    def on_epoch_begin(self, epoch, logs=None):
        # Keras sets it only at an epoch's end: saves before the end of the
        # first epoch of a resumed run (or of `fit(initial_epoch=k)`) would
        # record epoch 0.
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not self._should_save_on_batch(batch):
            return
        position = self.position
        if (position is not None
                and position.batches_done() >= position.batches_per_epoch):
            # The epoch's end follows: a save here would resume into an
            # epoch with no batches left and no logs.
            return
        self._save_model()

    def _save_model(self):
        if "://" in str(self.backup_dir):  # remote storage: Keras's way
            return super()._save_model()
        os.makedirs(self.backup_dir, exist_ok=True)
        position = self.position
        progress = {"epoch": self._current_epoch}
        if position is not None:
            in_epoch = self._current_epoch == position.epoch
            progress.update(
                seed=position.seed,
                batches=position.batches_done() if in_epoch else 0,
                metrics=_metric_values(self.model) if in_epoch else None)
        pending = os.path.join(self.backup_dir, ".pending.weights.h5")
        self.model.save_weights(pending, overwrite=True)
        text = json.dumps(progress)
        if len(text) > 60_000:  # an HDF5 attribute holds 64 KiB
            progress["metrics"] = None  # (large compiled metrics): not exact
            text = json.dumps(progress)
        with h5py.File(pending, "r+") as f:
            f.attrs[_PROGRESS] = text
        fsync(pending)
        if self.double_checkpoint and os.path.exists(self._weights_path):
            _copy(self._weights_path, self._prev_weights_path)
            if os.path.exists(self._training_metadata_path):
                _copy(self._training_metadata_path,
                      self._prev_training_metadata_path)
        os.replace(pending, self._weights_path)
        _write(self._training_metadata_path, json.dumps(
            {"epoch": self._current_epoch, "batch": self._last_batch_seen}))
        fsync(self.backup_dir)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        # Keras leaves it set: the model's next `fit` would start there.
        self.model._initial_epoch = None


def _metric_values(model):
    return [[keras.ops.convert_to_numpy(v).tolist() for v in m.variables]
            for m in model.metrics]


def _set_metric_values(model, values):
    if values is None:
        return
    metrics = model.metrics
    shapes = [[tuple(v.shape) for v in m.variables] for m in metrics]
    if shapes != [[np.shape(v) for v in m] for m in values]:
        warnings.warn("The backup's metrics do not match the model's; the "
                      "resumed epoch logs the mean of its remaining batches")
        return
    for metric, saved in zip(metrics, values):
        for variable, value in zip(metric.variables, saved):
            variable.assign(np.asarray(value, dtype=variable.dtype))


def _copy(source, target):
    pending = target + ".pending"
    shutil.copyfile(source, pending)
    fsync(pending)
    os.replace(pending, target)


def _write(path, text):
    pending = path + ".pending"
    with open(pending, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(pending, path)
