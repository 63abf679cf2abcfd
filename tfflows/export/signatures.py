"""The serving signatures of a flow, shared by SavedModel export and checks."""

import numpy as np
import tensorflow as tf

__all__ = ["SIGNATURES", "build_endpoints", "probe_inputs"]

SIGNATURES = ("log_prob", "sample", "encode", "decode")


def _spec(flow, name):
    return tf.TensorSpec((None,) + flow.event_shape, tf.float32, name=name)


def _context_spec(flow):
    return tf.TensorSpec((None, flow.context_dim), tf.float32, name="context")


def build_endpoints(flow):
    """`{name: (fn, input_signature)}` for every signature of `flow`.

    Each fn returns a dict, so the SavedModel's outputs are named:
    `log_prob`, `samples`, `z`, `x`. Conditional flows take `context`
    (`[batch, K]`; for `sample`, `[1, K]` or `[num_samples, K]`).
    """
    conditional = flow.context_dim is not None
    sample_specs = [tf.TensorSpec((), tf.int32, name="num_samples"),
                    tf.TensorSpec((), tf.float32, name="temperature"),
                    tf.TensorSpec((), tf.int32, name="seed")]
    if conditional:
        specs = {"log_prob": [_spec(flow, "x"), _context_spec(flow)],
                 "encode": [_spec(flow, "x"), _context_spec(flow)],
                 "decode": [_spec(flow, "z"), _context_spec(flow)],
                 "sample": sample_specs + [_context_spec(flow)]}
        fns = {
            "log_prob": lambda x, context: {"log_prob": flow.log_prob(x, context)},
            "encode": lambda x, context: {"z": flow.encode(x, context)},
            "decode": lambda z, context: {"x": flow.decode(z, context)},
            "sample": lambda num_samples, temperature, seed, context: {
                "samples": flow.sample(num_samples, temperature, seed, context)},
        }
    else:
        specs = {"log_prob": [_spec(flow, "x")], "encode": [_spec(flow, "x")],
                 "decode": [_spec(flow, "z")], "sample": sample_specs}
        fns = {
            "log_prob": lambda x: {"log_prob": flow.log_prob(x)},
            "encode": lambda x: {"z": flow.encode(x)},
            "decode": lambda z: {"x": flow.decode(z)},
            "sample": lambda num_samples, temperature, seed: {
                "samples": flow.sample(num_samples, temperature, seed)},
        }
    return {name: (fns[name], specs[name]) for name in SIGNATURES}


def probe_inputs(flow, batch=8, seed=0):
    """A probe batch for parity checks: `{"x", "z"[, "context"]}` (numpy).

    Images get pixels inside (0, 1); vectors get draws from the flow itself,
    so the probe lies where the model puts its mass.
    """
    rng = np.random.default_rng(seed)
    shape = (batch,) + flow.event_shape
    probe = {"z": rng.standard_normal(shape).astype(np.float32)}
    if flow.context_dim is not None:
        probe["context"] = rng.standard_normal(
            (batch, flow.context_dim)).astype(np.float32)
    if flow.num_bins:
        probe["x"] = rng.uniform(0.02, 0.98, shape).astype(np.float32)
    else:
        probe["x"] = np.asarray(flow.decode(probe["z"], probe.get("context")))
    return probe
