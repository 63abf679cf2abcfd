"""Convert an exported flow's signatures to ONNX and prove them equal."""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tfflows.export.saved_model import ExportError, publish

__all__ = ["onnx", "convert_signature", "ONNX_SIGNATURES"]

# Sampling in ONNX is `decode` of base noise the caller draws (z ~ N(0, T^2)).
ONNX_SIGNATURES = ("log_prob", "encode", "decode")
ONNX_ATOL = 1e-4
OPSET = 17


def _signature_inputs(loaded, name):
    fn = loaded.signatures[name]
    return {key: spec for key, spec in fn.structured_input_signature[1].items()}


def _probe(specs, seed=0, batch=8):
    rng = np.random.default_rng(seed)
    probe = {}
    for key, spec in specs.items():
        shape = [batch if d is None else d for d in spec.shape]
        if key == "x":
            # Pixels or vectors alike: (0, 1) is in every flow's domain only
            # for images; vectors accept any value.
            probe[key] = rng.uniform(0.02, 0.98, shape).astype(np.float32)
        else:
            probe[key] = rng.standard_normal(shape).astype(np.float32)
    return probe


def convert_signature(saved_model_dir, name, output_path):
    """Converts one signature of any SavedModel to an ONNX file with tf2onnx,
    keeping the signature's input and output names. No parity check: see
    `onnx` for the checked export of a flow."""
    import tf2onnx
    from tf2onnx import tf_loader

    graph_def, inputs, outputs, tensors_to_rename = tf_loader.from_saved_model(
        saved_model_dir, None, None, signatures=[name],
        return_tensors_to_rename=True)
    with tf.device("/cpu:0"):
        tf2onnx.convert.from_graph_def(
            graph_def, name=name, input_names=inputs, output_names=outputs,
            opset=OPSET, tensors_to_rename=tensors_to_rename,
            output_path=output_path)


def onnx(saved_model_dir, path, probe=None, atol=ONNX_ATOL):
    """Converts `log_prob`, `encode` and `decode` to ONNX, one model each.

    Writes `path/<signature>.onnx` with the SavedModel's input and output
    names, runs each in onnxruntime on a probe batch and compares it with the
    SavedModel (max abs difference <= `atol`). Sampling is `decode.onnx` of
    noise you draw: `z = temperature * N(0, 1)`. Written to a temporary folder
    and moved into place only when every model passes.

    Args:
      saved_model_dir: a version folder written by `tfflows.export.saved_model`.
      path: output folder (created; must not be a file).
      probe: optional `{"x", "z"[, "context"]}` numpy probe batch.
      atol: largest allowed absolute difference.

    Returns:
      `{signature: (onnx path, max abs difference)}`.

    Raises:
      ValueError: missing SavedModel or `path` is a file.
      ExportError: a conversion fails, onnxruntime rejects a model, or an
        output differs from the SavedModel.
    """
    import onnxruntime

    saved_model_dir, path = os.fspath(saved_model_dir), os.fspath(path)
    if not os.path.exists(os.path.join(saved_model_dir, "saved_model.pb")):
        raise ValueError(f"No SavedModel in {saved_model_dir!r}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"path must be a folder; {path!r} is a file")
    loaded = tf.saved_model.load(saved_model_dir)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".onnx-", dir=parent)
    results = {}
    try:
        for name in ONNX_SIGNATURES:
            specs = _signature_inputs(loaded, name)
            inputs = _probe(specs) if probe is None else {
                k: probe["z" if k == "z" else k] for k in specs}
            out_file = os.path.join(staging, f"{name}.onnx")
            try:
                convert_signature(saved_model_dir, name, out_file)
                session = onnxruntime.InferenceSession(
                    out_file, providers=["CPUExecutionProvider"])
            except Exception as err:  # tf2onnx/onnxruntime raise many types
                raise ExportError(f"ONNX conversion of '{name}' failed: "
                                  f"{type(err).__name__}: {err}") from err
            (onnx_out,) = session.run(None, inputs)
            expected = next(iter(loaded.signatures[name](
                **{k: tf.constant(v) for k, v in inputs.items()}).values()))
            diff = float(np.max(np.abs(onnx_out - expected.numpy())))
            if not np.isfinite(diff) or diff > atol:
                raise ExportError(f"ONNX '{name}' differs from the SavedModel "
                                  f"by {diff:.3g} (> {atol:g})")
            results[name] = (os.path.join(path, f"{name}.onnx"), diff)
        publish(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return results
