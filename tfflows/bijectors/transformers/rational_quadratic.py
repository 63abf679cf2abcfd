"""Stateless rational-quadratic spline math (Durkan et al. 2019, eqs. 4-8).

A spline of K bins is held with the bin axis leading: raw values and bin
sizes are `[K, ...]` tensors, knots and knot derivatives `[K + 1, ...]`,
where `...` is the shape of the entries. Every step is then one op over
all bins and entries at once, and the reductions over bins (the softmax's
sum, the running sum of sizes, the pick of one bin) run over the major
axis: elementwise work across whole `[...]` slabs, which vectorises (a
reduction over a minor axis of size K does not, on CPU), and a graph whose
size does not grow with K (an NSF trains from a graph a few times smaller
than one op per bin gives, so it traces and compiles faster). The bin of
each entry is picked by a one-hot product, not a gather: every op
converts to ONNX (no searchsorted, no gather).

Inputs are already inside `[x_0, x_K]` (the transformer clamps them).
"""

import tensorflow as tf

__all__ = ["bin_sizes", "knots", "locate", "forward", "inverse", "stable_root"]


def bin_sizes(raw, bound, min_size):
    """Bin sizes `[K, ...]` from raw values `[K, ...]`: a softmax over the
    bins scaled to `2B`, each bin at least `2B min_size`."""
    num_bins = raw.shape[0]
    # The softmax is shift-invariant: the largest value is subtracted for
    # range only, and no gradient goes through it (through the max it would
    # be a rounding residue sent to one tied entry, which Adam's normalised
    # steps amplify into runs that depend on summation order).
    top = tf.stop_gradient(tf.reduce_max(raw, axis=0, keepdims=True))
    exp = tf.exp(raw - top)
    scale = ((2. * bound * (1. - min_size * num_bins))
             / tf.reduce_sum(exp, axis=0, keepdims=True))
    return 2. * bound * min_size + exp * scale


def knots(sizes, bound):
    """The K+1 knot positions `[K + 1, ...]` of bins of `sizes` `[K, ...]`:
    `-B`, running sums, `B` (the ends set exactly)."""
    edge = tf.ones_like(sizes[:1]) * bound
    return tf.concat([-edge, tf.cumsum(sizes[:-1], axis=0) - edge, edge], axis=0)


def locate(t, edges, *values):
    """The entries of each of `values` (`[K, ...]` tensors) at the bin of
    `t` (`[...]`): the last bin whose left edge `edges[k]` is at or below
    `t`, with `edges` increasing and `t >= edges[0]`.

    `t >= edges[k]` holds for k up to t's bin and fails after it, so the
    difference of that step and itself shifted by one bin is t's one-hot.
    """
    ones = tf.ones_like(t)[tf.newaxis]
    past = tf.cast(t >= edges[1:-1], t.dtype)  # [K - 1, ...]
    one_hot = (tf.concat([ones, past], axis=0)
               - tf.concat([past, tf.zeros_like(ones)], axis=0))
    return [tf.reduce_sum(one_hot * value, axis=0) for value in values]


def _bin(t, edges, x_knots, y_knots, derivatives):
    """`x_k, w_k, y_k, h_k, d_k, d_{k+1}` of the bin of `t`."""
    x_k, x_k1, y_k, y_k1, d_k, d_k1 = locate(
        t, edges, x_knots[:-1], x_knots[1:], y_knots[:-1], y_knots[1:],
        derivatives[:-1], derivatives[1:])
    return x_k, x_k1 - x_k, y_k, y_k1 - y_k, d_k, d_k1


def _log_derivative(xi, slope, d_k, d_k1):
    """`log dy/dx` at `xi` in a bin of slope `s` (eq. 5)."""
    xi_1 = xi * (1. - xi)
    denominator = slope + (d_k1 + d_k - 2. * slope) * xi_1
    numerator = tf.square(slope) * (d_k1 * tf.square(xi) + 2. * slope * xi_1
                                    + d_k * tf.square(1. - xi))
    return tf.math.log(numerator) - 2. * tf.math.log(denominator)


def forward(x, x_knots, y_knots, derivatives):
    """`(y, log dy/dx)` of the spline at `x` in `[x_0, x_K]`; the knots and
    derivatives are `[K + 1, *x.shape]`."""
    x_k, width, y_k, height, d_k, d_k1 = _bin(x, x_knots, x_knots, y_knots,
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
    x_k, width, y_k, height, d_k, d_k1 = _bin(y, y_knots, x_knots, y_knots,
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
