"""Out-of-distribution detection with a flow, calibrated on held-out data.

Two scorers, each fitted on in-distribution data the flow was not trained
on, so its false-positive rate is the one asked for:

- `LikelihoodThreshold`: flags an example whose `log_prob` is below the
  `fpr` quantile of the validation log-densities. One `log_prob` per example.
  It fails where flows are known to fail: inputs simpler than the training
  data (constant or low-variance images) can get a *higher* likelihood than
  the training data itself (Nalisnick et al. 2019, arXiv:1810.09136).
- `TypicalityTest`: flags a *batch* of `M` examples whose mean negative
  log-likelihood is too far from the flow's entropy estimated on the
  training data, on either side:

  ```none
  H^ = -mean_{x in train} log p(x)
  flag the batch {x_1..x_M}  if  | -1/M sum_m log p(x_m) - H^ | > eps
  eps = the (1 - fpr) quantile of that statistic over bootstrap batches of
        M validation examples
  ```

  Typical sets are where a high-dimensional density's mass lies, not where
  it peaks, so inputs that are too likely are as suspect as unlikely ones.
  Its power grows with `M`; `M = 1` is a per-example test.

References:
  Eric Nalisnick, Akihiro Matsukawa, Yee Whye Teh, Balaji Lakshminarayanan
  (2019). Detecting Out-of-Distribution Inputs to Deep Generative Models
  Using Typicality. https://arxiv.org/abs/1906.02994
  Eric Nalisnick et al. (2019). Do Deep Generative Models Know What They
  Don't Know? https://arxiv.org/abs/1810.09136

Image flows: pass pixels the same way when fitting and flagging (raw
`k / num_bins`, or dequantized with the same seed); the scorers call
`flow.log_prob` on what they are given.

```python
scorer = tff.ood.LikelihoodThreshold.fit(flow, x_val, fpr=0.01)
scorer.flag(x_new)                         # [rows] bool
test = tff.ood.TypicalityTest.fit(flow, x_train, x_val, batch_size=16, fpr=0.01)
test.flag(batches)                         # [num_batches, 16, *event_shape] -> [num_batches]
```
"""

import math

import numpy as np

from tfflows._checks import integer

__all__ = ["LikelihoodThreshold", "TypicalityTest", "log_prob"]


def _check_fpr(fpr):
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0 < fpr < 1:
        raise ValueError(f"fpr must be a number in (0, 1). Received: fpr={fpr!r}")
    return float(fpr)


def log_prob(flow, x, context=None, batch_size=1024):
    """`flow.log_prob(x)` as a float64 NumPy array, computed in batches.

    Raises a ValueError naming the first row with NaN or Inf.
    """
    x = np.asarray(x)
    flat = x.reshape(len(x), -1)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        raise ValueError(f"x has {int(bad.sum())} rows with NaN or Inf (first: "
                         f"row {int(np.argmax(bad))}); they cannot be scored")
    out = [np.asarray(flow.log_prob(x[i:i + batch_size], context=None if context is None
                                    else np.asarray(context)[i:i + batch_size]))
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float64)


class LikelihoodThreshold:
    """Flags examples whose log-density is below a calibrated threshold.

    `threshold` is the conformal `(1 - fpr)` quantile of the validation
    scores `-log p`: with `n` validation examples, the
    `ceil((n + 1)(1 - fpr))`-th smallest, so a new in-distribution example
    is flagged with probability at most `fpr` (exchangeability). Cost: one
    `log_prob` per example.

    Build with `LikelihoodThreshold.fit(flow, x_val, fpr)`.
    """

    def __init__(self, flow, threshold, fpr, num_calibration):
        self.flow = flow
        self.threshold = float(threshold)
        self.fpr = float(fpr)
        self.num_calibration = int(num_calibration)

    @classmethod
    def fit(cls, flow, x_val, fpr=0.01, context=None):
        """Calibrates on held-out in-distribution `x_val` (not the training set:
        the flow's training likelihoods are optimistic).

        Raises:
          ValueError: fpr outside (0, 1), or too few rows for it (`fpr`
            needs at least `1 / fpr - 1` rows).
        """
        fpr = _check_fpr(fpr)
        scores = -log_prob(flow, x_val, context)
        n = len(scores)
        rank = math.ceil((n + 1) * (1 - fpr))
        if rank > n:
            raise ValueError(f"fpr={fpr:g} needs at least {math.ceil(1 / fpr - 1)} "
                             f"validation rows; received {n}")
        return cls(flow, -np.sort(scores)[rank - 1], fpr, n)

    def score(self, x, context=None):
        """The anomaly score `-log p(x)` per example (higher: more anomalous)."""
        return -log_prob(self.flow, x, context)

    def flag(self, x, context=None):
        """Bool `[rows]`: True where `log p(x) < threshold`."""
        return self.score(x, context) > -self.threshold

    def __repr__(self):
        return (f"LikelihoodThreshold(threshold={self.threshold:.4g}, fpr={self.fpr:g}, "
                f"num_calibration={self.num_calibration})")


