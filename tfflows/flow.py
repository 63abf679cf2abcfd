"""`Flow`: a Keras model over flow layers and a base distribution."""

import functools
import inspect
import warnings

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfflows._checks import integer
from tfflows._tracing import traced_once
from tfflows.distributions import StandardNormal, as_base
from tfflows.layers.base import bound
from tfflows.layers.multiscale import Logit
from tfflows.objectives import MaximumLikelihood, split_inputs

__all__ = ["Flow", "check_dtype", "xla_by_default"]

tfb, tfd = tfp.bijectors, tfp.distributions
AUTO_STEPS_PER_EXECUTION = 16


def _cpu_only():
    return all(d.device_type == "CPU" for d in tf.config.list_physical_devices())


def xla_by_default(flow_layers):
    """What `jit_compile="auto"` means for a training step over `flow_layers`.

    On CPU-only hosts, where Keras's own "auto" never uses XLA: True when a
    layer gains from it (`FlowLayer.xla_on_cpu`), else False. With a GPU or
    TPU: "auto", Keras's own choice. Off under a strategy with several
    replicas (XLA cannot reach the replicas' variables on other devices).
    """
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return False
    if _cpu_only():
        return any(l.xla_on_cpu for l in flow_layers)
    return "auto"


def _as_graph_when_eager(method):
    """Runs a Flow method as a cached `tf.function` when called eagerly.

    As Keras's `predict` does: eager execution pays Python and dispatch
    costs on every op (2-3x the graph's time for a 10k-example `log_prob` or
    `sample`). Arguments that are None or bools stay Python values; the rest
    become tensors, batches (rank >= 2) with their first dimension left
    unknown, so a new batch size, `num_samples` or `temperature` does not
    retrace, while a shared `[K]` context keeps its static size. Inside a
    graph (training, export) and with `run_eagerly=True` the method runs as
    plain Python.

    With `flow.check_inputs` (the default) the arguments are checked before
    the call (`_check_eager_arguments`) and the results after it
    (`_check_outputs`). A call on no rows returns empty results of the
    right shapes: it runs on one stand-in row and keeps none (TensorFlow
    2.21's oneDNN convolutions fail on empty batches).
    """
    signature = inspect.signature(method)

    def spec(value):
        shape = value.shape
        if shape.rank >= 2:
            shape = tf.TensorShape([None]).concatenate(shape[1:])
        return tf.TensorSpec(shape, value.dtype)

    def run(self, arguments):
        if self.run_eagerly:
            return method(self, **arguments)
        static, names, tensors = {}, [], []
        for name, value in arguments.items():
            if value is None or isinstance(value, bool):
                static[name] = value
                continue
            tensor = tf.convert_to_tensor(value)
            # Numbers of any real dtype in one dtype, seeds as int64: one
            # trace serves them all.
            if name in ("x", "z", "context") and (tensor.dtype.is_floating
                                                  or tensor.dtype.is_integer):
                tensor = tf.cast(tensor, self.compute_dtype)
            elif name == "seed" and tensor.dtype.is_integer:
                tensor = tf.cast(tensor, tf.int64)
            names.append(name)
            tensors.append(tensor)
        specs = [spec(t) for t in tensors]
        key = (method.__name__, tuple(sorted(static.items())), tuple(names),
               tuple(specs))
        # Kept out of Keras' attribute tracking so that neither `.keras`
        # files nor SavedModels see these functions.
        functions = self.__dict__.setdefault("_graph_functions", {})
        if key not in functions:
            call = lambda *t: method(self, **static, **dict(zip(names, t)))
            # Each function is traced once, for its own signature (TF would
            # warn of "retracing" that is this cache filling up).
            functions[key] = traced_once(
                tf.function(call, input_signature=specs, autograph=False))
        return functions[key](*tensors)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if not tf.executing_eagerly():
            return method(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(list(bound.arguments.items())[1:])
        if self.check_inputs:
            _check_eager_arguments(self, arguments)
        empty = _no_rows(arguments)
        if empty:
            arguments = _one_stand_in_row(self, arguments)
        result = run(self, arguments)
        if self.check_inputs:
            _check_outputs(method.__name__, result, arguments)
        if empty:
            result = tf.nest.map_structure(lambda t: t[:0], result)
        return result

    return wrapper


def _first_bad_row(values):
    """Index of the first row of `values` with a non-finite entry."""
    flat = values.reshape(len(values), -1) if values.ndim > 1 else values[:, None]
    return int(np.argmax(~np.isfinite(flat).all(axis=1)))


def check_dtype(name, dtype):
    """Raises ValueError unless `dtype` (NumPy or TensorFlow) holds real
    numbers: floats, or integers (which flows cast to their float dtype)."""
    dtype = np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise ValueError(f"{name} must be an array of real numbers (floats or "
                         f"integers). Received dtype {dtype}")


def _check_in_range(name, array, dtype):
    """Raises ValueError where finite `array` holds values that `dtype`
    (the flow's float type) cannot (casting them would make them Inf)."""
    magnitude, largest = float(np.abs(array).max()), float(np.finfo(dtype).max)
    if magnitude > largest:
        raise ValueError(f"{name} holds values beyond the flow's {dtype} range "
                         f"(|{name}| up to {magnitude:.3g} > {largest:.3g}); "
                         "rescale the data")


def _check_seed(seed):
    """A seed is None, an int, or a pair of ints (arrays and tensors too)."""
    if seed is None:
        return
    value = np.asarray(seed) if not isinstance(seed, bool) else None
    if (value is None or value.dtype == object or value.shape not in ((), (2,))
            or not np.issubdtype(value.dtype, np.integer)
            or any(not -2**63 <= int(v) < 2**63 for v in np.atleast_1d(value))):
        raise ValueError("seed must be None, an int or a pair of ints. "
                         f"Received: seed={seed!r}")


def _check_eager_arguments(flow, arguments):
    """The checks an eager call of a Flow method makes (`flow.check_inputs`):
    a count that is a whole non-negative number, a finite temperature >= 0,
    an integer seed (or pair), `x`/`z`/`context` of real numbers that are
    finite and within the flow's float range, an image flow's pixels in
    [0, 1], a context with a row per input row or draw. A graph (training,
    export, serving) checks none of this."""
    rows, what = None, None
    count = arguments.get("num_samples")
    if count is not None:
        number = np.asarray(count)
        if (number.ndim or isinstance(count, bool) or number.dtype == object
                or not np.issubdtype(number.dtype, np.integer) or int(number) < 0):
            raise ValueError("num_samples must be a whole number >= 0. Received: "
                             f"num_samples={count!r}")
        rows, what = int(number), "draws"
    temperature = arguments.get("temperature")
    if temperature is not None:
        value = np.asarray(temperature)
        if (value.ndim or isinstance(temperature, bool)
                or not np.issubdtype(value.dtype, np.number)
                or np.iscomplexobj(value)
                or not np.isfinite(value) or value < 0):
            raise ValueError("temperature must be a finite number >= 0 (0 gives the "
                             f"base's mean). Received: temperature={temperature!r}")
    _check_seed(arguments.get("seed"))
    for name in ("x", "z", "context"):
        value = arguments.get(name)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, dict):
            raise ValueError(f"{name} must be an array; received a dict (pass "
                             "x and context as separate arguments)")
        array = np.asarray(value)
        check_dtype(name, array.dtype)
        if array.ndim == 0:
            raise ValueError(f"{name} must be an array with a batch axis. "
                             f"Received a scalar: {name}={array!r}")
        if array.size and np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all():
                kind = "NaN" if np.isnan(array).any() else "Inf"
                where = (f" (first in row {_first_bad_row(array)})"
                         if array.ndim > 1 else "")
                raise ValueError(f"{name} contains {kind}{where}; pass finite "
                                 "values, or set flow.check_inputs = False to "
                                 "let them propagate")
            _check_in_range(name, array, flow.compute_dtype)
        if name == "x" and flow.num_bins and array.size:
            low, high = float(array.min()), float(array.max())
            lowest, highest = _pixel_domain(flow)
            if not lowest < low <= high < highest:
                raise ValueError(f"x holds pixels outside [0, 1] (from {low:g} to "
                                 f"{high:g}): image flows take pixels scaled to "
                                 f"[0, 1], k / num_bins for levels k")
        # (A context of the wrong width is check_context's error, named there.)
        if (name == "context" and array.ndim == 2 and array.shape[1] == flow.context_dim
                and rows not in (None, len(array))):
            raise ValueError(f"context has {len(array)} rows for {rows} {what}: pass "
                             f"one context row per {what[:-1]}, or a "
                             f"[{flow.context_dim}] context for all of them")
        if name != "context":
            rows, what = len(array), "input rows"


