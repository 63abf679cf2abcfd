"""Stateless rational-quadratic spline math (Durkan et al. 2019, eqs. 4-8).

Inputs are already inside `[x_0, x_K]` (the transformer clamps them); knots
are `[..., K+1]` tensors. Every op here converts to ONNX (comparisons,
reduce_sum, cumsum, softmax; no searchsorted, no gather with batch dims).
"""

import tensorflow as tf

__all__ = ["knots", "bin_one_hot", "select", "forward", "inverse", "stable_root"]


def knots(raw, bound, min_size):
    """Knot positions `[..., K+1]` from raw sizes `[..., K]`: `-B` to `B`,
    each bin at least `2 B min_size` wide. The ends are set exactly."""
    bins = raw.shape[-1]
    # softmax by hand: tf.nn.softmax's oneDNN kernel takes rank <= 5 only.
    exp = tf.exp(raw - tf.reduce_max(raw, axis=-1, keepdims=True))
    shares = exp / tf.reduce_sum(exp, axis=-1, keepdims=True)
    sizes = min_size + (1. - min_size * bins) * shares
    inner = 2. * bound * tf.cumsum(sizes[..., :-1], axis=-1) - bound
    edge = tf.ones_like(raw[..., :1]) * bound
    return tf.concat([-edge, inner, edge], axis=-1)


def bin_one_hot(t, knot_positions):
    """One-hot `[..., K]` of the bin holding `t` `[...]`: the number of
    interior knots at or below `t`."""
    interior = knot_positions[..., 1:-1]
    index = tf.reduce_sum(tf.cast(t[..., None] >= interior, tf.int32), axis=-1)
    bins = knot_positions.shape[-1] - 1
    return tf.cast(tf.equal(index[..., None], tf.range(bins)), t.dtype)


def select(one_hot, values):
    """`values[..., k]` at the one-hot bin `k`."""
    return tf.reduce_sum(one_hot * values, axis=-1)


def _bin(one_hot, x_knots, y_knots, derivatives):
    x_k = select(one_hot, x_knots[..., :-1])
    width = select(one_hot, x_knots[..., 1:] - x_knots[..., :-1])
    y_k = select(one_hot, y_knots[..., :-1])
    height = select(one_hot, y_knots[..., 1:] - y_knots[..., :-1])
    d_k = select(one_hot, derivatives[..., :-1])
    d_k1 = select(one_hot, derivatives[..., 1:])
    return x_k, width, y_k, height, d_k, d_k1


def _log_derivative(xi, slope, d_k, d_k1):
    """`log dy/dx` at `xi` in a bin of slope `s` (eq. 5)."""
    xi_1 = xi * (1. - xi)
    denominator = slope + (d_k1 + d_k - 2. * slope) * xi_1
    numerator = tf.square(slope) * (d_k1 * tf.square(xi) + 2. * slope * xi_1
                                    + d_k * tf.square(1. - xi))
    return tf.math.log(numerator) - 2. * tf.math.log(denominator)


def forward(x, x_knots, y_knots, derivatives):
    """`(y, log dy/dx)` of the spline at `x` in `[x_0, x_K]`."""
    one_hot = bin_one_hot(x, x_knots)
    x_k, width, y_k, height, d_k, d_k1 = _bin(one_hot, x_knots, y_knots,
                                               derivatives)
    slope = height / width
    xi = tf.clip_by_value((x - x_k) / width, 0., 1.)
    xi_1 = xi * (1. - xi)
    denominator = slope + (d_k1 + d_k - 2. * slope) * xi_1
    y = y_k + height * (slope * tf.square(xi) + d_k * xi_1) / denominator
    return y, _log_derivative(xi, slope, d_k, d_k1)


def stable_root(a, b, c, discriminant=None):
    """The root in [0, 1] of `a xi^2 + b xi + c = 0` without cancellation.

    `2c / (-b - sqrt(D))` where `b >= 0` (both terms of the denominator have
    one sign) and `(-b + sqrt(D)) / (2a)` where `b < 0`. The discriminant
    `D` (default `b^2 - 4ac`) is clamped at 0; where it is not positive the
    square root and its gradient are 0, and each branch divides by a
    denominator made safe where the other branch is taken, so rounding
    gives neither NaN values nor NaN gradients.
    """
    if discriminant is None:
        discriminant = tf.square(b) - 4. * a * c
    positive = discriminant > 0.
    safe = tf.where(positive, discriminant, tf.ones_like(discriminant))
    root = tf.where(positive, tf.sqrt(safe), tf.zeros_like(discriminant))
    use_c = b >= 0.
    ones = tf.ones_like(b)
    from_c = 2. * c / tf.where(use_c, -b - root, -ones)
    from_a = (root - b) / tf.where(use_c, ones, 2. * a)
    return tf.where(use_c, from_c, from_a)


def inverse(y, x_knots, y_knots, derivatives):
    """`(x, log dx/dy)` of the spline at `y` in `[y_0, y_K]` (eqs. 6-8).

    The quadratic is divided by the bin height, and its discriminant is
    computed as the sum of squares it equals,
    `(d_k (1 - t) - d_{k+1} t)^2 + 4 s^2 t (1 - t)` with `t = (y - y_k) /
    h_k`, which is never negative and has no cancellation (`b^2 - 4ac`
    loses most of its digits near the top of a steep bin).
    """
    one_hot = bin_one_hot(y, y_knots)
    x_k, width, y_k, height, d_k, d_k1 = _bin(one_hot, x_knots, y_knots,
                                               derivatives)
    slope = height / width
    theta = tf.clip_by_value((y - y_k) / height, 0., 1.)
    delta = d_k1 + d_k - 2. * slope
    a = (slope - d_k) + theta * delta
    b = d_k - theta * delta
    c = -slope * theta
    discriminant = (tf.square(d_k * (1. - theta) - d_k1 * theta)
                    + 4. * tf.square(slope) * theta * (1. - theta))
    xi = tf.clip_by_value(stable_root(a, b, c, discriminant), 0., 1.)
    return x_k + xi * width, -_log_derivative(xi, slope, d_k, d_k1)
