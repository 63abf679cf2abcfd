"""The zuko reference of the benchmarks: the same architectures, and
training that trains, in this process and in a spawned one."""

import math
import multiprocessing
import os
import subprocess
import sys
from concurrent import futures

import numpy as np
import pytest

zuko = pytest.importorskip("zuko")
import torch  # noqa: E402  (zuko needs torch)

import tfflows as tff  # noqa: E402
from benchmarks import zuko_flows  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The benchmark's architectures: 16-D, hidden (128, 128).
EVENT_DIM, HIDDEN = 16, (128, 128)
LAYERS = {"MAF": 5, "RealNVP": 8, "NSF-AR": 5, "NSF-C": 8}
SPLINE_PARAMS = 3 * 8 - 1


def _tfflows_flow(kind, num_layers):
    if kind == "MAF":
        return tff.models.maf(EVENT_DIM, num_layers=num_layers, hidden_units=HIDDEN)
    if kind == "RealNVP":
        return tff.models.realnvp(event_dim=EVENT_DIM, num_layers=num_layers,
                                  hidden_units=HIDDEN, actnorm=False)
    return tff.models.nsf(EVENT_DIM, num_layers=num_layers, hidden_units=HIDDEN,
                          actnorm=False, coupling=kind == "NSF-C")


def _unmasked_parameters(flow):
    """Parameters of a zuko flow not fixed at zero by a MADE mask."""
    masked = {id(m.weight): int(m.mask.sum()) for m in flow.modules()
              if isinstance(m, zuko.nn.MaskedLinear)}
    return sum(masked.get(id(p), p.numel()) for p in flow.parameters())


def _correlated_gaussian(num_samples, seed, dim=2, rho=0.9):
    """A `dim`-D normal, unit variances, every correlation `rho` (so every
    coupling split sees it): NLL 2.01 nats at best in 2-D, 2.88 in 4-D."""
    covariance = (1 - rho) * np.eye(dim) + rho
    z = np.random.default_rng(seed).standard_normal((num_samples, dim))
    return (z @ np.linalg.cholesky(covariance).T).astype(np.float32)


def _standard_normal_nll(x):
    return float(np.mean(0.5 * np.sum(x**2, axis=1))
                 + 0.5 * x.shape[1] * math.log(2 * math.pi))


