"""Serving latency of `log_prob`: SavedModel and ONNX Runtime, tfflows vs TFP."""

import os
import re

import numpy as np
import onnxruntime
import tensorflow as tf

import tfflows as tff
from benchmarks.timing import median_seconds
from tfflows.export.onnx import convert_signature


def _tfp_saved_model(reference, event_shape, path):
    """The TFP flow's `log_prob` as a SavedModel signature, as a TFP user
    would write it (`tf.saved_model.save` of the module)."""
    spec = tf.TensorSpec((None,) + tuple(event_shape), tf.float32, name="x")
    signature = tf.function(lambda x: {"log_prob": reference.log_prob(x)},
                            input_signature=[spec])
    tf.saved_model.save(reference, path, signatures={"log_prob": signature})
    return path


def _onnx_session(saved_model_dir, path):
    """An onnxruntime session for the `log_prob` signature, or the reason
    there is none (conversion or loading failed)."""
    try:
        convert_signature(saved_model_dir, "log_prob", path)
        return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as error:  # report why, keep benchmarking the rest
        return _reason(error)


def _reason(error):
    missing = re.search(r"No Op registered for (\w+)", str(error))
    if missing:
        return f"onnxruntime rejects the graph: no {missing.group(1)} op"
    lines = str(error).strip().splitlines() or [""]
    return f"{type(error).__name__}: {lines[0][:100]}"


def latencies(flow, reference, workdir, batches, repeats, number):
    """`{(runtime, batch): (tfflows seconds, TFP seconds or failure text)}`."""
    ours_sm = tff.export.saved_model(flow, os.path.join(workdir, "tfflows"))
    theirs_sm = _tfp_saved_model(reference, flow.event_shape,
                                 os.path.join(workdir, "tfp", "1"))
    signatures = [tf.saved_model.load(p).signatures["log_prob"]
                  for p in (ours_sm, theirs_sm)]
    sessions = [_onnx_session(p, os.path.join(workdir, f"{who}.onnx"))
                for p, who in ((ours_sm, "tfflows"), (theirs_sm, "tfp"))]
    if isinstance(sessions[0], str):
        raise RuntimeError(f"tfflows' own ONNX export failed: {sessions[0]}")
    rng = np.random.default_rng(0)
    results = {}
    for batch in batches:
        x = rng.standard_normal((batch,) + flow.event_shape).astype(np.float32)
        xt = tf.constant(x)
        results[("SavedModel", batch)] = median_seconds(
            *[lambda s=s: s(x=xt)["log_prob"] for s in signatures],
            repeats=repeats, number=number)
        runnable = [s for s in sessions if not isinstance(s, str)]
        times = iter(median_seconds(
            *[lambda s=s: s.run(None, {"x": x}) for s in runnable],
            repeats=repeats, number=number))
        results[("ONNX Runtime", batch)] = tuple(
            s if isinstance(s, str) else next(times) for s in sessions)
    return results
