"""The `Flow` model: saving, the change of variables, sampling, fit, inputs."""

import logging
import math
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfflows as tff
from tests.helpers import copy, perturb
from tfflows import layers as L
from tfflows import testing

tfd = tfp.distributions
BINS = 17


def _vectors(n=64, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * [1.0, 2.0, 0.5][:d]
            + [0.5, -1.0, 2.0][:d]).astype(np.float32)


def _images(n=32, shape=(8, 8, 1), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, BINS, (n,) + shape) / BINS).astype(np.float32)


def _context(n=64, k=3, seed=1):
    return np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)




def _actnorms(layers):
    for layer in layers:
        if isinstance(layer, L.ActNorm):
            yield layer
        yield from _actnorms(getattr(layer, "inner_layers", []))


BUILDERS = {
    "nice": (lambda: tff.models.nice(3, num_layers=2, hidden_units=(8,)), "vector"),
    "realnvp": (lambda: tff.models.realnvp(3, num_layers=2, hidden_units=(8,)),
                "vector"),
    "realnvp-image": (lambda: tff.models.realnvp(
        image_shape=(8, 8, 1), levels=2, hidden_channels=8, num_bins=BINS), "image"),
    "glow": (lambda: tff.models.glow((8, 8, 1), levels=2, steps_per_level=1,
                                     hidden_channels=8, num_bins=BINS), "image"),
    "maf": (lambda: tff.models.maf(3, num_layers=2, hidden_units=(8,)), "vector"),
    "iaf": (lambda: tff.models.iaf(3, num_layers=2, hidden_units=(8,)), "vector"),
    "maf-conditional": (lambda: tff.models.maf(
        3, num_layers=2, hidden_units=(8,), context_dim=3), "conditional"),
}


def _fit_data(kind):
    if kind == "image":
        return _images(), {}
    x, c = _vectors(), _context()
    if kind == "conditional":
        return {"x": x, "context": c}, {"context": c[:16]}
    return x, {}


# -- saving --------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BUILDERS))
def test_keras_round_trip(name, tmp_path):
    build, kind = BUILDERS[name]
    flow = build()
    data, kwargs = _fit_data(kind)
    flow.compile(optimizer=keras.optimizers.Adam(0.01))
    flow.fit(data, batch_size=16, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    flow.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, tff.Flow)

    x = (data["x"] if isinstance(data, dict) else data)[:16]
    if kind == "image":
        x = x + 0.5 / BINS
    expected = flow.log_prob(x, **kwargs).numpy()
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(loaded.log_prob(x, **kwargs), expected, atol=1e-6)
    np.testing.assert_allclose(loaded.encode(x, **kwargs),
                               flow.encode(x, **kwargs), atol=1e-6)
    for layer in _actnorms(loaded.flow_layers):
        assert float(layer.initialized.numpy()) == 1.0


def test_a_loaded_flow_is_compiled_and_evaluates(tmp_path):
    # In a new process, as a user loads a flow: `import tfflows` registers the
    # classes; the load warns of nothing, restores the optimizer, and
    # `evaluate` works without calling compile() again.
    flow = tff.models.realnvp(3, num_layers=2, hidden_units=(8,))
    flow.compile(optimizer=keras.optimizers.Adam(0.005))
    flow.save(tmp_path / "untrained.keras")
    flow.fit(_vectors(64), batch_size=16, epochs=1, verbose=0)
    flow.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", _vectors(64))
    code = textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("error", UserWarning)
        import keras, numpy as np
        import tfflows
        x = np.load({str(tmp_path / "x.npy")!r})
        for name in ("untrained", "m"):
            flow = keras.models.load_model({str(tmp_path)!r} + f"/{{name}}.keras",
                                           safe_mode=True)
            result = flow.evaluate(x, verbose=0, return_dict=True)
            print(name, result["nll"], float(flow.optimizer.learning_rate),
                  int(flow.optimizer.iterations), flow.steps_per_execution)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    expected = flow.evaluate(_vectors(64), verbose=0, return_dict=True)["nll"]
    nll, lr, steps, per_execution = lines["m"].split()
    assert float(nll) == pytest.approx(expected, abs=1e-5)
    assert float(lr) == pytest.approx(0.005) and int(steps) == 4
    assert int(per_execution) == 16
    assert np.isfinite(float(lines["untrained"].split()[0]))


