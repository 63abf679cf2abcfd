"""The `transformer=` argument shared by coupling and autoregressive layers."""

from tfflows.bijectors import transformers

__all__ = ["make_transformer", "transformer_config"]


def make_transformer(transformer, spline_bins=None, tail_bound=None):
    """The `Transformer` a layer's arguments name.

    Args:
      transformer: "additive", "affine", "spline", a `Transformer`, or the
        `transformers.serialize` dict of one (as saved in a config).
      spline_bins: "spline" only: number of bins K (default 8).
      tail_bound: "spline" only: the spline acts on `[-B, B]` (default 3).

    Raises:
      ValueError: on an unknown transformer, or spline arguments with
        another transformer.
    """
    spline_kwargs = {key: value for key, value in
                     (("bins", spline_bins), ("tail_bound", tail_bound))
                     if value is not None}
    if spline_kwargs and transformer != "spline":
        raise ValueError(
            "spline_bins and tail_bound apply to transformer='spline' only. "
            f"Received: transformer={transformer!r}, spline_bins={spline_bins!r}, "
            f"tail_bound={tail_bound!r}")
    if isinstance(transformer, (str, dict, transformers.Transformer)):
        return transformers.get(transformer, **spline_kwargs)
    raise ValueError(f"transformer must be one of {sorted(transformers.TRANSFORMERS)}"
                     f" or a Transformer. Received: transformer={transformer!r}")


def transformer_config(transformer):
    """JSON-friendly form of a layer's `transformer` argument."""
    if isinstance(transformer, str):
        return transformer
    if isinstance(transformer, transformers.Transformer):
        return transformers.serialize(transformer)
    return {"name": transformer["name"], "config": dict(transformer["config"])}
