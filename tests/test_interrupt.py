"""Interrupted work: training killed mid-epoch resumes to the uninterrupted
result; exports and `tfflows train` killed at any moment leave either the
previous state or the finished one, never a half-written folder taken for a
finished one.

The kills are SIGKILL (no cleanup runs) of subprocesses: tests/interrupt_worker.py
for training, small scripts for exports, `python -m tfflows_cli` for the
command.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
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


def _start(*args, stdout=subprocess.DEVNULL):
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(),
                            stdout=stdout, stderr=subprocess.PIPE, text=True)


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
    progress = _progress(backup)
    assert progress["epoch"] >= 1 and 0 < progress["batches"] < 64, progress

    resumed = _start(WORKER, "fit", backup, out)
    # The uninterrupted run, here (the same code, seed and thread settings).
    interrupt_worker.main("fit", str(tmp_path / "ref-backup"), ref, images=False)
    _finish(resumed)
    curve, weights = _result(out)
    ref_curve, ref_weights = _result(ref)
    print("killed in epoch", progress["epoch"], "after", progress["batches"],
          "batches of 64; curve:", curve)
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
    # In one process: a fresh flow traces new training functions, so TF's
    # stateful random ops would restart their streams as in a new process;
    # the dequantization noise (of training and validation batches) must
    # come from the restored state. Interrupted twice in epoch 1: the second
    # backup is made in the resumed epoch, where Keras's own callback records
    # epoch 0.
    import keras

    x, x_val = interrupt_worker._data(images=True)
    folder = str(tmp_path / "backup")

    class Crash(keras.callbacks.Callback):
        """Raises once a backup records `batches` batches of epoch 1."""

        def __init__(self, batches):
            super().__init__()
            self.batches = batches

        def on_train_batch_end(self, batch, logs=None):
            saved = _progress(folder) or {}
            if saved.get("epoch") == 1 and saved["batches"] >= self.batches:
                raise RuntimeError("crash")

    def run(callbacks, seed=7):
        keras.utils.set_random_seed(seed)
        flow = interrupt_worker._flow(images=True)
        flow.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=4)
        history = flow.fit(x[:64], batch_size=4, epochs=2, validation_data=x_val[:16],
                           verbose=0, callbacks=callbacks)
        return history, [w.numpy() for w in flow.weights]

    straight, weights = run([])
    backup = keras.callbacks.BackupAndRestore(folder, save_freq=1)  # every call
    with pytest.raises(RuntimeError, match="crash"):
        run([backup, Crash(4)])
    assert _progress(folder)["batches"] == 4  # of 16, in epoch 1
    # Other global seeds: the shuffle seed, the noise's and every weight
    # come from the backup, nothing from the new process's generators.
    with pytest.raises(RuntimeError, match="crash"):
        run([backup, Crash(8)], seed=98)
    assert {k: _progress(folder)[k] for k in ("epoch", "batches")} == {
        "epoch": 1, "batches": 8}
    resumed, resumed_weights = run([backup], seed=99)
    assert resumed.epoch == [1]
    assert resumed.history == {k: v[1:] for k, v in straight.history.items()}
    for a, b in zip(weights, resumed_weights):
        np.testing.assert_array_equal(a, b)



def test_continuous_flow_resumes_mid_epoch_with_the_same_noise(tmp_path):
    # Flow matching draws noise and times for every batch (training and
    # validation); they must come from the restored state, as the image
    # flows' dequantization noise does.
    import keras

    import tfflows as tff

    x, x_val = interrupt_worker._data(images=False)
    folder = str(tmp_path / "backup")

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            saved = _progress(folder) or {}
            if saved.get("epoch") == 1 and saved["batches"] >= 4:
                raise RuntimeError("crash")

    def run(callbacks, seed=7):
        keras.utils.set_random_seed(seed)
        flow = tff.models.cnf(3, hidden_units=(8,), steps=2)
        flow.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=4)
        history = flow.fit(x[:64], batch_size=4, epochs=2, validation_data=x_val[:16],
                           verbose=0, callbacks=callbacks)
        return history, [w.numpy() for w in flow.weights]

    straight, weights = run([])
    backup = keras.callbacks.BackupAndRestore(folder, save_freq=1)
    with pytest.raises(RuntimeError, match="crash"):
        run([backup, Crash()])
    assert _progress(folder)["batches"] == 4  # of 16, in epoch 1
    resumed, resumed_weights = run([backup], seed=99)
    assert resumed.epoch == [1]
    assert set(straight.history) == {"loss", "fm_loss", "val_loss", "val_fm_loss"}
    assert resumed.history == {k: v[1:] for k, v in straight.history.items()}
    for a, b in zip(weights, resumed_weights):
        np.testing.assert_array_equal(a, b)

# -- export --------------------------------------------------------------------
def test_only_staging_folders_of_dead_processes_here_are_stale(tmp_path):
    from tfflows import staging

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mine = staging.make(str(tmp_path), ".export-")
    host = os.path.basename(mine)[len(".export-"):].rsplit("-", 2)[0]
    dead = tmp_path / f".export-{host}-{gone.pid}-abc123"
    elsewhere = tmp_path / f".export-other-host-{gone.pid}-abc123"
    for folder in (dead, elsewhere, tmp_path / ".export-x1y2", tmp_path / "3"):
        folder.mkdir()
    assert staging.owner(os.path.basename(mine), ".export-") == (host, os.getpid())
    assert staging.owner(elsewhere.name, ".export-") == ("other-host", gone.pid)
    assert staging.remove_stale(str(tmp_path), ".export-") == [str(dead)]
    assert sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(mine), elsewhere.name, ".export-x1y2", "3"])


SIGNATURES = {"serving_default", "log_prob", "sample", "encode", "decode"}


def _digest(folder):
    """A hash of every file's relative path and bytes under `folder`."""
    digest = hashlib.sha256()
    for parent, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(parent, name)
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def _check_versions(base, known, killed_pid):
    """Asserts `base` holds whole versions: the `known` ones byte for byte, new
    ones that load with every signature (added to `known`); anything else is
    a hidden staging folder of the killed process. Returns the new versions
    and the leftover staging folders."""
    import tensorflow as tf

    from tfflows import staging

    names = os.listdir(base)
    versions = sorted(n for n in names if n.isdigit())
    leftovers = sorted(set(names) - set(versions))
    for name in leftovers:  # TF Serving reads numeric names only
        assert staging.owner(name, ".export-")[1] == killed_pid, names
    for version in set(known) & set(versions):
        assert _digest(os.path.join(base, version)) == known[version], version
    assert set(known) <= set(versions), (known, versions)
    new = sorted(set(versions) - set(known), key=int)
    for version in new:
        loaded = tf.saved_model.load(os.path.join(base, version))
        assert SIGNATURES <= set(loaded.signatures), version
        known[version] = _digest(os.path.join(base, version))
    return new, leftovers


