"""The benchmarked flows in PyTorch with zuko, trained the way zuko's README does.

The reference side of the speed and quality benchmarks, for PyTorch users:
the same four vector flows built from `zuko.flows` with tfflows' widths,
depths and spline settings (`build`), trained by a plain PyTorch loop
(`epoch_runner`): `loss = -flow().log_prob(batch).mean()` with
`torch.optim.Adam` over minibatches of a tensor reshuffled every epoch.
Every public function takes numpy arrays and plain Python values and
returns plain floats, lists and dicts, and torch and zuko are imported
inside the functions, so the module imports without them and a caller can
run any function in a child process (`multiprocessing` "spawn") that keeps
torch out of the TensorFlow process. torch keeps its own thread count (one
per core) unless `num_threads` is given.

How the architectures compare with tfflows' (16-D, hidden (128, 128);
trainable parameters, tfflows' `trainable_weights` against
`sum(p.numel() for p in flow.parameters())`; `Flow.count_params()` adds 16
non-trainable permutation entries per permutation layer, 48 for RealNVP
and NSF-C):

- MAF, 5 layers: 114,080 in both. One MADE per layer, 16 -> 128 -> 128 ->
  2 x 16, relu, kernels stored whole and masked; order natural and reversed
  by turns in both (zuko's default; tfflows' builders since 2026-12-05,
  which before permuted the data between layers).
- RealNVP, 8 layers: 157,824 in both. Each coupling has its own dense
  network, 8 -> 128 -> 128 -> 2 x 8. zuko splits by a checkered mask (even
  and odd entries by turns) with no permutation; tfflows by halves, with a
  fixed random permutation after every second coupling.
- NSF-AR, 5 layers: 330,800 in both (MAF's stack with 3K - 1 = 23 spline
  parameters per entry).
- NSF-C, 8 layers: 529,280 for zuko against 331,200. zuko's coupling is
  `NSF(passes=2)`, a MADE over all 16 entries with two degree groups: it
  stores 16 -> 128 and 128 -> 16 x 23 kernels whose masks zero the
  columns of the transformed half and the rows of the conditioning half's
  outputs. Unmasked it has 332,672 parameters, tfflows' plus 8 x 23 output
  biases per layer: zuko's conditioning half gets an elementwise spline of
  learned constant knots too. Its dense matmuls are those of the stored
  shapes, about 1.6x tfflows'. (zuko's `RealNVP` with the spline as
  `univariate` would be the same 331,200 parameters and 8-in networks, but
  `passes=2` is the coupling NSF zuko documents.)

Splines: zuko's `MonotonicRQSTransform` with the bound set to tfflows'
`tail_bound` (3, not zuko's default 5) by passing it the way `zuko.flows.NSF`
builds its flows (a `MAF` with the spline as `univariate`), K = 8 bins,
identity outside. The knots are parametrised differently: zuko soft-clamps
the raw values, then takes softmax widths and heights (no minimum but the
clamp's) and derivatives `exp(raw)`, within [1e-3, 1e3] ("slope"), where tfflows
keeps a minimum bin size and `softplus` derivatives. zuko's affine
transform, `exp(a) x + b` data -> latent with `a` soft-clamped to
`|a| < 6.9`, has its shift in the latent as tfflows' MAF and RealNVP do
(tfflows clamps with `5 tanh(s / 5)`). Every zuko network keeps PyTorch's
default initialisation, so a fresh zuko flow is a random map, where
tfflows zero-initialises couplings and splines (the identity) and starts
MAF's output layer at a tenth of Glorot's variance.

Run these alone on the machine. torch's OpenMP threads (one per core)
wait on each other at every op, so another busy process, the TensorFlow
side of a benchmark included, slows them far more than its share: a zuko
NSF-AR epoch on 2 cores took 4.5 s alone and 12-89 s while one other
process kept a core busy.
"""

import copy
import math
import time
from functools import partial

