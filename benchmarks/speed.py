"""Training, sampling and density speed: tfflows vs TFP's built-ins."""

import keras
import numpy as np
import tensorflow as tf

import tfflows as tff
from benchmarks.timing import EpochTimer, median_seconds
from benchmarks.tfp_flows import mirror


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
    }


def training_throughput(flow, reference, x, batch_size, epochs, jit_compile=False):
    """Examples per second of warm epochs: `Flow.fit` vs TFP's training loop."""
    timer = EpochTimer()
    flow.compile(keras.optimizers.Adam(1e-3))
    flow.fit(x, batch_size=batch_size, epochs=epochs + 1, verbose=0,
             callbacks=[timer])
    ours = len(x) / np.median(timer.times[1:])
    theirs = len(x) / np.median(reference.fit(x, batch_size, epochs + 1,
                                             jit_compile=jit_compile)[1:])
    return ours, theirs


def sampling_seconds(flow, reference, num_samples, repeats):
    ours = tf.function(lambda: flow.sample(num_samples, seed=1))
    theirs = tf.function(lambda: reference.sample(num_samples, seed=(1, 0)))
    return (median_seconds(ours, repeats), median_seconds(theirs, repeats))


def log_prob_seconds(flow, reference, x, repeats):
    x = tf.constant(x)
    ours = tf.function(lambda: flow.log_prob(x))
    theirs = tf.function(lambda: reference.log_prob(x))
    return (median_seconds(ours, repeats), median_seconds(theirs, repeats))