def _kill_in_second_export(procs, rng):
    """SIGKILLs each process at a random moment of its second export: after
    its first "exported" line by a uniform fraction (0 to 1.1) of the time
    its first export took. Returns the fractions and how many exports each
    finished."""
    lines = [[] for _ in procs]

    def read(proc, seen):
        for line in proc.stdout:
            seen.append((time.time(), line.strip()))

    readers = [threading.Thread(target=read, args=(p, l), daemon=True)
               for p, l in zip(procs, lines)]
    for reader in readers:
        reader.start()
    first = lambda seen: [t for t, line in seen if line in ("ready", "exported")][:2]
    deadline = time.time() + 240
    while not all(len(first(seen)) == 2 for seen in lines):
        for proc in procs:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "no export finished"
        time.sleep(0.01)
    fractions = rng.uniform(0.0, 1.1, len(procs))
    kills = [t1 + f * (t1 - t0) for (t0, t1), f in zip(map(first, lines), fractions)]
    for i in np.argsort(kills):
        time.sleep(max(0.0, kills[i] - time.time()))
        procs[i].send_signal(signal.SIGKILL)
    for proc, reader in zip(procs, readers):
        proc.wait(timeout=60)
        reader.join(timeout=60)
        assert proc.returncode == -signal.SIGKILL
    return fractions, [sum(line == "exported" for _, line in seen) for seen in lines]