import numpy as np

__all__ = ["KINDS", "LOGIT_ALPHA", "build", "epoch_runner", "held_out",
           "log_prob_seconds", "missing", "sampling_seconds", "training_speed",
           "versions"]

KINDS = ("MAF", "RealNVP", "NSF-AR", "NSF-C")
LOGIT_ALPHA = 0.05  # tfflows.layers.Logit's default

_INSTALL = ('pip install ".[bench]" (CPU-only torch first: pip install torch '
            '--index-url https://download.pytorch.org/whl/cpu)')


def missing():
    """None if torch and zuko import (this imports them into the calling
    process), else which of them is missing and how to install it."""
    absent = []
    for name in ("torch", "zuko"):
        try:
            __import__(name)
        except ImportError:
            absent.append(name)
    if not absent:
        return None
    return f"{' and '.join(absent)} not installed: {_INSTALL}"


def versions():
    """`"torch X, zuko Y"`, torch's local build tag (`+cpu`) dropped."""
    import torch
    import zuko

    return f"torch {torch.__version__.split('+')[0]}, zuko {zuko.__version__}"


def build(kind, event_dim, hidden_units, num_layers, bins=8, tail_bound=3.0):
    """The zuko flow of `kind` ("MAF", "RealNVP", "NSF-AR" or "NSF-C"):
    `num_layers` transforms over networks of `hidden_units` relu layers,
    zuko's defaults otherwise (orders reversed and masks alternated between
    transforms, no random permutations or masks). Splines (NSF) have `bins`
    bins on `[-tail_bound, tail_bound]`. How each compares with tfflows':
    the module docstring."""
    import zuko
    from zuko.transforms import MonotonicRQSTransform

    hidden = tuple(hidden_units)
    if kind == "MAF":
        return zuko.flows.MAF(event_dim, transforms=num_layers,
                              hidden_features=hidden)
    if kind == "RealNVP":
        return zuko.flows.RealNVP(event_dim, transforms=num_layers,
                                  hidden_features=hidden)
    if kind in ("NSF-AR", "NSF-C"):  # zuko.flows.NSF's arguments, bound added
        spline = partial(MonotonicRQSTransform, bound=float(tail_bound),
                         slope=1e-3)
        return zuko.flows.MAF(event_dim, transforms=num_layers,
                              hidden_features=hidden, univariate=spline,
                              shapes=[(bins,), (bins,), (bins - 1,)],
                              passes=2 if kind == "NSF-C" else None)
    raise ValueError(f"kind must be one of {KINDS}. Received: kind={kind!r}")


def _logit(alpha):
    """tfflows' `Logit`, data -> latent, from torch's transforms:
    `p = alpha + (1 - 2 alpha) x`, `z = log p - log(1 - p)`, log-det
    `log(1 - 2 alpha) - log p - log(1 - p)` per entry."""
    from torch.distributions import transforms
    from zuko.transforms import ComposedTransform

    return ComposedTransform(transforms.AffineTransform(alpha, 1 - 2 * alpha),
                             transforms.SigmoidTransform().inv)


def _with_logit(flow, alpha=LOGIT_ALPHA):
    """`flow` with the logit preprocessing on its data side."""
    from zuko.flows import Flow, UnconditionalTransform

    return Flow([UnconditionalTransform(_logit, alpha),
                 *flow.transform.transforms], flow.base)


