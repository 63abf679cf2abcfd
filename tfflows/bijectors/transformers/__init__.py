"""Elementwise transformers: the invertible 1-D maps that coupling and
autoregressive bijectors apply to each transformed entry.

A transformer is stateless math: given raw parameters from a network
(`[..., num_params]` per entry) it computes the forward map, the inverse and
the elementwise log-det, and all-zero parameters give the identity. One
coupling bijector (`tfflows.bijectors.Coupling`) and one autoregressive
bijector (`tfflows.bijectors.Autoregressive`) take any of them, as distrax's
`MaskedCoupling(mask, conditioner, bijector)` and zuko's `univariate=` do.

- `"additive"`: `Additive`, `y = x + t` (NICE).
- `"affine"`: `Affine`, `y = (x - t) exp(s)` (or `x exp(s) + t`),
  soft-clamped `s` (RealNVP, MAF).
- `"spline"`: `RationalQuadraticSpline` (Neural Spline Flows).

A new transformer is one `Transformer` subclass added to `TRANSFORMERS`.
"""

from tfflows.bijectors.transformers._base import Transformer
from tfflows.bijectors.transformers.additive import Additive
from tfflows.bijectors.transformers.affine import Affine
from tfflows.bijectors.transformers.spline import RationalQuadraticSpline

__all__ = ["Additive", "Affine", "RationalQuadraticSpline", "Transformer",
           "TRANSFORMERS", "get", "serialize", "deserialize"]

TRANSFORMERS = {cls.name: cls for cls in
                (Additive, Affine, RationalQuadraticSpline)}


def get(identifier, **kwargs):
    """A transformer from a name and keyword arguments, a config from
    `serialize`, or an instance (returned as it is, without kwargs).

    >>> get("spline", bins=4).num_params
    11

    Raises:
      ValueError: on an unknown name, or kwargs with an instance.
    """
    if isinstance(identifier, (Transformer, dict)) and kwargs:
        raise ValueError("Keyword arguments only apply to a transformer "
                         f"given by name. Received: {identifier!r} and "
                         f"{sorted(kwargs)}")
    if isinstance(identifier, Transformer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if identifier not in TRANSFORMERS:
        raise ValueError(f"transformer must be one of {sorted(TRANSFORMERS)} or "
                         f"a Transformer. Received: transformer={identifier!r}")
    try:
        return TRANSFORMERS[identifier](**kwargs)
    except TypeError as error:
        raise ValueError(f"Bad arguments for transformer {identifier!r}: "
                         f"{error}. Received: {kwargs}") from None


def serialize(transformer):
    """`{"name": ..., "config": {...}}`, JSON-friendly."""
    return {"name": transformer.name, "config": transformer.get_config()}


def deserialize(config):
    """The inverse of `serialize`."""
    if set(config) != {"name", "config"}:
        raise ValueError("A transformer config has keys 'name' and 'config'. "
                         f"Received: {config!r}")
    name = config["name"]
    if name not in TRANSFORMERS:
        raise ValueError(f"transformer must be one of {sorted(TRANSFORMERS)}. "
                         f"Received: {config!r}")
    try:
        return TRANSFORMERS[name].from_config(config["config"])
    except TypeError as error:
        raise ValueError(f"Bad arguments for transformer {name!r}: {error}. "
                         f"Received: {config['config']}") from None
