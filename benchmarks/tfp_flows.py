"""The same architectures built from TFP's own bijectors, for comparison.

`mirror(flow)` walks a tfflows `Flow` layer by layer and builds the TFP
counterpart of each: `tfb.MaskedAutoregressiveFlow` over
`tfb.AutoregressiveNetwork` for a MAF layer (wrapped in `tfb.Invert` for IAF),
`tfb.RealNVP` over a dense network for a half-mask affine coupling, and
`tfb.Permute` for a permutation, with the same widths and the same order.
TFP's networks are `tf_keras` layers, as TFP requires.
"""

import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfflows import layers as L
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

    def log_prob(self, x):
        return self.distribution.log_prob(x)

    def sample(self, n, seed=None):
        return self.distribution.sample(n, seed=seed)

    def trainer(self, x, batch_size, learning_rate=1e-3, num_bins=None, seed=0):
        """Maximum likelihood the way TFP's examples train: a `tf.function`
        step with a `tf_keras` Adam over shuffled `tf.data` batches
        (uniformly dequantized when `num_bins` is set, as `Flow.fit` does).
        Returns `run_epoch()`, which trains one epoch and returns its wall
        time in seconds."""
        optimizer = tf_keras.optimizers.Adam(learning_rate)
        variables = self.trainable_variables

        @tf.function
        def step(batch):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(self.log_prob(batch))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        data = tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=seed)
        data = data.batch(batch_size)
        if num_bins:
            data = data.map(lambda b: uniform_dequantize(b, num_bins))

        def run_epoch():
            start = time.perf_counter()
            for batch in data:
                loss = step(batch)
            loss.numpy()
            return time.perf_counter() - start

        return run_epoch


class _Dense(tf_keras.Sequential):
    """RealNVP's conditioner: `hidden_units` relu layers, then shift and log-scale."""

    def __init__(self, input_size, output_size, hidden_units):
        super().__init__(
            [tf_keras.layers.Dense(u, activation="relu") for u in hidden_units]
            + [tf_keras.layers.Dense(2 * output_size, kernel_initializer="zeros")])
        self.input_size = input_size

    def shift_and_log_scale(self, x, output_units, **kwargs):
        return tuple(tf.split(self(x), 2, axis=-1))


class _MADE(tfb.AutoregressiveNetwork):
    def __init__(self, event_dim, hidden_units):
        super().__init__(params=2, event_shape=[event_dim],
                         hidden_units=list(hidden_units), activation="relu",
                         kernel_initializer="glorot_uniform")
        self.input_size = event_dim


def _logit(alpha):
    """`tfflows.bijectors.Logit` from TFP parts: x = (sigmoid(z) - a) / (1 - 2a)."""
    return tfb.Chain([tfb.Scale(1.0 / (1.0 - 2.0 * alpha)), tfb.Shift(-alpha),
                      tfb.Sigmoid()])


def mirror(flow):
    """The TFP counterpart of a vector `Flow` made of logit, MAF/IAF,
    half-coupling and permutation layers (no actnorm: TFP has none)."""
    (event_dim,) = flow.event_shape
    bijectors, networks = [], []
    for layer in flow.flow_layers:
        if isinstance(layer, L.Logit):
            bijectors.append(_logit(layer.alpha))
        elif isinstance(layer, L.MaskedAutoregressive):
            made = _MADE(event_dim, layer.hidden_units)
            maf = tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made)
            bijectors.append(tfb.Invert(maf) if layer.iaf else maf)
            networks.append(made)
        elif isinstance(layer, L.AffineCoupling) and layer.mask == "half":
            half = event_dim // 2
            net = _Dense(half, event_dim - half, layer.hidden_units)
            bijectors.append(tfb.RealNVP(
                num_masked=-half if layer.flip else half,
                shift_and_log_scale_fn=net.shift_and_log_scale))
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
        return [np.asarray(w) for kernel, bias in masked_dense_layers(layer.made)
                for w in (kernel, bias)]
    return [w.numpy() for w in layer.network.weights]


def masked_dense_layers(made):
    """A MADE's `(kernel * mask, bias)` pairs, input to output, as tensors."""
    return list(zip(made._masked_kernels(), made._biases))


def copy_weights(flow, reference):
    """Loads the tfflows flow's network weights into its TFP mirror.

    Both store kernel, bias per dense layer in order, and both lay out the
    outputs the same way (MADE: column `d * 2 + p`; coupling nets: shift
    block, then log-scale block), so after the copy the two compute the same
    density up to tfflows' soft clamp of the log-scale (`5 tanh(s / 5)`).
    """
    layers = [l for l in flow.flow_layers
              if isinstance(l, (L.MaskedAutoregressive, L.AffineCoupling))]
    for layer, network in zip(layers, reference.networks, strict=True):
        for variable, value in zip(network.weights, _network_weights(layer),
                                   strict=True):
            variable.assign(value)
