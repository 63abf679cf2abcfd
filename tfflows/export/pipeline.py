"""The export pipeline: `.keras` flow -> SavedModel + ONNX + TF Serving files.

Layout written under `out_dir`:

    models/<name>/<version>/     SavedModel (TF Serving model base path)
    models/models.config         TF Serving model config for the above
    onnx/<name>/<signature>.onnx log_prob, encode, decode
    requests/<signature>.rest.json   REST predict bodies (columnar "inputs")
    requests/<signature>.grpc.json   gRPC PredictRequest in protobuf JSON
    export.json                  what was written and the parity figures

`python export/pipeline.py MODEL.keras OUT` and `tfflows export` run this.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from tfflows.export.onnx import onnx as export_onnx
from tfflows.export.saved_model import LOG_PROB_ATOL, _export
from tfflows.export.signatures import SIGNATURES, probe_inputs
from tfflows.flow import Flow

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

    Args:
      model_path: a `.keras` file holding a `tfflows.Flow`.
      out_dir: output folder (created).
      name: the served model's name (default: the file's stem).
      serving_root: where `out_dir/models` is mounted in the TF Serving
        container, for `models.config`.

    Raises:
      ValueError: a missing file or a model that is not a Flow.
      ExportError: an exported model differs from the Keras flow.
    """
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise ValueError(f"No such model file: {model_path}")
    flow = keras.models.load_model(model_path, safe_mode=True)
    if not isinstance(flow, Flow):
        raise ValueError(f"{model_path} holds a {type(flow).__name__}, not a tfflows.Flow")
    name = name or os.path.splitext(os.path.basename(model_path))[0]
    models_dir = os.path.join(out_dir, "models")
    # The export's own check gives the parity figures: no second reload.
    version_dir, parity = _export(flow, os.path.join(models_dir, name), None,
                                  False, LOG_PROB_ATOL)
    onnx_results = export_onnx(version_dir, os.path.join(out_dir, "onnx", name))
    with open(os.path.join(models_dir, "models.config"), "w") as f:
        f.write(models_config(name, f"{serving_root}/{name}"))
    requests_dir = os.path.join(out_dir, "requests")
    os.makedirs(requests_dir, exist_ok=True)
    for signature in SIGNATURES:
        inputs = request_inputs(flow, signature)
        for kind, body in (("rest", rest_body(signature, inputs)),
                           ("grpc", grpc_body(name, signature, inputs))):
            with open(os.path.join(requests_dir, f"{signature}.{kind}.json"), "w") as f:
                json.dump(body, f, indent=1)
    summary = {
        "model": name, "saved_model": version_dir,
        "saved_model_max_abs_diff": parity,
        "onnx": {k: {"path": p, "max_abs_diff": d} for k, (p, d) in onnx_results.items()},
        "requests": requests_dir,
    }
    with open(os.path.join(out_dir, "export.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
