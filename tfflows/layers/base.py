"""The base of every flow layer: a Keras layer that hands out a bijector."""

import keras
import tensorflow as tf

from tfflows._checks import integer

__all__ = ["FlowLayer", "bound", "build_network"]


def bound(variable):
    """The `tf.Variable` behind a Keras variable, so TFP reads it live.

    TFP keeps `tf.Variable` parameters by reference but converts anything else
    (a Keras 3 variable included) to a constant at construction.
    """
    return getattr(variable, "value", variable)


def build_network(network, input_shape, context_dim, dtype):
    """Creates a conditioner's weights by calling it once on zeros."""
    x = keras.ops.zeros((1,) + tuple(input_shape[1:]), dtype=dtype)
    if context_dim is None:
        network(x)
    else:
        network(x, context=keras.ops.zeros((1, context_dim), dtype=dtype))


class FlowLayer(keras.layers.Layer):
    """A Keras 3 layer that owns a flow's variables and exposes its bijector.

    Subclasses create their weights in `build` and implement
    `make_bijector(context=None)`, returning a `tfp.bijectors.Bijector` bound
    to those weights (TFP's direction: `forward` maps latent -> data).

    Flows list their layers from the data side: a layer's `call` (and
    `inverse`) maps data -> latent and returns the log-det of that map;
    `forward` runs the other way.

    Args:
      context_dim: size of the conditioning input, for conditional layers.
    """

    conditional = False  # whether the layer can take a context
    # Whether XLA speeds up training this layer on a CPU-only host: True for
    # layers whose steps are many small elementwise ops that XLA fuses
    # (MADE, convolutions), False for dense networks, whose matmuls run
    # faster through TensorFlow's oneDNN kernels than through XLA's, None
    # for no say (no weights, or a few elementwise ops). `Flow.compile`
    # reads it to pick its default.
    xla_on_cpu = None

    def __init__(self, context_dim=None, **kwargs):
        super().__init__(**kwargs)
        if context_dim is not None:
            if not self.conditional:
                raise ValueError(f"{type(self).__name__} takes no context. "
                                 f"Received: context_dim={context_dim!r}")
            context_dim = integer("context_dim", context_dim)
        self.context_dim = context_dim

    def make_bijector(self, context=None):
        raise NotImplementedError

    @property
    def bijector(self):
        """The TFP bijector bound to this layer's variables (no context)."""
        self._require_built()
        return self.make_bijector()

    def _require_built(self):
        if not self.built:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' is not built: call it on "
                "a batch (or build the Flow that holds it) first")

    def _check_context(self, context):
        if self.context_dim is not None and context is None:
            raise ValueError(f"{type(self).__name__} '{self.name}' is "
                             f"conditional (context_dim={self.context_dim}) "
                             "and needs a `context`")
        if self.context_dim is None and context is not None:
            raise ValueError(f"{type(self).__name__} '{self.name}' is not "
                             "conditional but received a `context`")

    def _event_ndims(self, t):
        return self._built_event_ndims

    def _batch_shape(self, t):
        """All of `t`'s dimensions left of the event (one or several)."""
        return tf.shape(t)[:tf.rank(t) - self._event_ndims(t)]

    def build(self, input_shape):
        self._built_event_ndims = len(input_shape) - 1
        self.built = True

    def _transform(self, t, context, direction):
        self._check_context(context)
        self._require_built()
        bijector = self.make_bijector(context)
        out = getattr(bijector, direction)(t)
        ldj = getattr(bijector, f"{direction}_log_det_jacobian")(
            t, event_ndims=self._event_ndims(t))
        return out, tf.broadcast_to(ldj, self._batch_shape(t))

    def inverse(self, x, context=None):
        """data -> latent: `(z, log|det dz/dx|)`."""
        return self._transform(x, context, "inverse")

    def forward(self, z, context=None):
        """latent -> data: `(x, log|det dx/dz|)`."""
        return self._transform(z, context, "forward")

    def call(self, x, context=None):
        return self.inverse(x, context)

    @property
    def needs_initialization(self):
        """Whether `initialize_from` still has something to set from data."""
        return False

    def initialize_from(self, x, context=None):
        """Data-dependent initialisation hook: sees the batch arriving from
        the data side and returns this layer's output for the next layer.
        Most layers have nothing to initialise. The flow hands its context to
        every layer; only conditional layers take it."""
        return self.inverse(x, context if self.context_dim is not None else None)[0]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "context_dim": self.context_dim}
