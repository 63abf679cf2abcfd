"""Exploding inverses: round-trip errors of trained flows away from their data.

Behrmann, Vicol, Wang, Grosse, Jacobsen (2020), "Understanding and
Mitigating Exploding Inverses in Invertible Neural Networks",
https://arxiv.org/abs/2006.09347: a flow that is invertible in exact
arithmetic can fail to invert in floating point where its Jacobians are
large, which is likely away from the training data.

`round_trip` measures `max |decode(encode(x)) - x|` per row (and
`encode(decode(z))` per latent row); `round_trip_bound` gives, per row, the
first-order bound that tfflows' clamps and the flow's measured Jacobians
imply (derived in the README's "Exploding inverses" section):

```none
decode(encode(x)) - x = sum_k P_k e_k + O(u^2)
|e_k|_inf <= u (a_k |h_(k-1)|_inf + b_k |h_k|_inf + c_k)
bound = 2 sqrt(n) u sum_k ||P_k||_2 (a_k |h_(k-1)|_inf + b_k |h_k|_inf + c_k)
```

`h_k` is the input after k layers from the data side (`h_0 = x`), `e_k`
the rounding error of layer k's own round trip, `P_k` the Jacobian of the
decode map of layers 1..k-1 at `h_(k-1)` (which carries `e_k` back to the
data), `u` the unit roundoff (2^-24 in float32) and `n` the event size.
The constants `a_k, b_k, c_k` come from each layer's arithmetic (see
`local_error_constants`); for affine couplings `b_k = 2 e^c` with `c` the
soft clamp of the log-scale.

`python -m benchmarks.inverses` trains the two flows of notebooks 01 and
02 (RealNVP on two moons, Glow on digits) and draws
`colab/figures/exploding_inverses.png`; `tests/test_exploding_inverses.py`
asserts the bound on smaller versions.
"""

import math
import os

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfflows import bijectors as tfb_
from tfflows import layers as L
from tfflows.bijectors import lu
from tfflows.bijectors import transformers

tfb = tfp.bijectors

__all__ = ["flat_steps", "local_error_constants", "round_trip",
           "round_trip_bound", "away_from", "main"]


def flat_steps(flow, context=None):
    """The flow's layers as `(layer, make_bijector)` pairs on the whole
    event, data side first: a layer inside a `FactorOut` comes wrapped in
    `FactorOut`s, so every step maps the full latent to the full latent.
    `make_bijector()` returns a new bijector each call (TFP caches a
    bijector's inverse, which would make its forward exact)."""
    return _flatten(flow.flow_layers, context, lambda b: b)


def _flatten(layers, context, wrap, inside=False):
    """Inside a `FactorOut` the kept channels go through squeezes the rest
    does not: there each step is conjugated by the squeezes around it, so
    it maps the kept part in the outer layout (squeezes are exact)."""
    steps, squeezes = [], []
    for layer in layers:
        if inside and isinstance(layer, L.Squeeze):
            squeezes.append(layer)
            continue
        if inside and isinstance(layer, L.Unsqueeze) and squeezes:
            squeezes.pop()
            continue

        def conjugate(b, around=tuple(squeezes), outer=wrap):
            if not around:
                return outer(b)
            return outer(tfb.Chain([s.make_bijector() for s in around] + [b] + [
                tfb.Invert(s.make_bijector()) for s in reversed(around)]))

        if isinstance(layer, L.FactorOut):
            inner_wrap = (lambda b, kept=layer._kept, nd=layer._built_event_ndims,
                          outer=conjugate: outer(tfb_.FactorOut(b, kept, event_ndims=nd)))
            steps += _flatten(layer.inner_layers, context, inner_wrap, inside=True)
        else:
            steps.append((layer, lambda layer=layer, outer=conjugate:
                          outer(layer.make_bijector(context))))
    return steps


def _cond_inf(matrix):
    """Skeel's `|| |T| |T^-1| ||_inf` of a triangular matrix (float64)."""
    return float(np.max(np.sum(np.abs(matrix) @ np.abs(np.linalg.inv(matrix)),
                               axis=1)))