def _pixel_domain(flow):
    """The open interval of pixel values an image flow has a density on:
    [0, 1] widened by its logit's margin, `alpha / (1 - 2 alpha)` on each
    side, where `decode`'s outputs lie (so they encode again)."""
    first = flow.flow_layers[0]
    if isinstance(first, Logit) and first.alpha > 0:
        margin = first.alpha / (1 - 2 * first.alpha)
        return -margin, 1 + margin
    return -np.finfo(np.float32).tiny, 1 + np.finfo(np.float32).eps


def _no_rows(arguments):
    """Whether a call is on no rows: `num_samples=0`, or an empty `x`/`z`."""
    if arguments.get("num_samples") is not None:
        return int(np.asarray(arguments["num_samples"])) == 0
    batch = next((arguments[n] for n in ("x", "z") if arguments.get(n) is not None), None)
    return batch is not None and np.ndim(batch) >= 1 and len(batch) == 0


def _one_stand_in_row(flow, arguments):
    """The arguments of an empty call with one row instead of none (a
    pixel value of 0.5, any value elsewhere: the row is dropped after)."""
    arguments = dict(arguments)
    if arguments.get("num_samples") is not None:
        arguments["num_samples"] = 1
    for name in ("x", "z", "context"):
        value = arguments.get(name)
        if value is not None and np.ndim(value) >= 2 and len(value) == 0:
            arguments[name] = np.full((1,) + np.shape(value)[1:], 0.5,
                                      flow.compute_dtype)
    return arguments


# The outputs of each method that are log-densities: -inf there is an
# honest answer (a density that underflows), NaN and +inf are not. Every
# other output is a point, which must be finite.
_LOG_DENSITY_OUTPUTS = {"log_prob": (0,), "encode_and_log_det": (1,),
                        "sample_and_log_prob": (1,)}


def _check_outputs(method, result, arguments):
    """Raises ValueError where a call on checked (finite) inputs gave NaN or
    Inf: the flow's arithmetic overflowed, and the message says so instead of
    returning the garbage."""
    outputs = result if isinstance(result, (tuple, list)) else (result,)
    for i, output in enumerate(outputs):
        values = np.asarray(output)
        if i in _LOG_DENSITY_OUTPUTS.get(method, ()):
            bad = np.isnan(values) | (values == np.inf)
        else:
            bad = ~np.isfinite(values)
        if not bad.any():
            continue
        rows = np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))
        kind = "NaN" if np.isnan(values).any() else "Inf"
        scale = [float(np.max(np.abs(np.asarray(arguments[n]))))
                 for n in ("x", "z", "temperature")
                 if arguments.get(n) is not None and np.size(arguments[n])]
        source = (f" (largest input magnitude {max(scale):.3g})" if scale else "")
        advice = ("Lower the temperature" if "temperature" in arguments
                  else "Standardise the data")
        raise ValueError(
            f"{method} gave {kind} in {len(rows)} row(s) (first: row {rows[0]}) "
            f"from finite inputs: the flow's {values.dtype} arithmetic overflowed"
            f"{source}. {advice}; set flow.check_inputs = False to get the raw "
            "values back")


