"""MADE: a masked dense network whose outputs are autoregressive in its inputs."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfflows._checks import draw_seed, integer, widths

__all__ = ["MADE"]

_ORDERS = ("natural", "reversed", "random")
_HIDDEN_DEGREES = ("equal", "random")


def _make_input_order(input_order, event_size, rng):
    """Returns the degree (1..D) of each input as a tuple of Python ints.

    `input_order` is "natural" (1..D), "reversed" (D..1), "random" (a
    permutation drawn from the numpy Generator `rng`) or an explicit
    permutation of 1..D.
    """
    if isinstance(input_order, str):
        if input_order not in _ORDERS:
            raise ValueError(f"input_order must be one of {_ORDERS} or a permutation of "
                             f"1..{event_size}. Received: input_order={input_order!r}")
        order = np.arange(1, event_size + 1)
        if input_order == "reversed":
            order = order[::-1]
        elif input_order == "random":
            order = rng.permutation(order)
        return tuple(int(d) for d in order)
    try:
        order = tuple(int(d) for d in input_order)
        valid = (sorted(order) == list(range(1, event_size + 1))
                 and all(d == e for d, e in zip(order, input_order)))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"input_order must be one of {_ORDERS} or a permutation of "
                         f"1..{event_size}. Received: input_order={input_order!r}")
    return order


def _make_hidden_degrees(input_degrees, hidden_units, hidden_degrees, rng):
    """Returns one int array of degrees per hidden layer (as TFP's `_create_degrees`).

    A unit's degree is the largest input degree it may see. "equal" spreads the
    degrees of each layer evenly over [1, D-1]; "random" draws them uniformly
    from [min degree of the previous layer, D-1] with the numpy Generator `rng`.
    For D = 1 every hidden degree is 0: hidden units see no input at all.
    """
    max_degree = len(input_degrees) - 1
    degrees, previous = [], np.asarray(input_degrees)
    for units in hidden_units:
        low = min(int(previous.min()), max_degree)
        if hidden_degrees == "random":
            layer = rng.integers(low, max_degree + 1, size=units)
        else:
            layer = np.maximum(low, np.ceil(
                np.arange(1, units + 1) * max_degree / (units + 1)).astype(np.int64))
        degrees.append(layer.astype(np.int64))
        previous = layer
    return degrees


def _make_masks(input_degrees, hidden_degrees, num_params, param_major=True):
    """Returns the 0/1 float32 masks, one `[fan_in, fan_out]` array per layer.

    A hidden unit of degree m_k connects to a unit of the layer below of degree
    m_{k-1} iff m_k >= m_{k-1}. The output column of parameter p of input d
    (degree deg_d), `p * D + d` if `param_major` else `d * num_params + p`,
    connects to a last-layer unit iff deg_d > m_L. Hence output d depends
    only on inputs of strictly smaller degree.
    """
    masks, previous = [], np.asarray(input_degrees)
    for layer in hidden_degrees:
        masks.append((layer[None, :] >= previous[:, None]).astype(np.float32))
        previous = layer
    degrees = np.asarray(input_degrees)
    out = (np.tile(degrees, num_params) if param_major
           else np.repeat(degrees, num_params))
    masks.append((out[None, :] > previous[:, None]).astype(np.float32))
    return masks


@keras.saving.register_keras_serializable(package="tfflows")
class MADE(keras.layers.Layer):
    """Masked Autoencoder for Distribution Estimation (MADE).

    A dense network whose dense kernels are multiplied by fixed binary masks so
    that the parameters produced for input dimension `d` depend only on inputs
    with a strictly smaller degree (position in `input_order`): the Jacobian of
    output `d` w.r.t. input `j` is exactly zero unless `order[j] < order[d]`.
    The output layer is zero-initialised by default
    (`output_kernel_initializer`), so a flow built on a fresh MADE is the
    identity. An optional `context` enters, unmasked, the first hidden
    pre-activation and (through a zero-initialised projection) the output, so
    that even the first input in the order is conditioned on it, as with TFP's
    default `conditional_input_layers="all_layers"`.

    References:
        Germain, Gregor, Murray, Larochelle (2015). MADE: Masked Autoencoder
        for Distribution Estimation. ICML. https://arxiv.org/abs/1502.03509

    Args:
        event_size: int >= 1, the number of input dimensions D.
        num_params: int >= 1, parameters produced per input dimension.
        hidden_units: non-empty sequence of positive ints, the hidden widths.
        input_order: "natural", "reversed", "random" (drawn from `seed`) or an
            explicit permutation of 1..D giving each input's degree.
        hidden_degrees: "equal" (evenly spread over [1, D-1]) or "random".
        context_dim: None, or the size of the conditioning input.
        activation: hidden activation, anything `keras.activations.get` takes.
        seed: None or int >= 0 for "random" orders/degrees. If None and
            something is random, a seed is drawn once and kept in the config.
        kernel_initializer: initializer of the hidden and context kernels.
        output_kernel_initializer: initializer of the output kernel (default
            "zeros"; biases are always zero).
        param_major: the output kernel's column order, parameter by
            parameter (`p * D + d`, the default) or input by input
            (`d * num_params + p`: MADEs saved before this option existed,
            whose configs load with False). The output shape is the same;
            parameter-major keeps each parameter's D values contiguous,
            which transformers with many parameters (splines) read faster:
            an NSF-AR trains about 1.3x faster.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`...).

    Input shape:
        `x`: `(..., event_size)`; `context` (if `context_dim`):
        `(..., context_dim)`, its batch dims broadcasting against `x`'s.

    Output shape:
        `(..., event_size, num_params)`.

    >>> made = MADE(event_size=3, num_params=2, hidden_units=(8,))
    >>> made(np.zeros((4, 3), "float32")).shape
    TensorShape([4, 3, 2])
    """

    def __init__(self, event_size, num_params, hidden_units=(64, 64),
                 input_order="natural", hidden_degrees="equal", context_dim=None,
                 activation="relu", seed=None, kernel_initializer="glorot_uniform",
                 output_kernel_initializer="zeros", param_major=True, **kwargs):
        super().__init__(**kwargs)
        self.event_size = integer("event_size", event_size)
        self.num_params = integer("num_params", num_params)
        self.hidden_units = widths("hidden_units", hidden_units)
        if not isinstance(hidden_degrees, str) or hidden_degrees not in _HIDDEN_DEGREES:
            raise ValueError(f"hidden_degrees must be one of {_HIDDEN_DEGREES}. "
                             f"Received: hidden_degrees={hidden_degrees!r}")
        self.hidden_degrees = hidden_degrees
        self.context_dim = integer("context_dim", context_dim, optional=True)
        seed = integer("seed", seed, minimum=0, optional=True)
        if seed is None and (hidden_degrees == "random" or (
                isinstance(input_order, str) and input_order == "random")):
            seed = draw_seed()
        self.seed = seed
        order_rng, hidden_rng = (np.random.default_rng(s)
                                 for s in np.random.SeedSequence(seed or 0).spawn(2))
        self.input_order = _make_input_order(input_order, self.event_size, order_rng)
        self._degrees = _make_hidden_degrees(
            self.input_order, self.hidden_units, hidden_degrees, hidden_rng)
        self.param_major = bool(param_major)
        self._masks = _make_masks(self.input_order, self._degrees, self.num_params,
                                  self.param_major)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_kernel_initializer = keras.initializers.get(
            output_kernel_initializer)

    @property
    def masks(self):
        """The list of 0/1 numpy masks, `[fan_in, fan_out]`, input to output."""
        return [m.copy() for m in self._masks]

    @property
    def degrees(self):
        """The degrees of the inputs, then of each hidden layer (numpy arrays)."""
        return [np.asarray(self.input_order)] + [d.copy() for d in self._degrees]

    def _check_last_dim(self, shape, name, expected):
        if shape is not None and len(shape) >= 1 and shape[-1] is not None \
                and shape[-1] == expected:
            return
        raise ValueError(f"Expected `{name}` of shape (..., {expected}) for MADE "
                         f"'{self.name}'. Received: {name}.shape={tuple(shape or ())}")

    def build(self, x_shape, context_shape=None):
        self._check_last_dim(x_shape, "x", self.event_size)
        if context_shape is not None and self.context_dim is not None:
            self._check_last_dim(context_shape, "context", self.context_dim)
        self._kernels, self._biases = [], []
        last = len(self._masks) - 1
        for k, mask in enumerate(self._masks):
            init = (self.output_kernel_initializer if k == last
                    else self.kernel_initializer)
            self._kernels.append(self.add_weight(shape=mask.shape, initializer=init,
                                                 name=f"kernel_{k}"))
            self._biases.append(self.add_weight(shape=(mask.shape[1],),
                                                initializer="zeros", name=f"bias_{k}"))
        self._context_kernels = []
        if self.context_dim is not None:  # into the first hidden layer and the output
            for k, units in ((0, self.hidden_units[0]), (last, self._masks[-1].shape[1])):
                self._context_kernels.append(self.add_weight(
                    shape=(self.context_dim, units), name=f"context_kernel_{k}",
                    initializer="zeros" if k == last else self.kernel_initializer))

    def call(self, x, context=None):
        h = self._output(x, context)
        batch_shape = tuple(ops.shape(h)[:-1])
        if self.param_major:
            h = ops.reshape(h, batch_shape + (self.num_params, self.event_size))
            return ops.swapaxes(h, -1, -2)
        return ops.reshape(h, batch_shape + (self.event_size, self.num_params))

    def planes(self, x, context=None):
        """The output as `num_params` tensors `(..., event_size)`, one per
        parameter: `call(x, context)[..., p]` for each `p`, without the
        transpose that stacking them on the last axis costs (a parameter-
        major output splits in place). What the flow layers hand their
        transformer (`tfflows.bijectors.transformers.Transformer`): a MAF
        trains about 1.3x faster than through the stacked output. The layer
        must be built."""
        if not self.built:
            raise ValueError(f"MADE '{self.name}' is not built: call it once, or "
                             "build it, before asking for its planes.")
        h = self._output(ops.convert_to_tensor(x), context)
        if self.param_major:
            return tuple(ops.split(h, self.num_params, axis=-1))
        h = ops.reshape(h, tuple(ops.shape(h)[:-1]) + (self.event_size, self.num_params))
        return tuple(ops.unstack(h, self.num_params, axis=-1))

    def _check_context(self, context):
        if self.context_dim is None and context is not None:
            raise ValueError(f"MADE '{self.name}' was built with context_dim=None but "
                             "received a `context`. Set context_dim to condition it.")
        if self.context_dim is not None and context is None:
            raise ValueError(f"MADE '{self.name}' has context_dim={self.context_dim} and "
                             "requires `context`, but call() received context=None.")

    def _output(self, x, context):
        """The output layer's `[..., num_params * event_size]`, in the
        column order of `param_major`."""
        self._check_context(context)
        self._check_last_dim(x.shape, "x", self.event_size)
        h = ops.cast(x, self.compute_dtype)
        last = len(self._masks) - 1
        for k, kernel in enumerate(self._masked_kernels()):
            h = ops.matmul(h, kernel) + self._biases[k]
            if context is not None and k in (0, last):
                self._check_last_dim(context.shape, "context", self.context_dim)
                context = ops.cast(context, self.compute_dtype)
                h = h + ops.matmul(context, self._context_kernels[min(k, 1)])
            if k < last:
                h = self.activation(h)
        return h

    def _masked_kernels(self):
        """Each layer's kernel times its 0/1 mask, input to output."""
        kernels = [ops.convert_to_tensor(k) for k in self._kernels]
        return [k * ops.cast(m, k.dtype) for k, m in zip(kernels, self._masks)]

    @property
    def supports_solve(self):
        """Whether `solve` applies: every layer's hidden degrees are sorted
        (true for "equal" hidden degrees, the default)."""
        return all(np.all(np.diff(d) >= 0) for d in self._degrees)

    def solve(self, z, transform, context=None, unroll=True):
        """Solves `x` from `z` where `x_d = transform(z_d, theta_d(x))` and
        `theta = self(x, context)`: the sequential direction of a MAF.

        Inputs are filled in degree order, one per step. With hidden degrees
        sorted, the units of degree `k` of every layer are a block, and the
        parameters of the input of degree `k + 1` see only blocks of degree
        <= `k`; so step `k` computes only the blocks of degree `k`, and the
        D steps together do the matmul arithmetic of about one pass of the
        network, not D. The work runs feature-major (`[units, batch]`): a
        block is a contiguous slice, and each layer's pre-activations of the
        units still to come are a running sum. Every block has a static
        shape (XLA and ONNX friendly). Masked kernels are computed once per
        call.

        `unroll=True` writes the D steps into the graph, the running sums
        shrinking as blocks are consumed: the fastest to run, but the graph
        (and its tracing, compiling and export) grows with D times the
        transform's size. `unroll=False` runs them in a `tf.while_loop`
        over one copy of the step: each layer's blocks padded to one size
        (the most units of one degree), sums kept whole. A graph of one
        step, about 1.5-2x the unrolled run time (16-D, 10,000 rows).

        Args:
            z: `[..., event_size]`.
            transform: callable `(z_d, params) -> (x_d, log_det_d)`, where
                `z_d` is the entries `[...]` of one input, `params` a tuple
                of `num_params` tensors broadcasting against it (a
                transformer's planes) and `log_det_d` is None or
                `log|dx_d/dz_d|`.
            context: as in `call`.
            unroll: steps written out (True) or looped (False).

        Returns:
            `(x, log_det)`: `x` shaped like `z`, and the sum over inputs of
            `log_det_d`, `[...]`, or None if `transform` returns None.
        """
        if not self.built:
            raise ValueError(f"MADE '{self.name}' is not built: call it once, or "
                             "build it, before solving with it.")
        if not self.supports_solve:
            raise ValueError(f"MADE '{self.name}' has unsorted hidden degrees "
                             "(hidden_degrees='random'): solve does not apply")
        z = ops.convert_to_tensor(z)
        self._check_last_dim(z.shape, "z", self.event_size)
        self._check_context(context)
        dtype, d, p = self.compute_dtype, self.event_size, self.num_params
        last = len(self._masks) - 1
        batch_shape = tuple(ops.shape(z)[:-1])

        def feature_major(t):  # [..., n] -> [n, M], batch dims flattened
            return ops.transpose(ops.reshape(t, (-1, t.shape[-1])))

        columns = np.argsort(self.input_order)  # input index of degree 1, 2, ...
        kernels = [ops.transpose(ops.cast(k, dtype))  # [out, in]
                   for k in self._masked_kernels()]
        biases = [ops.cast(b, dtype)[:, None] for b in self._biases]
        # Output rows degree by degree: the num_params rows of degree k + 1
        # are rows k * p .. (k + 1) * p.
        out_rows = np.asarray([p_ * d + c if self.param_major else c * p + p_
                               for c in columns for p_ in range(p)])
        kernels[0] = ops.take(kernels[0], columns, axis=1)  # inputs in degree order
        kernels[last] = ops.take(kernels[last], out_rows, axis=0)
        biases[last] = ops.take(biases[last], out_rows, axis=0)
        if context is not None:
            self._check_last_dim(context.shape, "context", self.context_dim)
            context = ops.cast(context, dtype)
            into = []
            for k, kernel in enumerate(self._context_kernels):
                proj = ops.matmul(context, ops.cast(kernel, dtype))
                proj = ops.broadcast_to(proj, batch_shape + (kernel.shape[1],))
                into.append(feature_major(proj))
            biases[0] = biases[0] + into[0]
            biases[last] = biases[last] + ops.take(into[1], out_rows, axis=0)
        # The last hidden layer's activations are kept (and each step's
        # parameters computed from them) where the output is wider than it;
        # otherwise the output is a running sum like the hidden layers.
        keep_last = d * p > self.hidden_units[-1]
        z_rows = feature_major(z)
        solve_steps = self._unrolled if unroll else self._looped
        values, log_det = solve_steps(z_rows, columns, kernels, biases, keep_last,
                                      transform)
        x = ops.reshape(ops.transpose(values), ops.shape(z))
        if log_det is not None:
            log_det = ops.reshape(ops.broadcast_to(log_det, ops.shape(z_rows[0])),
                                  batch_shape)
        return x, log_det

    def _unrolled(self, z_rows, columns, kernels, biases, keep_last, transform):
        """`solve`'s D steps written out: `(x rows [D, M], log_det)`."""
        dtype, d, p = self.compute_dtype, self.event_size, self.num_params
        last = len(self._masks) - 1
        # Units of each hidden layer with degree <= k: a prefix of the layer.
        prefixes = [[0] + [int(u) for u in np.searchsorted(
            degrees, np.arange(d), side="right")] for degrees in self._degrees]
        # The pre-activations of the units not yet computed, for hidden
        # layers 1.. and, unless its activations are kept, the output.
        pending = [None] + biases[1:]
        kept = []  # the last hidden layer's activations so far
        z_rows = ops.unstack(z_rows, d, axis=0)
        values, x_rows, log_det = [], [], None  # x_rows: for the network
        for step in range(d):
            for k in range(last):  # each layer's units of degree `step`
                start, stop = prefixes[k][step], prefixes[k][step + 1]
                if stop == start:
                    continue
                if k == 0:
                    pre = biases[0][start:stop]
                    if step > 0:
                        pre = pre + ops.matmul(kernels[0][start:stop, :step],
                                               ops.concatenate(x_rows, axis=0))
                else:
                    pre, pending[k] = pending[k][:stop - start], pending[k][stop - start:]
                new, above = self.activation(pre), k + 1
                if above == last and keep_last:
                    kept.append(new)
                elif pending[above].shape[0] != 0:
                    done = prefixes[above][step] if above < last else step * p
                    pending[above] = pending[above] + ops.matmul(
                        kernels[above][done:, start:stop], new)
            if keep_last:
                if len(kept) > 1:
                    kept[:] = [ops.concatenate(kept, axis=0)]
                rows = prefixes[last - 1][step + 1]
                params = biases[last][step * p:(step + 1) * p]
                if rows:
                    params = params + ops.matmul(
                        kernels[last][step * p:(step + 1) * p, :rows], kept[0])
            else:
                params, pending[last] = pending[last][:p], pending[last][p:]
            z_d = z_rows[columns[step]]
            value, value_log_det = transform(
                z_d, tuple(ops.cast(params[i], z_d.dtype) for i in range(p)))
            values.append(value[None])
            x_rows.append(ops.cast(value, dtype)[None])
            if value_log_det is not None:
                log_det = value_log_det if log_det is None else log_det + value_log_det
        return ops.concatenate([values[step] for step in np.argsort(columns)],
                               axis=0), log_det

    def _looped(self, z_rows, columns, kernels, biases, keep_last, transform):
        """`solve`'s D steps as a `tf.while_loop` of one step:
        `(x rows [D, M], log_det)`."""
        dtype, d, p = self.compute_dtype, self.event_size, self.num_params
        last = len(self._masks) - 1
        # Each hidden layer's units in D blocks of one size `b`, block k
        # holding the units of degree k and zero units (no weights, no
        # bias: they add nothing above) after them; step k slices block k.
        sizes = []
        for k, degrees in enumerate(self._degrees):
            counts = np.bincount(degrees, minlength=d)[:d]
            size = max(int(counts.max()), 1)
            slots = np.full((d, size), len(degrees))  # len(degrees): the zero unit
            for degree, first in enumerate(np.cumsum(counts) - counts):
                slots[degree, :counts[degree]] = first + np.arange(counts[degree])
            slots = slots.reshape(-1)
            kernels[k] = ops.take(ops.pad(kernels[k], [[0, 1], [0, 0]]), slots, axis=0)
            biases[k] = ops.take(ops.pad(biases[k], [[0, 1], [0, 0]]), slots, axis=0)
            kernels[k + 1] = ops.take(ops.pad(kernels[k + 1], [[0, 0], [0, 1]]),
                                      slots, axis=1)
            sizes.append(size)
        z_rows = ops.take(z_rows, columns, axis=0)  # degree order
        rows = ops.shape(z_rows)[1]
        summed = range(1, last if keep_last else last + 1)
        start = (
            ops.zeros([d, rows], z_rows.dtype),  # x so far
            ops.zeros([rows], z_rows.dtype),  # log-det so far
            tuple(ops.broadcast_to(biases[k], [ops.shape(biases[k])[0], rows])
                  for k in summed),  # running sums
            ops.zeros([d * sizes[-1] if keep_last else 0, rows], dtype),  # kept
        )
        returns_log_det = []

        def step(k, values, log_det, pending, kept):
            pending, solved = list(pending), ops.cast(values, dtype)
            for layer in range(last):
                size = sizes[layer]
                if layer == 0:
                    pre = (ops.slice(biases[0], [k * size, 0], [size, -1])
                           + ops.matmul(ops.slice(kernels[0], [k * size, 0], [size, d]),
                                        solved))
                else:
                    pre = ops.slice(pending[layer - 1], [k * size, 0], [size, -1])
                new = self.activation(pre)
                if layer + 1 == last and keep_last:
                    kept = tf.tensor_scatter_nd_update(
                        kept, (k * size + ops.arange(size))[:, None], new)
                else:
                    pending[layer] = pending[layer] + ops.matmul(
                        ops.slice(kernels[layer + 1], [0, k * size], [-1, size]), new)
            if keep_last:
                params = (ops.slice(biases[last], [k * p, 0], [p, -1])
                          + ops.matmul(ops.slice(kernels[last], [k * p, 0], [p, -1]),
                                       kept))
            else:
                params = ops.slice(pending[-1], [k * p, 0], [p, -1])
            value, value_log_det = transform(
                ops.take(z_rows, k, axis=0),
                tuple(ops.cast(params[i], z_rows.dtype) for i in range(p)))
            one_hot = ops.one_hot(k, d, dtype=z_rows.dtype)[:, None]
            values = values + one_hot * value[None]
            if value_log_det is not None:
                returns_log_det.append(True)
                log_det = log_det + value_log_det
            return k + 1, values, log_det, tuple(pending), kept

        _, values, log_det, _, _ = tf.while_loop(
            lambda k, *_: k < d, step, (0,) + start, maximum_iterations=d)
        return (ops.take(values, np.argsort(columns), axis=0),
                log_det if returns_log_det else None)

    def get_config(self):
        return {**super().get_config(),
                "event_size": self.event_size, "num_params": self.num_params,
                "hidden_units": list(self.hidden_units),
                "input_order": list(self.input_order),
                "hidden_degrees": self.hidden_degrees, "context_dim": self.context_dim,
                "activation": keras.activations.serialize(self.activation),
                "seed": self.seed,
                "kernel_initializer":
                    keras.initializers.serialize(self.kernel_initializer),
                "output_kernel_initializer":
                    keras.initializers.serialize(self.output_kernel_initializer),
                "param_major": self.param_major}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("param_major", False)  # saved before the option
        return cls(**config)