def local_error_constants(layer):
    """`(a, b, c)` with `|e| <= u (a |h_in| + b |h_out| + c)` (max norms)
    for one layer's round trip `decode_k(encode_k(h_in)) - h_in` in
    floating point, each of its ops rounded once (relative error <= u, and
    exp's within 2u: the factors carry that margin).

    - Affine coupling, `z = y e^-s + t`, `y' = (z - t) e^s`:
      `|y' - y| <= 5u|y| + e^s u|z|`, and `|s| <= c` by the soft clamp:
      `(8, 2 e^c, 0)`. The clamp is what bounds this: without it (or with
      `log_scale_clamp=None`) there is no bound.
    - Additive coupling: `(2, 2, 0)`.
    - ActNorm, `z = (y - loc) e^-l`, `y' = z e^l + loc`: relative errors
      only, whatever the scale: `(8, 0, 8 max|loc|)`.
    - Invertible 1x1 conv, `W = P L U`: matmuls and triangular solves over
      C channels: `(4 C k(L) k(U), 0, 0)` with `k` Skeel's condition number
      of each factor, read from the weights (`log|s|` makes `U` invertible,
      not well conditioned).
    - Logit (pixels in its domain): `(4, 2, 4)`; exact layers (squeeze,
      permutation): zeros.

    Other layers (spline couplings, autoregressive layers, planar and
    radial maps) raise ValueError: no constants are derived for them.
    """
    if isinstance(layer, (L.Squeeze, L.Unsqueeze, L.Permutation)):
        return 0.0, 0.0, 0.0
    if isinstance(layer, L.ActNorm):
        return 8.0, 0.0, 8.0 * float(np.max(np.abs(np.asarray(layer.loc))))
    if isinstance(layer, L.Scale):
        return 8.0, 0.0, 0.0
    if isinstance(layer, L.Logit):
        return 4.0, 2.0, 4.0
    if isinstance(layer, L.InvertibleConv1x1):
        weights = {name: np.asarray(getattr(layer, name), np.float64)
                   for name in ("lower", "upper", "log_abs_diag", "sign")}
        lower, upper = (np.asarray(t) for t in lu.lu_factors(**weights))
        channels = lower.shape[0]
        return 4.0 * channels * _cond_inf(lower) * _cond_inf(upper), 0.0, 0.0
    if not isinstance(layer, L.Coupling):
        # A MAF's decode solves D steps, each from the entries rebuilt so
        # far: its round trip is not one elementwise map's.
        raise ValueError(f"No round-trip error constants for {type(layer).__name__} "
                         f"'{layer.name}'")
    transformer = layer.transformer
    if isinstance(transformer, transformers.Additive):
        return 2.0, 2.0, 0.0
    if isinstance(transformer, transformers.Affine):
        if transformer.log_scale_clamp is None:
            raise ValueError(f"{layer.name}: an unclamped affine log-scale has no "
                             "round-trip bound")
        return 8.0, 2.0 * math.exp(transformer.log_scale_clamp), 0.0
    raise ValueError(f"No round-trip error constants for {type(layer).__name__} "
                     f"'{layer.name}'")


def _max_abs(t):
    return np.max(np.abs(np.asarray(t)).reshape(len(t), -1), axis=1)


def round_trip(flow, x, latent=False):
    """`max |decode(encode(x)) - x|` per row, or `max |encode(decode(z)) - z|`
    with `latent=True`; NaN where a map gave a non-finite value."""
    x = np.asarray(x, np.float32)
    checks, flow.check_inputs = flow.check_inputs, False  # let NaN through
    try:
        back = (flow.encode(flow.decode(x)) if latent
                else flow.decode(flow.encode(x)))
    finally:
        flow.check_inputs = checks
    error = _max_abs(np.asarray(back) - x)
    return np.where(np.isfinite(error), error, np.nan)


def round_trip_bound(flow, x, context=None, unit_roundoff=2.0**-24):
    """The first-order bound on `max |decode(encode(x)) - x|`, per row (see
    the module docstring), and the decode Jacobian's largest spectral norm
    per row (how much the flow can amplify an error on the way back).

    Returns:
      `(bound [rows], max_k ||P_k||_2 [rows])`.
    """
    steps = flat_steps(flow, context)
    h = tf.convert_to_tensor(np.asarray(x, np.float32))
    rows, size = int(h.shape[0]), int(np.prod(h.shape[1:]))
    prefix = np.broadcast_to(np.eye(size), (rows, size, size))  # P_1 = I
    total, largest = np.zeros(rows), np.ones(rows)
    for layer, make in steps:
        out = make().inverse(h)
        a, b, c = local_error_constants(layer)
        with np.errstate(invalid="ignore"):  # 0 * Inf in rows already lost
            local = a * _max_abs(h) + b * _max_abs(out) + c
        finite = np.all(np.isfinite(prefix.reshape(rows, -1)), axis=1)
        norms = np.full(rows, np.nan)  # rows already non-finite stay NaN
        if finite.any():
            norms[finite] = np.linalg.norm(prefix[finite], 2, axis=(1, 2))
        total += norms * local
        largest = np.fmax(largest, norms)
        # P_(k+1) = P_k J_k, with J_k the Jacobian of this step's decode at h_k.
        with tf.GradientTape() as tape:
            tape.watch(out)
            back = make().forward(out)
        jacobian = np.asarray(tape.batch_jacobian(back, out), np.float64)
        prefix = prefix @ jacobian.reshape(rows, size, size)
        h = out
    return 2.0 * math.sqrt(size) * unit_roundoff * total, largest


