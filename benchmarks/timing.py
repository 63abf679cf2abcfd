"""Timing helpers: medians of warm repeats, results forced to the host."""

import time

import keras
import numpy as np
import tensorflow as tf


def _block(result):
    """Waits for a result (TF runs ops asynchronously) by copying it out."""
    tf.nest.map_structure(np.asarray, result)


def median_seconds(*fns, repeats=5, number=1, warmup=1):
    """For each `fn`, the median over `repeats` of the mean time of `number`
    calls of `fn()`. The functions take turns within each repeat, so a change
    in machine load hits them alike. Returns one float per function."""
    for fn in fns:
        for _ in range(warmup):
            _block(fn())
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            start = time.perf_counter()
            for _ in range(number):
                result = fn()
            _block(result)
            fn_times.append((time.perf_counter() - start) / number)
    return tuple(float(np.median(t)) for t in times)


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch of `fit`."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)
