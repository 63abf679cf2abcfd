"""A deep Glow stack stays invertible in float32."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfflows as tff
from tests.bijector_cases import RandomConditioner

tfb = tfp.bijectors
SHAPE = [4, 4, 4]
STEPS = 32


def glow_stack(data, steps=STEPS):
    """`steps` Glow steps (actnorm -> 1x1 conv -> affine coupling) with random
    parameters at the scale training keeps them: each actnorm is initialised
    from the activations it sees (Glow's data-dependent init), 1x1 convs are
    random rotations, couplings are random networks whose shifts and
    log-scales have a standard deviation of about 0.3 (larger random networks
    make the composed map itself ill-conditioned, whatever the arithmetic).

    Returns a `tfb.Chain` whose inverse maps `data` to the latent.
    """
    dtype = data.dtype
    channels = SHAPE[-1]
    h, bijectors = data, []
    for i in range(steps):
        mean, var = tf.nn.moments(h, axes=[0, 1, 2])
        actnorm = tff.bijectors.ActNorm(mean, 0.5 * tf.math.log(var), event_ndims=3)
        weight = tff.bijectors.lu.random_rotation(channels, seed=i)
        conv = tff.bijectors.InvertibleConv1x1(
            **tff.bijectors.lu.lu_decompose(weight.astype(dtype.as_numpy_dtype)))
        half = SHAPE[:2] + [channels // 2]
        coupling = tff.bijectors.AffineCoupling(
            RandomConditioner(half, half, 2, dtype, seed=i, out_scale=0.3), SHAPE,
            mask="channel", flip=bool(i % 2))
        for bijector in (actnorm, conv, coupling):  # data -> latent order
            h = bijector.inverse(h)
            bijectors.append(bijector)
    return tfb.Chain(bijectors)  # Chain.inverse applies bijectors[0] first


def test_32_glow_steps_round_trip_in_float32():
    data = 3.0 + 2.0 * tf.random.stateless_normal([16] + SHAPE, seed=(0, 1))
    flow = glow_stack(data)
    assert len(flow.bijectors) == 3 * STEPS
    z = flow.inverse(data)
    assert float(tf.reduce_max(tf.abs(z))) < 20.  # a realistic latent scale
    x_back = flow.forward(tf.constant(z.numpy()))  # a copy: no cache hits
    assert float(tf.reduce_max(tf.abs(x_back - data))) < 1e-4
    z_back = flow.inverse(tf.constant(x_back.numpy()))
    assert float(tf.reduce_max(tf.abs(z_back - z))) < 1e-4
    ildj = flow.inverse_log_det_jacobian(tf.constant(data.numpy()), event_ndims=3)
    fldj = flow.forward_log_det_jacobian(tf.constant(z.numpy()), event_ndims=3)
    np.testing.assert_allclose(fldj, -ildj, rtol=1e-4, atol=1e-3)
    # The stack does transform: the latent is not the data.
    assert float(tf.reduce_mean(tf.abs(z - data))) > 1.0
