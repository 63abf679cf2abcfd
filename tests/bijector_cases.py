"""The one registry of bijectors that go through the shared contract harness.

`CASES` maps a name to an `Entry`: `make(dtype) -> Case` (a bijector, a batch
in its forward domain, its event rank, the variables that must get
gradients). Entries made by `layer(...)` also carry the Keras layer that
produces the bijector, its event shape and data domain, for the layer tests
(tests/test_layers.py); their bijector goes through the harness like any
other. Adding a bijector is one line in `CASES`; adding a transformer is one
line in `TRANSFORMERS`, which gives it a coupling (vector and image), an
autoregressive bijector and both layers.
"""

import dataclasses
import math
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfflows as tff
from tfflows import layers as L
from tfflows.bijectors import transformers as T
from tfflows.layers.base import bound

tfb = tfp.bijectors
BATCH = 4


@dataclasses.dataclass
class Case:
    bijector: tfb.Bijector
    x: tf.Tensor
    event_ndims: int
    variables: tuple = ()


@dataclasses.dataclass
class Entry:
    """A registry entry: `make(dtype) -> Case`, and for layer entries the
    layer factory (`layer(dtype=None)`), its event shape and data domain.
    `dtypes` are the ones the harness runs (both unless narrowed)."""
    make: Callable
    layer: Optional[Callable] = None
    shape: tuple = ()
    domain: str = "real"
    dtypes: tuple = (tf.float32, tf.float64)


class RandomConditioner(tf.Module):
    """A random two-layer tanh network from one event shape to another.

    Returns `num_params` tensors shaped `[..., *out_shape]` (a tensor if 1),
    or with `stacked=True` one tensor `[..., *out_shape, num_params]`, with
    weights of a realistic scale so log-scales are O(1).
    """

    def __init__(self, in_shape, out_shape, num_params, dtype, seed=0,
                 hidden=16, out_scale=0.5, stacked=False):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.in_shape, self.out_shape = list(in_shape), list(out_shape)
        self.num_params = num_params
        self.stacked = stacked
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
        if self.stacked:
            return out
        params = tf.unstack(out, self.num_params, axis=-1)
        return params[0] if self.num_params == 1 else tuple(params)