def test_no_retracing_warnings_in_normal_use(tmp_path):
    # Every flow's graph cache shares one Python function; TF's retracing
    # warning counts traces per function, so five flows used eagerly (or an
    # image flow exported) once set it off although nothing retraced.
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = tf.get_logger()
    logger.addHandler(handler)
    try:
        for seed in range(6):
            flow = _perturbed("maf", tf.constant(_vectors(8)))
            x = _vectors(8 + seed)
            flow.log_prob(x), flow.encode(x), flow.decode(x), flow.sample(3, seed=seed)
        glow = _perturbed("glow", tf.constant(_images(4)))
        tff.export.saved_model(glow, tmp_path / "glow")
        # Keras makes every model's train, test and predict functions from
        # one code object too: six flows fitted for one step each.
        x = _vectors(16)
        for _ in range(6):
            flow = tff.models.maf(3, num_layers=1, hidden_units=(8,))
            flow.compile()
            flow.fit(x, batch_size=16, verbose=0, validation_data=x)
            flow.evaluate(x, verbose=0), flow.predict(x, verbose=0)
    finally:
        logger.removeHandler(handler)
    retracing = [r.getMessage() for r in records if "retracing" in r.getMessage()]
    assert retracing == []


def test_reloaded_actnorm_is_not_reinitialised(tmp_path):
    flow = tff.models.realnvp(3, num_layers=2, hidden_units=(8,))
    flow.compile(optimizer=keras.optimizers.Adam(0.01))
    flow.fit(_vectors(), batch_size=16, epochs=1, verbose=0)
    saved = [(a.loc.numpy(), a.log_scale.numpy()) for a in _actnorms(flow.flow_layers)]
    assert len(saved) == 2
    flow.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    actnorms = list(_actnorms(loaded.flow_layers))
    assert [float(a.initialized.numpy()) for a in actnorms] == [1.0, 1.0]

    other = _vectors(seed=5) * 10 + 3  # would give very different statistics
    loaded.initialize(other)
    loaded.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    loaded.fit(other, batch_size=16, epochs=1, verbose=0)
    for layer, (loc, log_scale) in zip(actnorms, saved):
        np.testing.assert_array_equal(layer.loc.numpy(), loc)
        np.testing.assert_array_equal(layer.log_scale.numpy(), log_scale)


def test_initialize_stops_at_the_last_layer_that_needs_it(monkeypatch):
    """The first batch goes through the layers only as far as the last
    uninitialised actnorm; once all are set (every later `fit` call) no
    layer runs at all."""
    glow = tff.models.glow((4, 4, 1), levels=2, steps_per_level=1,
                           hidden_channels=8, num_bins=BINS)
    calls = []
    for layer in glow.flow_layers:
        original = layer.initialize_from
        monkeypatch.setattr(layer, "initialize_from",
                            lambda h, c=None, f=original, n=layer.name:
                            calls.append(n) or f(h, c))
    x = _images(8, (4, 4, 1)) + 0.5 / BINS
    pending = [i for i, l in enumerate(glow.flow_layers) if l.needs_initialization]
    assert 0 < pending[-1] < len(glow.flow_layers) - 1  # layers after it exist
    glow.initialize(x)
    assert not any(l.needs_initialization for l in glow.flow_layers)
    assert calls == [l.name for l in glow.flow_layers[:pending[-1] + 1]]
    calls.clear()
    glow.initialize(x)
    assert calls == []
    with pytest.raises(ValueError):  # input checks still apply
        glow.initialize(np.zeros((2, 3), np.float32))


# -- the change of variables -----------------------------------------------------
def _perturbed(name, x):
    flow = BUILDERS[name][0]()
    flow.initialize(x)
    perturb(flow, scale=0.05)
    return flow


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_log_prob_is_the_change_of_variables(name):
    if name == "glow":
        flow = tff.models.glow((4, 4, 1), levels=2, steps_per_level=1,
                               hidden_channels=8, num_bins=BINS)
        x = tf.constant(_images(8, (4, 4, 1)) + 0.5 / BINS)
        flow.initialize(x)
        perturb(flow, scale=0.05)
    else:
        x = tf.constant(_vectors(8))
        flow = _perturbed(name, x)
    log_prob = flow.log_prob(x).numpy()
    assert log_prob.shape == (8,) and np.all(np.isfinite(log_prob))
    np.testing.assert_allclose(flow.distribution.log_prob(copy(x)), log_prob,
                               rtol=1e-5, atol=1e-4)
    z = flow.encode(copy(x))
    by_hand = (flow.base_distribution.log_prob(z)
               + testing.autodiff_log_det(flow.encode, copy(x), flow.event_ndims))
    np.testing.assert_allclose(by_hand, log_prob, rtol=1e-5, atol=1e-3)
    # The base must not be the whole story: the log-det is non-trivial.
    assert np.abs(flow.base_log_prob(x) - log_prob).max() > 1e-2


