"""Scale-out: `Flow.fit` under MirroredStrategy and `tff.train.distributed_fit`
across two worker processes on localhost.

Device layout (logical CPUs) and TF_CONFIG must be fixed before TensorFlow
starts, so these runs happen in subprocesses (tests/distributed_worker.py)
that report JSON and save their final weights to .npz files.
"""

import json
import os
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfflows as tff
from tfflows import data

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "distributed_worker.py")
TIMEOUT = 300  # seconds, per group of processes


def _env(tf_config=None):
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, env.get("PYTHONPATH")) if p)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run(jobs, tmp_path):
    """Runs `(name, args, env)` jobs at once; returns `{name: (result, npz)}`.

    Kills every job if one fails or the group exceeds TIMEOUT, and fails the
    test with the jobs' stderr.
    """
    procs = {}
    for name, args, env in jobs:
        out = tmp_path / f"{name}.npz"
        stdout = open(tmp_path / f"{name}.out", "w+")
        stderr = open(tmp_path / f"{name}.err", "w+")
        proc = subprocess.Popen([sys.executable, WORKER, "--out", str(out), *args],
                                env=env, cwd=ROOT, stdout=stdout, stderr=stderr)
        procs[name] = (proc, out, stdout, stderr)

    def report(why):
        for proc, _, _, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        logs = []
        for name, (proc, _, stdout, stderr) in procs.items():
            stdout.seek(0), stderr.seek(0)
            logs.append(f"--- {name} (exit {proc.returncode}) stdout:\n"
                        f"{stdout.read()[-3000:]}\n--- {name} stderr:\n"
                        f"{stderr.read()[-6000:]}")
        pytest.fail(why + "\n" + "\n".join(logs))

    deadline = time.monotonic() + TIMEOUT
    while any(p.poll() is None for p, _, _, _ in procs.values()):
        if any(p.poll() not in (None, 0) for p, _, _, _ in procs.values()):
            report("a worker failed")
        if time.monotonic() > deadline:
            report(f"workers still running after {TIMEOUT} s")
        time.sleep(0.2)
    if any(p.returncode != 0 for p, _, _, _ in procs.values()):
        report("a worker failed")

    results = {}
    for name, (proc, out, stdout, stderr) in procs.items():
        stdout.seek(0)
        lines = [l for l in stdout.read().splitlines() if l.startswith("RESULT ")]
        if not lines:
            report(f"{name} printed no RESULT line")
        with np.load(out) as weights:
            results[name] = (json.loads(lines[-1][len("RESULT "):]),
                             dict(weights))
        stdout.close(), stderr.close()
    return results


def _assert_same_weights(a, b, atol):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol,
                                   err_msg=key)


# -- one machine, two devices: plain Flow.fit --------------------------------
def test_mirrored_fit_matches_one_device(tmp_path):
    # The flow mixes spline couplings, a spline MADE layer and an affine
    # coupling, each after an actnorm (distributed_worker.mixed_flow), and
    # trains with XLA, as `compile` chooses for spline layers on CPU.
    # 3200 training examples: 25 full batches of 128, 64 per device. (With
    # a ragged last batch Keras averages the two devices' means unweighted,
    # so the weights would drift apart slightly more.)
    args = ["--num-examples", "4000", "--batch-size", "128", "--epochs", "3"]
    runs = _run([(f"devices{n}", args + ["--mirrored", str(n)], _env())
                 for n in (1, 2)], tmp_path)
    (one, w_one), (two, w_two) = runs["devices1"], runs["devices2"]
    for key in ("nll", "val_nll"):
        print(f"{key}, 1 device: ", one["history"][key])
        print(f"{key}, 2 devices:", two["history"][key])
    assert (one["num_replicas"], two["num_replicas"]) == (1, 2)

    # Same global batches, same seed, no shuffling: the same loss curves.
    for key in ("nll", "val_nll"):
        np.testing.assert_allclose(two["history"][key], one["history"][key],
                                   rtol=1e-3, err_msg=key)
    assert two["history"]["nll"][-1] < two["history"]["nll"][0]
    # Keras's `loss` is the NLL too (not multiplied by the replica count).
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(two["history"][key],
                                   two["history"][key.replace("loss", "nll")],
                                   rtol=1e-6, err_msg=key)

    # Actnorm was initialised from the first batch, identically.
    assert one["actnorm_init"].keys() == two["actnorm_init"].keys()
    assert len(one["actnorm_init"]) == 4
    for name, state in two["actnorm_init"].items():
        assert state["initialized"] == 1.0
        for key in ("loc", "log_scale"):
            np.testing.assert_allclose(state[key], one["actnorm_init"][name][key],
                                       atol=1e-6)
    print("largest |w(1 device) - w(2 devices)|:", sorted(
        ((float(np.max(np.abs(w_one[k] - w_two[k]))), k) for k in w_one))[-4:])
    # Two devices sum the batch in another order: weights differ by
    # roundings (SGD, see distributed_worker.py), where dropping a replica's
    # gradients or seeing other batches moves them by ~1e-2 per step.
    _assert_same_weights(w_one, w_two, atol=1e-4)