def epoch_runner(flow, x, batch_size, learning_rate=1e-3, num_bins=None):
    """Maximum-likelihood training of `flow` on the numpy array `x` as a
    PyTorch user writes it: `x` made a tensor once (`torch.from_numpy`, no
    copy for float32), `torch.optim.Adam`, and per epoch one
    `torch.randperm` shuffle, then for every slice of `batch_size` rows (the
    last one smaller) `-flow().log_prob(batch).mean()`,
    `zero_grad(set_to_none=True)`, `backward`, `step`. With `num_bins`
    (pixels `k / num_bins`) every batch gets fresh uniform dequantization
    noise, `(k + u) / num_bins`, as tfflows' `uniform_dequantize` in
    `Flow.fit`.

    Returns `run_epoch(steps=None)`, which trains one epoch (only its first
    `steps` steps if given) and returns its wall time in seconds, ending
    with the last loss copied out.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    optimizer = torch.optim.Adam(flow.parameters(), lr=learning_rate)

    def run_epoch(steps=None):
        start = time.perf_counter()
        shuffled = x[torch.randperm(len(x))]
        for i in range(0, len(x), batch_size)[:steps]:
            batch = shuffled[i:i + batch_size]
            if num_bins:
                batch = batch + torch.rand_like(batch) / num_bins
            loss = -flow().log_prob(batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss.item()
        return time.perf_counter() - start

    return run_epoch


def _nll(flow, x, batch=4096):
    """Mean negative log-density (nats) of the numpy array `x`."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.no_grad():
        return -float(torch.cat([flow().log_prob(x[i:i + batch])
                                 for i in range(0, len(x), batch)]).mean())


def training_speed(kind, x, batch_size, epochs, arch, learning_rate=1e-3,
                   seed=0, num_threads=None, call_epochs=(1, 20)):
    """Wall times of `epoch_runner` training a `build(kind, **arch)` flow
    (`arch`: event_dim, hidden_units, num_layers, and optionally bins,
    tail_bound) on the numpy array `x`; every model is built fresh, seeded
    with `seed`, outside the timings. A top-level function of picklable
    arguments, to run in a child process ("spawn"), where its first step
    also pays the process's one-time cost (below).

    Returns a dict:

    - `first_step_seconds`: from the numpy array in hand to the end of the
      first optimizer step of a fresh call (tensor, optimizer, shuffle, one
      step);
    - `call_seconds`: `{E: seconds}` for each E of `call_epochs`, a whole
      call training E epochs from the numpy array, on a fresh model;
    - `epoch_seconds`: `epochs` epoch times after one warm-up epoch;
    - `examples_per_second`: `len(x)` over their median;
    - `train_nll`: `[before, after]`, the mean NLL of `x` under the model
      of `epoch_seconds` before its warm-up epoch and after its last one;
    - `num_threads`: torch's intra-op threads.

    In a new process, creating the first optimizer imports `torch._dynamo`,
    nearly all of the 0.8-0.9 s first step at the benchmark shapes (16-D,
    hidden (128, 128), 65,536 rows, batch 512, 2 cores); later first steps
    take milliseconds.

    torch.compile is left out: zuko's README does not use it. Measured once
    at those shapes, `torch.compile` of the loss function
    (`-flow().log_prob(b).mean()`, inductor, backward compiled with it)
    made the steady epochs 1.3x (MAF, RealNVP) and 2.1-2.3x (NSF-AR,
    NSF-C) faster; its first epoch took 16 s (MAF) and 38 s (NSF-C) with
    an empty inductor cache, 4-7 s with a filled one, against 0.75 s and
    7.6 s without it.
    """
    import torch

    if num_threads:
        torch.set_num_threads(num_threads)

    def fresh():
        torch.manual_seed(seed)
        return build(kind, **arch)

    flow = fresh()
    start = time.perf_counter()
    epoch_runner(flow, x, batch_size, learning_rate)(steps=1)
    first_step = time.perf_counter() - start
    calls = {}
    for num_epochs in call_epochs:
        flow = fresh()
        start = time.perf_counter()
        run_epoch = epoch_runner(flow, x, batch_size, learning_rate)
        for _ in range(num_epochs):
            run_epoch()
        calls[num_epochs] = time.perf_counter() - start
    flow = fresh()
    run_epoch = epoch_runner(flow, x, batch_size, learning_rate)
    before = _nll(flow, x)
    run_epoch()
    times = [run_epoch() for _ in range(epochs)]
    return {"first_step_seconds": first_step, "call_seconds": calls,
            "epoch_seconds": times,
            "examples_per_second": len(x) / float(np.median(times)),
            "train_nll": [before, _nll(flow, x)],
            "num_threads": torch.get_num_threads()}