@pytest.mark.parametrize("name", ["realnvp", "maf", "realnvp-image", "glow"])
def test_encode_decode_are_exact_inverses(name):
    image = BUILDERS[name][1] == "image"
    x = tf.constant(_images(6) + 0.5 / BINS if image else _vectors(6))
    flow = _perturbed(name, x)
    z = flow.encode(x)
    assert z.shape == x.shape  # multi-scale flows keep the data's shape
    assert not np.allclose(z, x, atol=1e-3)
    np.testing.assert_allclose(flow.decode(copy(z)), x, atol=1e-5)
    latent = tf.constant(np.random.default_rng(2).standard_normal(x.shape)
                         .astype(np.float32))
    np.testing.assert_allclose(flow.encode(copy(flow.decode(latent))), latent,
                               atol=1e-4)


# -- sampling and the TFP distribution ---------------------------------------------
@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_sample(name):
    image = BUILDERS[name][1] == "image"
    x = tf.constant(_images(6) + 0.5 / BINS if image else _vectors(6))
    flow = _perturbed(name, x)
    event = flow.event_shape
    s1 = flow.sample(5, seed=1)
    assert s1.shape == (5,) + event
    assert np.all(np.isfinite(s1.numpy()))
    np.testing.assert_array_equal(flow.sample(5, seed=1), s1)
    assert not np.allclose(flow.sample(5, seed=2), s1)
    np.testing.assert_allclose(flow.sample(3, temperature=0.0, seed=4),
                               flow.decode(tf.zeros((3,) + event)), atol=1e-6)
    if image:  # the logit's margin alpha=0.05 maps the latent into this range
        margin = 0.05 / 0.9
        assert np.all((s1.numpy() > -margin) & (s1.numpy() < 1 + margin))


def test_compile_defaults_and_overrides():
    flow = tff.models.iaf(3, num_layers=1, hidden_units=(8,))
    flow.compile()
    assert flow.jit_compile is (True if tff.flow._cpu_only() else "auto")
    assert flow.steps_per_execution == tff.flow.AUTO_STEPS_PER_EXECUTION
    flow.compile(jit_compile=False, steps_per_execution=1)
    assert (flow.jit_compile, flow.steps_per_execution) == (False, 1)
    flow.compile(run_eagerly=True)
    assert flow.jit_compile is False
    with pytest.raises(ValueError, match="takes no loss"):
        flow.compile(loss="mse")


@pytest.mark.skipif(not tff.flow._cpu_only(),
                    reason="the per-layer XLA choice applies to CPU-only hosts")
@pytest.mark.parametrize("name, xla", [
    ("iaf", True), ("nsf-ar", True), ("glow", True), ("image realnvp", True),
    ("maf", False), ("vector realnvp", False), ("nice", False),
    ("permutations only", False)])
def test_compile_picks_xla_on_cpu_where_a_layer_gains(name, xla):
    flow = {
        "maf": lambda: tff.models.maf(3, num_layers=1, hidden_units=(8,)),
        "iaf": lambda: tff.models.iaf(3, num_layers=1, hidden_units=(8,)),
        "nsf-ar": lambda: tff.models.nsf(3, num_layers=1, hidden_units=(8,)),
        "glow": lambda: tff.models.glow((4, 4, 1), levels=1, steps_per_level=1,
                                        hidden_channels=4),
        "image realnvp": lambda: tff.models.realnvp(image_shape=(4, 4, 1), levels=1,
                                                    hidden_channels=4),
        "vector realnvp": lambda: tff.models.realnvp(event_dim=4, num_layers=2,
                                                     hidden_units=(8,)),
        "nice": lambda: tff.models.nice(4, num_layers=2, hidden_units=(8,)),
        "permutations only": lambda: tff.Flow([L.Permutation()], (4,)),
    }[name]()
    flow.compile()
    assert flow.jit_compile is xla
    flow.compile(jit_compile=not xla)  # an explicit choice wins
    assert flow.jit_compile is (not xla)


