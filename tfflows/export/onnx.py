"""Convert an exported flow's signatures to ONNX and prove them equal."""

import contextlib
import os
import shutil

import numpy as np
import tensorflow as tf
from tensorflow.python.util import deprecation

from tfflows import files
from tfflows.export.saved_model import ExportError, _max_diff, publish
from tfflows.staging import make, remove_stale

__all__ = ["onnx", "convert_signature", "ONNX_SIGNATURES", "ONNX_ATOL", "ONNX_RTOL"]

# Sampling in ONNX is `decode` of base noise the caller draws (z ~ N(0, T^2)).
ONNX_SIGNATURES = ("log_prob", "encode", "decode")
# ONNX Runtime's float32 kernels (its convolutions, matmuls, exp, log, tanh)
# round differently from TensorFlow's, and the difference grows with the
# size of the values a result is summed from: an image flow's log-density
# adds up hundreds of nats of log-det and base terms (thousands on noise
# images). Allowed difference: ONNX_ATOL + ONNX_RTOL * |SavedModel value|,
# per entry. Measured on the README's Glow (digits, 80 epochs): at most
# 2.7e-6 * |value| on uniform-noise images (|log p| up to 1.2e4 nats, an
# absolute 0.009) and 6e-7 * |value| on digits; RTOL is ~100 float32 ulps.
ONNX_ATOL = 1e-4
ONNX_RTOL = 1e-5
OPSET = 17


# TensorFlow's gradient ops for dynamic shapes, which tf2onnx 1.17 has no
# conversion for. Outside a loop TensorFlow folds them into constants before
# conversion; inside a `tf.while_loop` body they stay: a continuous flow's
# ODE solver whose trace takes a GradientTape at every step (a velocity
# network without a forward-mode `jvp`, e.g. `activation="gelu"`, or TFP's
# Dormand-Prince solver).
UNCONVERTIBLE_LOOP_OPS = ("BroadcastGradientArgs", "ConcatOffset", "ShapeN")


def unconvertible_loop_ops(saved_model_dir):
    """Sorted op types of `UNCONVERTIBLE_LOOP_OPS` found in a while-loop
    body of the SavedModel's graph (empty: nothing known to block ONNX)."""
    from tensorflow.python.saved_model import loader_impl

    found = set()
    for meta_graph in loader_impl.parse_saved_model(saved_model_dir).meta_graphs:
        for function in meta_graph.graph_def.library.function:
            if "while_body" in function.signature.name:
                found.update(node.op for node in function.node_def
                             if node.op in UNCONVERTIBLE_LOOP_OPS)
    return sorted(found)


def _signature_inputs(loaded, name):
    fn = loaded.signatures[name]
    return {key: spec for key, spec in fn.structured_input_signature[1].items()}


def _default_probe(loaded, batch=8, seed=0):
    """`{"x", "z"[, "context"]}`: images get pixels inside (0, 1); vectors get
    the SavedModel's own samples, so the probe lies where the model puts its
    mass (a far-away point tests float32 overflow, not the conversion)."""
    rng = np.random.default_rng(seed)
    specs = _signature_inputs(loaded, "log_prob")
    shape = [batch] + list(specs["x"].shape[1:])
    probe = {"z": rng.standard_normal(shape).astype(np.float32)}
    if "context" in specs:
        probe["context"] = rng.standard_normal(
            [batch, specs["context"].shape[-1]]).astype(np.float32)
    if len(shape) > 2:
        probe["x"] = rng.uniform(0.02, 0.98, shape).astype(np.float32)
    else:
        context = {} if "context" not in probe else {"context": tf.constant(probe["context"])}
        probe["x"] = loaded.signatures["sample"](
            num_samples=tf.constant(batch), temperature=tf.constant(1.0),
            seed=tf.constant(seed), **context)["samples"].numpy()
    return probe


def convert_signature(saved_model_dir, name, output_path, loaded=None):
    """Converts one signature of any SavedModel to an ONNX file with tf2onnx,
    keeping the signature's input and output names. No parity check: see
    `onnx` for the checked export of a flow.

    `loaded`: the SavedModel already loaded from `saved_model_dir`
    (`tf.saved_model.load`), reused instead of loading it again (tf2onnx's
    own `from_saved_model` loads the whole SavedModel for each signature:
    8 s each for an 8-layer NSF's five signatures on 2 cores).
    """
    import tf2onnx
    from tf2onnx import tf_loader

    if loaded is None:
        loaded = files.load_saved_model(saved_model_dir)
    function = loaded.signatures[name]
    # As tf2onnx's from_saved_model names them: graph inputs and outputs
    # (variables left out), renamed to the signature's keys.
    inputs = [t.name for t in function.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in function.outputs if t.dtype != tf.resource]
    renames = tf2onnx.convert.tensor_names_from_structed(function, inputs, outputs)
    # tf2onnx freezes the graph with TF1 helpers whose deprecation warnings
    # (convert_variables_to_constants, extract_sub_graph) a user cannot act on.
    with tf.device("/cpu:0"), deprecation.silence():
        graph_def = tf_loader.from_function(function, inputs, outputs)

        def convert():
            tf2onnx.convert.from_graph_def(
                graph_def, name=name, input_names=inputs, output_names=outputs,
                opset=OPSET, tensors_to_rename=renames, output_path=output_path)

        try:
            with _optimizer_errors_raised():
                convert()
        except Exception:  # tf2onnx raises many types; its safe mode decides
            convert()


