"""The registry of bijectors that go through the shared contract harness.

One entry per configuration: a factory `dtype -> Case`. Adding a bijector to
the suite is adding one line to `CASES`.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfflows as tff

tfb = tfp.bijectors
BATCH = 4


@dataclasses.dataclass
class Case:
    bijector: tfb.Bijector
    x: tf.Tensor
    event_ndims: int
    variables: tuple = ()


class RandomConditioner(tf.Module):
    """A random two-layer tanh network from one event shape to another.

    Returns `num_params` tensors shaped `[..., *out_shape]` (a tensor if 1),
    with weights of a realistic scale so log-scales are O(1).
    """

    def __init__(self, in_shape, out_shape, num_params, dtype, seed=0,
                 hidden=16, out_scale=0.5):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.in_shape, self.out_shape = list(in_shape), list(out_shape)
        self.num_params = num_params
        n_in, n_out = math.prod(in_shape), math.prod(out_shape) * num_params
        self.w1 = tf.Variable(rng.normal(0, 1 / math.sqrt(n_in), (n_in, hidden)),
                              dtype=dtype, name="w1")
        self.b1 = tf.Variable(rng.normal(0, 0.1, hidden), dtype=dtype, name="b1")
        self.w2 = tf.Variable(rng.normal(0, out_scale / math.sqrt(hidden),
                                         (hidden, n_out)), dtype=dtype, name="w2")
        self.b2 = tf.Variable(rng.normal(0, 0.1, n_out), dtype=dtype, name="b2")

    def __call__(self, x):
        rank = len(self.in_shape)
        batch = tf.shape(x)[:-rank]
        h = tf.tanh(tf.reshape(x, [-1, self.w1.shape[0]]) @ self.w1 + self.b1)
        out = tf.reshape(h @ self.w2 + self.b2,
                         tf.concat([batch, self.out_shape + [self.num_params]], 0))
        params = tf.unstack(out, self.num_params, axis=-1)
        return params[0] if self.num_params == 1 else tuple(params)


def _normal(shape, dtype, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    return tf.constant(scale * rng.standard_normal([BATCH] + list(shape)), dtype)


def coupling(cls, event_shape, mask="half", **kwargs):
    def factory(dtype):
        probe = tff.bijectors.masks.make_mask(
            mask, event_shape, kwargs.get("num_masked"), kwargs.get("flip", False))
        x_a, _ = probe.split(tf.zeros([1] + list(event_shape), dtype))
        num_params = 2 if cls is tff.bijectors.AffineCoupling else 1
        net = RandomConditioner(x_a.shape[1:], probe.transformed_shape,
                                num_params, dtype)
        return Case(cls(net, event_shape, mask=mask, **kwargs),
                    _normal(event_shape, dtype), len(event_shape),
                    net.trainable_variables)
    return factory


def actnorm(event_shape):
    def factory(dtype):
        rng = np.random.default_rng(2)
        channels = event_shape[-1]
        loc = tf.Variable(rng.normal(0, 1, channels), dtype=dtype)
        log_scale = tf.Variable(rng.normal(0, 0.5, channels), dtype=dtype)
        bij = tff.bijectors.ActNorm(loc, log_scale, event_ndims=len(event_shape))
        return Case(bij, _normal(event_shape, dtype), len(event_shape),
                    (loc, log_scale))
    return factory


def conv1x1(event_shape):
    def factory(dtype):
        channels = event_shape[-1]
        rng = np.random.default_rng(3)
        weight = (tff.bijectors.lu.random_rotation(channels, seed=4)
                  + 0.3 * rng.standard_normal((channels, channels)))
        params = tff.bijectors.lu.lu_decompose(weight.astype(dtype.as_numpy_dtype))
        variables = tuple(tf.Variable(params[k], name=k)
                          for k in ("lower", "upper", "log_abs_diag"))
        bij = tff.bijectors.InvertibleConv1x1(
            *variables, sign=params["sign"], permutation=params["permutation"],
            event_ndims=len(event_shape))
        return Case(bij, _normal(event_shape, dtype), len(event_shape), variables)
    return factory


def masked_autoregressive(event_size, iaf=False, input_order="natural"):
    def factory(dtype):
        made = tff.nn.MADE(event_size, num_params=2, hidden_units=(16, 16),
                           input_order=input_order, activation="tanh", seed=5,
                           dtype=dtype.name)
        made.build((None, event_size))
        rng = np.random.default_rng(6)
        # Random output weights: a fresh MADE is the identity, which would
        # make the log-det checks vacuous.
        made.set_weights([rng.normal(0, 0.3, w.shape) for w in made.get_weights()])
        bij = tff.bijectors.MaskedAutoregressive(
            lambda x: tuple(tf.unstack(made(x), axis=-1)),
            event_size=event_size, iaf=iaf)
        return Case(bij, _normal([event_size], dtype), 1,
                    tuple(v.value for v in made.trainable_variables))
    return factory


def squeeze(event_shape):
    return lambda dtype: Case(tff.bijectors.Squeeze(), _normal(event_shape, dtype), 3)


def logit(event_shape):
    def factory(dtype):
        rng = np.random.default_rng(7)
        x = tf.constant(rng.uniform(0.01, 0.99, [BATCH] + list(event_shape)), dtype)
        return Case(tff.bijectors.Logit(alpha=0.05, event_ndims=len(event_shape)),
                    x, len(event_shape))
    return factory


def reverse(size):
    return lambda dtype: Case(tff.bijectors.reverse(size), _normal([size], dtype), 1)


def nice_scale(size):
    def factory(dtype):
        log_scale = tf.Variable(np.linspace(-0.5, 0.5, size), dtype=dtype)
        return Case(tfb.Scale(log_scale=log_scale), _normal([size], dtype), 1,
                    (log_scale,))
    return factory


AC, AF = tff.bijectors.AdditiveCoupling, tff.bijectors.AffineCoupling
CASES = {
    "additive_half": coupling(AC, [5], num_masked=2),
    "additive_half_flip": coupling(AC, [5], num_masked=2, flip=True),
    "additive_checkerboard": coupling(AC, [4, 4, 2], mask="checkerboard"),
    "additive_channel": coupling(AC, [2, 2, 4], mask="channel"),
    "affine_half": coupling(AF, [6]),
    "affine_half_flip": coupling(AF, [6], num_masked=1, flip=True),
    "affine_checkerboard": coupling(AF, [4, 4, 2], mask="checkerboard"),
    "affine_checkerboard_flip": coupling(AF, [4, 4, 1], mask="checkerboard", flip=True),
    "affine_channel": coupling(AF, [3, 3, 4], mask="channel"),
    "affine_channel_flip": coupling(AF, [2, 2, 6], mask="channel", flip=True),
    "actnorm_vector": actnorm([3]),
    "actnorm_image": actnorm([4, 4, 3]),
    "conv1x1_vector": conv1x1([4]),
    "conv1x1_image": conv1x1([3, 3, 4]),
    "maf": masked_autoregressive(5),
    "maf_random_order": masked_autoregressive(5, input_order="random"),
    "iaf": masked_autoregressive(5, iaf=True),
    "squeeze": squeeze([4, 6, 2]),
    "logit": logit([4, 4, 1]),
    "reverse": reverse(4),
    "nice_scale": nice_scale(4),
}