def test_coupling_layers_know_their_network_kind_before_build():
    assert L.AffineCoupling(mask="half").xla_on_cpu is False
    assert L.AffineCoupling(mask="channel").xla_on_cpu is True
    assert L.AdditiveCoupling(mask="checkerboard").xla_on_cpu is True


def test_eager_calls_run_as_graphs_with_the_same_results():
    x = _vectors(7)
    flow = _perturbed("maf", tf.constant(x))
    graph = [flow.log_prob(x), flow.encode(x), flow.sample(4, 0.7, seed=3)]
    # One graph per method: new batch sizes and sample counts reuse it.
    for n in (3, 5):
        assert flow.log_prob(x[:n]).shape == (n,)
        assert flow.sample(n, seed=1).shape == (n,) + flow.event_shape
    names = [key[0] for key in flow.__dict__["_graph_functions"]]
    assert sorted(names) == ["encode", "log_prob", "sample"]
    flow.run_eagerly = True
    eager = [flow.log_prob(x), flow.encode(x), flow.sample(4, 0.7, seed=3)]
    for a, b in zip(graph, eager):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="must have shape"):
        flow.run_eagerly = False
        flow.log_prob(np.zeros((2, flow.event_shape[0] + 1), "float32"))


@pytest.mark.parametrize("name", ["realnvp", "nice", "maf", "glow"])
def test_distribution_supports_tfp_calls(name):
    image = BUILDERS[name][1] == "image"
    x = tf.constant(_images(6) + 0.5 / BINS if image else _vectors(6))
    flow = _perturbed(name, x)
    dist = flow.distribution
    event = flow.event_shape
    assert dist.sample(seed=(1, 2)).shape == event
    assert dist.sample((2, 3), seed=(1, 2)).shape == (2, 3) + event
    batched = tf.reshape(copy(x), (2, 3) + event)
    log_prob = dist.log_prob(batched)
    assert log_prob.shape == (2, 3)
    np.testing.assert_allclose(tf.reshape(log_prob, [6]), flow.log_prob(x),
                               rtol=1e-5, atol=1e-4)
    single = dist.log_prob(copy(x[0]))
    assert single.shape == ()
    np.testing.assert_allclose(single, flow.log_prob(x)[0], rtol=1e-5, atol=1e-4)


# -- fit -----------------------------------------------------------------------------
def _epoch_orders(seed, epochs=3, **fit_kwargs):
    """The first row of every batch `fit` trains on, per epoch."""
    keras.utils.set_random_seed(seed)
    flow = tff.models.realnvp(1 + 1, num_layers=2, hidden_units=(4,))
    flow.compile(run_eagerly=True, steps_per_execution=1)
    seen = []
    train_step = flow.train_step
    def recording(data):
        seen.append(float(keras.utils.unpack_x_y_sample_weight(data)[0][0, 0]))
        return train_step(data)
    flow.train_step = recording
    x = np.arange(64, dtype="float32").reshape(32, 2)
    flow.fit(x, batch_size=8, epochs=epochs, verbose=0, **fit_kwargs)
    return np.reshape(seen, (epochs, -1))


def test_fit_reshuffles_arrays_every_epoch_after_a_global_seed():
    # Keras 3.15's array path repeats one order in every epoch once
    # keras.utils.set_random_seed is called; Flow.fit must not.
    orders = _epoch_orders(0)
    assert orders.shape == (3, 4)
    assert len({tuple(o) for o in orders}) == 3
    np.testing.assert_array_equal(orders, _epoch_orders(0))   # reproducible
    assert not np.array_equal(orders, _epoch_orders(1))
    assert sorted(_epoch_orders(0, epochs=1, shuffle=False)[0]) == [0, 16, 32, 48]


