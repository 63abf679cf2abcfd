"""Coupling masks: which entries condition and which are transformed.

A mask splits an event into a conditioning part `a`, fed to the conditioner
network, and a transformed part `b`, then merges them back. Three kinds, as in
RealNVP (Dinh et al. 2017):

- `half`: vectors `[..., D]`; `a` is the first `num_masked` entries (the last
  ones with `flip=True`), `b` the rest.
- `channel`: images `[..., H, W, C]`, C even; `a` is the first C/2 channels
  (the last with `flip=True`).
- `checkerboard`: images `[..., H, W, C]`; `a` is the whole image with the
  transformed squares zeroed, `b` the whole image of which only the squares
  with `(i + j + flip) % 2 == 1` change.

Masks are stateless and built once, at construction.
"""

import numpy as np
import tensorflow as tf

__all__ = ["make_mask", "SplitMask", "CheckerboardMask"]

MASK_KINDS = ("half", "checkerboard", "channel")


class SplitMask:
    """Splits the last axis at `num_masked` (half and channel masks)."""

    def __init__(self, event_shape, num_masked, flip):
        self.event_shape = tuple(event_shape)
        size = self.event_shape[-1]
        self.num_masked = num_masked
        self.flip = bool(flip)
        # `a` and `b` sizes along the last axis, in storage order.
        self._sizes = ([size - num_masked, num_masked] if self.flip
                       else [num_masked, size - num_masked])

    @property
    def transformed_shape(self):
        """Event shape of the transformed part `b`."""
        size = self.event_shape[-1] - self.num_masked
        return self.event_shape[:-1] + (size,)

    @property
    def conditioner_input_shape(self):
        """Event shape of the conditioning part `a`, the conditioner's input."""
        return self.event_shape[:-1] + (self.num_masked,)

    def split(self, x):
        first, second = tf.split(x, self._sizes, axis=-1)
        return (second, first) if self.flip else (first, second)

    def merge(self, x, x_a, y_b):
        del x
        parts = [y_b, x_a] if self.flip else [x_a, y_b]
        return tf.concat(parts, axis=-1)

    def select(self, elementwise):
        """Keeps the entries of an elementwise quantity that belong to `b`."""
        return elementwise


class CheckerboardMask:
    """Alternating squares over the spatial axes, the same for every channel."""

    def __init__(self, event_shape, flip):
        self.event_shape = tuple(event_shape)
        height, width = self.event_shape[0], self.event_shape[1]
        self.flip = bool(flip)
        rows, cols = np.meshgrid(np.arange(height), np.arange(width),
                                 indexing="ij")
        keep = ((rows + cols + int(self.flip)) % 2 == 0)
        self._keep = keep[..., None].astype(np.float64)

    @property
    def transformed_shape(self):
        return self.event_shape

    @property
    def conditioner_input_shape(self):
        """The whole image, transformed squares zeroed."""
        return self.event_shape

    def _mask(self, dtype):
        return tf.constant(self._keep, dtype=dtype)

    def split(self, x):
        return x * self._mask(x.dtype), x

    def merge(self, x, x_a, y_b):
        del x_a
        keep = self._mask(x.dtype)
        return keep * x + (1. - keep) * y_b

    def select(self, elementwise):
        return elementwise * (1. - self._mask(elementwise.dtype))


def make_mask(mask, event_shape, num_masked=None, flip=False):
    """Builds the mask object for a coupling bijector, validating the config.

    Args:
      mask: one of `"half"`, `"checkerboard"`, `"channel"`.
      event_shape: the event shape the coupling acts on: `[D]` for `half`,
        `[H, W, C]` for `checkerboard` and `channel`.
      num_masked: `half` only: how many entries condition (default `D // 2`);
        must be in `[1, D - 1]`.
      flip: swaps the roles of the two parts.

    Returns:
      A mask with `split(x) -> (a, b)`, `merge(x, a, y_b) -> y`,
      `select(elementwise)`, `transformed_shape` (of `b`) and
      `conditioner_input_shape` (of `a`, what the conditioner sees).

    Raises:
      ValueError: on an unknown mask, a wrong event rank, an odd channel count
        for `channel`, or `num_masked` out of range.
    """
    if mask not in MASK_KINDS:
        raise ValueError(f"mask must be one of {MASK_KINDS}. "
                         f"Received: mask={mask!r}")
    try:
        event_shape = tuple(int(d) for d in event_shape)
    except (TypeError, ValueError):
        raise ValueError("event_shape must be a sequence of known integers. "
                         f"Received: event_shape={event_shape!r}") from None
    if any(d < 1 for d in event_shape):
        raise ValueError("event_shape entries must be >= 1. "
                         f"Received: event_shape={event_shape}")
    if mask == "half":
        if len(event_shape) != 1:
            raise ValueError(
                "mask='half' acts on vectors: event_shape must be [D]. "
                f"Received: event_shape={event_shape}")
        size = event_shape[0]
        if num_masked is None:
            num_masked = size // 2
        if not 1 <= num_masked <= size - 1:
            raise ValueError(
                f"num_masked must be in [1, {size - 1}] for event size {size}. "
                f"Received: num_masked={num_masked}")
        return SplitMask(event_shape, num_masked, flip)
    if len(event_shape) != 3:
        raise ValueError(
            f"mask={mask!r} acts on NHWC images: event_shape must be "
            f"[H, W, C]. Received: event_shape={event_shape}")
    if num_masked is not None:
        raise ValueError(f"num_masked only applies to mask='half'. "
                         f"Received: num_masked={num_masked}, mask={mask!r}")
    if mask == "channel":
        channels = event_shape[-1]
        if channels % 2:
            raise ValueError(
                "mask='channel' splits the channels in half and needs an even "
                f"channel count. Received: event_shape={event_shape} "
                f"({channels} channels)")
        return SplitMask(event_shape, channels // 2, flip)
    if event_shape[0] * event_shape[1] < 2:
        raise ValueError("mask='checkerboard' needs at least two pixels. "
                         f"Received: event_shape={event_shape}")
    return CheckerboardMask(event_shape, flip)