@pytest.mark.parametrize("kind", zuko_flows.KINDS)
def test_build_matches_tfflows_parameters(kind):
    """MAF, RealNVP and NSF-AR: exactly tfflows' trainable parameters.
    NSF-C (`passes=2`, a MADE over all entries) stores masked weights:
    unmasked it is tfflows' count plus one constant spline (23 biases) per
    entry of the conditioning half and layer; stored, 1.6x."""
    num_layers = LAYERS[kind]
    flow = zuko_flows.build(kind, EVENT_DIM, HIDDEN, num_layers)
    x = torch.randn(64, EVENT_DIM)
    with torch.no_grad():
        log_prob = flow().log_prob(x)
    assert log_prob.shape == (64,) and torch.isfinite(log_prob).all()
    ours = sum(int(np.prod(w.shape))
               for w in _tfflows_flow(kind, num_layers).trainable_weights)
    stored = sum(p.numel() for p in flow.parameters())
    if kind == "NSF-C":
        assert _unmasked_parameters(flow) == (
            ours + num_layers * (EVENT_DIM // 2) * SPLINE_PARAMS)
        assert 1.5 < stored / ours < 1.7
    else:
        assert stored == ours


def test_logit_is_tfflows_logit():
    x = np.random.default_rng(0).random((32, 5), dtype=np.float32)
    z, log_det = zuko_flows._logit(zuko_flows.LOGIT_ALPHA).call_and_ladj(
        torch.from_numpy(x))
    reference = tff.bijectors.Logit(zuko_flows.LOGIT_ALPHA, event_ndims=1)
    np.testing.assert_allclose(z.numpy(), reference.inverse(x), atol=1e-5)
    np.testing.assert_allclose(log_det.sum(-1).numpy(),
                               reference.inverse_log_det_jacobian(x), rtol=1e-5)


def test_bits_per_dim_is_tfflows():
    for nll in (-50.0, 0.0, 120.0):
        assert zuko_flows._bits_per_dim(nll, 64, 17) == pytest.approx(
            float(tff.bijectors.bits_per_dim(-nll, 64, 17)), rel=1e-6)


def _check_speed_result(result, epochs, call_epochs):
    assert sorted(result) == ["call_seconds", "epoch_seconds",
                              "examples_per_second", "first_step_seconds",
                              "num_threads", "train_nll"]
    assert result["first_step_seconds"] > 0
    assert sorted(result["call_seconds"]) == sorted(call_epochs)
    assert all(s > 0 for s in result["call_seconds"].values())
    assert len(result["epoch_seconds"]) == epochs
    assert all(isinstance(s, float) and s > 0 for s in result["epoch_seconds"])
    assert result["examples_per_second"] > 0


@pytest.mark.parametrize("kind", zuko_flows.KINDS)
def test_training_speed_trains(kind):
    """Four epochs of 16 steps (one warm-up, three timed) lower the NLL of
    a correlated 4-D Gaussian by at least a nat (2.4-3.1 measured)."""
    x = _correlated_gaussian(4096, seed=0, dim=4)
    arch = dict(event_dim=4, hidden_units=(16, 16), num_layers=2)
    result = zuko_flows.training_speed(kind, x, batch_size=256, epochs=3,
                                       arch=arch, learning_rate=1e-2,
                                       call_epochs=(1, 2))
    _check_speed_result(result, 3, (1, 2))
    before, after = result["train_nll"]
    assert after < before - 1.0


def test_training_speed_in_spawned_process():
    x = _correlated_gaussian(1024, seed=0)
    arch = dict(event_dim=2, hidden_units=(8,), num_layers=2)
    with futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = pool.submit(zuko_flows.training_speed, "MAF", x, 256, 2, arch,
                             num_threads=1, call_epochs=(1,)).result()
    _check_speed_result(result, 2, (1,))
    assert result["num_threads"] == 1


def test_module_imports_without_torch():
    code = ("import sys, benchmarks.zuko_flows; "
            "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": ROOT})


def test_sampling_and_log_prob_seconds():
    arch = dict(event_dim=3, hidden_units=(8,), num_layers=2)
    x = np.zeros((100, 3), np.float32)
    for kind in zuko_flows.KINDS:
        assert zuko_flows.sampling_seconds(kind, arch, 100, repeats=2) > 0
        assert zuko_flows.log_prob_seconds(kind, arch, x, repeats=2) > 0


def test_held_out_beats_standard_normal():
    train, val, test = (_correlated_gaussian(n, seed) for n, seed in
                        ((2048, 0), (512, 1), (512, 2)))
    nll = zuko_flows.held_out("MAF", train, val, test, hidden_units=(16, 16),
                              num_layers=2, epochs=15, batch_size=128,
                              learning_rate=1e-2)
    assert nll < _standard_normal_nll(test) - 0.3


def test_held_out_digits_bits_per_dim():
    """Five epochs of a small MAF on logit-preprocessed digits: 2.8-2.9
    bits/dim measured, well under the uniform model's log2(17) = 4.09
    and above what 64 units could reach so soon."""
    images = tff.data.digits().reshape(-1, 64)
    train, val, test = tff.data.split(images, seed=0)
    bits = zuko_flows.held_out("MAF", train, val, test, hidden_units=(64,),
                               num_layers=2, epochs=5, batch_size=128,
                               learning_rate=3e-3,
                               num_bins=tff.data.DIGITS_NUM_BINS)
    assert 2.0 < bits < math.log2(tff.data.DIGITS_NUM_BINS) - 0.5
