"""The export pipeline: `.keras` flow -> SavedModel + ONNX + TF Serving files.

Layout written under `out_dir`:

    models/<name>/<version>/     SavedModel (TF Serving model base path)
    models/models.config         TF Serving model config for the above
    onnx/<name>/<signature>.onnx log_prob, encode, decode (not for a
                                 continuous flow whose trace needs a tape:
                                 export.json's `onnx_note`)
    requests/<signature>.rest.json   REST predict bodies (columnar "inputs")
    requests/<signature>.grpc.json   gRPC PredictRequest in protobuf JSON
    export.json                  what was written (paths relative to
                                 `out_dir`) and the parity figures

An export is all or nothing: everything is built and checked in a staging
folder beside `out_dir` and moved in only when every check passed, the new
version folder last (TF Serving serves a version as soon as its folder
appears). A failed export leaves `out_dir` as it was. A killed one (SIGKILL)
leaves the earlier versions untouched and the new version folder either
absent or complete; when `out_dir` existed, the parts moved in before the
kill (ONNX models, requests, `models.config`, `export.json`, each replaced
whole) may be the new export's while its version folder is missing, which
`export.json`'s `saved_model` path then names. The hidden staging folder a
killed export leaves beside `out_dir` (`.export-<host>-<pid>-<random>`) is
removed by the next export there on the same host.

`python export/pipeline.py MODEL.keras OUT` and `tfflows export` run this.
"""

import json
import os
import shutil

import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from tfflows import files
from tfflows.staging import fsync, fsync_tree, make, remove_stale
from tfflows.export.onnx import onnx as export_onnx, unconvertible_loop_ops
from tfflows.export.saved_model import (LOG_PROB_ATOL, STAGING_PREFIX, _export,
                                        next_version, publish)
from tfflows.export.signatures import SIGNATURES, probe_inputs

__all__ = ["run", "request_inputs", "rest_body", "grpc_body", "models_config"]


def request_inputs(flow, signature, batch=2):
    """Example inputs of one signature, as numpy arrays keyed by input name."""
    probe = probe_inputs(flow, batch=batch, seed=1)
    context = {} if flow.context_dim is None else {"context": probe["context"]}
    if signature == "sample":
        inputs = {"num_samples": np.int32(batch), "temperature": np.float32(0.7),
                  "seed": np.int32(0)}
        if context:
            inputs["context"] = probe["context"][:1]
        return inputs
    key = "z" if signature == "decode" else "x"
    return {key: probe[key], **context}


def _short_decimals(value):
    """Floats rounded to 6 decimals (0.7, not float32's 0.69999998) in float64:
    rounding in float32 (`x * 1e6` loses digits) can land one unit of the
    6th decimal away, and the REST and gRPC bodies must carry equal values."""
    value = np.asarray(value)
    if value.dtype.kind == "f":
        return np.round(value.astype(np.float64), 6)
    return value


def rest_body(signature, inputs):
    """TF Serving REST predict body (columnar format) for `inputs`."""
    return {"signature_name": signature,
            "inputs": {k: _short_decimals(v).tolist() for k, v in inputs.items()}}


def grpc_body(model_name, signature, inputs):
    """A `tensorflow.serving.PredictRequest` as protobuf JSON (same values as
    the REST body).

    Parse it with `json_format.ParseDict(body, predict_pb2.PredictRequest())`
    from the `tensorflow-serving-api` package and send it to
    `PredictionService/Predict`.
    """
    return {"model_spec": {"name": model_name, "signature_name": signature},
            "inputs": {k: json_format.MessageToDict(tf.make_tensor_proto(
                _short_decimals(v).astype(np.asarray(v).dtype)))
                for k, v in inputs.items()}}


def models_config(model_name, base_path):
    """A TF Serving `--model_config_file` serving one model."""
    return ("model_config_list {\n  config {\n"
            f'    name: "{model_name}"\n    base_path: "{base_path}"\n'
            '    model_platform: "tensorflow"\n  }\n}\n')