# -- many machines: distributed_fit on two workers ---------------------------
def _two_workers(tmp_path, tag, epochs, checkpoint_dir):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    args = ["--epochs", str(epochs), "--checkpoint-dir", str(checkpoint_dir)]
    runs = _run([(f"{tag}-worker{i}", args, _env(
        {"cluster": cluster, "task": {"type": "worker", "index": i}}))
        for i in range(2)], tmp_path)
    return runs[f"{tag}-worker0"], runs[f"{tag}-worker1"]


def test_two_workers_train_identically_and_resume(tmp_path):
    ckpt = tmp_path / "ckpt"
    (r0, w0), (r1, w1) = _two_workers(tmp_path, "first", 2, ckpt)
    print("nll, 2 epochs:", r0["history"]["nll"])
    print("max |w0 - w1|:", max(float(np.max(np.abs(w0[k] - w1[k]))) for k in w0))
    assert r0["num_replicas"] == r1["num_replicas"] == 2
    assert (r0["task"], r1["task"]) == (["worker", 0], ["worker", 1])
    assert r0["epochs_run"] == r1["epochs_run"] == [0, 1]
    _assert_same_weights(w0, w1, atol=1e-6)
    assert r0["history"] == r1["history"]
    nll = r0["history"]["nll"]
    # Standardised two moons under a standard normal: about 2.84 nats.
    assert nll[1] < nll[0] < 2.9
    for state in r0["actnorm"].values():
        assert state["initialized"] == 1.0
    # Only the chief wrote to checkpoint_dir.
    assert sorted(os.listdir(ckpt)) == [
        "checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index",
        "ckpt-2.data-00000-of-00001", "ckpt-2.index"]

    # Restarted with epochs=3: resumes after epoch 2 and runs one more.
    (s0, v0), (s1, v1) = _two_workers(tmp_path, "again", 3, ckpt)
    print("nll, resumed epoch 3:", s0["history"]["nll"])
    assert s0["epochs_run"] == s1["epochs_run"] == [2]
    assert len(s0["history"]["nll"]) == 1
    assert s0["history"]["nll"][0] < nll[-1]
    _assert_same_weights(v0, v1, atol=1e-6)
    assert "ckpt-3.index" in os.listdir(ckpt)
    # The third epoch moved the weights on from the restored ones.
    assert any(not np.allclose(v0[k], w0[k]) for k in w0)


# -- in-process checks ---------------------------------------------------------
def _small_flow(num_bins=None):
    L = tff.layers
    if num_bins is None:
        layers = [L.ActNorm(), L.AffineCoupling(hidden_units=(8,)),
                  L.ActNorm(), L.AffineCoupling(flip=True, hidden_units=(8,))]
        return tff.Flow(layers, event_shape=(2,))
    layers = [L.ActNorm(), L.AffineCoupling(mask="checkerboard", hidden_channels=8)]
    return tff.Flow(layers, event_shape=(4, 4, 1), num_bins=num_bins)


