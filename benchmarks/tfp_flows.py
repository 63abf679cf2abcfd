"""The same architectures built from TFP's own bijectors, for comparison.

`mirror(flow)` walks a tfflows `Flow` layer by layer and builds the TFP
counterpart of each: `tfb.MaskedAutoregressiveFlow` over
`tfb.AutoregressiveNetwork` for a MAF layer (wrapped in `tfb.Invert` for IAF),
`tfb.RealNVP` over a dense network for a half-mask coupling, and
`tfb.Permute` for a permutation, with the same widths and the same order
(a MADE's input order included).
Spline layers (NSF) become TFP's own `tfb.RationalQuadraticSpline` built
by the same `bijector_fn` route TFP documents for neural spline flows, with
the knots parametrised as tfflows does (same softmax widths and heights,
same softplus derivatives), so only the spline arithmetic is TFP's. TFP's
networks are `tf_keras` layers, as TFP requires.
"""

import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfflows import layers as L
from tfflows._tracing import traced_once
from tfflows.bijectors import uniform_dequantize

tfb, tfd = tfp.bijectors, tfp.distributions

__all__ = ["TFPFlow", "copy_weights", "masked_dense_layers", "mirror"]


class TFPFlow(tf.Module):
    """A TFP `TransformedDistribution` and the variables it trains."""

    def __init__(self, bijectors, event_shape, networks):
        super().__init__()
        self.networks = networks
        self.distribution = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(0.0, 1.0), sample_shape=event_shape),
            tfb.Chain(bijectors))
        for net in networks:  # create the variables
            net(tf.zeros([1, net.input_size]))
        # A graph, as TFP users evaluate (eager TFP splines on 64-D data
        # took longer than the training epochs they validate).
        self._log_prob = tf.function(self.distribution.log_prob,
                                     reduce_retracing=True)

    def log_prob(self, x):
        return self._log_prob(x)

    def sample(self, n, seed=None):
        return self.distribution.sample(n, seed=seed)

    def trainer(self, x, batch_size, learning_rate=1e-3, num_bins=None, seed=0):
        """Maximum likelihood the way TFP's examples train: a `tf.function`
        step with a `tf_keras` Adam over shuffled `tf.data` batches
        (uniformly dequantized when `num_bins` is set, as `Flow.fit` does).
        Returns `run_epoch(steps=None)`, which trains one epoch (only its
        first `steps` steps if given) and returns its wall time in seconds,
        ending with the last loss copied out."""
        optimizer = tf_keras.optimizers.Adam(learning_rate)
        variables = self.trainable_variables

        @tf.function
        def step(batch):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(self.log_prob(batch))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        traced_once(step)  # one step per flow (see tfflows._tracing)
        data = tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=seed)
        data = data.batch(batch_size)
        if num_bins:
            data = data.map(lambda b: uniform_dequantize(b, num_bins))

        def run_epoch(steps=None):
            start = time.perf_counter()
            for batch in data if steps is None else data.take(steps):
                loss = step(batch)
            loss.numpy()
            return time.perf_counter() - start

        return run_epoch


class _Dense(tf_keras.Sequential):
    """RealNVP's conditioner: `hidden_units` relu layers, then `num_params`
    outputs per transformed entry, parameter-major (shift block, then
    log-scale block), as tfflows' coupling networks lay them out."""

    def __init__(self, input_size, output_size, hidden_units, num_params=2):
        super().__init__(
            [tf_keras.layers.Dense(u, activation="relu") for u in hidden_units]
            + [tf_keras.layers.Dense(num_params * output_size,
                                     kernel_initializer="zeros")])
        self.input_size, self.num_params = input_size, num_params

    def shift_and_log_scale(self, x, output_units, **kwargs):
        return tuple(tf.split(self(x), 2, axis=-1))

    def params(self, x, output_units):
        """`[..., output_units, num_params]`."""
        out = self(x)
        out = tf.reshape(out, tf.concat(
            [tf.shape(out)[:-1], [self.num_params, output_units]], 0))
        return tf.linalg.matrix_transpose(out)


class _MADE(tfb.AutoregressiveNetwork):
    def __init__(self, event_dim, hidden_units, params=2, input_order="left-to-right"):
        super().__init__(params=params, event_shape=[event_dim],
                         hidden_units=list(hidden_units), activation="relu",
                         input_order=input_order, kernel_initializer="glorot_uniform")
        self.input_size = event_dim


def _spline(transformer, params):
    """TFP's `RationalQuadraticSpline` for tfflows' raw parameters `[..., 3K-1]`."""
    bins, bound = transformer.bins, transformer.tail_bound

    def sizes(raw, minimum):
        return 2 * bound * (minimum + (1 - bins * minimum) * tf.nn.softmax(raw))

    offset = np.log(np.expm1(1 - transformer.min_derivative))
    return tfb.RationalQuadraticSpline(
        bin_widths=sizes(params[..., :bins], transformer.min_bin_width),
        bin_heights=sizes(params[..., bins:2 * bins], transformer.min_bin_height),
        knot_slopes=transformer.min_derivative
        + tf.math.softplus(params[..., 2 * bins:] + offset),
        range_min=-bound)