def test_epoch_batches_cover_every_row_once_with_a_short_last_batch():
    from tfflows.flow import _epoch_shuffled
    keras.utils.set_random_seed(3)
    x = {"x": np.arange(10, dtype="float32")[:, None], "context": np.arange(10.)[:, None]}
    position = tf.Variable([3, 0, 0], dtype=tf.int64)  # seed, epoch, skip
    dataset = _epoch_shuffled(x, 4, position)

    def epoch(i, skip=0):
        position.assign([3, i, skip])
        return [{k: v.numpy()[:, 0] for k, v in batch.items()} for batch in dataset]

    epochs = [epoch(i) for i in range(3)]
    for batches in epochs:
        assert [len(b["x"]) for b in batches] == [4, 4, 2]
        rows = np.concatenate([b["x"] for b in batches])
        assert sorted(rows) == list(range(10))
        np.testing.assert_array_equal(rows, np.concatenate([b["context"] for b in batches]))
    orders = {tuple(np.concatenate([b["x"] for b in batches])) for batches in epochs}
    assert len(orders) == 3
    # An epoch's order depends on (seed, epoch) only; `skip` leaves out the
    # first batches (a resumed epoch), the short one included at the end.
    again = epoch(1)
    for a, b in zip(again, epochs[1]):
        np.testing.assert_array_equal(a["x"], b["x"])
    assert [list(b["x"]) for b in epoch(1, skip=2)] == [list(epochs[1][2]["x"])]
    assert dataset.cardinality() == 3  # Keras reads it (else: "ran out of data")
    # No autotuning thread: deleting its iterator held up one fit call in three.
    assert dataset.options().autotune.enabled is False
    flow = tff.models.realnvp(2, num_layers=1, hidden_units=(4,))
    flow.compile(steps_per_execution=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*ran out of data")
        history = flow.fit(_vectors(10, d=2), batch_size=4, epochs=2, verbose=0)
    assert len(history.history["nll"]) == 2


def test_fit_validation_split_takes_the_last_rows():
    flow = tff.models.realnvp(2, num_layers=2, hidden_units=(4,))
    flow.compile()
    x = np.random.default_rng(0).standard_normal((40, 2)).astype("float32")
    history = flow.fit(x, batch_size=8, epochs=1, validation_split=0.25, verbose=0)
    expected = flow.evaluate(x[30:], batch_size=8, verbose=0, return_dict=True)["nll"]
    assert history.history["val_nll"][0] == pytest.approx(expected, rel=1e-5)


def test_fit_logs_the_real_nll():
    flow = tff.models.nice(3, num_layers=2, hidden_units=(8,))
    perturb(flow, scale=0.05)
    x, x_val = _vectors(64), _vectors(32, seed=3)
    flow.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    history = flow.fit(x, batch_size=16, epochs=1, verbose=0,
                       validation_data=x_val).history
    expected = -np.mean(flow.log_prob(x))
    expected_val = -np.mean(flow.log_prob(x_val))
    assert abs(expected) > 0.1
    np.testing.assert_allclose(history["nll"][0], expected, rtol=1e-5)
    np.testing.assert_allclose(history["val_nll"][0], expected_val, rtol=1e-5)
    assert "bits_per_dim" not in history


def _flow_counting_traces(conditional):
    """A small MAF compiled with a zero learning rate, and the list its
    `call` appends `(training, batch rows)` to each time it is traced."""
    flow = tff.models.maf(3, num_layers=2, hidden_units=(8,),
                          context_dim=3 if conditional else None)
    perturb(flow, scale=0.05)
    flow.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    traced = []
    call = flow.call

    def counting(inputs, training=None):
        traced.append((bool(training), tf.nest.flatten(inputs)[0].shape[0]))
        return call(inputs, training=training)

    flow.call = counting
    return flow, traced


@pytest.mark.parametrize("conditional", [False, True])
def test_a_short_last_batch_is_filled_up_and_weighted_out(conditional):
    """70 rows in batches of 16 (and 40 validation rows): every step sees 16
    rows, so the training and validation steps are traced once each (a
    short last batch traced, and compiled under XLA, the step again), and
    the logged figures are still the means over the real rows."""
    flow, traced = _flow_counting_traces(conditional)
    x, x_val = _vectors(70), _vectors(40, seed=3)
    if conditional:
        x = {"x": x, "context": _context(70)}
        x_val = {"x": x_val, "context": _context(40, seed=4)}
    history = flow.fit(x, batch_size=16, epochs=2, verbose=0,
                       validation_data=x_val).history
    assert sorted(set(traced)) == [(False, 16), (True, 16)]
    assert traced.count((True, 16)) == 1 and traced.count((False, 16)) == 1
    for data, key in ((x, "nll"), (x_val, "val_nll")):
        rows = data if not conditional else data["x"]
        expected = -np.mean(flow.log_prob(rows, None if not conditional
                                          else data["context"]))
        np.testing.assert_allclose(history[key], [expected] * 2, rtol=1e-5)
    np.testing.assert_allclose(history["loss"], history["nll"], rtol=1e-6)
    np.testing.assert_allclose(history["val_loss"], history["val_nll"], rtol=1e-6)


@pytest.mark.parametrize("conditional", [False, True])
def test_evaluate_and_predict_run_arrays_in_one_batch_shape(conditional):
    """70 rows in evaluate's and predict's batches of 16 (and in Keras's
    default 32): the functions are traced at full batches only (a short
    last batch traced, and compiled under XLA, the step again), and the
    results are those of the real rows."""
    flow, traced = _flow_counting_traces(conditional)
    x = _vectors(70)
    if conditional:
        x = {"x": x, "context": _context(70)}
    log_prob = np.asarray(flow.log_prob(x["x"], x["context"]) if conditional
                          else flow.log_prob(x))
    traced.clear()
    for batch_size in (16, None):
        logs = flow.evaluate(x, batch_size=batch_size, verbose=0, return_dict=True)
        np.testing.assert_allclose(logs["nll"], -np.mean(log_prob), rtol=1e-5)
        np.testing.assert_allclose(logs["loss"], logs["nll"], rtol=1e-6)
        predicted = flow.predict(x, batch_size=batch_size, verbose=0)
        np.testing.assert_allclose(predicted, log_prob, rtol=1e-5, atol=1e-5)
    # Traced at the full batches only (or, for the second batch size, at a
    # relaxed batch dimension), never at the 6 rows left over.
    rows = {rows for _, rows in traced}
    assert 16 in rows and rows <= {16, 32, None}


def test_fit_logs_bits_per_dim_for_images():
    flow = tff.models.realnvp(image_shape=(4, 4, 1), levels=1,
                              hidden_channels=8, num_bins=BINS)
    perturb(flow, scale=0.05)
    x = _images(32, (4, 4, 1))
    flow.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    history = flow.fit(x, batch_size=16, epochs=1, verbose=0,
                       validation_data=x[:16]).history
    for prefix in ("", "val_"):
        nll, bpd = history[prefix + "nll"][0], history[prefix + "bits_per_dim"][0]
        assert np.isfinite(nll) and abs(nll) > 0.1
        np.testing.assert_allclose(bpd, (nll / 16 + math.log(BINS)) / math.log(2),
                                   rtol=1e-5)
    # Dequantized inputs lie in the bins of x: the logged NLL is within the
    # range of the deterministic NLLs of the bins' corners.
    low, high = -flow.log_prob(x + 1e-3), -flow.log_prob(x + 1 / BINS - 1e-3)
    assert np.mean(np.minimum(low, high)) - 5 < history["nll"][0]
    assert history["nll"][0] < np.mean(np.maximum(low, high)) + 5


def test_uniform_model_scores_log2_num_bins():
    """Logit (no margin) onto a logistic base is the uniform density on [0, 1]."""
    shape = (4, 4, 1)
    base = tfd.Sample(tfd.Logistic(0.0, 1.0), sample_shape=shape)
    flow = tff.Flow([L.Logit(alpha=0.0)], shape, num_bins=BINS,
                    base_distribution=base)
    flow.compile(optimizer="sgd")
    history = flow.fit(_images(32, shape), batch_size=16, epochs=1,
                       verbose=0).history
    np.testing.assert_allclose(history["nll"][0], 0.0, atol=1e-4)
    np.testing.assert_allclose(history["bits_per_dim"][0], math.log2(BINS),
                               atol=1e-5)


def test_fit_with_tf_data_numpy_and_xla():
    x = _vectors(64)
    flow = tff.models.maf(3, num_layers=2, hidden_units=(8,))
    flow.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=True)
    before = -np.mean(flow.log_prob(x))
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(32)
    history = flow.fit(dataset, epochs=2, verbose=0, validation_data=dataset)
    losses = history.history["nll"] + history.history["val_nll"]
    assert np.all(np.isfinite(losses))
    history = flow.fit(x, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["nll"]))
    assert -np.mean(flow.log_prob(x)) < before  # it learned something


