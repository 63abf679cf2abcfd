"""Training, sampling and density speed: tfflows vs TFP's built-ins."""

import time

import keras
import numpy as np
import tensorflow as tf

import tfflows as tff
from tfflows import layers as L
from tfflows._tracing import traced_once
from benchmarks.timing import EpochTimer, median_seconds
from benchmarks.tfp_flows import masked_dense_layers, mirror


KINDS = ("MAF", "IAF", "RealNVP", "NSF-AR", "NSF-C")


def build(kind, event_dim, hidden_units, maf_layers, realnvp_layers):
    """One benchmarked flow, built without actnorm (TFP has none): `kind`
    one of `KINDS`; MAF, IAF and NSF-AR have `maf_layers` MADE layers,
    RealNVP and NSF-C `realnvp_layers` couplings."""
    if kind in ("MAF", "IAF"):
        builder = tff.models.maf if kind == "MAF" else tff.models.iaf
        return builder(event_dim, num_layers=maf_layers, hidden_units=hidden_units)
    if kind == "RealNVP":
        return tff.models.realnvp(event_dim=event_dim, num_layers=realnvp_layers,
                                  hidden_units=hidden_units, actnorm=False)
    if kind == "NSF-AR":
        return tff.models.nsf(event_dim, num_layers=maf_layers,
                              hidden_units=hidden_units)
    if kind == "NSF-C":
        return tff.models.nsf(event_dim, num_layers=realnvp_layers,
                              hidden_units=hidden_units, coupling=True,
                              actnorm=False)
    raise ValueError(f"kind must be one of {KINDS}. Received: kind={kind!r}")


def architectures(event_dim, hidden_units, maf_layers, realnvp_layers):
    """`{kind: build(kind, ...)}` for every kind."""
    return {kind: build(kind, event_dim, hidden_units, maf_layers, realnvp_layers)
            for kind in KINDS}