def _affine(transformer, params):
    """The affine map (latent -> data) of tfflows' raw `[t, s_raw]`."""
    shift, log_scale = transformer.shift_and_log_scale(params)
    if transformer.shift == "latent":  # y = (x - t) exp(s)
        return tfb.Chain([tfb.Scale(log_scale=log_scale), tfb.Shift(-shift)])
    return tfb.Chain([tfb.Shift(shift), tfb.Scale(log_scale=log_scale)])


def _elementwise(transformer, exact):
    """`params [..., P] -> TFP bijector` for a transformer TFP cannot take
    as `shift_and_log_scale_fn`, or None for TFP's own affine form (the
    shift in the data), which stands in for either affine form unless
    `exact`."""
    if transformer.name == "spline":
        return lambda params: _spline(transformer, params)
    if transformer.name == "affine" and transformer.shift == "latent" and exact:
        return lambda params: _affine(transformer, params)
    if transformer.name != "affine":
        raise ValueError(f"No TFP counterpart for the {transformer.name} transformer")
    return None


def _logit(alpha):
    """`tfflows.bijectors.Logit` from TFP parts: x = (sigmoid(z) - a) / (1 - 2a)."""
    return tfb.Chain([tfb.Scale(1.0 / (1.0 - 2.0 * alpha)), tfb.Shift(-alpha),
                      tfb.Sigmoid()])


def _tfp_order(input_order):
    """A MADE's input degrees as TFP's `input_order`."""
    order = list(input_order)
    if order == sorted(order):
        return "left-to-right"
    if order == sorted(order, reverse=True):
        return "right-to-left"
    return np.asarray(order)


def mirror(flow, exact=False):
    """The TFP counterpart of a vector `Flow` made of logit, MAF/IAF,
    half-coupling and permutation layers (no actnorm: TFP has none).

    Affine layers become TFP's own `shift_and_log_scale_fn` form (the shift
    in the data), what a TFP user trains, whichever form the tfflows layer
    uses; `exact=True` builds tfflows' form instead, so that `copy_weights`
    gives the same density."""
    (event_dim,) = flow.event_shape
    bijectors, networks = [], []
    for layer in flow.flow_layers:
        if isinstance(layer, L.Logit):
            bijectors.append(_logit(layer.alpha))
        elif isinstance(layer, L.MaskedAutoregressive):
            transformer = layer.transformer
            made = _MADE(event_dim, layer.hidden_units, transformer.num_params,
                         _tfp_order(layer.made.input_order))
            elementwise = _elementwise(transformer, exact)
            maf = (tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made)
                   if elementwise is None else tfb.MaskedAutoregressiveFlow(
                       bijector_fn=lambda x, made=made, fn=elementwise: fn(made(x))))
            bijectors.append(tfb.Invert(maf) if layer.iaf else maf)
            networks.append(made)
        elif isinstance(layer, L.Coupling) and layer.mask == "half":
            transformer = layer.transformer
            half = event_dim // 2
            net = _Dense(half, event_dim - half, layer.hidden_units,
                         transformer.num_params)
            elementwise = _elementwise(transformer, exact)
            bijectors.append(
                tfb.RealNVP(num_masked=-half if layer.flip else half,
                            shift_and_log_scale_fn=net.shift_and_log_scale)
                if elementwise is None else
                tfb.RealNVP(num_masked=-half if layer.flip else half,
                            bijector_fn=lambda x, units, net=net, fn=elementwise:
                            fn(net.params(x, units))))
            networks.append(net)
        elif isinstance(layer, L.Permutation):
            permutation = np.asarray(layer.permutation.numpy())
            bijectors.append(tfb.Invert(tfb.Permute(permutation)))
        else:
            raise ValueError(f"No TFP counterpart for {type(layer).__name__}")
    return TFPFlow(bijectors, flow.event_shape, networks)


def _network_weights(layer):
    """A tfflows layer's network weights as arrays, MADE kernels masked."""
    if isinstance(layer, L.MaskedAutoregressive):
        weights = [np.asarray(w) for kernel, bias in masked_dense_layers(layer.made)
                   for w in (kernel, bias)]
        made = layer.made
        if made.param_major:  # TFP's columns go input by input: d * P + p
            order = (np.arange(made.num_params)[None, :] * made.event_size
                     + np.arange(made.event_size)[:, None]).ravel()
            weights[-2], weights[-1] = weights[-2][:, order], weights[-1][order]
        return weights
    return [w.numpy() for w in layer.network.weights]


def masked_dense_layers(made):
    """A MADE's `(kernel * mask, bias)` pairs, input to output, as tensors."""
    return list(zip(made._masked_kernels(), made._biases))


def copy_weights(flow, reference):
    """Loads the tfflows flow's network weights into its TFP mirror.

    Both store kernel, bias per dense layer in order; a parameter-major
    MADE's output columns (`p * D + d`) are reordered to TFP's `d * P + p`
    (coupling nets: one block per parameter in both), so after the copy the
    two compute the same density, up
    to tfflows' soft clamp of the log-scale (`5 tanh(s / 5)`) for TFP's
    own affine form.
    """
    layers = [l for l in flow.flow_layers
              if isinstance(l, (L.MaskedAutoregressive, L.Coupling))]
    for layer, network in zip(layers, reference.networks, strict=True):
        for variable, value in zip(network.weights, _network_weights(layer),
                                   strict=True):
            variable.assign(value)