def _median_seconds(fn, repeats):
    """Median wall time of `repeats` calls of `fn()`, after one more."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def sampling_seconds(kind, arch, num_samples, repeats, seed=0):
    """Median seconds of `flow().sample((num_samples,))` under
    `torch.no_grad()` for a fresh (untrained) `build(kind, **arch)`: the
    inverse of every transform, D network passes per MAF / NSF-AR layer, 2
    per NSF-C layer, one per RealNVP coupling."""
    import torch

    torch.manual_seed(seed)
    flow = build(kind, **arch)
    with torch.no_grad():
        return _median_seconds(lambda: flow().sample((num_samples,)), repeats)


def log_prob_seconds(kind, arch, x, repeats, seed=0):
    """Median seconds of `flow().log_prob(x)` under `torch.no_grad()` for a
    fresh (untrained) `build(kind, **arch)`, `x` a numpy array made a
    tensor beforehand."""
    import torch

    torch.manual_seed(seed)
    flow = build(kind, **arch)
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.no_grad():
        return _median_seconds(lambda: flow().log_prob(x), repeats)


def _dequantized(x, num_bins, seed):
    """`x + u / num_bins`, `u ~ U[0, 1)` drawn by numpy from `seed`."""
    if not num_bins:
        return x
    noise = np.random.default_rng(seed).random(x.shape, dtype=np.float32)
    return x + noise / np.float32(num_bins)


def _bits_per_dim(nll, num_dims, num_bins):
    """`tfflows.bijectors.bits_per_dim` of a mean NLL (nats per example)."""
    return (nll + num_dims * math.log(num_bins)) / (num_dims * math.log(2.))


def held_out(kind, train, val, test, hidden_units, num_layers, epochs,
             batch_size, learning_rate, num_bins=None, patience=10, seed=0):
    """Test NLL (nats per example; bits/dim if `num_bins`) of a zuko flow
    trained with the protocol `benchmarks.quality` gives TFP: `epoch_runner`
    (Adam at `learning_rate`, batches reshuffled every epoch) for up to
    `epochs` epochs, stopping after `patience` epochs without a better
    validation NLL, the best epoch's weights restored. torch is seeded with
    `seed` before the model is built.

    With `num_bins`, the data are pixels `k / num_bins` as vectors: the flow
    gets tfflows' logit preprocessing (`Logit(alpha=0.05)`, its log-det in
    the density), training batches fresh dequantization noise every epoch,
    and validation and test are dequantized once, with seeds 1 and 0 as in
    `quality.held_out`, by numpy: the same distribution of noise as TF's
    stateless draw there, not the same values. On a trained 5-layer MAF
    (digits, 15 epochs) the test bits/dim was 2.443 with TF's draw and
    2.430-2.436 with five numpy draws.
    """
    import torch

    torch.manual_seed(seed)
    flow = build(kind, train.shape[1], hidden_units, num_layers)
    if num_bins:
        flow = _with_logit(flow)
    run_epoch = epoch_runner(flow, train, batch_size, learning_rate, num_bins)
    val = _dequantized(val, num_bins, seed=1)
    best, best_state, waited = np.inf, None, 0
    for _ in range(epochs):
        run_epoch()
        nll = _nll(flow, val)
        if nll < best:
            best, waited = nll, 0
            best_state = copy.deepcopy(flow.state_dict())
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is not None:  # else no finite validation NLL: keep the last
        flow.load_state_dict(best_state)
    test = _dequantized(test, num_bins, seed=0)
    nll = _nll(flow, test)
    return _bits_per_dim(nll, test.shape[1], num_bins) if num_bins else nll
