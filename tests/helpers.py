"""Small helpers shared by the layer and flow tests."""

import numpy as np
import tensorflow as tf


def copy(t):
    """A new tensor with the same value: TFP caches by tensor identity."""
    return tf.constant(np.asarray(t))


def perturb(model, scale=0.1, seed=0):
    """Random non-trivial weights for a layer or model: fresh couplings are
    the identity, which would make most checks vacuous."""
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        w.assign(w.numpy() + scale * rng.standard_normal(w.shape).astype(w.dtype))


SIGNATURES = [("serving_default", ["x"], ["log_prob"]), ("log_prob", ["x"], ["log_prob"]),
              ("encode", ["x"], ["z"]), ("decode", ["z"], ["x"]),
              ("sample", ["num_samples", "temperature", "seed"], ["samples"])]


def assert_signatures(shown):
    """`saved_model_cli show --all` output lists the four signatures (and
    serving_default) with their named inputs and outputs, for TF Serving's
    predict method, and a dynamic batch for 2-D events."""
    for name, inputs, outputs in SIGNATURES:
        block = shown.split(f"signature_def['{name}']:")[1].split("signature_def[")[0]
        for key in inputs:
            assert f"inputs['{key}']" in block
        for key in outputs:
            assert f"outputs['{key}']" in block
        assert "tensorflow/serving/predict" in block
    assert "shape: (-1, 2)" in shown  # dynamic batch
