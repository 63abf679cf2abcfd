"""Builders for the classic flow architectures, each returning a `Flow`.

Layers are listed from the data side. Every coupling network is
zero-initialised, so coupling builders return the identity map on a standard
normal until trained (image flows add the logit preprocessing); MAF and IAF
start as random affine autoregressive maps (see
`tfflows.layers.MaskedAutoregressive`).
"""

from tfflows import layers as L
from tfflows.flow import Flow

__all__ = ["nice", "realnvp", "glow", "maf", "iaf"]


def _check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer. "
                             f"Received: {name}={value!r}")


def _check_image(image_shape, levels):
    shape = tuple(image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError("image_shape must be (H, W, C). "
                         f"Received: image_shape={image_shape!r}")
    step = 2 ** levels
    if shape[0] % step or shape[1] % step:
        raise ValueError(
            f"{levels} levels squeeze {levels} times: H and W must be "
            f"divisible by {step}. Received: image_shape={shape}")
    return shape


def nice(event_dim, num_layers=4, hidden_units=(256, 256), context_dim=None,
         name="nice"):
    """NICE (Dinh et al. 2015, https://arxiv.org/abs/1410.8516): additive
    couplings with alternating halves, then a learned diagonal rescaling."""
    _check_positive(event_dim=event_dim, num_layers=num_layers)
    layers = [L.AdditiveCoupling(flip=bool(i % 2), hidden_units=hidden_units,
                                 context_dim=context_dim)
              for i in range(num_layers)]
    return Flow(layers + [L.Scale()], (event_dim,), context_dim=context_dim,
                name=name)


def _vector_realnvp(event_dim, num_layers, hidden_units, context_dim, actnorm):
    layers = []
    for i in range(num_layers):
        if actnorm:
            layers.append(L.ActNorm())
        layers.append(L.AffineCoupling(flip=bool(i % 2), hidden_units=hidden_units,
                                       context_dim=context_dim))
        if i % 2 and i < num_layers - 1 and event_dim > 2:
            layers.append(L.Permutation("random", seed=i))
    return layers


def _image_realnvp_level(level, levels, hidden_channels, context_dim):
    coupling = lambda mask, i: L.AffineCoupling(
        mask=mask, flip=bool(i % 2), hidden_channels=hidden_channels,
        context_dim=context_dim)
    if level == levels - 1:
        return [coupling("checkerboard", i) for i in range(4)]
    inner = _image_realnvp_level(level + 1, levels, hidden_channels, context_dim)
    return ([coupling("checkerboard", i) for i in range(3)] + [L.Squeeze()]
            + [coupling("channel", i) for i in range(3)]
            + [L.FactorOut(inner, context_dim=context_dim), L.Unsqueeze()])


def realnvp(event_dim=None, num_layers=8, hidden_units=(128, 128),
            image_shape=None, levels=2, hidden_channels=64, num_bins=256,
            context_dim=None, actnorm=True, name="realnvp"):
    """RealNVP (Dinh et al. 2017, https://arxiv.org/abs/1605.08803).

    Vectors (`event_dim`): `num_layers` affine couplings with alternating
    halves, actnorm before each, and fixed random permutations between pairs.
    Images (`image_shape`): the multi-scale architecture: per level three
    checkerboard couplings, a squeeze, three channel couplings, and half the
    channels factored out; four checkerboard couplings at the last level;
    logit preprocessing in front.
    """
    if (event_dim is None) == (image_shape is None):
        raise ValueError("realnvp takes exactly one of event_dim (vectors) or "
                         "image_shape (images)")
    if event_dim is not None:
        _check_positive(event_dim=event_dim, num_layers=num_layers)
        if event_dim < 2:
            raise ValueError("Coupling flows need event_dim >= 2. "
                             f"Received: event_dim={event_dim}")
        return Flow(_vector_realnvp(event_dim, num_layers, hidden_units,
                                    context_dim, actnorm),
                    (event_dim,), context_dim=context_dim, name=name)
    _check_positive(levels=levels)
    shape = _check_image(image_shape, levels - 1)
    layers = [L.Logit()] + _image_realnvp_level(0, levels, hidden_channels,
                                                context_dim)
    return Flow(layers, shape, context_dim=context_dim, num_bins=num_bins,
                name=name)


def _glow_level(level, levels, steps, hidden_channels, context_dim):
    body = []
    for _ in range(steps):
        body += [L.ActNorm(), L.InvertibleConv1x1(),
                 L.AffineCoupling(mask="channel", hidden_channels=hidden_channels,
                                  context_dim=context_dim)]
    if level < levels - 1:
        inner = _glow_level(level + 1, levels, steps, hidden_channels, context_dim)
        body.append(L.FactorOut(inner, context_dim=context_dim))
    return [L.Squeeze()] + body + [L.Unsqueeze()]


def glow(image_shape, levels=3, steps_per_level=8, hidden_channels=128,
         num_bins=256, context_dim=None, name="glow"):
    """Glow (Kingma & Dhariwal 2018, https://arxiv.org/abs/1807.03039).

    `levels` x (squeeze, `steps_per_level` x [actnorm -> invertible 1x1 conv
    (LU) -> affine coupling], split half the channels), logit preprocessing
    in front. Factored-out channels stay in place, so the latent has the
    image's shape. Sample with `flow.sample(n, temperature=0.7)`.
    """
    _check_positive(levels=levels, steps_per_level=steps_per_level,
                    hidden_channels=hidden_channels)
    shape = _check_image(image_shape, levels)
    layers = [L.Logit()] + _glow_level(0, levels, steps_per_level,
                                       hidden_channels, context_dim)
    return Flow(layers, shape, context_dim=context_dim, num_bins=num_bins,
                name=name)


def _autoregressive(event_dim, num_layers, hidden_units, context_dim, actnorm,
                    iaf):
    _check_positive(event_dim=event_dim, num_layers=num_layers)
    layers = []
    for i in range(num_layers):
        if actnorm:
            layers.append(L.ActNorm())
        layers.append(L.MaskedAutoregressive(hidden_units=hidden_units, iaf=iaf,
                                             context_dim=context_dim))
        if i < num_layers - 1:
            layers.append(L.Permutation("reverse"))
    return layers


def maf(event_dim, num_layers=5, hidden_units=(128, 128), context_dim=None,
        actnorm=False, name="maf"):
    """MAF (Papamakarios et al. 2017, https://arxiv.org/abs/1705.07057):
    masked autoregressive layers over MADE, order reversed between layers.
    Density in one pass per layer; sampling in D passes."""
    return Flow(_autoregressive(event_dim, num_layers, hidden_units,
                                context_dim, actnorm, iaf=False),
                (event_dim,), context_dim=context_dim, name=name)


def iaf(event_dim, num_layers=5, hidden_units=(128, 128), context_dim=None,
        actnorm=False, name="iaf"):
    """IAF (Kingma et al. 2016, https://arxiv.org/abs/1606.04934): the same
    stack with each layer inverted: sampling in one pass per layer, density
    of new points in D passes."""
    return Flow(_autoregressive(event_dim, num_layers, hidden_units,
                                context_dim, actnorm, iaf=True),
                (event_dim,), context_dim=context_dim, name=name)
