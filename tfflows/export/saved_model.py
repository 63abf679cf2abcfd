"""Export a `Flow` as a TF Serving SavedModel, checked against the Keras model."""

import os
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfflows.export.signatures import build_endpoints, probe_inputs
from tfflows.flow import Flow
from tfflows.staging import fsync, fsync_tree, make, remove_stale

__all__ = ["saved_model", "check_saved_model", "publish", "next_version", "ExportError"]

LOG_PROB_ATOL = 1e-5
# float32 resolves about 1 part in 1e7: a log-density of an image (hundreds
# of nats) cannot agree to 1e-5 absolute. Allowed error: atol + rtol * |value|.
RTOL = 1e-6


class ExportError(RuntimeError):
    """An exported model does not compute what the Keras model computes."""


STAGING_PREFIX = ".export-"  # hidden: TF Serving reads numeric names only


def publish(staged, target, aside):
    """Moves a complete folder into place, replacing `target` if it exists.

    The old `target` is first renamed into `aside` (a staging folder on the
    same file system, which the caller removes), so a kill at any moment
    leaves under `target`'s name the old folder, nothing, or the new one,
    never a half-deleted or half-written folder.
    """
    fsync_tree(staged)
    if os.path.exists(target):
        os.replace(target, os.path.join(tempfile.mkdtemp(dir=aside), "old"))
    os.replace(staged, target)
    fsync(os.path.dirname(os.path.abspath(target)))


def next_version(base_dir):
    """The next free version number in a TF Serving model folder (hidden
    staging folders are not versions)."""
    versions = [int(n) for n in os.listdir(base_dir) if re.fullmatch(r"\d+", n)]
    return max(versions, default=0) + 1