def away_from(x, distances, seed=0):
    """Rows `x_i + r u_i`, `u_i` random unit vectors, for each r in
    `distances` (in units of `x`'s coordinates): `[len(distances), rows, ...]`."""
    rng = np.random.default_rng(seed)
    flat = np.asarray(x).reshape(len(x), -1)
    u = rng.standard_normal(flat.shape)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return np.stack([(flat + r * u).reshape(np.shape(x)) for r in distances]
                    ).astype(np.float32)


# -- the figure -----------------------------------------------------------------
DISTANCES = (0, 1, 2, 5, 10, 20, 50, 100)


def _moons_flow():
    import tfflows as tff
    return tff.models.realnvp(event_dim=2, num_layers=8, hidden_units=(128, 128))


def _digits_flow():
    import tfflows as tff
    return tff.models.glow(image_shape=(8, 8, 1), levels=2, steps_per_level=4,
                           hidden_channels=64, num_bins=tff.data.DIGITS_NUM_BINS)


def _train_moons():
    """RealNVP on two moons, as notebook 01 (full run)."""
    import keras
    import tfflows as tff
    keras.utils.set_random_seed(0)
    x_train, x_val, x_test = tff.data.split(tff.data.two_moons(8192))
    flow = _moons_flow()
    flow.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0))
    flow.fit(x_train, batch_size=256, epochs=40, validation_data=x_val, verbose=0)
    return flow, x_train, x_test


def _train_digits():
    """Glow on digits, as notebook 02 (full run)."""
    import keras
    import tfflows as tff
    keras.utils.set_random_seed(0)
    x_train, x_val, x_test = tff.data.split(tff.data.digits())
    flow = _digits_flow()
    flow.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0))
    flow.fit(x_train, batch_size=64, epochs=120, validation_data=x_val, verbose=0)
    return flow, x_train, x_test


def float64_copy(flow, build):
    """`build()`'s flow under Keras's float64 policy, with `flow`'s weights:
    the same map computed with unit roundoff 2^-53 instead of 2^-24."""
    import keras
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        copy = build()
    finally:
        keras.config.set_dtype_policy(policy)
    for target, source in zip(copy.weights, flow.weights):
        target.assign(np.asarray(source).astype(target.dtype))
    copy.check_inputs = False
    return copy


def digit_families(flow, x_test, seed=0):
    """Out-of-distribution image batches for an image flow: name -> pixels.
    In the flow's logit space (the first layer's output, where its networks
    work), digits moved r of the data's standard deviations (per pixel)
    away along random directions, mapped back to pixels (always inside the
    logit's domain); and uniform and binary noise images."""
    rng = np.random.default_rng(seed)
    logit = flow.flow_layers[0].make_bijector()
    dequantized = (x_test + rng.uniform(size=x_test.shape) / flow.num_bins
                   ).astype(np.float32)
    y = np.asarray(logit.inverse(dequantized))
    sigma = float(np.std(y))
    moved = away_from(y, [r * sigma for r in DISTANCES], seed)
    families = {f"{r}σ": np.asarray(logit.forward(m))
                for r, m in zip(DISTANCES, moved)}
    families["uniform noise"] = rng.uniform(size=x_test.shape).astype(np.float32)
    families["binary noise"] = rng.integers(0, 2, x_test.shape).astype(np.float32)
    return families, sigma


def _logit_distance(flow, batch, reference, sigma):
    """Median over `batch` of the distance to the nearest `reference` row,
    in the flow's logit space and units of `sigma`."""
    logit = flow.flow_layers[0].make_bijector()
    flat = lambda t: np.asarray(logit.inverse(t)).reshape(len(t), -1)
    a, b = flat(batch), flat(reference)
    nearest = np.sqrt(np.min(np.sum((a[:, None] - b[None]) ** 2, -1), axis=1))
    return float(np.median(nearest) / sigma)