@contextlib.contextmanager
def _optimizer_errors_raised():
    """tf2onnx without its optimizers' safety copies, unless the user set
    `TF2ONNX_CATCH_ERRORS` themselves.

    By default tf2onnx deep-copies the whole ONNX graph before each of its
    dozen optimizer passes, in every round until nothing changes, so that
    a failing pass can be skipped: half of the conversion's time for an
    autoregressive spline flow's `decode` (8 layers: 26 s, 14 s of them
    copies). With the variable "FALSE" a failing pass raises instead, and
    `convert_signature` converts again in tf2onnx's safe mode.
    """
    from tf2onnx import constants

    key = constants.ENV_TF2ONNX_CATCH_ERRORS
    if key in os.environ:
        yield
        return
    os.environ[key] = "FALSE"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def onnx(saved_model_dir, path, probe=None, atol=ONNX_ATOL, rtol=ONNX_RTOL,
         loaded=None):
    """Converts `log_prob`, `encode` and `decode` to ONNX, one model each.

    Writes `path/<signature>.onnx` with the SavedModel's input and output
    names, runs each in onnxruntime on a probe batch and compares it with the
    SavedModel: every entry within `atol + rtol * |SavedModel value|`
    (float32 kernels of two runtimes differ in proportion to the values'
    size). Sampling is `decode.onnx` of noise you draw:
    `z = temperature * N(0, 1)`. Written to a temporary folder and moved into
    place only when every model passes.

    Args:
      saved_model_dir: a version folder written by `tfflows.export.saved_model`.
      path: output folder (created; must not be a file).
      probe: optional `{"x", "z"[, "context"]}` numpy probe batch; default
        the SavedModel's own samples for vectors, pixels in (0, 1) for images.
      atol: allowed absolute difference.
      rtol: allowed difference relative to the SavedModel's value.
      loaded: the SavedModel already loaded (`tf.saved_model.load`), if
        the caller has it: not loaded again.

    Returns:
      `{signature: (onnx path, max difference beyond rtol * |value|)}`.

    Continuous flows (`tfflows.ContinuousFlow`) convert with their RK4
    loop as an ONNX `Loop`: the velocity network's forward-mode `jvp` gives
    the trace in plain ops, and Hutchinson's probes are an integer hash
    (`tfflows.bijectors.ode.rademacher`), not a random op. One whose
    network has no `jvp` (an activation outside
    `tfflows.nn.velocity.ACTIVATION_DERIVATIVES`) takes the trace with a
    GradientTape inside the loop, whose shape ops (`UNCONVERTIBLE_LOOP_OPS`)
    tf2onnx cannot convert: refused with an `ExportError` before any
    conversion. The same holds for `solver="dopri5"`: TFP's adaptive
    solver takes gradients inside its loop. Set `layer.solver = "rk4"`
    (same weights) before exporting for ONNX.

    Raises:
      ValueError: a missing, incomplete or corrupted SavedModel (the message
        names the file), or `path` is a file.
      ExportError: a continuous flow whose trace needs a tape (see above), a
        conversion fails, onnxruntime rejects a model, or an
        output differs from the SavedModel.
    """
    import onnxruntime

    saved_model_dir, path = os.fspath(saved_model_dir), os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"path must be a folder; {path!r} is a file")
    if loaded is None:
        loaded = files.load_saved_model(saved_model_dir)
    blocking = unconvertible_loop_ops(saved_model_dir)
    if blocking:
        raise ExportError(
            f"{saved_model_dir} cannot be converted to ONNX: its solver loop takes "
            f"gradients (a continuous flow with solver='dopri5', or whose velocity "
            f"network has no forward-mode jvp, e.g. activation='gelu'), whose ops "
            f"{', '.join(blocking)} tf2onnx cannot convert inside an ONNX Loop; "
            "serve the SavedModel, or export a solver='rk4' flow")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    remove_stale(parent, ".onnx-")  # left by killed conversions
    staging = make(parent, ".onnx-")
    staged = os.path.join(staging, "onnx")
    os.mkdir(staged)
    results = {}
    probe = _default_probe(loaded) if probe is None else probe
    try:
        for name in ONNX_SIGNATURES:
            specs = _signature_inputs(loaded, name)
            inputs = {k: np.asarray(probe[k], np.float32) for k in specs}
            out_file = os.path.join(staged, f"{name}.onnx")
            try:
                convert_signature(saved_model_dir, name, out_file, loaded)
                session = onnxruntime.InferenceSession(
                    out_file, providers=["CPUExecutionProvider"])
            except Exception as err:  # tf2onnx/onnxruntime raise many types
                raise ExportError(f"ONNX conversion of '{name}' failed: "
                                  f"{type(err).__name__}: {err}") from err
            (onnx_out,) = session.run(None, inputs)
            expected = next(iter(loaded.signatures[name](
                **{k: tf.constant(v) for k, v in inputs.items()}).values()))
            diff = _max_diff(onnx_out, expected.numpy(), rtol=rtol)
            if diff > atol:
                worst = float(np.max(np.abs(onnx_out - expected.numpy())))
                raise ExportError(f"ONNX '{name}' differs from the SavedModel by "
                                  f"{worst:.3g}, beyond the allowed {atol:g} + "
                                  f"{rtol:g} * |value|")
            results[name] = (os.path.join(path, f"{name}.onnx"), diff)
        publish(staged, path, aside=staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return results
