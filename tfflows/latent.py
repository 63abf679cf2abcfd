"""Latent inference: paths through the latent space and reconstructions.

A flow's latent `z = flow.encode(x)` is an exact, invertible code of `x`;
these helpers work there and decode the result.

- `interpolate(flow, x_a, x_b, num, method)`: decoded points along a path
  from `encode(x_a)` to `encode(x_b)`, both ends included (they decode to
  `x_a` and `x_b` up to round-off).
- `reconstruct(flow, x, typical=False)`: `decode(encode(x))`; with
  `typical=True`, the latent is first moved to the nearest point of the
  base's typical set (the shell `|z| = sqrt(D)` of a standard normal), so an
  atypical input comes back as the closest typical one.
"""

import numpy as np
import tensorflow as tf

from tfflows.distributions import StandardNormal

__all__ = ["interpolate", "reconstruct", "slerp"]

METHODS = ("spherical", "linear")


def _as_rows(flow, x, name):
    """`(x as [rows, *event], had a batch axis)`."""
    x = np.asarray(x, dtype=np.dtype(flow.compute_dtype))
    batched = x.ndim == len(flow.event_shape) + 1
    if not batched:
        x = x[None]
    flow._check_shape(x.shape, name)
    return x, batched


def slerp(z_a, z_b, t):
    """Spherical interpolation of `z_a`, `z_b` (`[rows, *event]`) at `t` (`[num]`).

    ```none
    z(t) = ((1 - t) |z_a| + t |z_b|) * u(t)
    u(t) = sin((1 - t) w) / sin(w) u_a + sin(t w) / sin(w) u_b,   cos(w) = u_a . u_b
    ```

    The direction moves along the great circle from `u_a = z_a / |z_a|` to
    `u_b`, the norm linearly, so the path stays in a standard normal's
    typical shell (norm about `sqrt(D)`) where a straight line would cut
    through its low-norm, atypical interior. Returns `[num, rows, *event]`.
    """
    z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
    axes = tuple(range(1, z_a.ndim))
    n_a = np.sqrt(np.sum(z_a ** 2, axis=axes, keepdims=True))
    n_b = np.sqrt(np.sum(z_b ** 2, axis=axes, keepdims=True))
    u_a, u_b = z_a / np.maximum(n_a, 1e-30), z_b / np.maximum(n_b, 1e-30)
    cos = np.clip(np.sum(u_a * u_b, axis=axes, keepdims=True), -1.0, 1.0)
    omega = np.arccos(cos)
    t = np.asarray(t, np.float64).reshape((-1,) + (1,) * z_a.ndim)
    small = np.sin(omega) < 1e-6  # (nearly) parallel: linear is exact enough
    sin = np.where(small, 1.0, np.sin(omega))
    w_a = np.where(small, 1 - t, np.sin((1 - t) * omega) / sin)
    w_b = np.where(small, t, np.sin(t * omega) / sin)
    direction = w_a * u_a + w_b * u_b
    return ((1 - t) * n_a + t * n_b) * direction


def interpolate(flow, x_a, x_b, num=8, method="spherical", context=None):
    """Decoded points along a latent path from `x_a` to `x_b`.

    Args:
      flow: a `tfflows.Flow`.
      x_a, x_b: one example each (`event_shape`) or batches of pairs
        (`[rows, *event_shape]`).
      num: points on the path, ends included (at least 2).
      method: "spherical" (`slerp`; only for a standard normal base) or
        "linear" (`(1 - t) z_a + t z_b`).
      context: for conditional flows, as `flow.decode` takes it.

    Returns:
      `[num, *event_shape]` for single examples, `[num, rows, *event_shape]`
      for batches (NumPy). Cost: one `encode` per end and one `decode` per
      point.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}. Received: method={method!r}")
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 2:
        raise ValueError(f"num must be an integer >= 2 (the path's ends are "
                         f"included). Received: num={num!r}")
    if method == "spherical" and not isinstance(flow.base, StandardNormal):
        raise ValueError("method='spherical' follows a standard normal's typical "
                         f"shell; this flow's base is {flow.base!r}: use method='linear'")
    a, batched = _as_rows(flow, x_a, "x_a")
    b, _ = _as_rows(flow, x_b, "x_b")
    if a.shape != b.shape:
        raise ValueError(f"x_a and x_b must have the same shape. Received: "
                         f"{np.shape(x_a)} and {np.shape(x_b)}")
    rows = len(a)
    ctx = flow.check_context(context, rows)
    z = np.asarray(flow.encode(np.concatenate([a, b]),
                               context=None if ctx is None else tf.concat([ctx, ctx], 0)))
    z_a, z_b = z[:rows], z[rows:]
    t = np.linspace(0.0, 1.0, num)
    if method == "linear":
        path = ((1 - t.reshape((-1,) + (1,) * z_a.ndim)) * z_a
                + t.reshape((-1,) + (1,) * z_a.ndim) * z_b)
    else:
        path = slerp(z_a, z_b, t)
    flat = path.reshape((num * rows,) + flow.event_shape).astype(a.dtype)
    ctx = None if ctx is None else tf.tile(ctx, [num, 1])
    x = np.array(flow.decode(flat, context=ctx)).reshape(path.shape)
    # Exact ends: decode(encode(x)) equals x only up to round-off.
    x[0], x[-1] = a, b
    return x if batched else x[:, 0]


def reconstruct(flow, x, typical=False, context=None):
    """`decode(encode(x))`, optionally through the nearest typical latent.

    Args:
      flow: a `tfflows.Flow`.
      x: `[rows, *event_shape]`.
      typical: False: the plain round trip (equals `x` up to round-off; its
        error measures the flow's numerical invertibility). True: the latent
        is first scaled onto the shell `|z| = sqrt(D)` where a standard
        normal's mass lies (the nearest point of that shell), then decoded:
        an atypical input (too likely or too unlikely) comes back as the
        nearest typical one. Only for a standard normal base.
      context: for conditional flows.

    Returns:
      `[rows, *event_shape]` (NumPy). Cost: one `encode` and one `decode`
      per row.
    """
    x, batched = _as_rows(flow, x, "x")
    if not batched:
        raise ValueError(f"x must be a batch [rows, {', '.join(map(str, flow.event_shape))}]."
                         f" Received: x.shape={x.shape[1:]}")
    z = np.asarray(flow.encode(x, context=context))
    if typical:
        if not isinstance(flow.base, StandardNormal):
            raise ValueError("typical=True projects onto a standard normal's "
                             f"typical shell; this flow's base is {flow.base!r}")
        axes = tuple(range(1, z.ndim))
        norm = np.sqrt(np.sum(np.square(z, dtype=np.float64), axis=axes, keepdims=True))
        size = float(np.prod(flow.event_shape))
        z = (z * (np.sqrt(size) / np.maximum(norm, 1e-30))).astype(z.dtype)
    return np.asarray(flow.decode(z, context=context))
