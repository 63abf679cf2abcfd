"""Serving a continuous flow: the SavedModel's four signatures with the RK4
solver in the graph, parity with Keras, ONNX models proven in onnxruntime
(exact and Hutchinson traces, conditional), and ONNX's refusal when the
solver loop would take gradients tf2onnx cannot convert."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfflows as tff
from tfflows.export.onnx import ONNX_ATOL
from tests.helpers import assert_signatures
from tests.test_export import _cli


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small CNF trained on two moons (RK4, 8 steps) and its SavedModel."""
    keras.utils.set_random_seed(0)
    x = tff.data.two_moons(1024, seed=0)
    flow = tff.models.cnf(2, hidden_units=(16, 16), steps=8)
    flow.compile(optimizer=keras.optimizers.Adam(3e-3))
    flow.fit(x, batch_size=256, epochs=3, verbose=0)
    path = tff.export.saved_model(flow, tmp_path_factory.mktemp("serving") / "cnf")
    return flow, x, path


def test_every_signature_matches_keras_after_reload(exported):
    flow, _, path = exported
    # The export's own check, again on the reloaded folder: same solver and
    # steps on both sides, so the same float32 operations (1e-5 as for the
    # other flows; measured 0).
    diffs = tff.export.check_saved_model(flow, path)
    assert set(diffs) == {"serving_default", "log_prob", "encode", "decode", "sample"}
    assert max(diffs.values()) <= 1e-5


def test_reloaded_signatures_on_data_and_a_round_trip(exported):
    flow, x, path = exported
    loaded = tf.saved_model.load(path)
    rows = tf.constant(x[:64])
    log_prob = loaded.signatures["log_prob"](x=rows)["log_prob"].numpy()
    assert log_prob.shape == (64,)
    np.testing.assert_allclose(log_prob, flow.log_prob(rows), atol=1e-5, rtol=1e-6)
    z = loaded.signatures["encode"](x=rows)["z"]
    np.testing.assert_allclose(z, flow.encode(rows), atol=1e-5)
    back = loaded.signatures["decode"](z=z)["x"].numpy()
    assert np.abs(back - x[:64]).max() < 1e-3  # RK4 at 8 steps, both ways
    samples = loaded.signatures["sample"](
        num_samples=tf.constant(5), temperature=tf.constant(1.0),
        seed=tf.constant(3))["samples"].numpy()
    assert samples.shape == (5, 2) and np.all(np.isfinite(samples))


def test_signatures_seen_by_saved_model_cli(exported):
    _, _, path = exported
    shown = _cli("show", "--dir", path, "--all")
    assert_signatures(shown)


def test_onnx_models_match_the_saved_model(exported, tmp_path):
    # The network's forward-mode jvp gives the trace in plain ops, so
    # tf2onnx converts the RK4 loop into an ONNX Loop; `export.onnx` runs
    # each model in onnxruntime against the SavedModel.
    flow, x, path = exported
    results = tff.export.onnx(path, tmp_path / "onnx")
    assert sorted(results) == ["decode", "encode", "log_prob"]
    assert max(diff for _, diff in results.values()) <= ONNX_ATOL
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "log_prob.onnx"),
                                           providers=["CPUExecutionProvider"])
    (log_prob,) = session.run(None, {"x": x[:100]})
    np.testing.assert_allclose(log_prob, flow.log_prob(x[:100]), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("event_dim, context_dim", [(12, None), (3, 2)])
def test_onnx_of_hutchinson_and_conditional_flows(event_dim, context_dim, tmp_path):
    # D = 12: Hutchinson's trace, whose probes are an integer hash (plain
    # ops), not a random op; a conditional flow takes `context` in ONNX too.
    rng = np.random.default_rng(0)
    flow = tff.models.cnf(event_dim, hidden_units=(8, 8), steps=4,
                          context_dim=context_dim)
    assert flow.continuous_layer.resolved_trace() == (
        "hutchinson" if event_dim > 10 else "exact")
    for w in flow.trainable_weights:
        w.assign(w.numpy() + 0.3 * rng.standard_normal(w.shape).astype(w.dtype))
    path = tff.export.saved_model(flow, tmp_path / "serving")
    results = tff.export.onnx(path, tmp_path / "onnx")
    assert sorted(results) == ["decode", "encode", "log_prob"]


def test_onnx_refuses_a_tape_trace_and_says_why(tmp_path):
    # An activation without a forward-mode derivative (gelu) leaves the
    # trace to a GradientTape inside the loop: refused in one line, before
    # any conversion, and nothing left behind.
    flow = tff.models.cnf(2, hidden_units=(8,), steps=2, activation="gelu")
    path = tff.export.saved_model(flow, tmp_path / "serving")
    out = tmp_path / "onnx"
    with pytest.raises(tff.export.ExportError) as err:
        tff.export.onnx(path, out)
    message = str(err.value)
    assert "\n" not in message
    assert "cannot be converted to ONNX" in message and "ShapeN" in message
    assert "serve the SavedModel" in message and "dopri5" in message
    assert not out.exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".onnx-")]


def test_pipeline_writes_the_saved_model_and_says_why_not_onnx(tmp_path):
    from tfflows.export import pipeline

    flow = tff.models.cnf(2, hidden_units=(8,), steps=2, activation="gelu")
    flow.save(tmp_path / "cnf.keras")
    summary = pipeline.run(tmp_path / "cnf.keras", tmp_path / "serving")
    assert summary["onnx"] == {} and "ShapeN" in summary["onnx_note"]
    assert (tmp_path / "serving" / summary["saved_model"] / "saved_model.pb").is_file()
    assert not (tmp_path / "serving" / "onnx").exists()
