"""The `transformer=` argument shared by coupling and autoregressive layers."""

from tfflows._checks import integer, positive_number
from tfflows.bijectors import transformers

__all__ = ["make_transformer", "transformer_config", "upgrade_config"]


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
    # Checked here under the names the layers and builders take.
    spline_kwargs = {key: value for key, value in
                     (("bins", integer("spline_bins", spline_bins, minimum=2,
                                       optional=True)),
                      ("tail_bound", tail_bound if tail_bound is None else
                       positive_number("tail_bound", tail_bound)))
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
    """A layer's config entry for its `Transformer`: the full
    `transformers.serialize` dict, so the config does not depend on the
    defaults of the code that loads it."""
    return transformers.serialize(transformer)


# How configs written before `Affine(shift=...)` existed name the affine
# transformer; those layers were trained with the shift in the data and
# the tanh clamp.
_LEGACY_AFFINE = {"name": "affine", "config": {
    "log_scale_clamp": 5.0, **transformers.Affine.LEGACY_DEFAULTS}}


def upgrade_config(config):
    """A layer config with its transformer in today's form: the bare name
    "affine" (or no transformer at all) of older configs becomes the data-
    shift affine they were saved with. Other entries are kept as they are."""
    config = dict(config)
    if config.get("transformer", "affine") == "affine":
        config["transformer"] = _LEGACY_AFFINE
    return config