def run(model_path, out_dir, name=None, serving_root="/models"):
    """Exports a saved `.keras` flow; returns the summary written to export.json.

    Each run adds the next model version (`models/<name>/<N>/`) and replaces
    the ONNX models, request bodies, `models.config` and `export.json` with
    those of the new version. Paths in the summary are relative to `out_dir`.

    Args:
      model_path: a `.keras` file holding a `tfflows.Flow`.
      out_dir: output folder (created).
      name: the served model's name (default: the file's stem).
      serving_root: where `out_dir/models` is mounted in the TF Serving
        container, for `models.config`.

    Raises:
      ValueError: a missing, broken or non-Flow model file, or `out_dir` is a file.
      ExportError: an exported model differs from the Keras flow.
    """
    flow = files.load_flow(model_path)
    name = name or os.path.splitext(os.path.basename(os.fspath(model_path)))[0]
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir must be a folder; {out_dir!r} is a file")
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    model_dir = os.path.join("models", name)
    existing = os.path.join(out_dir, model_dir)
    version = next_version(existing) if os.path.isdir(existing) else 1
    version_dir = os.path.join(model_dir, str(version))
    remove_stale(parent, STAGING_PREFIX)  # left by killed exports
    staging = make(parent, STAGING_PREFIX)
    try:
        # The export's own check gives the parity figures: no second reload.
        _, parity, loaded = _export(flow, os.path.join(staging, model_dir),
                                    version, False, LOG_PROB_ATOL)
        onnx_dir = os.path.join("onnx", name)
        blocking = unconvertible_loop_ops(os.path.join(staging, version_dir))
        if blocking:  # a tape inside a CNF's loop: SavedModel only (see export.onnx)
            onnx_results, onnx_parts = {}, []
            onnx_note = ("not exported: the ODE solver's loop takes gradients "
                         f"(ops {', '.join(blocking)}) that tf2onnx cannot convert")
        else:
            onnx_results = export_onnx(os.path.join(staging, version_dir),
                                       os.path.join(staging, onnx_dir),
                                       probe=probe_inputs(flow), loaded=loaded)
            onnx_parts, onnx_note = [onnx_dir], None
        with open(os.path.join(staging, "models", "models.config"), "w") as f:
            f.write(models_config(name, f"{serving_root}/{name}"))
        os.makedirs(os.path.join(staging, "requests"))
        for signature in SIGNATURES:
            inputs = request_inputs(flow, signature)
            for kind, body in (("rest", rest_body(signature, inputs)),
                               ("grpc", grpc_body(name, signature, inputs))):
                with open(os.path.join(staging, "requests",
                                       f"{signature}.{kind}.json"), "w") as f:
                    json.dump(body, f, indent=1)
        summary = {
            "model": name, "version": version, "saved_model": version_dir,
            "saved_model_max_abs_diff": parity,
            "onnx": {k: {"path": os.path.join(onnx_dir, os.path.basename(p)),
                         "max_abs_diff": d} for k, (p, d) in onnx_results.items()},
            "requests": "requests",
        }
        if onnx_note:
            summary["onnx_note"] = onnx_note
        with open(os.path.join(staging, "export.json"), "w") as f:
            json.dump(summary, f, indent=1)
        _move_in(staging, out_dir, onnx_parts + ["requests",
                                    os.path.join("models", "models.config"),
                                    "export.json"], version_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _move_in(staging, out_dir, parts, version_dir):
    """Moves a checked export from `staging` into `out_dir`: `parts` replace
    what was there, the new version folder comes last."""
    if not os.path.exists(out_dir):
        fsync_tree(staging)
        os.replace(staging, out_dir)  # one rename: all or nothing
        fsync(os.path.dirname(os.path.abspath(out_dir)))
        return
    for part in parts:
        target = os.path.join(out_dir, part)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isdir(target):
            publish(os.path.join(staging, part), target, aside=staging)
        else:
            fsync(os.path.join(staging, part))
            os.replace(os.path.join(staging, part), target)
    target = os.path.join(out_dir, version_dir)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    publish(os.path.join(staging, version_dir), target, aside=staging)