def test_exports_killed_at_random_moments_leave_whole_versions(tmp_path):
    """Five SavedModel exports and a pipeline export (SavedModel + ONNX),
    each SIGKILLed at a random moment of the second export of its process
    (the first one completes: a new version to check), two at a time."""
    import keras

    import tfflows as tff
    from tfflows import staging
    from tfflows.export import pipeline

    keras.utils.set_random_seed(0)
    flow = tff.models.realnvp(event_dim=2, num_layers=2, hidden_units=(8,))
    model = str(tmp_path / "flow.keras")
    flow.save(model)
    lanes = [tmp_path / "a", tmp_path / "b"]
    tff.export.saved_model(flow, lanes[0] / "m")
    pipeline.run(model, lanes[0] / "p")
    shutil.copytree(lanes[0], lanes[1])
    versions = lambda lane, k: lane / k / "models" / "flow" if k == "p" else lane / k
    known = {lane: {k: {v: _digest(versions(lane, k) / v)
                        for v in os.listdir(versions(lane, k)) if v.isdigit()}
                    for k in ("m", "p")} for lane in lanes}

    rng = np.random.default_rng(16)
    outcomes = []
    for kinds in [("export", "export"), ("export", "export"), ("export", "pipeline")]:
        targets = ["m" if kind == "export" else "p" for kind in kinds]
        procs = [_start(WORKER, kind, model, str(lane / target), stdout=subprocess.PIPE)
                 for kind, lane, target in zip(kinds, lanes, targets)]
        fractions, finished = _kill_in_second_export(procs, rng)
        for kind, target, lane, proc, fraction, done in zip(
                kinds, targets, lanes, procs, fractions, finished):
            base = lane / target
            if kind == "pipeline":
                base = base / "models" / "flow"
            new, leftovers = _check_versions(str(base), known[lane][target], proc.pid)
            if kind == "pipeline":
                left = [n for n in os.listdir(lane) if n.startswith(".")]
                for name in left:
                    assert staging.owner(name, ".export-")[1] == proc.pid, left
                summary = json.loads((lane / target / "export.json").read_text())
                assert summary["model"] == "flow"
                assert sorted(os.listdir(lane / target / "onnx" / "flow")) == [
                    "decode.onnx", "encode.onnx", "log_prob.onnx"]
                leftovers += left
            outcomes.append((kind, round(float(fraction), 2), done, new, len(leftovers)))
    print("kills (kind, moment in the 2nd export as a fraction of the 1st's "
          "duration, exports finished, new versions, staging left):", outcomes)
    assert any(o[4] for o in outcomes), "no kill landed inside an export"

    # The next export removes what the killed ones left, and numbers on (the
    # pipeline's staging beside its out_dir is cleared the same way).
    lane = lanes[0]
    path = tff.export.saved_model(flow, lane / "m")
    assert all(n.isdigit() for n in os.listdir(lane / "m"))
    assert int(os.path.basename(path)) == max(int(v) for v in known[lane]["m"]) + 1
    # Whatever the pipeline's kill left beside its out_dir (nothing when the
    # kill landed outside its SavedModel staging: the moment is a fraction
    # of the first export's duration, and on a loaded host the phases'
    # durations vary) is what `stale` finds.
    left = [str(lanes[1] / n) for n in os.listdir(lanes[1]) if n.startswith(".")]
    assert staging.stale(str(lanes[1]), ".export-") == sorted(left)