def _max_diff(a, b, rtol=0.0):
    """Max abs difference, scaled so that `<= atol` means within tolerance:
    `max(|a - b| - rtol * |b|, 0)`; inf on shape mismatch or non-finite."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return np.inf
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return np.inf
    excess = np.maximum(np.abs(a - b) - rtol * np.abs(b), 0.0)
    return float(np.max(excess)) if a.size else 0.0


def check_saved_model(flow, path, probe=None, atol=LOG_PROB_ATOL):
    """Reloads the SavedModel at `path` and compares every signature with `flow`.

    Returns `{signature: max abs difference beyond 1e-6 relative}`; raises
    `ExportError` naming the first signature that differs by more than
    `atol + 1e-6 * |value|` (or whose sampling is not reproducible for a
    fixed seed), and a `ValueError` naming a missing, incomplete or corrupted
    SavedModel folder (`tfflows.files.load_saved_model`).
    """
    from tfflows import files

    return _check_loaded(flow, files.load_saved_model(path), path, probe, atol)


def _check_loaded(flow, loaded, path, probe=None, atol=LOG_PROB_ATOL):
    """`check_saved_model` of the SavedModel at `path`, already `loaded`."""
    probe = probe_inputs(flow) if probe is None else probe
    context = probe.get("context")
    ctx = {} if context is None else {"context": tf.constant(context)}
    x, z = tf.constant(probe["x"]), tf.constant(probe["z"])
    n = len(probe["x"])
    sample_args = dict(num_samples=tf.constant(n), temperature=tf.constant(0.7),
                       seed=tf.constant(7), **ctx)
    # The Keras side runs as a graph too (Flow's methods called eagerly run
    # as cached graphs), as the SavedModel does: the check is then about the
    # export, not about eager vs graph round-off.
    log_prob, encode, decode = flow.log_prob, flow.encode, flow.decode
    checks = {
        "serving_default": (lambda: loaded.signatures["serving_default"](x=x, **ctx)["log_prob"],
                            lambda: log_prob(x, context)),
        "log_prob": (lambda: loaded.signatures["log_prob"](x=x, **ctx)["log_prob"],
                     lambda: log_prob(x, context)),
        "encode": (lambda: loaded.signatures["encode"](x=x, **ctx)["z"],
                   lambda: encode(x, context)),
        "decode": (lambda: loaded.signatures["decode"](z=z, **ctx)["x"],
                   lambda: decode(z, context)),
        "sample": (lambda: loaded.signatures["sample"](**sample_args)["samples"],
                   lambda: flow.sample(n, 0.7, 7, context)),
    }
    diffs = {}
    for name, (exported, keras_fn) in checks.items():
        if name not in loaded.signatures:
            raise ExportError(f"{path} has no '{name}' signature")
        diff = _max_diff(exported(), keras_fn(), rtol=RTOL)
        diffs[name] = diff
        if diff > atol:
            raise ExportError(f"SavedModel signature '{name}' differs from the "
                              f"Keras flow by {diff:.3g} (> {atol:g}) on the probe batch")
    again = loaded.signatures["sample"](**sample_args)["samples"]
    if _max_diff(again, checks["sample"][0]()) != 0.0:
        raise ExportError("SavedModel 'sample' is not reproducible for a fixed seed")
    return diffs


def saved_model(flow, base_dir, version=None, overwrite=False, atol=LOG_PROB_ATOL):
    """Writes `flow` as a TF Serving SavedModel in `base_dir/<version>/`.

    Signatures (named inputs and outputs, dynamic batch, float32):
    `serving_default` and `log_prob` (`x` -> `log_prob`), `sample`
    (`num_samples`, `temperature`, `seed` -> `samples`), `encode`
    (`x` -> `z`), `decode` (`z` -> `x`); conditional flows take `context`
    as well. The model is written to a hidden staging folder inside
    `base_dir` (`.export-<host>-<pid>-<random>`: TF Serving takes only
    numeric names for versions), reloaded with `tf.saved_model.load`,
    checked signature by signature against the Keras flow on a probe batch,
    and only then renamed into place: a failed export leaves nothing behind,
    and a killed one (SIGKILL, power loss) leaves the earlier versions
    untouched and either no new version folder or a complete one. The
    staging folder a killed export leaves is removed by the next export
    into `base_dir` on the same host.

    Args:
      flow: a `tfflows.Flow`.
      base_dir: the model's folder in a TF Serving model base path; created
        if missing.
      version: integer version; default the next free one (1 for a new
        folder).
      overwrite: replace an existing version folder.
      atol: largest allowed absolute difference on the probe batch.

    Returns:
      The path of the version folder.

    Raises:
      ValueError: not a Flow, `base_dir` is a file, or the version exists.
      ExportError: an exported signature differs from the Keras model.
    """
    return _export(flow, base_dir, version, overwrite, atol)[0]


def _export(flow, base_dir, version, overwrite, atol):
    """`saved_model`'s work; also returns the parity figures of its check
    and the SavedModel as its check loaded it (for the ONNX conversion:
    loading takes seconds for a large flow)."""
    if not isinstance(flow, Flow):
        raise ValueError("saved_model exports a tfflows.Flow. Received: "
                         f"{type(flow).__name__}")
    if not flow.built or not all(layer.built for layer in flow.flow_layers):
        raise ValueError("The flow is not built: build or call it before export")
    base_dir = os.fspath(base_dir)
    if os.path.exists(base_dir) and not os.path.isdir(base_dir):
        raise ValueError(f"base_dir must be a folder; {base_dir!r} is a file")
    os.makedirs(base_dir, exist_ok=True)
    if version is None:
        version = next_version(base_dir)
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer. Received: version={version!r}")
    target = os.path.join(base_dir, str(version))
    if os.path.exists(target) and not overwrite:
        raise ValueError(f"{target} exists; pass overwrite=True or another version")

    remove_stale(base_dir, STAGING_PREFIX)  # left by killed exports
    staging = make(base_dir, STAGING_PREFIX)
    try:
        archive = keras.export.ExportArchive()
        archive.track(flow)
        # `log_prob` goes first: Keras saves `serving_default` as the first
        # endpoint's own function (one trace, one function in the file).
        for name, (fn, specs) in build_endpoints(flow).items():
            archive.add_endpoint(name, fn, input_signature=specs)
        path = os.path.join(staging, "model")
        archive.write_out(path, verbose=False)
        from tfflows import files

        loaded = files.load_saved_model(path)
        diffs = _check_loaded(flow, loaded, path, atol=atol)
        publish(path, target, aside=staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, diffs, loaded