def measure(flow, x_test, rows=64, image=False, flow64=None):
    """One dict per input family: `name`, `distance` (r, in the data's
    sigma), per-row `error`, `bound` and `jacobian` (the decode
    Jacobian's largest norm), `latent` (`encode(decode(z))` errors for
    base draws moved r away; None for noise images) and `error64` (the
    round trip of `flow64`, the same weights in float64, if given)."""
    x = x_test[:rows]
    if image:
        families, sigma = digit_families(flow, x)
        points = []
        for name, batch in families.items():
            moved = name.endswith("σ")
            distance = (float(name[:-1]) if moved
                        else _logit_distance(flow, batch, x_test, sigma))
            points.append((name, distance, batch, moved))
    else:
        points = [(f"{r}σ", float(r), batch, True)
                  for r, batch in zip(DISTANCES, away_from(x, DISTANCES))]
    z = np.random.default_rng(1).standard_normal((rows,) + x.shape[1:])
    results = []
    for name, distance, batch, moved in points:
        bound, jacobian = round_trip_bound(flow, batch)
        results.append(dict(
            name=name, distance=distance, error=round_trip(flow, batch),
            bound=bound, jacobian=jacobian,
            latent=(round_trip(flow, away_from(z, [distance])[0], latent=True)
                    if moved else None),
            error64=(None if flow64 is None else _max_abs(np.asarray(
                flow64.decode(flow64.encode(batch.astype(np.float64))))
                - batch.astype(np.float64)))))
    return results


def _max(values):
    values = np.asarray(values, np.float64)
    return np.nan if np.all(np.isnan(values)) else float(np.nanmax(values))


def report(title, results):
    """The table `main` prints."""
    lines = [title, f"{'inputs':>14} {'r':>6} {'max error':>10} {'max bound':>10} "
             f"{'max |P|':>10} {'latent':>10} {'non-finite':>10} {'float64':>10}"]
    for r in results:
        latent = np.nan if r["latent"] is None else _max(r["latent"])
        lines.append(f"{r['name']:>14} {r['distance']:6.1f} {_max(r['error']):10.2e} "
                     f"{_max(r['bound']):10.2e} {_max(r['jacobian']):10.2e} "
                     f"{latent:10.2e} {int(np.isnan(r['error']).sum()):>10} "
                     f"{np.nan if r['error64'] is None else _max(r['error64']):10.2e}")
    return "\n".join(lines)


def _trained(train, cache):
    """`train()`'s flow and test rows, kept in `cache` (a folder) if given."""
    import keras
    if cache is None:
        return train()
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, train.__name__.strip("_") + ".keras")
    if os.path.exists(path):
        import tfflows as tff
        data = (tff.data.two_moons(8192) if "moons" in path else tff.data.digits())
        return keras.models.load_model(path), None, tff.data.split(data)[2]
    flow, x_train, x_test = train()
    flow.save(path)
    return flow, x_train, x_test


def main(path=os.path.join("colab", "figures", "exploding_inverses.png"),
         cache=os.environ.get("TFFLOWS_INVERSES_CACHE")):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, (title, train, image) in zip(axes, (
            ("RealNVP, two moons (notebook 01)", (_train_moons, _moons_flow), False),
            ("Glow, digits (notebook 02)", (_train_digits, _digits_flow), True))):
        flow, _, x_test = _trained(train[0], cache)
        results = measure(flow, x_test, image=image,
                          flow64=float64_copy(flow, train[1]))
        print(report(title, results), flush=True)
        moved = [r for r in results if r["latent"] is not None]
        d = np.array([max(r["distance"], 0.5) for r in moved])
        ax.plot(d, [_max(r["error"]) for r in moved], "o-",
                label="max |decode(encode(x)) − x|, x moved r σ")
        ax.plot(d, [_max(r["bound"]) for r in moved], "k--",
                label="its first-order bound (clamps, Jacobians)")
        ax.plot(d, [_max(r["latent"]) for r in moved], "s:",
                label="max |encode(decode(z)) − z|, z moved r σ")
        ax.plot(d, [_max(r["error64"]) for r in moved], "o-", color="C0",
                alpha=0.4, markersize=3, lw=0.8,
                label="max |decode(encode(x)) − x|, same weights in float64")
        for i, r in enumerate(x for x in results if x["latent"] is None):
            ax.scatter([r["distance"]], [_max(r["error"])], marker="xP"[i % 2],
                       s=60, color=f"C{3 + i}", zorder=3,
                       label=f"{r['name']} images (median distance)")
        lost = [r for r in moved if np.isnan(r["error"]).all()]
        if lost:
            ax.axvspan(min(max(r["distance"], 0.5) for r in lost), d[-1] * 1.2,
                       color="gray", alpha=0.15,
                       label="encode(x) not finite (pixels at the logit's edge)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("distance r from the data, in the data's σ (0 drawn at 0.5)"
                      + ("; logit space" if image else ""), fontsize=9)
        ax.set_ylabel("round-trip error (float32 unless said)")
        ax.set_title(title, fontsize=10)
        ax.axhline(2.0**-24, color="gray", lw=0.6)
        ax.axhline(2.0**-53, color="gray", lw=0.6, ls=":")
        ax.legend(fontsize=6.5, loc="upper left" if image else "lower right")
    plt.tight_layout()
    plt.savefig(path, dpi=110)
    print("wrote", path)


if __name__ == "__main__":
    main()
