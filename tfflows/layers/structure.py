"""Layers that rearrange entries: squeeze, permutation, factor-out."""

import keras
import numpy as np
import tensorflow_probability as tfp

from tfflows import bijectors as tfb_
from tfflows.layers.base import FlowLayer, bound

__all__ = ["Squeeze", "Unsqueeze", "Permutation"]

tfb = tfp.bijectors


class _Reshuffle(FlowLayer):
    """A weightless layer whose output shape is its bijector's to say."""

    def build(self, input_shape):
        self.compute_output_shape(input_shape)  # raises on an impossible shape
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        # Data -> latent is the bijector's inverse direction.
        return tuple(self.make_bijector().inverse_event_shape(input_shape))


@keras.saving.register_keras_serializable(package="tfflows")
class Squeeze(_Reshuffle):
    """Space-to-depth on the way to the latent: `[H, W, C] -> [H/2, W/2, 4C]`.

    Its bijector is `tfb.Invert(tfflows.bijectors.Squeeze())`, since the
    bijector's forward runs latent -> data.
    """

    def make_bijector(self, context=None):
        return tfb.Invert(tfb_.Squeeze(), name=self.name)


@keras.saving.register_keras_serializable(package="tfflows")
class Unsqueeze(_Reshuffle):
    """Depth-to-space on the way to the latent: undoes a `Squeeze`."""

    def make_bijector(self, context=None):
        return tfb_.Squeeze(name=self.name)


@keras.saving.register_keras_serializable(package="tfflows")
class Permutation(FlowLayer):
    """A fixed permutation of the last axis (`tfflows.bijectors.Permute`).

    Args:
      permutation: "reverse" (default), "random" (drawn from `seed` at build
        and stored as a non-trainable weight), or an explicit list.
      seed: seed for "random".
    """

    def __init__(self, permutation="reverse", seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(permutation, str) and permutation not in ("reverse", "random"):
            raise ValueError("permutation must be 'reverse', 'random' or a list. "
                             f"Received: permutation={permutation!r}")
        self.permutation_spec = (permutation if isinstance(permutation, str)
                                 else [int(i) for i in permutation])
        self.seed = seed

    def build(self, input_shape):
        size = input_shape[-1]
        spec = self.permutation_spec
        if spec == "reverse":
            values = np.arange(size)[::-1]
        elif spec == "random":
            values = np.random.default_rng(self.seed).permutation(size)
        else:
            values = np.asarray(spec)
            if sorted(values.tolist()) != list(range(size)):
                raise ValueError(f"permutation must be a permutation of "
                                 f"range({size}). Received: permutation={spec}")
        self.permutation = self.add_weight(
            shape=(size,), dtype="int32", trainable=False, name="permutation",
            initializer=keras.initializers.Constant(values.astype(np.int32)))
        super().build(input_shape)

    def make_bijector(self, context=None):
        # Forward (latent -> data) undoes the data -> latent permutation. The
        # variable goes in by reference (not converted), so the bijector stays
        # bound to it, e.g. across `load_weights`.
        return tfb.Invert(tfb_.Permute(bound(self.permutation), axis=-1),
                          name=self.name)

    def get_config(self):
        return {**super().get_config(), "permutation": self.permutation_spec,
                "seed": self.seed}
