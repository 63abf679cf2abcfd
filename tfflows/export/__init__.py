"""Export flows for serving: SavedModels for TF Serving, ONNX via tf2onnx.

Every export is checked against its source on a probe batch and moved into
place only when the check passes.
"""

from tfflows.export.onnx import onnx
from tfflows.export.saved_model import ExportError, check_saved_model, saved_model

__all__ = ["ExportError", "check_saved_model", "onnx", "saved_model"]
