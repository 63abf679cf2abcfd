"""MAF / IAF with the affine transformer: today's `MaskedAutoregressive`."""

import tensorflow as tf

from tfflows.bijectors.autoregressive import Autoregressive
from tfflows.bijectors.transformers import Affine

__all__ = ["MaskedAutoregressive"]


def _pair(params, what):
    if not isinstance(params, (tuple, list)) or len(params) != 2:
        raise ValueError(
            f"MaskedAutoregressive's {what} must return a pair "
            f"(shift, log_scale). Received: {type(params).__name__}")
    shift = tf.convert_to_tensor(params[0])
    return shift, tf.convert_to_tensor(params[1], shift.dtype)


class MaskedAutoregressive(Autoregressive):
    """Affine autoregressive bijector, `forward` latent -> data (MAF; IAF with `iaf=True`).

    With `(mu, s) = f(x)` autoregressive (output `i` depends only on the
    inputs before `i` in some order), MAF's two directions are:

    ```none
    forward (sampling, D passes):   x_i = z_i * exp(s_i(x_<i)) + mu_i(x_<i)
    inverse (density, one pass):    z = (x - mu(x)) * exp(-s(x))
    log|det dx/dz| = sum_i s_i(x)
    ```

    `tfflows.bijectors.Autoregressive` with `transformers.Affine`, for a
    network returning the pair `(shift, log_scale)`. With `iaf=True` the two
    directions swap (the bijector is `tfb.Invert` of the MAF above):
    sampling is one pass and density evaluation of a new point takes D
    passes, as in IAF. Either way, the sequential direction runs a
    `tf.while_loop` of exactly D network calls, the last of which also
    yields the log-det; the one-pass direction calls the network once. `s`
    is soft-clamped (`s / (1 + |s| / c)`, `tfflows.bijectors.soft_clamp`).

    References:
      George Papamakarios, Theo Pavlakou, Iain Murray (2017). Masked
      Autoregressive Flow for Density Estimation.
      https://arxiv.org/abs/1705.07057
      Diederik P. Kingma, Tim Salimans, Rafal Jozefowicz, Xi Chen, Ilya
      Sutskever, Max Welling (2016). Improved Variational Inference with
      Inverse Autoregressive Flow. https://arxiv.org/abs/1606.04934

    Args:
      shift_and_log_scale_fn: callable `x -> (shift, log_scale)`, each
        `[..., D]`, with the autoregressive property (e.g. `tfflows.nn.MADE`
        with `num_params=2`, unstacked on the last axis). Condition kwargs
        such as `context` are forwarded to it.
      event_size: D, if known; checked against inputs.
      solve_fn: optional callable, `solve_fn(z, transform,
        **condition_kwargs) -> (x, log_det)` that solves the sequential
        direction (as `tfflows.nn.MADE.solve`; see `Autoregressive`), handing
        `transform` the pair (shift, log_scale) of one input at a time. With
        it and `event_size`, the sequential direction runs D static steps
        that each compute only what that input needs, instead of D full
        passes.
      iaf: swap directions (IAF: one-pass sampling).
      log_scale_clamp: soft clamp bound `c` (default 5); None disables it.
      clamp_form: "rational" (default) or "tanh" (`soft_clamp`'s `form`).
      validate_args: check inputs are finite.
      name: bijector name.
    """

    def __init__(self, shift_and_log_scale_fn, event_size=None, iaf=False,
                 log_scale_clamp=5.0, solve_fn=None, validate_args=False,
                 name="masked_autoregressive", clamp_form="rational"):
        parameters = dict(locals())
        if not callable(shift_and_log_scale_fn):
            raise ValueError(
                "shift_and_log_scale_fn must be callable. Received: "
                f"{shift_and_log_scale_fn!r}")
        super().__init__(shift_and_log_scale_fn, transformer=Affine(log_scale_clamp, "data", clamp_form),
                         event_size=event_size, iaf=iaf,
                         solve_fn=solve_fn, validate_args=validate_args,
                         name=name, parameters=parameters)

    def _params(self, x, kwargs):
        return super()._check_params(
            _pair(self._params_raw(x, kwargs), "network"),
            (x.shape[-1], 2))

    def _step_params(self, params):
        return super()._step_params(_pair(params, "solve function"))