def _normal(shape, dtype, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    return tf.constant(scale * rng.standard_normal([BATCH] + list(shape)), dtype)


def coupling(cls, event_shape, mask="half", **kwargs):
    """NICE's or RealNVP's coupling with a random conditioner."""
    def factory(dtype):
        probe = tff.bijectors.masks.make_mask(
            mask, event_shape, kwargs.get("num_masked"), kwargs.get("flip", False))
        num_params = 2 if cls is tff.bijectors.AffineCoupling else 1
        net = RandomConditioner(probe.conditioner_input_shape,
                                probe.transformed_shape, num_params, dtype)
        return Case(cls(net, event_shape, mask=mask, **kwargs),
                    _normal(event_shape, dtype), len(event_shape),
                    net.trainable_variables)
    return factory


def transformer_coupling(make_transformer, event_shape, mask="half", **kwargs):
    """The generic `Coupling` with a transformer and a random conditioner."""
    def factory(dtype):
        transformer = make_transformer()
        probe = tff.bijectors.masks.make_mask(
            mask, event_shape, kwargs.get("num_masked"), kwargs.get("flip", False))
        net = RandomConditioner(probe.conditioner_input_shape,
                                probe.transformed_shape, transformer.num_params,
                                dtype, stacked=True)
        bijector = tff.bijectors.Coupling(net, event_shape, transformer,
                                          mask=mask, **kwargs)
        return Case(bijector, _normal(event_shape, dtype), len(event_shape),
                    net.trainable_variables)
    return factory


def _random_made(event_size, num_params, dtype, input_order="natural"):
    made = tff.nn.MADE(event_size, num_params=num_params, hidden_units=(16, 16),
                       input_order=input_order, activation="tanh", seed=5,
                       dtype=dtype.name)
    made.build((None, event_size))
    rng = np.random.default_rng(6)
    # Random output weights: a fresh MADE is the identity, which would
    # make the log-det checks vacuous.
    made.set_weights([rng.normal(0, 0.3, w.shape) for w in made.get_weights()])
    return made


def masked_autoregressive(event_size, iaf=False, input_order="natural"):
    """MAF / IAF with the pair-returning network of today's signature."""
    def factory(dtype):
        made = _random_made(event_size, 2, dtype, input_order)
        bij = tff.bijectors.MaskedAutoregressive(
            lambda x: tuple(tf.unstack(made(x), axis=-1)),
            event_size=event_size, iaf=iaf)
        return Case(bij, _normal([event_size], dtype), 1,
                    tuple(v.value for v in made.trainable_variables))
    return factory


def autoregressive(make_transformer, event_size, iaf=False, stepwise=False):
    """The generic `Autoregressive` over a random MADE: the sequential
    direction by `tf.while_loop`, or by `MADE.solve` with `stepwise`."""
    def factory(dtype):
        transformer = make_transformer()
        made = _random_made(event_size, transformer.num_params, dtype, "random")
        bij = tff.bijectors.Autoregressive(
            made, transformer, event_size=event_size, iaf=iaf,
            solve_fn=made.solve if stepwise else None)
        return Case(bij, _normal([event_size], dtype), 1,
                    tuple(v.value for v in made.trainable_variables))
    return factory


def factor_out(event_shape, kept):
    """`FactorOut` around an affine channel coupling on the kept channels."""
    def factory(dtype):
        inner_shape = list(event_shape[:-1]) + [kept]
        half = list(event_shape[:-1]) + [kept // 2]
        net = RandomConditioner(half, half, 2, dtype, seed=8)
        inner = tff.bijectors.AffineCoupling(net, inner_shape, mask="channel")
        bij = tff.bijectors.FactorOut(inner, kept, event_ndims=len(event_shape))
        return Case(bij, _normal(event_shape, dtype), len(event_shape),
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


def permute(permutation):
    """A permutation that is not its own inverse, so the gradients (checked
    against autodiff Jacobians) would show a swapped inverse."""
    return lambda dtype: Case(tff.bijectors.Permute(permutation),
                              _normal([len(permutation)], dtype), 1)


def nice_scale(size):
    def factory(dtype):
        log_scale = tf.Variable(np.linspace(-0.5, 0.5, size), dtype=dtype)
        return Case(tfb.Scale(log_scale=log_scale), _normal([size], dtype), 1,
                    (log_scale,))
    return factory


def planar(one_plus_wu_hat, size=3):
    """A strongly non-linear planar map (|w|, |û| ~ 1.5) with
    `1 + wᵀû = one_plus_wu_hat`, at a batch with one point on the
    hyperplane `wᵀz + b = 0` (where a contracting map is flattest) and one
    close to it."""
    def factory(dtype):
        rng = np.random.default_rng(11)
        w, u = 1.5 * rng.standard_normal((2, size))
        wu = np.log(np.expm1(one_plus_wu_hat))  # softplus(wᵀu) = 1 + wᵀû
        u = u + (wu - w @ u) * w / (w @ w)
        b = 0.4
        z = rng.standard_normal((BATCH, size))
        for i, level in ((0, 0.0), (1, 0.2)):
            z[i] -= (w @ z[i] + b - level) * w / (w @ w)
        variables = tuple(tf.Variable(v, dtype=dtype, name=n)
                          for n, v in (("w", w), ("u", u), ("b", b)))
        return Case(tff.bijectors.Planar(*variables), tf.constant(z, dtype), 1,
                    variables)
    return factory


def radial(alpha, alpha_plus_beta, size=3):
    """A radial map with the given `α` and `α + β`, at a batch holding
    `z₀` itself and a point 1e-3 from it."""
    def factory(dtype):
        rng = np.random.default_rng(12)
        z0 = rng.standard_normal(size)
        raw = lambda v: np.log(np.expm1(v))  # softplus^-1
        variables = (tf.Variable(z0, dtype=dtype, name="z0"),
                     tf.Variable(raw(alpha), dtype=dtype, name="alpha_raw"),
                     tf.Variable(raw(alpha_plus_beta), dtype=dtype, name="beta_raw"))
        z = z0 + rng.standard_normal((BATCH, size))
        z[0], z[1] = z0, z0 + 1e-3 / np.sqrt(size)
        return Case(tff.bijectors.Radial(*variables), tf.constant(z, dtype), 1,
                    variables)
    return factory


def ode(size=3, steps=16):
    """A CNF over a random time-dependent tanh field (`t` enters the
    network as an input; log-dets ~0.1-0.4), exact trace, RK4. 16 steps put
    the solver's error under the harness's float64 tolerances (round trip
    1e-10, log-det 1e-8); 8 do not (round trip 1.3e-10)."""
    def factory(dtype):
        net = RandomConditioner([size + 1], [size], 1, dtype, seed=13,
                                out_scale=0.2)

        def velocity(x, t):
            t = tf.broadcast_to(tf.cast(t, x.dtype), tf.shape(x[..., :1]))
            return net(tf.concat([x, t], -1))
        bij = tff.bijectors.ODE(velocity, size, steps=steps, trace="exact")
        return Case(bij, _normal([size], dtype), 1, net.trainable_variables)
    return factory


def ode_jvp(size=3, steps=16, trace="exact"):
    """A CNF over a `VelocityMLP` with random weights (log-dets 0.22-0.25)
    whose trace comes from the network's forward-mode `jvp`, as
    `layers.Continuous` builds it: no GradientTape in the solver's loop.
    `trace="hutchinson"` checks the log-det's consistency for fixed probes
    (an estimate, so not the autodiff Jacobian's: see test_cnf)."""
    def factory(dtype):
        net = tff.nn.VelocityMLP(size, hidden_units=(8, 8), activation="tanh",
                                 dtype=dtype.name)
        net(tf.zeros([1, size], dtype), tf.zeros([1], dtype))
        rng = np.random.default_rng(17)
        for w in net.weights:
            w.assign(0.25 * rng.standard_normal(w.shape))
        bij = tff.bijectors.ODE(lambda x, t: net(x, t), size, steps=steps,
                                trace=trace, jvp_fn=net.jvp)
        return Case(bij, _normal([size], dtype), 1, net.trainable_variables)
    return factory


# -- layers: their bijector, bound to random weights, joins the registry -------
def layer_data(shape, domain, batch=6, seed=0, dtype=tf.float32):
    """A data-side batch for a layer: N(0.3, 1.2^2), or U(0.05, 0.95)."""
    rng = np.random.default_rng(seed)
    if domain == "unit":
        values = rng.uniform(0.05, 0.95, (batch,) + tuple(shape))
    else:
        values = rng.normal(0.3, 1.2, (batch,) + tuple(shape))
    return tf.constant(values, dtype)


def built_layer(entry, dtype=tf.float32, random_weights=True):
    """The entry's layer, built for `[None, *shape]`, weights perturbed
    (fresh couplings are the identity, which would make checks vacuous).
    Seeded: the same weights on every run."""
    keras.utils.set_random_seed(0)
    layer = entry.layer(dtype=dtype.name)
    layer.build((None,) + entry.shape)
    if random_weights:
        rng = np.random.default_rng(0)
        for w in layer.trainable_weights:
            w.assign(w.numpy() + 0.1 * rng.standard_normal(w.shape).astype(w.dtype))
    return layer


def layer(factory, shape, domain="real", dtypes=(tf.float32, tf.float64)):
    """A layer entry: `factory(**kwargs)` makes the layer (kwargs: dtype)."""
    def make(dtype):
        entry = Entry(None, factory, shape, domain)
        built = built_layer(entry, dtype)
        bijector = built.bijector
        data = layer_data(shape, domain, batch=BATCH, dtype=dtype)
        x = tf.constant(bijector.inverse(data).numpy())  # the latent side
        return Case(bijector, x, len(shape),
                    tuple(bound(w) for w in built.trainable_weights))
    return Entry(make, factory, tuple(shape), domain, tuple(dtypes))


def layer32(factory, shape, domain="real"):
    return layer(factory, shape, domain, dtypes=(tf.float32,))


# -- the registry ----------------------------------------------------------------
TRANSFORMERS = {  # one line per transformer
    "additive": T.Additive,
    "affine": T.Affine,
    "spline": lambda: T.RationalQuadraticSpline(bins=4, tail_bound=2.0),
}


def _transformer_entries(name, make):
    """A transformer's four entries: a vector coupling and an autoregressive
    bijector (its sequential direction by `tf.while_loop`) at the bijector
    level; an image coupling layer and an autoregressive layer (sequential
    direction by `MADE.solve`)."""
    config = T.serialize(make())
    return {
        f"coupling_{name}": Entry(transformer_coupling(make, [5], num_masked=2,
                                                       flip=True)),
        f"autoregressive_{name}": Entry(autoregressive(make, 3)),
        f"layer_coupling_{name}_channel": layer(lambda **kw: L.Coupling(
            config, mask="channel", hidden_channels=8, **kw), (2, 2, 2)),
        f"layer_autoregressive_{name}": layer(lambda **kw: L.MaskedAutoregressive(
            hidden_units=(8,), seed=1, transformer=config, **kw), (3,)),
    }


AC, AF = tff.bijectors.AdditiveCoupling, tff.bijectors.AffineCoupling
CASES = {
    "additive_half": Entry(coupling(AC, [5], num_masked=2)),
    "additive_half_flip": Entry(coupling(AC, [5], num_masked=2, flip=True)),
    "additive_checkerboard": Entry(coupling(AC, [4, 4, 2], mask="checkerboard")),
    "additive_channel": Entry(coupling(AC, [2, 2, 4], mask="channel")),
    "affine_half": Entry(coupling(AF, [6])),
    "affine_half_flip": Entry(coupling(AF, [6], num_masked=1, flip=True)),
    "affine_checkerboard": Entry(coupling(AF, [4, 4, 2], mask="checkerboard")),
    "affine_checkerboard_flip": Entry(coupling(AF, [4, 4, 1], mask="checkerboard", flip=True)),
    "affine_channel": Entry(coupling(AF, [3, 3, 4], mask="channel")),
    "affine_channel_flip": Entry(coupling(AF, [2, 2, 6], mask="channel", flip=True)),
    "actnorm_vector": Entry(actnorm([3])),
    "actnorm_image": Entry(actnorm([4, 4, 3])),
    "conv1x1_vector": Entry(conv1x1([4])),
    "conv1x1_image": Entry(conv1x1([3, 3, 4])),
    "maf": Entry(masked_autoregressive(5)),
    "maf_random_order": Entry(masked_autoregressive(5, input_order="random")),
    "iaf": Entry(masked_autoregressive(5, iaf=True)),
    "factor_out": Entry(factor_out([2, 2, 6], kept=4)),
    "squeeze": Entry(squeeze([4, 6, 2])),
    "logit": Entry(logit([4, 4, 1])),
    "reverse": Entry(reverse(4)),
    "permute": Entry(permute([2, 0, 3, 1])),
    "nice_scale": Entry(nice_scale(4)),
    "planar_expanding": Entry(planar(3.0)),            # wᵀû = 2
    "planar_near_singular": Entry(planar(0.01)),       # wᵀû = -0.99
    "radial_expanding": Entry(radial(0.7, 2.7)),       # β = 2
    "radial_near_collapse": Entry(radial(0.7, 0.007)),  # β = -0.99 α
    "ode_rk4_exact": Entry(ode()),
    "ode_rk4_jvp": Entry(ode_jvp()),
    # Layers (tests/test_layers.py checks the layers themselves). Their
    # bijectors have float64 entries above, so these run in float32 only.
    "layer_additive_half": layer32(lambda **kw: L.AdditiveCoupling(
        mask="half", hidden_units=(8,), **kw), (4,)),
    "layer_additive_checkerboard": layer32(lambda **kw: L.AdditiveCoupling(
        mask="checkerboard", hidden_channels=8, **kw), (4, 4, 1)),
    "layer_additive_channel": layer32(lambda **kw: L.AdditiveCoupling(
        mask="channel", hidden_channels=8, **kw), (4, 4, 2)),
    "layer_affine_half": layer32(lambda **kw: L.AffineCoupling(
        mask="half", hidden_units=(8, 8), **kw), (4,)),
    "layer_affine_checkerboard": layer32(lambda **kw: L.AffineCoupling(
        mask="checkerboard", flip=True, hidden_channels=8, **kw), (4, 4, 1)),
    "layer_affine_channel": layer32(lambda **kw: L.AffineCoupling(
        mask="channel", hidden_channels=8, **kw), (4, 4, 2)),
    "layer_actnorm_vector": layer32(lambda **kw: L.ActNorm(**kw), (3,)),
    "layer_actnorm_image": layer32(lambda **kw: L.ActNorm(**kw), (4, 4, 2)),
    "layer_conv1x1_vector": layer32(lambda **kw: L.InvertibleConv1x1(seed=1, **kw), (3,)),
    "layer_conv1x1_image": layer32(lambda **kw: L.InvertibleConv1x1(seed=2, **kw), (4, 4, 3)),
    "layer_maf": layer32(lambda **kw: L.MaskedAutoregressive(
        hidden_units=(8,), seed=1, **kw), (3,)),
    "layer_iaf": layer32(lambda **kw: L.MaskedAutoregressive(
        hidden_units=(8,), iaf=True, seed=1, **kw), (3,)),
    "layer_squeeze": layer32(lambda **kw: L.Squeeze(**kw), (4, 4, 1)),
    "layer_unsqueeze": layer32(lambda **kw: L.Unsqueeze(**kw), (2, 2, 4)),
    "layer_permutation_reverse": layer32(lambda **kw: L.Permutation("reverse", **kw), (3,)),
    "layer_permutation_random": layer32(lambda **kw: L.Permutation(  # [3 2 0 1]:
        "random", seed=2, **kw), (4,)),  # not its own inverse
    "layer_scale": layer32(lambda **kw: L.Scale(**kw), (3,)),
    "layer_planar": layer32(lambda **kw: L.Planar(**kw), (3,)),
    "layer_radial": layer32(lambda **kw: L.Radial(**kw), (3,)),
    "layer_continuous": layer32(lambda **kw: L.Continuous(
        hidden_units=(8,), steps=16, **kw), (3,)),
    "layer_logit": layer32(lambda **kw: L.Logit(**kw), (4, 4, 1), "unit"),
    "layer_factor_out": layer32(lambda **kw: L.FactorOut([
        L.Squeeze(**kw), L.AffineCoupling(mask="channel", hidden_channels=8, **kw),
        L.Unsqueeze(**kw)], **kw), (4, 4, 2)),
}
for _name, _make in TRANSFORMERS.items():
    CASES.update(_transformer_entries(_name, _make))

LAYER_CASES = {name: entry for name, entry in CASES.items() if entry.layer}
