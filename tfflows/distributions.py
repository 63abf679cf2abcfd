"""Base distributions of flows: one small interface, plain-op default.

A flow's base is an object with

- `event_shape`, `dtype`;
- `log_prob(z)`: the log-density of latents `z` (`[batch, *event_shape]`),
  reduced to `[batch]`;
- `sample(num_samples, temperature=1.0, seed=None)`: `num_samples` latents,
  their spread around the mean scaled by `temperature` (Glow); stateless
  when `seed` is given;
- `distribution`: the same law as a TFP distribution (for
  `flow.distribution` and `tfd.JointDistribution*`).

`StandardNormal` is the default, written in plain TensorFlow ops so the
graphs of `log_prob` and `sample` convert to ONNX (TFP's `Sample(Normal)`
emits `BroadcastArgs`, which tf2onnx cannot convert). Any other TFP
distribution over the event shape is wrapped by `TFPBase`; `as_base` picks.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = ["StandardNormal", "TFPBase", "as_base", "stateless_seed"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def stateless_seed(seed):
    """A `[2]` int64 seed for `tf.random.stateless_*` from an int or a pair.

    An int (or scalar tensor) `s` becomes `[s, 0]`, what `Flow.sample` has
    always used, so seeded draws keep their numbers; a pair is used as is.
    """
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        return tf.stack([seed, tf.zeros([], tf.int64)])
    if seed.shape.rank != 1 or seed.shape[0] not in (None, 2):
        raise ValueError("seed must be an int or a pair of ints. Received: "
                         f"seed with shape {tuple(seed.shape)}")
    return seed


class StandardNormal:
    """`N(0, I)` over `event_shape`, in plain ops (ONNX-friendly).

    ```none
    log p(z) = -0.5 * sum(z ** 2) - D/2 log(2 pi),    D = prod(event_shape)
    sample:  z = temperature * eps,  eps ~ N(0, I)
    ```

    Args:
      event_shape: shape of one latent, e.g. `(2,)` or `(8, 8, 1)`.
      dtype: floating dtype of latents and densities.

    >>> base = StandardNormal((2,))
    >>> base.log_prob(tf.zeros([3, 2])).shape
    TensorShape([3])
    """

    def __init__(self, event_shape, dtype="float32"):
        self.event_shape = tuple(int(d) for d in event_shape)
        self.dtype = tf.as_dtype(dtype)

    @property
    def event_ndims(self):
        return len(self.event_shape)

    def log_prob(self, z):
        """`log N(z; 0, I)` summed over the event, shape `z.shape[:-event_ndims]`."""
        z = tf.convert_to_tensor(z, self.dtype)
        axes = list(range(-self.event_ndims, 0))
        size = float(np.prod(self.event_shape))
        return -0.5 * tf.reduce_sum(tf.square(z), axis=axes) - size * _HALF_LOG_2PI

    def sample(self, num_samples, temperature=1.0, seed=None):
        """`[num_samples, *event_shape]` draws of `N(0, temperature**2 I)`.

        Args:
          num_samples: how many (int or scalar tensor).
          temperature: scales the standard deviation.
          seed: int or pair for stateless draws (`[seed, 0]` for an int), or
            None for TensorFlow's global generator.
        """
        shape = tf.concat([tf.reshape(tf.cast(num_samples, tf.int32), [1]),
                           tf.constant(self.event_shape, tf.int32)], 0)
        eps = (tf.random.normal(shape, dtype=self.dtype) if seed is None else
               tf.random.stateless_normal(shape, stateless_seed(seed),
                                          dtype=self.dtype))
        return tf.cast(temperature, self.dtype) * eps

    @property
    def distribution(self):
        """The same law as a TFP distribution, `Sample(Normal(0, 1), event_shape)`."""
        return tfd.Sample(tfd.Normal(tf.zeros([], self.dtype), tf.ones([], self.dtype)),
                          sample_shape=self.event_shape, name="standard_normal")

    def __repr__(self):
        return f"StandardNormal(event_shape={self.event_shape}, dtype={self.dtype.name})"


class TFPBase:
    """A user's TFP distribution over the event shape, behind the base interface.

    `sample` with a temperature `T` draws `mean + T * (draw - mean)` (the
    distribution must have a `mean`, e.g. any location-scale family, for
    `T != 1`); seeded draws pass `(seed, 0)` to TFP.

    Args:
      distribution: a `tfd.Distribution` with event shape `event_shape`
        and no batch shape.
      event_shape: the flow's event shape, checked against the distribution's.
    """

    def __init__(self, distribution, event_shape):
        if not isinstance(distribution, tfd.Distribution):
            raise ValueError("base_distribution must be a TFP distribution "
                             "(tfp.distributions.Distribution). Received: "
                             f"{type(distribution).__name__}")
        self.event_shape = tuple(int(d) for d in event_shape)
        static = distribution.event_shape
        if static.rank is not None and tuple(static) != self.event_shape:
            raise ValueError(f"base_distribution must have the flow's event shape "
                             f"{self.event_shape}. Received: event_shape="
                             f"{tuple(static)}")
        self.distribution = distribution
        self.dtype = tf.as_dtype(distribution.dtype)

    def log_prob(self, z):
        return self.distribution.log_prob(z)

    def sample(self, num_samples, temperature=1.0, seed=None):
        if seed is not None:  # TFP's stateless seeds are int32 pairs
            seed = tf.cast(stateless_seed(seed), tf.int32)
        draws = self.distribution.sample(num_samples, seed=seed)
        if isinstance(temperature, (int, float)) and temperature == 1.0:
            return draws
        mean = self.distribution.mean()
        return mean + tf.cast(temperature, self.dtype) * (draws - mean)

    def __repr__(self):
        return f"TFPBase({self.distribution.name}, event_shape={self.event_shape})"


def as_base(base, event_shape, dtype="float32"):
    """The base object for a flow: None -> `StandardNormal(event_shape, dtype)`,
    a TFP distribution -> `TFPBase`, a base object -> itself."""
    if base is None:
        return StandardNormal(event_shape, dtype)
    if isinstance(base, (StandardNormal, TFPBase)):
        if tuple(base.event_shape) != tuple(event_shape):
            raise ValueError(f"The base distribution must have the flow's event "
                             f"shape {tuple(event_shape)}. Received: "
                             f"{tuple(base.event_shape)}")
        return base
    return TFPBase(base, event_shape)