def test_callbacks(tmp_path):
    x = _vectors(64)
    flow = tff.models.realnvp(3, num_layers=2, hidden_units=(8,))
    flow.compile(optimizer=keras.optimizers.Adam(0.01))
    checkpoint = str(tmp_path / "ckpt.keras")
    callbacks = [
        # No epoch can improve by 1e9 nats: training stops after the second.
        keras.callbacks.EarlyStopping(monitor="val_nll", mode="min",
                                      min_delta=1e9, patience=0),
        keras.callbacks.ModelCheckpoint(checkpoint),
    ]
    history = flow.fit(x, batch_size=32, epochs=5, verbose=0,
                       validation_data=x[:32], callbacks=callbacks)
    assert history.epoch == [0, 1]
    restored = keras.models.load_model(checkpoint, safe_mode=True)
    np.testing.assert_allclose(restored.log_prob(x), flow.log_prob(x), atol=1e-6)


def test_tensorboard_callback(tmp_path):
    pytest.importorskip("tensorboard", reason="the TensorBoard callback needs "
                        "the tensorboard package")
    x = _vectors(64)
    flow = tff.models.nice(3, num_layers=2, hidden_units=(8,))
    flow.compile(optimizer=keras.optimizers.Adam(0.01))
    flow.fit(x, batch_size=32, epochs=1, verbose=0, validation_data=x[:32],
             callbacks=[keras.callbacks.TensorBoard(str(tmp_path / "tb"))])
    events = [f for _, _, files in os.walk(tmp_path / "tb") for f in files
              if "tfevents" in f]
    assert events