def _rows_as_array(x):
    """`x` as a flow's one input: a list of rows (or of numbers) as one
    array (it cannot be Keras's list of several inputs), and Keras's
    `(x,)` or `(x, None)` as `x`. Other tuples are left for the checks."""
    if isinstance(x, tuple) and (len(x) == 1 or (len(x) == 2 and x[1] is None)):
        x = x[0]
    return np.asarray(x) if isinstance(x, list) else x


def _check_split(x, fraction):
    if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
            or not 0 <= fraction < 1):
        raise ValueError("validation_split must be a number in [0, 1). "
                         f"Received: validation_split={fraction!r}")
    if fraction and _is_arrays(x):
        n = len(next(iter(x.values())) if isinstance(x, dict) else x)
        cut = int(n * (1.0 - fraction))
        if cut == 0 or cut == n:
            raise ValueError(f"validation_split={fraction:g} of {n} rows leaves "
                             f"{cut} for training and {n - cut} for validation; "
                             "both need at least one")


def _is_arrays(x):
    if isinstance(x, dict):
        return bool(x) and all(isinstance(v, np.ndarray) for v in x.values())
    return isinstance(x, np.ndarray)


def _reshufflable(x, fit_kwargs):
    """Whether `fit` should feed `x` through `_epoch_shuffled`: plain arrays
    with Keras's default shuffle and nothing that needs Keras's own path."""
    return (_is_arrays(x) and fit_kwargs.get("shuffle", True) is True
            and not any(fit_kwargs.get(k) is not None
                        for k in ("sample_weight", "class_weight", "steps_per_epoch")))


def _num_rows(x):
    """The rows of an array or a dict of arrays."""
    return len(next(iter(x.values())) if isinstance(x, dict) else x)


def _split_tail(x, fraction):
    """Keras's `validation_split`: the last `fraction` of the rows."""
    n = _num_rows(x)
    cut = int(n * (1.0 - fraction))
    take = lambda a, s: {k: v[s] for k, v in a.items()} if isinstance(a, dict) else a[s]
    return take(x, slice(None, cut)), take(x, slice(cut, None))


def _cut(order, batch_size, skip=0, pad=False):
    """`order` (row indices, `[n]`) cut into a dataset of batches of
    `batch_size` indices, the first `skip` batches left out.

    The last batch is short when `batch_size` does not divide `n`; with
    `pad` (`_pads(n, batch_size)`) it is filled up to `batch_size` with
    rows from the start of `order` instead, and every batch comes with its
    row weights: 1 for its rows, 0 for the filling. Every batch then
    has one shape, so the training step is traced, and compiled by XLA,
    once: a short last batch made a second trace and a second XLA compile
    of the whole step (8.1 s on top of 6.8 for an 8-layer NSF on 2 cores).
    The weights keep each step the mean over real rows, as before.
    """
    n = int(order.shape[0])
    full, rest = divmod(n, batch_size)
    rows = tf.reshape(order[:full * batch_size], [full, batch_size])[skip:]
    if not pad:
        out = tf.data.Dataset.from_tensor_slices(rows)
        if rest:
            out = out.concatenate(tf.data.Dataset.from_tensors(order[full * batch_size:]))
        return out
    last = full * batch_size + tf.range(batch_size, dtype=order.dtype)
    out = tf.data.Dataset.from_tensor_slices((rows, tf.ones(tf.shape(rows))))
    return out.concatenate(tf.data.Dataset.from_tensors(
        (tf.gather(order, last % n), tf.cast(last < n, tf.float32))))


def _pads(n, batch_size):
    """Whether `_cut` fills up the last batch of `n` rows: it is short, and
    not the only batch (one batch has one shape anyway)."""
    return n > batch_size and n % batch_size != 0


def _gather_rows(data, pad):
    """The map from `_cut`'s batches of indices to Keras batches of `data`:
    `x`, or `(x, None, row_weights)` when padded."""
    take = lambda i: tf.nest.map_structure(lambda t: tf.gather(t, i), data)
    if pad:
        return lambda i, weights: (take(i), None, weights)
    return take


