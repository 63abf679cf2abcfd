"""The additive (shift-only) transformer of NICE."""

from tfflows.bijectors.transformers._base import Transformer

__all__ = ["Additive"]


class Additive(Transformer):
    """A shift: volume-preserving.

    ```none
    forward:  y = x + t        inverse:  x = y - t        log|dy/dx| = 0
    ```

    Parameters per entry: 1, `[t]`; zero is the identity.

    References:
      Laurent Dinh, David Krueger, Yoshua Bengio (2015). NICE: Non-linear
      Independent Components Estimation. https://arxiv.org/abs/1410.8516
    """

    name = "additive"
    is_constant_jacobian = True

    @property
    def num_params(self):
        return 1

    def _forward(self, x, params):
        return x + self.planes(params)[0], None

    def _inverse(self, y, params):
        return y - self.planes(params)[0], None