class TypicalityTest:
    """Nalisnick et al.'s (2019) typicality test for batches of `batch_size`.

    `entropy` is the training set's mean NLL (the flow's entropy estimate);
    a batch's statistic is `|mean NLL of the batch - entropy|`, flagged
    above `epsilon`, the `(1 - fpr)` quantile of that statistic over
    `num_bootstrap` batches drawn with replacement from the validation
    set. Cost: one `log_prob` per example; fitting costs one per training
    and validation example (the bootstrap reuses them).

    Build with `TypicalityTest.fit(flow, x_train, x_val, batch_size, fpr)`.
    """

    def __init__(self, flow, entropy, epsilon, batch_size, fpr):
        self.flow = flow
        self.entropy = float(entropy)
        self.epsilon = float(epsilon)
        self.batch_size = int(batch_size)
        self.fpr = float(fpr)

    @classmethod
    def fit(cls, flow, x_train, x_val, batch_size, fpr=0.01, num_bootstrap=5000,
            seed=0):
        """Estimates the entropy on `x_train` and calibrates `epsilon` on
        bootstrap batches of `x_val`.

        Args:
          flow: a trained `tfflows.Flow` (unconditional).
          x_train: the training data (or a large sample of it).
          x_val: held-out in-distribution data.
          batch_size: M, the size of the batches `flag` will test.
          fpr: the false-positive rate per batch.
          num_bootstrap: bootstrap batches for `epsilon`.
          seed: seed of the bootstrap.
        """
        fpr = _check_fpr(fpr)
        batch_size = integer("batch_size", batch_size)
        num_bootstrap = integer("num_bootstrap", num_bootstrap)
        if num_bootstrap * fpr < 1:
            raise ValueError(f"fpr={fpr:g} needs num_bootstrap of at least "
                             f"{math.ceil(1 / fpr)}; received {num_bootstrap}")
        entropy = float(np.mean(-log_prob(flow, x_train)))
        nll_val = -log_prob(flow, x_val)
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(nll_val), size=(num_bootstrap, batch_size))
        statistic = np.abs(nll_val[picks].mean(axis=1) - entropy)
        return cls(flow, entropy, np.quantile(statistic, 1 - fpr), batch_size, fpr)

    def score(self, batches):
        """`|mean NLL - entropy|` per batch; `batches` is
        `[num_batches, batch_size, *event_shape]`."""
        batches = np.asarray(batches)
        shape = tuple(self.flow.event_shape)
        if batches.ndim != 2 + len(shape) or tuple(batches.shape[2:]) != shape:
            raise ValueError(f"batches must have shape [num_batches, {self.batch_size}, "
                             f"{', '.join(map(str, shape))}]. Received: shape "
                             f"{batches.shape}")
        if batches.shape[1] != self.batch_size:
            raise ValueError(f"this test was calibrated for batches of "
                             f"{self.batch_size}; received batches of {batches.shape[1]}")
        nll = -log_prob(self.flow, batches.reshape((-1,) + shape))
        return np.abs(nll.reshape(len(batches), -1).mean(axis=1) - self.entropy)

    def flag(self, batches):
        """Bool `[num_batches]`: True where the batch is not typical."""
        return self.score(batches) > self.epsilon

    def __repr__(self):
        return (f"TypicalityTest(entropy={self.entropy:.4g}, epsilon={self.epsilon:.4g}, "
                f"batch_size={self.batch_size}, fpr={self.fpr:g})")