def _epoch_shuffled(x, batch_size, position=None, pad=False):
    """A dataset of `x`'s rows in a new random order every epoch.

    The order of an epoch is a function of `(seed, epoch)` only, read from
    `position` (an int64 variable `[seed, epoch, skip]`, a
    `tfflows.resume.FitPosition`'s, which `fit` sets at the start of every
    epoch from the epoch number Keras passes) when the epoch's iterator
    starts, and the first `skip` batches are left out: a run resumed from a
    backup in a new process (`tfflows.resume`) sees the batches the
    uninterrupted run saw. Without `position` the dataset holds the seed
    drawn from NumPy's global generator (reproducible after
    `keras.utils.set_random_seed`) and epoch 0's order until `position` is
    changed. The row indices are shuffled in one stateless op and cut into
    batches (`_cut`; `pad`: the last one filled up with weighted rows),
    which are gathered from the whole array (one copy to a tensor), as
    Keras's array adapter does. (A `Dataset.range(n).shuffle(n)` pipeline
    costs about 4x more per epoch, element by element, on the cores the
    training step needs.)

    tf.data's autotuning is off for this pipeline: its background thread
    made one `fit` call in three wait 0.3-0.45 s for it when the epoch's
    iterator was deleted (a one-epoch call of a 16-D MAF on 65,536 rows
    then took 40% longer than its epoch), and the pipeline has nothing to
    tune: one gather per batch, prefetched, next to a training step that
    is hundreds of times longer.
    """
    data = tf.nest.map_structure(tf.convert_to_tensor, x)
    n = int(tf.nest.flatten(data)[0].shape[0])
    pad = pad and _pads(n, batch_size)
    if position is None:
        position = tf.Variable([np.random.randint(0, 2**31 - 1), 0, 0],
                               dtype=tf.int64, trainable=False)

    def batches(_):
        seed, epoch, skip = tf.unstack(position.read_value())
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([epoch, seed]))
        # Sliced, not `Dataset.skip(skip)`: a skip count read from a
        # variable inside `flat_map` crashes TF 2.21 (segfault at the
        # iterator's creation).
        return _cut(order, batch_size, skip, pad)

    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = (tf.data.Dataset.from_tensors(0).flat_map(batches)
               .map(_gather_rows(data, pad)).prefetch(2)
               .with_options(options))
    # flat_map hides the number of batches; Keras needs it (without it, it
    # warns "Your input ran out of data" at the end of every epoch and
    # learns the count from the first epoch). An epoch resumed after its
    # first `skip` batches is shorter, which `assert_cardinality` would
    # refuse; Keras's adapter reads only `dataset.cardinality()`
    # (keras/src/trainers/data_adapters/tf_dataset_adapter.py, num_batches)
    # and ends a short epoch at its last batch.
    batches_per_epoch = -(-n // batch_size)
    dataset.cardinality = lambda: tf.constant(batches_per_epoch, tf.int64)
    return dataset


def _in_order(x, batch_size):
    """`x`'s rows in order, in batches of `batch_size`, the last one filled
    up with weighted rows (`_cut`): `fit`'s validation data (which Keras
    would otherwise cut into batches of 32, the last one short), and the
    arrays of `evaluate` and `predict`."""
    data = tf.nest.map_structure(tf.convert_to_tensor, x)
    n = int(tf.nest.flatten(data)[0].shape[0])
    pad = _pads(n, batch_size)
    return (_cut(tf.range(n, dtype=tf.int64), batch_size, pad=pad)
            .map(_gather_rows(data, pad)).prefetch(2))


@keras.saving.register_keras_serializable(package="tfflows")
class Flow(keras.Model):
    """A normalizing flow: `log p(x) = log p_base(encode(x)) + log|det d encode/dx|`.

    `layers` are flow layers listed from the data side (`tfflows.layers`);
    the latent has the data's shape and the base distribution is a standard
    normal over it unless `base_distribution` says otherwise.

    Training: `compile(optimizer=...)` needs no loss; `fit` minimises the
    negative log-likelihood and logs `nll` (nats per example) and, for image
    flows (`num_bins` set), `bits_per_dim`. Image flows take pixels in
    [0, 1] (`k / num_bins`) and `fit` adds uniform dequantization noise of one
    bin to training and validation batches alike; `log_prob` called directly
    is deterministic. Before the first step `fit` initialises every actnorm
    layer from the first batch.

    The objective is `flow.objective`, a
    `tfflows.objectives.MaximumLikelihood` (which `distributed_fit` and the
    command line use too). The logged `loss` equals `nll`, so callbacks can monitor `"val_loss"`
    as usual; to monitor `"val_nll"` or `"val_bits_per_dim"` pass
    `mode="min"` (Keras infers the direction only for compiled metrics).

    Called eagerly, `log_prob`, `sample`, `sample_and_log_prob`, `encode`,
    `decode` and `encode_and_log_det` run as cached `tf.function` graphs, as `predict`
    does; set `flow.run_eagerly = True` to step through them in Python.
    Eager calls first check their inputs (`flow.check_inputs`, True by
    default): NaN or Inf in `x`, `z` or `context` (scikit-learn's
    convention), values past the flow's float range, arrays that are not
    real numbers (integers are cast), an image flow's pixels outside
    [0, 1], a context whose rows do not match the input's, a negative or
    fractional `num_samples`, a temperature that is negative or not
    finite, a seed that is not an int or a pair of ints: each a
    `ValueError` that names it. Then their results: NaN, a log-density of
    +inf or a non-finite point from finite inputs (float32 overflow inside
    the networks, for inputs around 1e20 and beyond) is a `ValueError`
    too; a log-density of -inf (a density that underflows) is returned.
    Set `flow.check_inputs = False` to let NaN propagate (the checks cost
    one pass over the inputs and results); calls inside graphs (training,
    export, serving) are never checked.

    Args:
      layers: flow layers, data side first.
      event_shape: shape of one example, e.g. `(2,)` or `(8, 8, 1)`.
      context_dim: size of the conditioning input for conditional flows;
        inputs are then `{"x": x, "context": c}`.
      num_bins: pixel levels for image flows (enables dequantization and
        `bits_per_dim`), or None.
      base_distribution: a TFP distribution over `event_shape`, or a
        `tfflows.distributions` base object (default
        `tfflows.distributions.StandardNormal`). Flows with another base
        than the default cannot be saved to `.keras`.
    """

    def __init__(self, layers, event_shape, context_dim=None, num_bins=None,
                 base_distribution=None, **kwargs):
        super().__init__(**kwargs)
        self.flow_layers = [keras.saving.deserialize_keras_object(l)
                            if isinstance(l, dict) else l for l in layers]
        self.event_shape = tuple(integer("event_shape", d) for d in event_shape)
        self.context_dim = integer("context_dim", context_dim, optional=True)
        self.num_bins = integer("num_bins", num_bins, minimum=2, optional=True)
        self.base = as_base(base_distribution, self.event_shape, self.compute_dtype)
        self.objective = self._default_objective()
        # The objective's first figure: `nll`, or `fm_loss` for flow matching.
        self.nll_tracker = keras.metrics.Mean(name=self.objective.metric_names[0])
        self.bpd_tracker = (keras.metrics.Mean(name="bits_per_dim")
                            if num_bins else None)
        self.check_inputs = True
        self._build_layers()

    def _default_objective(self):
        """The training objective `__init__` sets (subclasses override)."""
        return MaximumLikelihood(self.event_shape, self.num_bins,
                                 dtype=self.compute_dtype)

    # -- structure ------------------------------------------------------------
    def _build_layers(self):
        shape = (None,) + self.event_shape
        for layer in self.flow_layers:
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        if tuple(shape[1:]) != self.event_shape:
            raise ValueError(f"The latent must have the data's shape "
                             f"{self.event_shape}; the layers end at {shape[1:]}")
        self.built = True

    def build(self, input_shape=None):
        self._build_layers()

    @property
    def event_ndims(self):
        return len(self.event_shape)

    @property
    def base_distribution(self):
        """The base distribution as a TFP distribution (`flow.base.distribution`)."""
        return self.base.distribution

    def bijector(self, context=None):
        """The flow as one TFP bijector (latent -> data), bound to the weights.

        Its `variables` / `trainable_variables` are the flow's own (the
        `tf.Variable`s behind the layers' Keras variables), so TFP code that
        collects a module's variables (`tfp.vi.fit_surrogate_posterior`,
        `tfp.math.minimize`) trains the flow.
        """
        chain = tfb.Chain([l.make_bijector(context) for l in self.flow_layers],
                          name=self.name)
        # tf.Module finds variables in attributes; TFP cannot walk into the
        # Keras layers the bijectors' closures hold.
        chain._flow_variables = tuple(bound(v) for v in self.weights)
        return chain

    @property
    def distribution(self):
        """A `tfd.TransformedDistribution` over the same chain.

        Trainable by TFP: its `trainable_variables` are the flow's, so
        `tfp.vi.fit_surrogate_posterior(target, flow.distribution, optimizer,
        num_steps)` fits the flow; usable as a component of a
        `tfd.JointDistribution*`.
        """
        if self.context_dim is not None:
            raise ValueError("A conditional flow has one distribution per "
                             "context: use flow.distribution_given(context)")
        return tfd.TransformedDistribution(self.base.distribution, self.bijector())

    def distribution_given(self, context):
        """The conditional distribution `p(x | context)` as a TFP distribution."""
        return tfd.TransformedDistribution(
            self.base.distribution, self.bijector(self.check_context(context)))

    # -- inputs -----------------------------------------------------------------

    def _check_x(self, x, name="x"):
        x = tf.convert_to_tensor(x, dtype_hint=self.compute_dtype)
        check_dtype(name, x.dtype)
        x = tf.cast(x, self.compute_dtype)
        self._check_shape(tuple(x.shape), name)
        return x

    def _check_shape(self, shape, name):
        expected = self.event_shape
        if len(shape) != len(expected) + 1 or any(
                s is not None and s != e for s, e in zip(shape[1:], expected)):
            raise ValueError(f"{name} must have shape [batch, {', '.join(map(str, expected))}]"
                             f" for this flow. Received: {name}.shape={shape}")

    def check_context(self, context, batch=None):
        """Validates a context for this flow; returns it as a tensor or None.

        Args:
          context: None for unconditional flows; `[K]` or `[batch, K]`.
          batch: number of rows to broadcast a `[K]` context to (then the
            result is `[batch, K]`); None keeps a `[K]` context unbatched.

        Raises:
          ValueError: a context for an unconditional flow, none for a
            conditional one, or the wrong shape.
        """
        if self.context_dim is None:
            if context is not None:
                raise ValueError("This flow is not conditional (context_dim=None) "
                                 "but received a context")
            return None
        if context is None:
            raise ValueError(f"This flow is conditional (context_dim="
                             f"{self.context_dim}) and needs a context")
        context = tf.cast(tf.convert_to_tensor(context), self.compute_dtype)
        # With no batch to broadcast to (distribution_given), a [K] context
        # stays unbatched so the distribution's sample() has no batch axis.
        if context.shape.rank == 1 and batch is not None:
            context = context[tf.newaxis]
        ranks = (2,) if batch is not None else (1, 2)
        if context.shape.rank not in ranks or context.shape[-1] not in (None, self.context_dim):
            raise ValueError(f"context must have shape [{self.context_dim}] or "
                             f"[batch, {self.context_dim}]. Received: "
                             f"context.shape={tuple(context.shape)}")
        if batch is not None:
            context = tf.broadcast_to(context, tf.stack([batch, self.context_dim]))
        return context

    # -- the four maps ----------------------------------------------------------
    @_as_graph_when_eager
    def encode_and_log_det(self, x, context=None):
        """data -> latent: `(z, log|det dz/dx|)`; one network call per layer."""
        x = self._check_x(x)
        context = self.check_context(context, tf.shape(x)[0])
        chain = self.bijector(context)
        z = chain.inverse(x)
        ldj = chain.inverse_log_det_jacobian(x, event_ndims=self.event_ndims)
        return z, tf.broadcast_to(ldj, tf.shape(x)[:1])

    @_as_graph_when_eager
    def encode(self, x, context=None):
        """data -> latent, shaped like `x`."""
        return self.encode_and_log_det(x, context)[0]

    @_as_graph_when_eager
    def decode(self, z, context=None):
        """latent -> data, the exact inverse of `encode`."""
        z = self._check_x(z, "z")
        context = self.check_context(context, tf.shape(z)[0])
        return self.bijector(context).forward(z)

    def base_log_prob(self, z):
        """Base log-density `flow.base.log_prob(z)` (plain ops by default,
        ONNX-friendly)."""
        return self.base.log_prob(z)

    @_as_graph_when_eager
    def log_prob(self, x, context=None):
        """`log p(x)` (or `log p(x | context)`), shape `[batch]`."""
        z, ldj = self.encode_and_log_det(x, context)
        return self.base_log_prob(z) + ldj

    @_as_graph_when_eager
    def sample(self, num_samples, temperature=1.0, seed=None, context=None):
        """Draws `num_samples` examples, base std scaled by `temperature`.

        Args:
          num_samples: how many.
          temperature: scales the base distribution's spread (Glow).
          seed: int for reproducible (stateless) sampling, or None.
          context: `[K]` (all draws) or `[num_samples, K]` for conditional flows.
        """
        z = self.base.sample(num_samples, temperature, seed)
        return self.decode(z, context)

    @_as_graph_when_eager
    def sample_and_log_prob(self, num_samples, seed=None, context=None):
        """Draws `num_samples` examples and their log-density, in one pass.

        `z ~ base`, `x = decode(z)`, and
        `log q(x) = base.log_prob(z) - log|det dx/dz|`: the log-det comes
        from the same forward pass as `x` (each layer's bijector computes
        both in one call and TFP's cache keeps it), so no inverse is run:
        one network call per layer for IAF, where `log_prob` of new points
        takes D. Gradients flow through `x` and `log q` (reparametrised),
        as reverse-KL training needs.

        Args:
          num_samples: how many.
          seed: int (or pair) for reproducible (stateless) sampling, or None.
          context: `[K]` (all draws) or `[num_samples, K]` for conditional flows.

        Returns:
          `(x, log_prob)`: `[num_samples, *event_shape]` and `[num_samples]`.
        """
        z = self.base.sample(num_samples, 1.0, seed)
        context = self.check_context(context, tf.shape(z)[0])
        chain = self.bijector(context)
        x = chain.forward(z)
        log_det = chain.forward_log_det_jacobian(z, event_ndims=self.event_ndims)
        return x, self.base.log_prob(z) - tf.broadcast_to(log_det, tf.shape(z)[:1])

    def impute(self, x, num_samples=100, seed=None, context=None, **kwargs):
        """Draws the NaN entries of `x` from this flow's `p(x_miss | x_obs)`.

        `[num_samples, *x.shape]` draws, observed entries unchanged; HMC over
        the missing coordinates with `log_prob` as target, an R-hat check
        over chains. See `tfflows.imputation.impute` for the method, its
        cost per row and the MCMC options (`**kwargs`).
        """
        from tfflows.imputation import impute
        return impute(self, x, num_samples=num_samples, seed=seed,
                      context=context, **kwargs)

    # -- Keras ----------------------------------------------------------------
    def compile(self, optimizer="adam", jit_compile="auto",
                steps_per_execution="auto", **kwargs):
        """`keras.Model.compile` with no loss and defaults measured on flows.

        Args:
          optimizer: as in Keras.
          jit_compile: "auto" (default): on CPU-only hosts, where Keras's
            own "auto" never uses XLA, the training step is compiled with
            XLA when a layer gains from it (`FlowLayer.xla_on_cpu`: IAF,
            splines, 1x1 convolutions, convolutional couplings) and not for
            flows of dense networks with affine or additive transformers
            (MAF, RealNVP, NICE on vectors), whose matmuls run slower in
            XLA's CPU kernels than in TensorFlow's oneDNN ones. On 2 CPU
            cores, ms per step of `fit` with / without XLA (16-D, 128x128,
            batch 512): MAF 6.0 / 4.5, IAF 25 / 26, RealNVP 9.2 / 6.2,
            NSF-AR 17.5 / 43; Glow on digits 15 / 25; RealNVP (2-D, 64x64,
            batch 256) 6.1 / 3.8. With a GPU or TPU, Keras's "auto" decides.
            True or False forces it. Off under a strategy with several
            replicas and with `run_eagerly=True`.
          steps_per_execution: "auto" (default) runs
            `AUTO_STEPS_PER_EXECUTION` batches per call of the compiled
            training function: flows on vectors are small models whose steps
            pay as much in per-call overhead as in arithmetic (20-30% faster
            on 2 CPU cores). Batch-level callbacks and the progress bar then
            update once per call. 1 under a strategy with several replicas.
          **kwargs: the rest of `keras.Model.compile` (`metrics`,
            `run_eagerly`, ...). A `loss` is refused: the negative
            log-likelihood is the loss.
        """
        if kwargs.get("loss") is not None:
            raise ValueError("Flow.compile takes no loss: a flow is trained "
                             "by maximum likelihood (its NLL is the loss)")
        # Saved as given, so a reloaded flow decides "auto" on its new host.
        requested = {"jit_compile": jit_compile,
                     "steps_per_execution": steps_per_execution}
        # Under a strategy with several replicas both stay at Keras's
        # defaults: XLA cannot reach the replicas' variables on other devices
        # and Keras's multi-step loop fails there (TF 2.21, Keras 3.15).
        single = tf.distribute.get_strategy().num_replicas_in_sync == 1
        if jit_compile == "auto":
            jit_compile = (False if kwargs.get("run_eagerly", False)
                           else xla_by_default(self.flow_layers))
        if steps_per_execution == "auto":
            steps_per_execution = AUTO_STEPS_PER_EXECUTION if single else 1
        super().compile(optimizer=optimizer, jit_compile=jit_compile,
                        steps_per_execution=steps_per_execution, **kwargs)
        self._requested_compile = requested
        # A flow is built from the start, so its optimizer can be too: a
        # compiled flow saved before training then reloads with an optimizer
        # of the same variables (no "Skipping variable loading" warning).
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def get_compile_config(self):
        """What `compile` was given (optimizer state is saved with the
        weights), so `keras.models.load_model` returns a compiled flow."""
        config = super().get_compile_config()
        if config:
            config.update(getattr(self, "_requested_compile", {}))
            for unused in ("loss", "loss_weights"):
                config.pop(unused, None)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        for unused in ("loss", "loss_weights"):  # files written before 0.2
            config.pop(unused, None)
        self.compile(**config)

    def call(self, inputs, training=None):
        x, context = split_inputs(inputs)
        return self.log_prob(x, context)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        loss = self.objective.loss(y_pred, sample_weight)
        if self.losses:
            loss = loss + tf.add_n(self.losses)
        # As Keras's own losses do: under tf.distribute the replicas' gradients
        # are summed and the logged loss is multiplied back by the replica count.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas if replicas > 1 else loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        trackers = {self.nll_tracker.name: self.nll_tracker,
                    "bits_per_dim": self.bpd_tracker}
        for name, values in self.objective.metrics(y_pred).items():
            trackers[name].update_state(values, sample_weight=sample_weight)
        return self.get_metrics_result()

    # Keras's own steps, except that the logged loss counts a batch's rows
    # by their weights (Keras counts every row): with `fit`'s filled-up
    # last batch (`_cut`) the epoch's loss stays the mean over real rows,
    # equal to its `nll`.
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(
            self.objective.prepare(data))
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight, training=True)
            self._track_loss(loss, x, sample_weight)
            if self.optimizer is not None:
                loss = self.optimizer.scale_loss(loss)
        if self.trainable_weights:
            gradients = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        else:
            warnings.warn("The model does not have any trainable weights.")
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(
            self.objective.prepare(data))
        y_pred = self(x, training=False)
        loss = self.compute_loss(x, y, y_pred, sample_weight, training=False)
        self._track_loss(loss, x, sample_weight)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _track_loss(self, loss, x, sample_weight):
        """Keras's loss tracker, updated with the batch's weight of rows."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:  # compute_loss divided it by the replica count
            loss = loss * tf.cast(replicas, loss.dtype)
        rows = (tf.shape(tf.nest.flatten(x)[0])[0] if sample_weight is None
                else tf.reduce_sum(sample_weight))
        self._loss_tracker.update_state(loss, sample_weight=rows)

    def make_train_function(self, force=False):
        super().make_train_function(force)
        return traced_once(self.train_function)

    def make_test_function(self, force=False):
        super().make_test_function(force)
        return traced_once(self.test_function)

    def make_predict_function(self, force=False):
        super().make_predict_function(force)
        return traced_once(self.predict_function)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto",
            callbacks=None, validation_split=0.0, validation_data=None,
            **kwargs):
        """`keras.Model.fit` with the data checked and actnorm initialised.

        Takes no targets. Arrays are checked for shape and NaN/Inf before
        training starts; for a `tf.data.Dataset` the element spec and the first
        batch are checked (add `keras.callbacks.TerminateOnNaN` to stop on
        a bad later batch).

        Arrays (or a dict of arrays) are shuffled anew every epoch, also after
        `keras.utils.set_random_seed`: Keras 3.15's own array path then
        repeats one permutation in every epoch (a seeded `tf.random.shuffle`
        inside its dataset restarts with each epoch's iterator), which cost
        0.8-1.3 nats of held-out NLL on 36-D and 64-D tables. The order is
        still reproducible for a given seed. `validation_split` takes the
        last rows before shuffling, as in Keras.

        Interrupted runs resume exactly: a `keras.callbacks.BackupAndRestore`
        in `callbacks` runs as `tfflows.resume.BackupAndRestore`, whose saves
        are atomic and, on arrays, record the place in the epoch, so a run
        killed mid-epoch and started again ends with the weights and logs
        of an uninterrupted run (see `tfflows.resume`).
        """
        if y is not None:
            raise ValueError("Flow.fit takes no targets (y): the negative "
                             "log-likelihood of x is the loss")
        batch_size = integer("batch_size", batch_size, optional=True)
        epochs = integer("epochs", epochs, minimum=0)
        x, validation_data = _rows_as_array(x), _rows_as_array(validation_data)
        _check_split(x, validation_split)
        first = self._check_fit_data(x, "x", batch_size)
        if validation_data is not None:
            self._check_fit_data(validation_data, "validation_data", batch_size)
        self.initialize(*first)
        from tfflows import resume

        position = None
        if _reshufflable(x, kwargs):
            if validation_split:
                x, validation_data = _split_tail(x, validation_split)
                validation_split = 0.0
            batch_size = batch_size or 32
            rows = _num_rows(x)
            position = resume.FitPosition(self, np.random.randint(0, 2**31 - 1),
                                          -(-rows // batch_size))
            # One replica: every batch one shape (see `_cut`). Under a
            # strategy with several, Keras splits each batch across them
            # and a replica may get only filling: short batches there.
            one_replica = self.distribute_strategy.num_replicas_in_sync == 1
            x = _epoch_shuffled(x, batch_size, position.variable, pad=one_replica)
            if (one_replica and _is_arrays(validation_data)
                    and kwargs.get("validation_batch_size") is None):
                validation_data = _in_order(validation_data, batch_size)
            kwargs.setdefault("validation_batch_size", batch_size)
            batch_size = None
            kwargs["shuffle"] = False  # the dataset shuffles
        callbacks = resume.with_position(callbacks, position)
        return super().fit(x, batch_size=batch_size, epochs=epochs,
                           verbose=verbose, callbacks=callbacks,
                           validation_split=validation_split,
                           validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto",
                 sample_weight=None, steps=None, callbacks=None,
                 return_dict=False, **kwargs):
        """`keras.Model.evaluate`, with arrays checked as `fit` checks them.

        Arrays run in batches of `batch_size` (Keras's 32 by default) whose
        last one is filled up with rows of weight 0, as in `fit`: one batch
        shape, so the test step is traced (and compiled by XLA) once, and
        the figures are the means over the real rows.
        """
        x = _rows_as_array(x)
        if x is not None:
            self._check_fit_data(x, "x")
        if y is None and sample_weight is None and self._fills_up(x, steps):
            x, batch_size = _in_order(x, batch_size or 32), None
        return super().evaluate(x, y, batch_size=batch_size, verbose=verbose,
                                sample_weight=sample_weight, steps=steps,
                                callbacks=callbacks, return_dict=return_dict,
                                **kwargs)

    def predict(self, x, batch_size=None, verbose="auto", steps=None,
                callbacks=None):
        """`keras.Model.predict`: the log-density of each row, `x` checked as
        `fit` checks it. Arrays run in batches of one shape, as in
        `evaluate` (the filling's outputs are dropped)."""
        x = _rows_as_array(x)
        self._check_fit_data(x, "x")
        if not self._fills_up(x, steps):
            return super().predict(x, batch_size=batch_size, verbose=verbose,
                                   steps=steps, callbacks=callbacks)
        rows = _num_rows(x)
        log_prob = super().predict(_in_order(x, batch_size or 32),
                                   verbose=verbose, callbacks=callbacks)
        return log_prob[:rows]

    def _fills_up(self, x, steps):
        """Whether `evaluate`/`predict` feed arrays `x` through `_in_order`
        (one replica: see `fit`)."""
        return (_is_arrays(x) and steps is None
                and self.distribute_strategy.num_replicas_in_sync == 1)

    def _check_fit_data(self, data, name, batch_size=None):
        """Validates fit data; returns `(x, context)` of a first batch."""
        if isinstance(data, tf.data.Dataset):
            batch = next(iter(data), None)
            if batch is None:
                raise ValueError(f"{name} is a tf.data.Dataset with no elements")
        else:
            batch = data
        if isinstance(batch, (tuple, list)):
            # (x,), (x, None) or (x, None, row_weights): inputs only.
            if len(batch) not in (1, 2, 3) or (len(batch) > 1 and batch[1] is not None):
                raise ValueError(f"{name} must hold inputs only (no targets); "
                                 f"received a tuple of {len(batch)}")
            batch = batch[0]
        x, context = split_inputs(batch)
        if (context is None) != (self.context_dim is None):
            raise ValueError(f"{name} must be a dict {{'x', 'context'}} for a "
                             "conditional flow, and plain x otherwise")
        parts = [("x", x)] + ([] if context is None else [("context", context)])
        for part_name, value in parts:
            array = np.asarray(value)
            label = name if part_name == "x" else f"{name}['context']"
            check_dtype(label, array.dtype)
            if part_name == "x":
                if (isinstance(data, tf.data.Dataset)
                        and array.ndim == len(self.event_shape)):
                    raise ValueError(f"{name} yields single examples of shape "
                                     f"{array.shape}: batch the dataset "
                                     "(dataset.batch(n)) before fit")
                self._check_shape(array.shape, label)
            if len(array) == 0:
                raise ValueError(f"{label} has no rows")
            bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
            if bad.any():
                raise ValueError(f"{label} has {int(bad.sum())} rows with NaN or Inf "
                                 f"(first at index {int(np.argmax(bad))}); clean "
                                 "them first")
            _check_in_range(label, array, self.compute_dtype)
        if self.num_bins:
            lo, hi = float(np.min(np.asarray(x))), float(np.max(np.asarray(x)))
            if lo < 0 or hi > 1:
                raise ValueError(f"{name}: image flows take pixels scaled to "
                                 f"[0, 1]; received values in [{lo:g}, {hi:g}]")
        rows = np.random.default_rng(0).permutation(len(x))[:max(batch_size or 0, 512)]
        return (np.asarray(x)[rows],
                None if context is None else np.asarray(context)[rows])

    def initialize(self, x, context=None):
        """Data-dependent initialisation (actnorm) from a batch, eagerly.

        `fit` calls it on the first batch; call it yourself to initialise
        without training. Layers already initialised (e.g. after a reload)
        are left alone, and the batch goes only as far as the last layer
        that still needs it (so later `fit` calls pay nothing here).
        """
        x = self._check_x(x)
        context = self.check_context(context, tf.shape(x)[0])
        pending = [i for i, layer in enumerate(self.flow_layers)
                   if layer.needs_initialization]
        if not pending:
            return
        h = self.objective.dequantize(x)
        for layer in self.flow_layers[:pending[-1] + 1]:
            h = layer.initialize_from(h, context)

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        # Keras 3 hides layers held in lists (`flow_layers`, a network's
        # hidden layers) from `tf.train.Checkpoint` (keras-team/keras#18398,
        # #19425), which then saves none of the flow's weights. List them
        # all, in `self.weights` order, as direct dependencies.
        children = super()._trackable_children(save_type, **kwargs)
        if save_type == "checkpoint":
            children.update({f"flow_weight_{i}": v
                             for i, v in enumerate(self.weights)})
        return children

    def get_config(self):
        if not isinstance(self.base, StandardNormal):
            raise ValueError("A Flow with a custom base_distribution cannot be "
                             "serialized; only the default standard normal is")
        return {**super().get_config(),
                "layers": [keras.saving.serialize_keras_object(l)
                           for l in self.flow_layers],
                "event_shape": list(self.event_shape),
                "context_dim": self.context_dim, "num_bins": self.num_bins}
