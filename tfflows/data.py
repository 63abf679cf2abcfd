"""Datasets that ship with the install: generated 2-D toys, fixed splits."""

import numpy as np
from sklearn import datasets as sk_datasets

__all__ = ["two_moons", "digits", "split", "gaussian_nll", "DIGITS_NUM_BINS"]

DIGITS_NUM_BINS = 17  # sklearn's digits take the integer levels 0..16


def two_moons(num_samples=4096, noise=0.05, seed=0):
    """Two interleaving half-circles, standardised, float32 `[N, 2]`."""
    x, _ = sk_datasets.make_moons(num_samples, noise=noise, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32)


def digits():
    """sklearn's 8x8 digits as `[1797, 8, 8, 1]` float32 pixels `k / 17`.

    Shipped inside scikit-learn (no download). Levels `k` are 0..16, so
    `num_bins=17`; `Flow.fit` adds the dequantization noise.
    """
    images = sk_datasets.load_digits().images
    return (images[..., None] / DIGITS_NUM_BINS).astype(np.float32)


def split(x, fractions=(0.8, 0.1, 0.1), seed=0):
    """Shuffles with `seed` and splits into train / validation / test arrays."""
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must sum to 1. Received: fractions={fractions}")
    index = np.random.default_rng(seed).permutation(len(x))
    cuts = np.cumsum([int(round(f * len(x))) for f in fractions[:-1]])
    return tuple(x[part] for part in np.split(index, cuts))


def gaussian_nll(train, test):
    """Mean NLL (nats) of `test` under the maximum-likelihood Gaussian of `train`.

    The best single full-covariance Gaussian: the baseline a flow must beat.
    """
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    mean = train.mean(0)
    cov = np.atleast_2d(np.cov(train, rowvar=False, bias=True))
    _, logdet = np.linalg.slogdet(cov)
    centred = test - mean
    maha = np.einsum("ni,ij,nj->n", centred, np.linalg.inv(cov), centred)
    dim = train.shape[1]
    return float(np.mean(0.5 * (dim * np.log(2 * np.pi) + logdet + maha)))
