"""The benchmark script: its TFP mirrors are the same flows, and it runs."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from benchmarks.quality import breast_cancer
from benchmarks.speed import architectures, dense_passes
from benchmarks.tfp_flows import copy_weights, mirror
from tfflows import layers as L
import tfflows as tff

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _perturbed(flow, scale, seed=0):
    rng = np.random.default_rng(seed)
    for w in flow.trainable_weights:
        w.assign(w.numpy() + scale * rng.standard_normal(w.shape).astype(w.dtype))
    return flow


def _logit_maf():
    maf = tff.models.maf(6, num_layers=2, hidden_units=(16,))
    return tff.Flow([L.Logit()] + maf.flow_layers, (6,), num_bins=17)


def _shift_in_data(flow):
    """The same flow with every affine layer's shift in the data, TFP's form."""
    layers = [L.MaskedAutoregressive(hidden_units=layer.hidden_units,
                                     transformer=tff.bijectors.transformers.Affine(
                                         shift="data"), seed=layer.seed)
              if isinstance(layer, L.MaskedAutoregressive) else layer
              for layer in flow.flow_layers]
    return tff.Flow(layers, flow.event_shape)


MIRRORED = {
    **{name: lambda name=name: architectures(6, (16, 16), 3, 4)[name]
       for name in ("MAF", "IAF", "RealNVP", "NSF-AR", "NSF-C")},
    "logit+MAF": _logit_maf,
    "MAF, shift in the data": lambda: _shift_in_data(
        architectures(6, (16, 16), 3, 4)["MAF"]),
}


@pytest.mark.parametrize("name", list(MIRRORED))
def test_tfp_mirror_computes_the_same_density(name):
    keras.utils.set_random_seed(0)
    flow = MIRRORED[name]()
    flow = _perturbed(flow, 0.02)
    for layer in flow.flow_layers:
        if isinstance(layer, L.MaskedAutoregressive):
            # Small log-scales keep tfflows' soft clamp in its linear range.
            output_kernel = layer.made._kernels[-1]
            output_kernel.assign(0.1 * output_kernel)
    reference = mirror(flow, exact=True)
    copy_weights(flow, reference)
    x = np.random.default_rng(1).uniform(0.05, 0.95, (64, 6)).astype("float32")
    ours, theirs = flow.log_prob(x).numpy(), reference.log_prob(x).numpy()
    # Not the identity (the comparison means something) ...
    base = tff.Flow([L.Logit()] if name == "logit+MAF" else [], (6,)).log_prob(x)
    assert np.abs(ours - base.numpy()).mean() > 0.01  # 10x the tolerance below
    # ... and equal up to tfflows' soft clamp s / (1 + |s| / 5) ~ s - s|s| / 5.
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    assert sum(w.numpy().size for w in flow.trainable_weights) == sum(
        v.numpy().size for v in reference.trainable_variables)


def test_quick_run_writes_every_table(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        # About 5 minutes on 2 cores beside the rest of the suite, over 10 on
        # a slower host (a time limit, not a measurement).
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    for heading in ("Training throughput", "Sampling and density", "Where the time went",
                    "Serving `log_prob` latency", "Held-out density quality",
                    "Training on the user's path", "The machine's limit",
                    "First finished step of every vector builder at its defaults"):
        assert f"## {heading}" in report
    for row in ("MAF fit", "RealNVP fit", "NSF-AR fit", "NSF-C fit",
                "NSF-AR epoch time ÷ MAF's", "NSF-AR sample", "NSF-C log_prob",
                "| NSF-AR | NLL (nats)", "| NSF-C | bits/dim", "IAF sample", "IAF vs MAF sampling",
                "IAF (tfflows) vs MAF (TFP) sampling", "IAF sampling's floor",
                "MAF log_prob", "RealNVP ONNX Runtime, batch 1",
                "breast cancer (26-D)", "digits (64-D, logit)",
                "MAF: first finished step (s)", "MAF: a 1-epoch call", "MAF: a 2-epoch call",
                "MAF: a call's own set-up", "NSF-C: share of the matmul floor",
                "tff.models.maf(4) (no XLA)", "tff.models.nsf(4) (no XLA)"):
        assert row in report, row
    try:
        import zuko  # noqa: F401
    except ImportError:  # the column is empty and says why
        assert re.search(r"The zuko column is empty: [a-z ]*zuko not installed: "
                         r'pip install "\.\[bench\]"', report)
    else:  # every training and timing row has a zuko figure
        for line in report.splitlines():
            if line.startswith(("| MAF fit", "| NSF-C log_prob", "| RealNVP sample",
                                "| two moons (2-D) | NSF-AR")):
                assert "—" not in line, line
    assert not os.path.exists(str(out) + ".tmp")


def test_iaf_floor_does_the_networks_arithmetic():
    """The floor row times the same dense layers the IAF runs."""
    keras.utils.set_random_seed(0)
    flow = _perturbed(architectures(5, (16, 16), 2, 2)["IAF"], 0.05)
    x = np.random.default_rng(2).standard_normal((8, 5)).astype("float32")
    mades = [l.made for l in flow.flow_layers if isinstance(l, L.MaskedAutoregressive)]
    outputs = dense_passes(flow, x)()
    assert len(outputs) == len(mades) == 2
    for made, out in zip(mades, outputs):
        assert made.param_major  # columns p * D + d
        np.testing.assert_allclose(out.numpy().reshape(8, 2, 5).transpose(0, 2, 1),
                                   made(x).numpy(), rtol=1e-5, atol=1e-6)


def test_breast_cancer_is_whitened_without_near_duplicate_features():
    train, val, test = breast_cancer(seed=1)
    assert train.shape[1] == val.shape[1] == test.shape[1] == 26
    assert len(train) + len(val) + len(test) == 556  # 13 rows with zeros dropped
    np.testing.assert_allclose(np.cov(train, rowvar=False, bias=True), np.eye(26),
                               atol=1e-4)
    np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-5)
    # The held-out rows are whitened with the training statistics, not their own.
    assert np.abs(np.cov(test, rowvar=False) - np.eye(26)).max() > 0.05


def test_isolated_trainings_give_the_in_process_figures(tmp_path, monkeypatch):
    """`isolate=True` trains each flow in a new process (XLA's compile cache
    is never freed inside one) and gets the same numbers."""
    from benchmarks import quality
    monkeypatch.setattr(quality, "LAYERS", {"MAF": 5})
    monkeypatch.setattr(quality, "_datasets", lambda quick, seed: {
        "two moons (2-D)": (quality.moons(512, seed), None)})
    here = quality.run(quick=True, isolate=False, zuko=False)
    cache = tmp_path / "runs.jsonl"
    spawned = quality.run(quick=True, isolate=True, cache=str(cache), zuko=False)
    assert [row[:3] for row in here] == [row[:3] for row in spawned]
    np.testing.assert_allclose(np.array([row[3:] for row in spawned], float),
                               np.array([row[3:] for row in here], float), rtol=1e-5)
    assert len(cache.read_text().splitlines()) == 1


def test_continuous_tables_run(monkeypatch):
    """`python -m benchmarks.continuous` (full runs only in `python -m
    benchmarks`): its tables, cut to one flow on two moons."""
    from benchmarks import continuous
    monkeypatch.setattr(continuous, "KINDS", ("CNF",))
    monkeypatch.setattr(continuous, "DATASETS", ("two moons (2-D)",))
    nll, speed = continuous.tables(quick=True)
    assert "| two moons (2-D) | CNF |" in nll.markdown()
    report = speed.markdown()
    for row in ("CNF warm epoch", "CNF log_prob 100 (RK4", "CNF sample 100 (Dormand-Prince"):
        assert row in report, row