def test_backup_and_restore_resumes(tmp_path):
    x = _vectors(64)
    backup = str(tmp_path / "backup")

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("interrupted")

    flow = tff.models.realnvp(3, num_layers=2, hidden_units=(8,))
    flow.compile(optimizer=keras.optimizers.Adam(0.01))
    with pytest.raises(RuntimeError, match="interrupted"):
        flow.fit(x, batch_size=32, epochs=4, verbose=0,
                 callbacks=[keras.callbacks.BackupAndRestore(backup), Interrupt()])
    trained = flow.log_prob(x).numpy()

    resumed = tff.models.realnvp(3, num_layers=2, hidden_units=(8,))
    resumed.compile(optimizer=keras.optimizers.Adam(0.01))
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(self.model.log_prob(x).numpy())

    history = resumed.fit(x, batch_size=32, epochs=4, verbose=0,
                          callbacks=[keras.callbacks.BackupAndRestore(backup),
                                     Record()])
    assert history.epoch == [2, 3]
    # The weights were restored from the backup, not freshly initialised.
    np.testing.assert_allclose(seen[0], trained, atol=1e-5)


# -- conditional flows ---------------------------------------------------------------
def test_conditional_maf():
    rng = np.random.default_rng(0)
    c = rng.standard_normal((64, 3)).astype(np.float32)
    x = (rng.standard_normal((64, 2)) + c[:, :2] * 2).astype(np.float32)
    flow = tff.models.maf(event_dim=2, num_layers=2, hidden_units=(8, 8),
                          context_dim=3)
    flow.compile(optimizer=keras.optimizers.Adam(0.01))
    history = flow.fit({"x": x, "context": c}, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["nll"]))

    log_prob = flow.log_prob(x, context=c)
    assert log_prob.shape == (64,)
    assert not np.allclose(flow.log_prob(x, context=c[::-1]), log_prob, atol=1e-3)
    np.testing.assert_allclose(flow.distribution_given(c).log_prob(copy(x)),
                               log_prob, rtol=1e-5, atol=1e-4)

    shared = flow.sample(5, context=c[0], seed=1)
    assert shared.shape == (5, 2)
    np.testing.assert_allclose(
        shared, flow.sample(5, context=np.tile(c[:1], (5, 1)), seed=1), atol=1e-6)
    assert flow.sample(5, context=c[:5], seed=1).shape == (5, 2)

    dist = flow.distribution_given(c[0])
    assert dist.sample(seed=(1, 2)).shape == (2,)
    assert dist.sample((2, 3), seed=(1, 2)).shape == (2, 3, 2)
    np.testing.assert_allclose(dist.log_prob(copy(x[:4])),
                               flow.log_prob(x[:4], context=np.tile(c[:1], (4, 1))),
                               rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="distribution_given"):
        flow.distribution
    with pytest.raises(ValueError, match="needs a context"):
        flow.log_prob(x)
    for bad in (c[0, :1], c[:, :1]):  # wrong context size, shared or per row
        with pytest.raises(ValueError, match="context must have shape"):
            flow.sample(3, context=bad)