def training_throughput(flow, reference, x, batch_size, epochs,
                        jit_compile="auto", call_epochs=()):
    """Training speed of `Flow.fit` (compiled with its defaults) and of
    TFP's training loop on the numpy array `x`, one epoch each in turn so
    that both see the same machine load. Returns a dict:

    - `ours`, `theirs`: examples per second, median over warm epochs;
    - `speedup`: the median over the pairs of epochs of TFP's epoch time
      over tfflows' (robust to load that changes between pairs), and
      `spread` the lowest and highest of those ratios;
    - `epoch_seconds`: `(tfflows, TFP)` median warm epoch times;
    - `calls`: `{E: (tfflows, TFP)}` seconds of a whole `fit(x, epochs=E)`
      call (`fit_call_seconds`) and of E epochs of TFP's loop
      (`tfp_call_seconds`), for each E in `call_epochs`, in turn;
    - `setup_seconds`: `{E: s}` the part of that `fit` call outside its
      epochs (the call less its own epochs' times);
    - `xla`: whether `Flow.compile` chose XLA.
    """
    flow.compile(keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    run_tfp_epoch = reference.trainer(x, batch_size)
    flow.fit(x, batch_size=batch_size, epochs=1, verbose=0)  # trace, compile
    run_tfp_epoch()
    ours, theirs = [], []
    for _ in range(epochs):
        timer = EpochTimer()
        flow.fit(x, batch_size=batch_size, epochs=1, verbose=0, callbacks=[timer])
        ours.append(timer.times[0])
        theirs.append(run_tfp_epoch())
    ratios = np.asarray(theirs) / np.asarray(ours)
    calls, setups = {}, {}
    for e in call_epochs:
        call, epoch_sum = fit_call_seconds(flow, x, batch_size, e)
        calls[e] = (call, tfp_call_seconds(run_tfp_epoch, e))
        setups[e] = call - epoch_sum
    return {"ours": len(x) / np.median(ours), "theirs": len(x) / np.median(theirs),
            "speedup": float(np.median(ratios)),
            "spread": (float(ratios.min()), float(ratios.max())),
            "epoch_seconds": (float(np.median(ours)), float(np.median(theirs))),
            "calls": calls, "setup_seconds": setups, "xla": flow.jit_compile}


# One tf.function per flow from one lambda each: marked traced once, or TF
# counts every flow's trace against the lambda's code and warns of retracing.
def sampling_seconds(flow, reference, num_samples, repeats):
    ours = traced_once(tf.function(lambda: flow.sample(num_samples, seed=1)))
    theirs = traced_once(tf.function(lambda: reference.sample(num_samples, seed=(1, 0))))
    return median_seconds(ours, theirs, repeats=repeats)


def log_prob_seconds(flow, reference, x, repeats):
    x = tf.constant(x)
    ours = traced_once(tf.function(lambda: flow.log_prob(x)))
    theirs = traced_once(tf.function(lambda: reference.log_prob(x)))
    return median_seconds(ours, theirs, repeats=repeats)


def dense_passes(flow, x):
    """A `tf.function` running every MADE of `flow` on `x` as plain dense
    layers (kernels masked beforehand, bias, relu) and nothing else: the
    arithmetic of one pass per layer, IAF sampling's floor. Returns each
    network's raw output `[N, P D]` (MADE's column order)."""
    layers = [[(tf.constant(kernel), tf.constant(bias))
               for kernel, bias in masked_dense_layers(layer.made)]
              for layer in flow.flow_layers if isinstance(layer, L.MaskedAutoregressive)]
    x = tf.constant(x)

    @tf.function
    def passes():
        outputs = []
        for dense in layers:
            h = x
            for k, (kernel, bias) in enumerate(dense):
                h = tf.matmul(h, kernel) + bias
                h = tf.nn.relu(h) if k < len(dense) - 1 else h
            outputs.append(h)
        return outputs

    return passes


def network_matmul_seconds(flow, num_samples, repeats):
    """Seconds of `dense_passes` on `num_samples` rows."""
    x = np.random.default_rng(1).standard_normal(
        (num_samples, flow.event_shape[-1])).astype("float32")
    (seconds,) = median_seconds(dense_passes(flow, x), repeats=repeats)
    return seconds


def matmul_flops_per_example(flow):
    """Multiply-adds of one example's pass through every dense kernel of a
    vector flow (its rank-2 trainable variables), doubled: the matmul
    arithmetic a density pass cannot avoid (training does about 3x this)."""
    return 2 * sum(int(np.prod(v.shape)) for v in flow.trainable_variables
                   if len(v.shape) == 2)


def fit_call_seconds(flow, x, batch_size, epochs):
    """`(call, epochs)`: wall time of one whole `flow.fit(x, epochs=epochs)`
    call on a flow that has trained before (traced and compiled), what a
    user's second call pays (data adapter, every epoch's shuffle and
    callbacks included), and the sum of its epochs' own times (from
    `on_epoch_begin` to `on_epoch_end` of the same call): the difference
    is the call's own set-up, measured within one call, so an epoch's
    spread from call to call does not enter it."""
    timer = EpochTimer()
    start = time.perf_counter()
    flow.fit(x, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[timer])
    return time.perf_counter() - start, float(np.sum(timer.times))


def tfp_call_seconds(run_epoch, epochs):
    """Wall time of `epochs` epochs of TFP's loop (`TFPFlow.trainer`), its
    step traced before: a TFP user's loop has no set-up of its own."""
    start = time.perf_counter()
    for _ in range(epochs):
        run_epoch()
    return time.perf_counter() - start


class _FirstExecution(Exception):
    pass


class _StopAtFirstBatch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise _FirstExecution


def first_step_seconds(kind, arch, x, batch_size, jit_compile="auto"):
    """Time to the first finished training step of a new flow, for tfflows
    and for TFP's loop: `(tfflows, TFP)` in seconds. A top-level function
    of picklable arguments, to run in a new process ("spawn"), where it
    pays what a user's first training pays: tracing, XLA compilation where
    `Flow.compile` chooses it, TensorFlow's one-time start-up.

    tfflows: from `fit(x)` on a flow compiled at its defaults to the end
    of its first execution (`steps_per_execution` steps, 16 by default:
    Keras reports no earlier step). TFP: from `trainer(x)` (the `tf.data`
    pipeline, its shuffle buffer of every row) to the end of its first
    step, after tfflows' in the same process."""
    keras.utils.set_random_seed(0)
    flow = build(kind, **arch)
    reference = mirror(flow)
    ours = _seconds_to_first_step(flow, x, batch_size, jit_compile)
    start = time.perf_counter()
    reference.trainer(x, batch_size)(steps=1)
    return ours, time.perf_counter() - start


def first_steps_seconds(kinds, arch, x, batch_size, jit_compile="auto"):
    """`{kind: first_step_seconds(kind, ...)}` in one process: for --quick,
    which checks the code runs (only the first kind's figures are what a
    new process pays)."""
    return {kind: first_step_seconds(kind, arch, x, batch_size, jit_compile)
            for kind in kinds}


# Every vector builder at its defaults, as `tff.models` documents them, keyed
# by the call (`{d}` the event size).
DEFAULT_BUILDERS = {
    "maf({d})": lambda d: tff.models.maf(d),
    "iaf({d})": lambda d: tff.models.iaf(d),
    "realnvp(event_dim={d})": lambda d: tff.models.realnvp(event_dim=d),
    "nice({d})": lambda d: tff.models.nice(d),
    "nsf({d})": lambda d: tff.models.nsf(d),
    "nsf({d}, coupling=True)": lambda d: tff.models.nsf(d, coupling=True),
    "planar({d})": lambda d: tff.models.planar(d),
    "radial({d})": lambda d: tff.models.radial(d),
    "cnf({d})": lambda d: tff.models.cnf(d),
}


def first_steps_at_defaults(names, x, batch_size, jit_compile="auto"):
    """`{name: (seconds, xla)}`: the time from `fit(x)` on a new flow of
    `DEFAULT_BUILDERS[name](x.shape[1])`, compiled at its defaults, to the
    end of its first execution (as `first_step_seconds`), for each of
    `names` in turn, and whether that `fit` compiled with XLA. Run it in a
    new process per name to time what a user's first training pays."""
    result = {}
    for name in names:
        keras.utils.set_random_seed(0)
        flow = DEFAULT_BUILDERS[name](x.shape[1])
        seconds = _seconds_to_first_step(flow, x, batch_size, jit_compile)
        result[name] = (seconds, bool(flow.jit_compile))
    return result


def _seconds_to_first_step(flow, x, batch_size, jit_compile):
    """Compiles `flow` at its defaults (Adam) and times `fit(x)` to the end
    of its first execution."""
    flow.compile(keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    start = time.perf_counter()
    try:
        flow.fit(x, batch_size=batch_size, epochs=1, verbose=0,
                 callbacks=[_StopAtFirstBatch()])
    except _FirstExecution:
        pass
    return time.perf_counter() - start


def matmul_floor_seconds(flow, batch_size, repeats, seed=0):
    """Seconds per training step of a vector flow's matmuls alone: for every
    dense kernel `W [m, n]` (the flow's rank-2 trainable variables), the
    forward `x W` and the backward `g W^T` and `x^T g` at `batch_size`
    rows, run by TensorFlow (oneDNN, no XLA) in one `tf.function`. The
    arithmetic a training step cannot avoid, masked entries of MADE's
    kernels included (every library here multiplies them); a library's
    fraction of the floor is this over its own step time."""
    rng = np.random.default_rng(seed)
    kernels = [v for v in flow.trainable_variables if len(v.shape) == 2]
    operands = [tuple(tf.constant(rng.standard_normal(shape), tf.float32)
                      for shape in ((batch_size, m), (m, n), (batch_size, n)))
                for m, n in (tuple(k.shape) for k in kernels)]

    @tf.function
    def step():
        total = 0.0
        for x, w, g in operands:
            for product in (tf.matmul(x, w), tf.matmul(g, w, transpose_b=True),
                            tf.matmul(x, g, transpose_a=True)):
                total += product[0, 0]
        return total

    (seconds,) = median_seconds(step, repeats=repeats, number=20)
    return seconds