def test_distributed_fit_needs_a_flow_built_and_compiled_in_scope(tmp_path):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    dataset = tf.data.Dataset.from_tensor_slices(data.two_moons(64)).batch(32)
    fit = lambda flow: tff.train.distributed_fit(
        flow, dataset, strategy, epochs=1, checkpoint_dir=str(tmp_path))

    outside = _small_flow()
    outside.compile(optimizer="adam")
    with pytest.raises(ValueError, match="created inside strategy.scope"):
        fit(outside)
    with strategy.scope():
        uncompiled = _small_flow()
        compiled_outside = _small_flow()
    with pytest.raises(ValueError, match="Compile the flow"):
        fit(uncompiled)
    compiled_outside.compile(optimizer="adam")
    with pytest.raises(ValueError, match="compiled inside strategy.scope"):
        fit(compiled_outside)
    with strategy.scope():
        flow = _small_flow()
        flow.compile(optimizer="adam")
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        tff.train.distributed_fit(flow, data.two_moons(64), strategy, epochs=1,
                                  checkpoint_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_distributed_fit_image_flow_logs_bits_per_dim_and_resumes(tmp_path):
    strategy = tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    pixels = np.random.default_rng(0).integers(0, 16, (64, 4, 4, 1)) / 16
    dataset = tf.data.Dataset.from_tensor_slices(pixels.astype("float32")).batch(16)
    flow = _small_flow(num_bins=16)
    flow.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = tff.train.distributed_fit(flow, dataset, strategy, epochs=2,
                                        checkpoint_dir=str(tmp_path), verbose=0)
    assert sorted(history.history) == ["bits_per_dim", "nll"]
    assert history.epoch == [0, 1]
    bpd = history.history["bits_per_dim"]
    # Uniform noise over 16 levels is 4 bits; a fresh flow starts near it.
    assert 3.5 < bpd[-1] < 4.5
    assert flow.flow_layers[0].is_initialized

    # A new flow picks up from the checkpoint: weights, optimizer, epoch.
    again = _small_flow(num_bins=16)
    again.compile(optimizer=keras.optimizers.Adam(1e-2))
    resumed = tff.train.distributed_fit(again, dataset, strategy, epochs=3,
                                        checkpoint_dir=str(tmp_path),
                                        steps_per_epoch=2, verbose=0)
    assert resumed.epoch == [2]
    assert int(again.optimizer.iterations.numpy()) == 8 + 2
    done = tff.train.distributed_fit(again, dataset, strategy, epochs=3,
                                     checkpoint_dir=str(tmp_path), verbose=0)
    assert done.history == {}


def _straight_and_resumed(make_flow, dataset, tmp_path):
    """`(straight, resumed, history)`: a flow trained 3 epochs by
    `distributed_fit` in one call, and one trained 2 epochs, then resumed
    from that call's checkpoint to 3 (its call runs epoch 3 only)."""
    strategy = tf.distribute.get_strategy()

    def fresh():
        keras.utils.set_random_seed(0)
        flow = make_flow()
        flow.compile(optimizer=keras.optimizers.Adam(1e-2))
        return flow

    def fit(flow, epochs, name):
        return tff.train.distributed_fit(flow, dataset, strategy, epochs=epochs,
                                         checkpoint_dir=str(tmp_path / name),
                                         verbose=0)

    straight = fresh()
    history = fit(straight, 3, "straight").history
    fit(fresh(), 2, "resumed")
    resumed = fresh()
    assert fit(resumed, 3, "resumed").epoch == [2]
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6,
                                   err_msg=b.path)
    return straight, resumed, history


def test_resuming_matches_an_uninterrupted_run(tmp_path):
    # The checkpoint holds every flow weight (actnorm's `initialized` flag
    # included), the optimizer's state and the epoch: 2 + 1 epochs == 3.
    dataset = tf.data.Dataset.from_tensor_slices(data.two_moons(128)).batch(32)
    _, resumed, _ = _straight_and_resumed(_small_flow, dataset, tmp_path)
    assert int(resumed.optimizer.iterations.numpy()) == 3 * 4


def test_distributed_fit_trains_a_cnf_by_flow_matching_and_resumes(tmp_path):
    # The replicas take the flow's training output, so a flow-matched CNF
    # minimises fm_loss (not -log_prob through the ODE), with its (t, z)
    # keyed on the step: a resumed run ends where a straight one does.
    dataset = tf.data.Dataset.from_tensor_slices(data.two_moons(512)).batch(64)
    straight, _, history = _straight_and_resumed(
        lambda: tff.models.cnf(2, hidden_units=(16, 16), steps=4, draws=2),
        dataset, tmp_path)
    assert sorted(history) == ["fm_loss"]
    # A fresh CNF's velocity is 0, so its loss starts at E||x - z||^2 ~ 2 + 2.
    assert history["fm_loss"][0] < 4.5 and history["fm_loss"][-1] < history["fm_loss"][0]
    x = data.two_moons(256, seed=1)
    assert -np.mean(straight.log_prob(x)) < 2.8  # the best Gaussian: ~2.73
