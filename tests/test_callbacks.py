"""tff.callbacks.FlowHealth: probes, metrics in every logger, stops that
name the layer."""

import csv
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfflows as tff
from tfflows import data


def _flow(num_layers=4):
    keras.utils.set_random_seed(0)
    return tff.models.realnvp(event_dim=2, num_layers=num_layers,
                              hidden_units=(16, 16))


@pytest.fixture(scope="module")
def moons():
    return data.two_moons(2048, seed=0).astype("float32")


def test_round_trip_and_log_det_match_a_direct_computation(moons):
    flow = _flow()
    flow.compile(optimizer=keras.optimizers.Adam(3e-3))
    health = tff.callbacks.FlowHealth(moons[:128], every_n_steps=None)
    flow.fit(moons, batch_size=128, epochs=2, verbose=0, callbacks=[health])
    record = health.records[-1]
    probe = moons[:128]
    direct = float(np.max(np.abs(np.asarray(flow.decode(flow.encode(probe))) - probe)))
    assert record["round_trip_error"] < 1e-4
    assert record["round_trip_error"] == pytest.approx(direct, abs=1e-6)
    h, largest, where = tf.constant(probe), 0.0, None
    for i, layer in enumerate(flow.flow_layers):
        h, log_det = layer.inverse(h)
        value = float(np.max(np.abs(log_det)))
        if value > largest:
            largest, where = value, i
    assert record["max_abs_log_det"] == pytest.approx(largest, rel=1e-5)
    assert record["max_abs_log_det_layer"].startswith(f"layer {where} ")
    assert record["nonfinite"] is None and health.stop_message is None
    assert not flow.stop_training


