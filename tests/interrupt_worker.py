"""Runs that tests/test_interrupt.py kills (and starts again).

    python tests/interrupt_worker.py fit|distributed STATE_DIR OUT [--images]
    python tests/interrupt_worker.py export|pipeline MODEL.keras TARGET

Training: 
trains a small flow with `keras.utils.set_random_seed(7)` for `EPOCHS`
epochs: `fit` with `keras.callbacks.BackupAndRestore(STATE_DIR,
save_freq=8)`, or `tff.train.distributed_fit` (default strategy, a
reshuffling dataset) with `checkpoint_dir=STATE_DIR`. After every epoch it
writes the epoch's logs to OUT.curve.json (a dict by epoch, so an epoch run
again after a kill is written over, not appended), at the end the weights
to OUT.npz. Each training step sleeps a little, so a test can kill the run
in the middle of an epoch.

Exports: loads MODEL.keras, prints "ready", then exports it again and again
(`tff.export.saved_model(flow, TARGET)` or `pipeline.run(MODEL, TARGET)`),
printing "exported" after each, until killed.
"""

import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import tfflows as tff

EPOCHS = 4
ROWS, BATCH = 512, 8  # 64 batches an epoch


def _data(images):
    rng = np.random.default_rng(0)  # not NumPy's global generator
    if images:
        x = rng.integers(0, 16, (ROWS + 64, 4, 4, 1)) / 16
    else:
        x = rng.standard_normal((ROWS + 64, 3)) * [1.0, 0.5, 2.0]
    x = x.astype("float32")
    return x[:ROWS], x[ROWS:]


def _flow(images):
    if images:
        L = tff.layers
        return tff.Flow([L.ActNorm(),
                         L.AffineCoupling(mask="checkerboard", hidden_channels=8)],
                        event_shape=(4, 4, 1), num_bins=16)
    return tff.models.realnvp(3, num_layers=2, hidden_units=(16,))


def _write(path, value):
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


class Curve(keras.callbacks.Callback):
    """Per-epoch logs to a JSON file; a short sleep per training call."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.curve = json.load(open(path)) if os.path.exists(path) else {}

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.05)

    def on_epoch_end(self, epoch, logs=None):
        self.curve[str(epoch)] = {k: float(v) for k, v in logs.items()}
        _write(self.path, self.curve)


def main(mode, state_dir, out, images):
    keras.utils.set_random_seed(7)
    x, x_val = _data(images)
    flow = _flow(images)
    flow.compile(optimizer=keras.optimizers.Adam(1e-2))
    curve = Curve(out + ".curve.json")
    if mode == "fit":
        flow.fit(x, batch_size=BATCH, epochs=EPOCHS, validation_data=x_val,
                 verbose=0, callbacks=[
                     keras.callbacks.BackupAndRestore(state_dir, save_freq=8),
                     curve])
    else:
        slow = lambda b: tf.numpy_function(lambda v: time.sleep(0.004) or v, [b], b.dtype)
        dataset = (tf.data.Dataset.from_tensor_slices(x)
                   .shuffle(ROWS, reshuffle_each_iteration=True).batch(BATCH)
                   .map(lambda b: tf.ensure_shape(slow(b), b.shape)))
        history = tff.train.distributed_fit(
            flow, dataset, tf.distribute.get_strategy(), epochs=EPOCHS,
            checkpoint_dir=state_dir, verbose=0)
        for epoch, i in zip(history.epoch, range(len(history.epoch))):
            curve.on_epoch_end(epoch, {k: v[i] for k, v in history.history.items()})
    np.savez(out + ".npz", *[v.numpy() for v in flow.weights],
             iterations=flow.optimizer.iterations.numpy())


def export_forever(mode, model, target):
    from tfflows import files
    from tfflows.export import pipeline

    flow = files.load_flow(model)
    print("ready", flush=True)
    while True:
        if mode == "export":
            tff.export.saved_model(flow, target)
        else:
            pipeline.run(model, target)
        print("exported", flush=True)


if __name__ == "__main__":
    if sys.argv[1] in ("export", "pipeline"):
        export_forever(*sys.argv[1:4])
    main(sys.argv[1], sys.argv[2], sys.argv[3], "--images" in sys.argv[4:])