# -- tfflows train -------------------------------------------------------------
RUN_FILES = ["density.png", "loss.png", "metrics.json", "realnvp.keras"]


def _train(out, *options):
    return _start("-m", "tfflows_cli", "train", "--num-layers", "2", "--out", str(out),
                  *options)


def test_train_killed_leaves_no_out_a_second_run_takes_for_finished(tmp_path, capsys):
    from tfflows import cli

    out = tmp_path / "out"
    staging = lambda: [n for n in os.listdir(tmp_path) if n.startswith(".tfflows-")]

    # Killed while training: no --out; the next run clears the staging folder
    # (it holds no model yet).
    proc = _train(out, "--epochs", "100", "--no-export")
    _wait_for(staging, proc, what="the run's staging folder")
    time.sleep(1.0)
    _kill(proc)
    assert not out.exists() and len(staging()) == 1
    cli._prepare_out(str(out), False, None)  # what the next run does first
    assert staging() == []

    # Killed while exporting: --out holds the trained run and the marker; the
    # export never left a partial serving/ folder.
    proc = _train(out, "--epochs", "1")
    pending = out / cli.EXPORT_PENDING
    _wait_for(pending.exists, proc, what="the export")
    time.sleep(float(np.random.default_rng(3).uniform(0.0, 2.0)))
    _kill(proc)
    names = os.listdir(out)
    print("--out after a kill in the export:", sorted(names))
    assert set(RUN_FILES) <= set(names) and cli.EXPORT_PENDING in names
    if "serving" in names:  # killed after the export's one rename
        assert (out / "serving" / "export.json").is_file()
    assert staging() == []
    # A second run refuses, and says how to finish; `tfflows export` does.
    capsys.readouterr()
    assert cli.main(["train", "--epochs", "1", "--num-layers", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "export did not finish" in err and "tfflows export" in err, err
    model = str(out / "realnvp.keras")
    assert cli.main(["export", model, "--out", str(out / "serving")]) == 0
    assert sorted(os.listdir(out)) == RUN_FILES + ["serving"]  # marker, staging gone
    assert os.listdir(out / "serving" / "models" / "realnvp") == ["1"] or "serving" in names


def test_train_interrupted_during_export_keeps_the_run_and_says_so(tmp_path, capsys,
                                                                   monkeypatch):
    from tfflows import cli
    from tfflows.export import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what SIGTERM raises (tfflows_cli._interrupt)

    monkeypatch.setattr(pipeline, "run", interrupted)
    out = tmp_path / "out"
    assert cli.main(["train", "--epochs", "1", "--num-layers", "2", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted during the export" in err and "tfflows export" in err, err
    assert sorted(os.listdir(out)) == sorted(RUN_FILES + [cli.EXPORT_PENDING])
    monkeypatch.undo()
    assert cli.main(["train", "--epochs", "1", "--num-layers", "2", "--out", str(out),
                     "--no-export", "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == RUN_FILES


def test_a_killed_runs_saved_model_is_kept_and_named(tmp_path, capsys):
    # Killed between saving the model and renaming the run into --out: the
    # next run removes the empty staging folders, not that one.
    from tfflows import cli, staging

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = staging.owner(os.path.basename(staging.make(str(tmp_path), "x-")), "x-")[0]
    shutil.rmtree(next(tmp_path.glob("x-*")))
    kept = tmp_path / f".tfflows-{host}-{gone.pid}-aaaaaaaa"
    empty = tmp_path / f".tfflows-{host}-{gone.pid}-bbbbbbbb"
    kept.mkdir()
    empty.mkdir()
    (kept / "realnvp.keras").write_bytes(b"a trained model")
    cli._prepare_out(str(tmp_path / "out"), False, None)
    assert sorted(os.listdir(tmp_path)) == [kept.name]
    err = capsys.readouterr().err
    assert str(kept) in err and "holds the model of a run that was killed" in err