def _tags(folder):
    tags = set()
    for path in glob.glob(os.path.join(folder, "**", "events.out.tfevents*"),
                          recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_metrics_reach_history_csv_and_tensorboard(moons, tmp_path):
    flow = _flow()
    flow.compile(optimizer="adam")
    health = tff.callbacks.FlowHealth(moons[:64], every_n_steps=8,
                                      log_dir=tmp_path / "health")
    csv_path = tmp_path / "log.csv"
    history = flow.fit(moons, batch_size=128, epochs=3, verbose=0,
                       validation_data=moons[:256], callbacks=[
                           health, keras.callbacks.CSVLogger(str(csv_path)),
                           keras.callbacks.TensorBoard(str(tmp_path / "tb"))])
    for name in ("round_trip_error", "max_abs_log_det"):
        assert len(history.history[name]) == 3
        assert np.all(np.isfinite(history.history[name]))
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and float(rows[-1]["round_trip_error"]) < 1e-4
    assert float(rows[-1]["max_abs_log_det"]) == pytest.approx(
        history.history["max_abs_log_det"][-1], rel=1e-6)
    # The TensorBoard callback (after FlowHealth in the list) logs them per
    # epoch; FlowHealth's own writer at every probe, against the step.
    assert {"epoch_round_trip_error", "epoch_max_abs_log_det"} <= _tags(
        str(tmp_path / "tb" / "train"))
    assert {"health/round_trip_error", "health/max_abs_log_det"} <= _tags(
        str(tmp_path / "health"))


def test_every_n_steps_counts_optimizer_steps_not_callback_calls(moons):
    flow = _flow()
    flow.compile(optimizer="adam")  # 16 steps per execution by default
    assert flow.steps_per_execution == 16
    health = tff.callbacks.FlowHealth(moons[:64], every_n_steps=20)
    # 2048 rows / 64 = 32 steps per epoch: batch ends at steps 16, 32, 48, 64.
    flow.fit(moons, batch_size=64, epochs=2, verbose=0, callbacks=[health])
    # Train begin (0), then the first batch end at or after 20, 40, 60; the
    # epoch ends reuse the probe of their step.
    assert [r["step"] for r in health.records] == [0, 32, 48, 64]
    assert [r["epoch"] for r in health.records] == [0, 0, 1, 1]


def test_broken_weights_stop_training_at_start_naming_the_layer(moons, capsys):
    flow = _flow()
    flow.compile(optimizer="adam", steps_per_execution=1)
    layer = flow.flow_layers[3]
    kernel = layer.network.weights[-2]
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    health = tff.callbacks.FlowHealth(moons[:64])
    flow.fit(moons, batch_size=128, epochs=3, verbose=0, callbacks=[health])
    message = health.stop_message
    assert message.startswith("FlowHealth: at the start of training (step 0)")
    assert f"layer 3 '{layer.name}' (AffineCoupling): its weights hold NaN" in message
    assert message in capsys.readouterr().out
    assert int(flow.optimizer.iterations) == 1  # stopped after the first step


class _Overflow(keras.callbacks.Callback):
    """Sets an actnorm's log-scale to -200 once step 32 is done:
    exp(200) overflows float32, so that layer's output becomes Inf."""

    def __init__(self, index):
        super().__init__()
        self.index = index

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == 32:
            scale = self.model.flow_layers[self.index].log_scale
            scale.assign(np.full(scale.shape, -200.0, "float32"))


def test_a_layer_that_overflows_mid_training_is_named(moons):
    flow = _flow()
    flow.compile(optimizer="adam")
    layer = flow.flow_layers[2]
    assert isinstance(layer, tff.layers.ActNorm)
    health = tff.callbacks.FlowHealth(moons[:64], every_n_steps=16)
    flow.fit(moons, batch_size=64, epochs=3, verbose=0,
             callbacks=[_Overflow(2), health])
    assert health.stop_message.startswith(
        "FlowHealth: at step 32, the probe batch is not finite: "
        f"layer 2 '{layer.name}' (ActNorm): its output (data -> latent) is "
        "not finite.")
    assert "The last finite probe (step 16)" in health.stop_message
    assert int(flow.optimizer.iterations) == 32


def test_a_nonfinite_loss_stops_training_even_when_the_probe_is_fine(moons):
    flow = _flow()
    flow.compile(optimizer="adam")
    health = tff.callbacks.FlowHealth(moons[:64], every_n_steps=1000)
    health.set_model(flow)
    health.on_train_begin()
    health.on_train_batch_end(0, {"loss": float("nan")})
    assert flow.stop_training
    assert health.stop_message.startswith("FlowHealth: at step 0, loss is nan: "
                                          "the probe batch is finite through every layer")


def test_arguments_are_checked(moons):
    with pytest.raises(ValueError, match="every_n_steps"):
        tff.callbacks.FlowHealth(moons[:8], every_n_steps=-1)
    with pytest.raises(ValueError, match="finite"):
        tff.callbacks.FlowHealth(np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="not both"):
        tff.callbacks.FlowHealth({"x": moons[:4], "context": moons[:4]},
                                 context=moons[:4])


def test_conditional_and_image_flows_are_probed():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    cflow = tff.models.maf(event_dim=3, num_layers=2, hidden_units=(8, 8),
                           context_dim=2)
    cflow.compile(optimizer="adam")
    probe = {"x": rng.standard_normal((16, 3)).astype("float32"),
             "context": rng.standard_normal((16, 2)).astype("float32")}
    health = tff.callbacks.FlowHealth(probe)
    health.set_model(cflow)
    record = health.measure()
    assert record["nonfinite"] is None and record["round_trip_error"] < 1e-5
    glow = tff.models.glow(image_shape=(8, 8, 1), levels=2, steps_per_level=1,
                           hidden_channels=8, num_bins=17)
    glow.compile(optimizer="adam", jit_compile=False)
    pixels = rng.integers(0, 17, (8, 8, 8, 1)).astype("float32") / 17
    health = tff.callbacks.FlowHealth(pixels, every_n_steps=None)
    glow.fit(pixels, batch_size=4, epochs=1, verbose=0, callbacks=[health])
    assert health.records[-1]["nonfinite"] is None
    assert health.records[-1]["round_trip_error"] < 1e-4
    assert health.records[-1]["max_abs_log_det"] > 0  # the logit's, at least
