"""Interrupted work: training killed mid-epoch resumes to the uninterrupted
result; exports and `tfflows train` killed at any moment leave either the
previous state or the finished one, never a half-written folder taken for a
finished one.

The kills are SIGKILL (no cleanup runs) of subprocesses: tests/interrupt_worker.py
for training, small scripts for exports, `python -m tfflows_cli` for the
command.
"""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from tests import interrupt_worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "interrupt_worker.py")


def _env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def _start(*args):
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _finish(proc, timeout=240):
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def _wait_for(condition, proc, timeout=120, what="the condition"):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _progress(backup):
    """The position a tfflows backup records: epoch, batches done, ..."""
    try:
        with h5py.File(os.path.join(backup, "latest.weights.h5"), "r") as f:
            return json.loads(f.attrs["tfflows_progress"])
    except (OSError, KeyError):
        return None


def _result(out):
    with open(out + ".curve.json") as f:
        curve = json.load(f)
    return curve, dict(np.load(out + ".npz"))


# -- training ------------------------------------------------------------------
# Tolerance: none. The resumed run does the same float32 operations in the same
# order as the uninterrupted one (same batches, same noise, the optimizer's and
# the metrics' state restored bit for bit from the backup), so on one machine
# the weights and every logged figure are equal to the bit. Anything else is a
# resume that is not exact (Keras's own BackupAndRestore misses by 1e-2 to 1e-1).
def test_fit_killed_mid_epoch_resumes_to_the_uninterrupted_run(tmp_path):
    backup, out, ref = (str(tmp_path / n) for n in ("backup", "run", "ref"))
    victim = _start(WORKER, "fit", backup, out)
    # Keras's metadata is written after each backup: a batch > 0 in an epoch
    # after the first means a mid-epoch save is on disk.
    meta = os.path.join(backup, "training_metadata.json")
    mid_epoch = lambda: (_json(meta) or {}).get("epoch", 0) >= 1 and _json(meta)["batch"] > 0
    _wait_for(mid_epoch, victim, what="a mid-epoch backup")
    _kill(victim)
    first = _progress(backup)
    assert first["epoch"] >= 1 and 0 < first["batches"] < 64, first

    # Killed again in the epoch it resumed, after a save there (Keras's own
    # callback would have recorded epoch 0 in that save).
    again = _start(WORKER, "fit", backup, out)
    later = lambda: (_progress(backup) or first)["batches"] > first["batches"]
    _wait_for(later, again, what="a save later in the resumed epoch")
    _kill(again)
    second = _progress(backup)
    assert second["epoch"] == first["epoch"], (first, second)

    resumed = _start(WORKER, "fit", backup, out)
    # The uninterrupted run, here (the same code, seed and thread settings).
    interrupt_worker.main("fit", str(tmp_path / "ref-backup"), ref, images=False)
    _finish(resumed)
    curve, weights = _result(out)
    ref_curve, ref_weights = _result(ref)
    print("killed in epoch", first["epoch"], "after", first["batches"], "and",
          second["batches"], "batches; resumed curve:", curve)
    assert sorted(curve) == sorted(ref_curve) == ["0", "1", "2", "3"]
    assert curve == ref_curve
    assert sorted(weights) == sorted(ref_weights)
    for name in weights:
        np.testing.assert_array_equal(weights[name], ref_weights[name], err_msg=name)
    assert not os.path.exists(backup)  # removed at the end of the run, as in Keras


def test_distributed_fit_killed_mid_epoch_resumes_to_the_uninterrupted_run(tmp_path):
    ckpt, out, ref = (str(tmp_path / n) for n in ("ckpt", "run", "ref"))
    victim = _start(WORKER, "distributed", ckpt, out, "--images")
    state = os.path.join(ckpt, "checkpoint")
    _wait_for(lambda: os.path.exists(state), victim, what="the first checkpoint")
    time.sleep(0.3)  # into the next epoch (an epoch takes about 0.5 s)
    _kill(victim)
    with open(state) as f:
        latest = f.read()
    resumed = _start(WORKER, "distributed", ckpt, out, "--images")
    interrupt_worker.main("distributed", str(tmp_path / "ref-ckpt"), ref, images=True)
    _finish(resumed)
    curve, weights = _result(out)
    ref_curve, ref_weights = _result(ref)
    print("killed after", latest.splitlines()[0], "; resumed epochs:", sorted(curve))
    assert "3" in curve and "0" not in curve  # resumed, not started again
    assert curve == {k: ref_curve[k] for k in curve}
    for name in weights:
        np.testing.assert_array_equal(weights[name], ref_weights[name], err_msg=name)


def test_image_flow_resumes_mid_epoch_with_the_same_noise(tmp_path):
    # In one process: a fresh flow traces new training functions, so
    # TF's stateful random ops would restart their streams as in a new
    # process; the dequantization noise must come from the restored state.
    import keras

    x, x_val = interrupt_worker._data(images=True)

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if os.path.exists(tmp_path / "backup" / "latest.weights.h5"):
                raise RuntimeError("crash")

    def run(callbacks):
        keras.utils.set_random_seed(7)
        flow = interrupt_worker._flow(images=True)
        flow.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=4)
        history = flow.fit(x[:64], batch_size=4, epochs=2, validation_data=x_val[:16],
                           verbose=0, callbacks=callbacks)
        return history, [w.numpy() for w in flow.weights]

    straight, weights = run([])
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=4)
    with pytest.raises(RuntimeError, match="crash"):
        run([backup, Crash()])
    assert _progress(str(tmp_path / "backup"))["batches"] == 8  # of 16
    resumed, resumed_weights = run([backup])
    assert resumed.epoch == [0, 1]
    assert resumed.history == straight.history
    for a, b in zip(weights, resumed_weights):
        np.testing.assert_array_equal(a, b)
