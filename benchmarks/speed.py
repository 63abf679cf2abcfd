"""Training, sampling and density speed: tfflows vs TFP's built-ins."""

import keras
import numpy as np
import tensorflow as tf

import tfflows as tff
from tfflows import layers as L
from benchmarks.timing import EpochTimer, median_seconds
from benchmarks.tfp_flows import masked_dense_layers, mirror


def architectures(event_dim, hidden_units, maf_layers, realnvp_layers):
    """The benchmarked flows, built without actnorm (TFP has none)."""
    return {
        "MAF": tff.models.maf(event_dim, num_layers=maf_layers,
                              hidden_units=hidden_units),
        "IAF": tff.models.iaf(event_dim, num_layers=maf_layers,
                              hidden_units=hidden_units),
        "RealNVP": tff.models.realnvp(event_dim=event_dim,
                                      num_layers=realnvp_layers,
                                      hidden_units=hidden_units, actnorm=False),
        "NSF-AR": tff.models.nsf(event_dim, num_layers=maf_layers,
                                 hidden_units=hidden_units),
        "NSF-C": tff.models.nsf(event_dim, num_layers=realnvp_layers,
                                hidden_units=hidden_units, coupling=True,
                                actnorm=False),
    }


def training_throughput(flow, reference, x, batch_size, epochs,
                        jit_compile="auto"):
    """Examples per second, median of warm epochs: `Flow.fit` (compiled
    with its defaults) vs TFP's training loop, one epoch each in turn so
    that both see the same machine load. Returns `(ours, theirs, speedup,
    spread, xla)`: `speedup` is the median over the pairs of epochs of
    TFP's epoch time over tfflows' (robust to load that changes between
    pairs), `spread` the lowest and highest of those ratios, and `xla`
    whether `Flow.compile` chose XLA."""
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
    return (len(x) / np.median(ours), len(x) / np.median(theirs),
            float(np.median(ratios)), (float(ratios.min()), float(ratios.max())),
            flow.jit_compile)


def sampling_seconds(flow, reference, num_samples, repeats):
    ours = tf.function(lambda: flow.sample(num_samples, seed=1))
    theirs = tf.function(lambda: reference.sample(num_samples, seed=(1, 0)))
    return median_seconds(ours, theirs, repeats=repeats)


def log_prob_seconds(flow, reference, x, repeats):
    x = tf.constant(x)
    ours = tf.function(lambda: flow.log_prob(x))
    theirs = tf.function(lambda: reference.log_prob(x))
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
