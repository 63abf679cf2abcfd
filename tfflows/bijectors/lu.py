"""Stateless helpers for LU-parametrised invertible matrices (Glow).

`W = P L (U + diag(sign * exp(log_abs_diag)))` with `P` a fixed permutation,
`L` unit lower-triangular (strictly-lower part of `lower`), `U` strictly
upper-triangular (strictly-upper part of `upper`). `W` is invertible for any
parameter values, and `log|det W| = sum(log_abs_diag)` costs O(C).
"""

import numpy as np
import tensorflow as tf

__all__ = ["lu_factors", "lu_weight", "lu_inverse_weight", "lu_decompose",
           "random_rotation"]


def lu_factors(lower, upper, log_abs_diag, sign):
    """The triangular factors `L` (unit lower) and `U + diag(s)` (upper)."""
    ones = tf.ones_like(log_abs_diag)
    unit_lower = tf.linalg.set_diag(tf.linalg.band_part(lower, -1, 0), ones)
    diag = sign * tf.exp(log_abs_diag)
    upper = tf.linalg.set_diag(tf.linalg.band_part(upper, 0, -1), diag)
    return unit_lower, upper


def lu_weight(permutation, lower, upper, log_abs_diag, sign):
    """`W = P L (U + diag(s))`, where row `i` of `P A` is row `perm[i]` of `A`."""
    unit_lower, upper = lu_factors(lower, upper, log_abs_diag, sign)
    return tf.gather(tf.matmul(unit_lower, upper), permutation)


def lu_inverse_weight(permutation, lower, upper, log_abs_diag, sign):
    """`W^-1 = (U + diag(s))^-1 L^-1 P^T` by two triangular solves, O(C^3)."""
    unit_lower, upper = lu_factors(lower, upper, log_abs_diag, sign)
    eye = tf.eye(tf.shape(lower)[-1], dtype=lower.dtype)
    lower_inv = tf.linalg.triangular_solve(unit_lower, eye, lower=True)
    a_inv = tf.linalg.triangular_solve(upper, lower_inv, lower=False)
    # (M P^T)[:, j] = M[:, perm[j]].
    return tf.gather(a_inv, permutation, axis=1)


def lu_decompose(matrix):
    """LU parameters of an invertible matrix, as `lu_weight` takes them.

    Args:
      matrix: `[C, C]` invertible float matrix (numpy or tensor), e.g. a
        random rotation for Glow's initialisation.

    Returns:
      dict with `permutation` (int32 `[C]`), `lower`, `upper` (`[C, C]`),
      `log_abs_diag` and `sign` (`[C]`), such that
      `lu_weight(**result) == matrix` up to round-off.
    """
    matrix = tf.convert_to_tensor(matrix)
    lu, perm = tf.linalg.lu(matrix)  # matrix = gather(L U, inverse perm)
    diag = tf.linalg.diag_part(lu)
    inverse_perm = tf.math.invert_permutation(perm)
    return {
        "permutation": inverse_perm,
        "lower": tf.linalg.band_part(lu, -1, 0) - tf.linalg.diag(diag),
        "upper": tf.linalg.band_part(lu, 0, -1) - tf.linalg.diag(diag),
        "log_abs_diag": tf.math.log(tf.abs(diag)),
        "sign": tf.sign(diag),
    }


def random_rotation(channels, seed=None, dtype=np.float32):
    """A random orthogonal `[C, C]` matrix (QR of a Gaussian), numpy."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((channels, channels)))
    return (q * np.sign(np.diag(r))).astype(dtype)
