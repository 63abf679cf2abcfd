"""Keras callbacks for flows: numerical health during training."""

import keras
import numpy as np
import tensorflow as tf

from tfflows._tracing import traced_once
from tfflows.objectives import split_inputs

__all__ = ["FlowHealth"]


def _weights_finite(layer):
    checks = [tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(w)))
              for w in layer.weights if tf.as_dtype(w.dtype).is_floating]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


def _finite_max_abs(t):
    """`max |t|` over the finite entries (0 if none), so one NaN does not
    hide how large the rest is."""
    t = tf.abs(t)
    return tf.reduce_max(tf.where(tf.math.is_finite(t), t, tf.zeros_like(t)))


class FlowHealth(keras.callbacks.Callback):
    """Watches a flow's numerical health on a probe batch while it trains.

    Every `every_n_steps` optimizer steps and at the end of every epoch it
    runs the probe batch through the flow one layer at a time, from the
    data side (`h_k = f_k^-1(h_{k-1})`, `h_0 = x`), then back, and measures:

    ```none
    round_trip_error = max |decode(encode(x)) - x|        over the probe
    max_abs_log_det  = max_k max_i |log|det d h_k / d h_{k-1}| (x_i)|
    ```

    the worst reconstruction error and the largest log-det of a single
    layer (its layer is in `records[-1]["max_abs_log_det_layer"]`). Both go
    into the `logs` of that batch and epoch, so `History`, `CSVLogger`,
    `TensorBoard` and `ModelCheckpoint(monitor=...)` see them, provided
    FlowHealth comes before them in the `callbacks` list (Keras hands every
    callback the same `logs` dict in list order; `History`, added by Keras
    itself, always comes last). With `log_dir` set, it also writes them to
    TensorBoard itself (tags `health/round_trip_error` and
    `health/max_abs_log_det`, against the optimizer step), whatever the
    order, at every probe and not only at epoch ends.

    Training stops (`model.stop_training = True`, as
    `keras.callbacks.TerminateOnNaN` does) with a message that names the
    step and the first layer, from the data side, whose weights, output or
    log-det is NaN or Inf, when the logged `loss` is not finite (checked at
    every batch end, probe or not) or the probe finds a non-finite value.
    When the probe is finite through every layer but the loss is not, the
    message says so: the batch, not the weights, is then the suspect. The
    message is printed and kept in `stop_message`.

    Steps are counted by the optimizer (`model.optimizer.iterations`), not
    by callback calls: `Flow.compile` runs 16 batches per execution by
    default, so batch-end callbacks see every 16th step; the probe then runs
    at the first batch end at or after each multiple of `every_n_steps`.

    The probe runs as one `tf.function`, traced once per flow: its cost is
    one encode and one decode of the probe batch (D network passes per
    layer to decode a MAF, one per layer for couplings), so keep the probe
    small (64-256 rows).

    Example:

    ```python
    health = tff.callbacks.FlowHealth(x_val[:256], every_n_steps=100)
    history = flow.fit(x, epochs=10, callbacks=[
        health, keras.callbacks.CSVLogger("log.csv")])  # FlowHealth first
    history.history["round_trip_error"]                 # one per epoch
    ```

    Args:
      probe: a batch of data, `x` (`[n, *event_shape]`) or
        `{"x": x, "context": c}` for conditional flows; pixels in [0, 1] for
        image flows (used as they are, without dequantization noise).
      every_n_steps: probe every this many optimizer steps, besides each
        epoch end; None or 0 for epoch ends only.
      context: the probe's context for conditional flows (`[K]` or
        `[n, K]`), unless `probe` is a dict.
      stop_on_nonfinite: stop training on a non-finite loss or probe
        value. With False the callback only logs and records.
      log_dir: a folder to write the figures to as TensorBoard scalars
        (e.g. the `TensorBoard` callback's `log_dir` + "/health"), or None.

    Attributes:
      records: one dict per probe: `step`, `epoch`, `round_trip_error`,
        `max_abs_log_det`, `max_abs_log_det_layer`, `nonfinite` (the
        message's description of the first bad layer, or None).
      stop_message: why training was stopped, or None.
    """

    def __init__(self, probe, every_n_steps=100, context=None,
                 stop_on_nonfinite=True, log_dir=None):
        super().__init__()
        if every_n_steps is not None and (
                isinstance(every_n_steps, bool)
                or not isinstance(every_n_steps, (int, np.integer))
                or every_n_steps < 0):
            raise ValueError("every_n_steps must be a whole number >= 0 or None. "
                             f"Received: every_n_steps={every_n_steps!r}")
        x, probe_context = split_inputs(probe)
        if probe_context is not None and context is not None:
            raise ValueError("Pass the probe's context either in the probe dict "
                             "or as context=, not both")
        self.probe = np.asarray(x)
        self.probe_context = (None if probe_context is None and context is None
                              else np.asarray(probe_context if context is None
                                              else context))
        for name, value in (("probe", self.probe), ("context", self.probe_context)):
            if value is not None and (not np.issubdtype(value.dtype, np.number)
                                      or not np.isfinite(value).all()):
                raise ValueError(f"FlowHealth's {name} must be finite numbers")
        self.every_n_steps = int(every_n_steps or 0)
        self.stop_on_nonfinite = bool(stop_on_nonfinite)
        self.log_dir = log_dir
        self.records = []
        self.stop_message = None
        self._function = None
        self._function_model = None
        self._writer = None
        self._last_step = None
        self._last_healthy = None
        self._epoch = 0

    # -- the probe --------------------------------------------------------------
    def _diagnose(self, x, context):
        """Per layer, from the data side: weights finite, output finite,
        log-det finite, max |log-det|; the same for the decode pass; and the
        round-trip error. One graph."""
        flow = self.model
        layers = flow.flow_layers
        batch = tf.shape(x)[:1]
        report = {"weights": [], "encode": [], "log_det": [], "abs_log_det": [],
                  "decode": []}
        h = x
        for layer in layers:
            bijector = layer.make_bijector(context)
            z = bijector.inverse(h)
            log_det = tf.broadcast_to(bijector.inverse_log_det_jacobian(
                h, event_ndims=flow.event_ndims), batch)
            report["weights"].append(_weights_finite(layer))
            report["encode"].append(tf.reduce_all(tf.math.is_finite(z)))
            report["log_det"].append(tf.reduce_all(tf.math.is_finite(log_det)))
            report["abs_log_det"].append(_finite_max_abs(log_det))
            h = z
        # New bijectors for the way back: TFP caches each bijector's inverse,
        # and `forward` of its own output would return the input unrounded.
        for layer in reversed(layers):
            h = layer.make_bijector(context).forward(h)
            report["decode"].append(tf.reduce_all(tf.math.is_finite(h)))
        report["decode"].reverse()  # data side first, as the rest
        error = tf.abs(h - x)
        report["round_trip_error"] = tf.reduce_max(
            tf.where(tf.math.is_finite(error), error, tf.fill(tf.shape(error),
                                                              np.inf)))
        return {k: tf.stack(v) if isinstance(v, list) else v
                for k, v in report.items()}

    def _probe_tensors(self):
        flow = self.model
        x = flow._check_x(self.probe)
        context = flow.check_context(self.probe_context, tf.shape(x)[0])
        return x, context

    def measure(self):
        """Runs the probe now; returns the record it adds to `records`."""
        if self._function is None or self._function_model is not self.model:
            self._function = traced_once(  # once per flow
                tf.function(self._diagnose, autograph=False))
            self._function_model = self.model
            self._tensors = self._probe_tensors()
        x, context = self._tensors
        report = {k: np.asarray(v) for k, v in
                  self._function(x, context).items()}
        layers = self.model.flow_layers
        worst = int(np.argmax(report["abs_log_det"]))
        record = {
            "step": self._step(), "epoch": self._epoch,
            "round_trip_error": float(report["round_trip_error"]),
            "max_abs_log_det": float(report["abs_log_det"][worst]),
            "max_abs_log_det_layer": _describe(worst, layers[worst]),
            "nonfinite": _first_nonfinite(report, layers),
        }
        self.records.append(record)
        self._last_step = record["step"]
        if record["nonfinite"] is None:
            self._last_healthy = record
        if self._writer is not None:
            with self._writer.as_default(step=record["step"]):
                for name in ("round_trip_error", "max_abs_log_det"):
                    tf.summary.scalar(f"health/{name}", record[name])
            self._writer.flush()
        return record

    # -- Keras hooks --------------------------------------------------------------
    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_begin(self, logs=None):
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        self._last_step = None
        # A first look before any step: weights that are already broken
        # (a bad load, a hand-set value) are named before a step spreads
        # NaN through every layer.
        self._check(None, self.measure(), f"the start of training (step "
                    f"{self._step()})")

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs if logs is not None else {}
        step = self._step()
        due = (self.every_n_steps and (
            self._last_step is None
            or step // self.every_n_steps > self._last_step // self.every_n_steps))
        record = self.measure() if due else None
        if record is not None:
            _log(logs, record)
        self._check(logs.get("loss"), record, f"step {step}")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.records and self._last_step == self._step():
            record = self.records[-1]  # this step was just probed
        else:
            record = self.measure()
        _log(logs, record)
        self._check(logs.get("loss"), record,
                    f"the end of epoch {epoch + 1} (step {record['step']})")

    def _check(self, loss, record, when):
        bad_loss = loss is not None and not np.isfinite(loss)
        bad_probe = record is not None and record["nonfinite"] is not None
        if not (bad_loss or bad_probe) or self.stop_message is not None:
            return
        if record is None:  # a non-finite loss between probes: look now
            record = self.measure()
            bad_probe = record["nonfinite"] is not None
        what = f"loss is {loss}" if bad_loss else "the probe batch is not finite"
        if bad_probe:
            where = record["nonfinite"]
        else:
            where = ("the probe batch is finite through every layer, so a "
                     "training batch (its data, or a step too large for it) "
                     "made the loss non-finite")
        message = f"FlowHealth: at {when}, {what}: {where}."
        healthy = self._last_healthy
        if bad_probe and healthy is not None:
            message += (f" The last finite probe (step {healthy['step']}) had "
                        f"round-trip error {healthy['round_trip_error']:.3g} "
                        f"and its largest log-det, {healthy['max_abs_log_det']:.4g}"
                        f", in {healthy['max_abs_log_det_layer']}.")
        if self.stop_on_nonfinite:
            self.stop_message = message + " Training stopped."
            print(self.stop_message, flush=True)
            self.model.stop_training = True


def _describe(index, layer):
    return f"layer {index} '{layer.name}' ({type(layer).__name__})"


def _first_nonfinite(report, layers):
    """What the first bad layer (data side first) did, or None."""
    weighted = [i for i, layer in enumerate(layers) if layer.weights]
    if len(weighted) > 1 and not any(report["weights"][i] for i in weighted):
        return ("the weights of every layer hold NaN or Inf (one non-finite "
                "update reaches them all)")
    for i, layer in enumerate(layers):
        problems = []
        if not report["weights"][i]:
            problems.append("its weights hold NaN or Inf")
        if not report["encode"][i]:
            problems.append("its output (data -> latent) is not finite")
        if not report["log_det"][i]:
            problems.append("its log-det is not finite")
        if problems:
            return f"{_describe(i, layer)}: " + ", ".join(problems)
    for i in reversed(range(len(layers))):  # the order decode runs them
        if not report["decode"][i]:
            return (f"{_describe(i, layers[i])}: its output (latent -> data) "
                    "is not finite")
    if not np.isfinite(report["round_trip_error"]):
        return "the round trip decode(encode(x)) is not finite"
    return None


def _log(logs, record):
    logs["round_trip_error"] = record["round_trip_error"]
    logs["max_abs_log_det"] = record["max_abs_log_det"]