@pytest.mark.parametrize("kind", ["vector", "image"])
def test_conditional_distribution_given_one_context(kind):
    """A `[K]` context gives an unbatched distribution: TFP's shapes hold."""
    if kind == "image":
        flow = tff.models.glow((4, 4, 1), levels=2, steps_per_level=1,
                               hidden_channels=8, num_bins=BINS, context_dim=2)
        x = tf.constant(_images(4, (4, 4, 1)) + 0.5 / BINS)
    else:
        flow = tff.models.realnvp(3, num_layers=2, hidden_units=(8,),
                                  context_dim=2)
        x = tf.constant(_vectors(4))
    c = _context(4, 2)
    flow.initialize(x, c)
    perturb(flow, scale=0.05)
    dist = flow.distribution_given(c[0])
    event = flow.event_shape
    assert dist.sample(seed=(1, 2)).shape == event
    assert dist.sample((2, 3), seed=(1, 2)).shape == (2, 3) + event
    expected = flow.log_prob(x, context=np.tile(c[:1], (4, 1)))
    np.testing.assert_allclose(dist.log_prob(copy(x)), expected, rtol=1e-5,
                               atol=1e-4)
    assert dist.log_prob(copy(x[0])).shape == ()
    assert not np.allclose(flow.log_prob(x, context=c), expected, atol=1e-3)


# -- bad input is refused before training ---------------------------------------------
@pytest.fixture
def compiled_maf():
    flow = tff.models.maf(3, num_layers=2, hidden_units=(8,))
    perturb(flow, scale=0.05)
    flow.compile(optimizer=keras.optimizers.Adam(0.1))
    return flow


def _refuses(flow, match, *args, **kwargs):
    weights = [w.numpy().copy() for w in flow.weights]
    with pytest.raises(ValueError, match=match):
        flow.fit(*args, verbose=0, **kwargs)
    for w, before in zip(flow.weights, weights):
        np.testing.assert_array_equal(w.numpy(), before)
    assert int(flow.optimizer.iterations.numpy()) == 0


@pytest.mark.parametrize("value,word", [(np.nan, "NaN"), (np.inf, "Inf")])
def test_fit_refuses_non_finite_rows(compiled_maf, value, word):
    x = _vectors(64)
    x[[5, 9], 1] = value
    x[9, 0] = -value
    _refuses(compiled_maf, rf"2 rows with .*{word}", x, batch_size=16)
    _refuses(compiled_maf, rf"validation_data has 2 rows .*{word}", _vectors(64),
             batch_size=16, validation_data=x)
    _refuses(compiled_maf, rf"2 rows with .*{word}",
             tf.data.Dataset.from_tensor_slices(x).batch(32))


def test_fit_refuses_wrong_event_shape(compiled_maf):
    _refuses(compiled_maf, r"shape \[batch, 3\].*\(64, 2\)", _vectors(64, 2))


def test_fit_refuses_targets(compiled_maf):
    x = _vectors(64)
    _refuses(compiled_maf, "no targets", x, x)
    _refuses(compiled_maf, "no targets", (x, x))


def test_fit_refuses_context_for_unconditional_flow(compiled_maf):
    _refuses(compiled_maf, "conditional",
             {"x": _vectors(64), "context": _context(64)})


def test_image_flow_refuses_pixels_outside_unit_interval():
    flow = tff.models.realnvp(image_shape=(4, 4, 1), levels=1, hidden_channels=8,
                              num_bins=BINS)
    flow.compile(optimizer=keras.optimizers.Adam(0.1))
    _refuses(flow, r"\[0, 1\]", _images(16, (4, 4, 1)) * 255)
    _refuses(flow, r"\[0, 1\]", _images(16, (4, 4, 1)) - 0.5)
