"""Datasets that ship with the install, user files, and fixed splits.

Generated 2-D toys (two moons, circles), sklearn's digits and breast-cancer
data (a small real classification problem for Bayesian models), and loaders for
user data: `.npy`, `.csv` (numeric columns, an optional header row) and IDX files
(the MNIST / Fashion-MNIST format, gzipped or not). Loaders reject bad data
with a `ValueError` that names the problem.
"""

import csv
import gzip
import os

import numpy as np
from sklearn import datasets as sk_datasets

__all__ = ["two_moons", "circles", "digits", "breast_cancer", "load_array",
           "csv_header", "load_idx", "split", "gaussian_nll", "DIGITS_NUM_BINS"]

DIGITS_NUM_BINS = 17  # sklearn's digits take the integer levels 0..16


def two_moons(num_samples=4096, noise=0.05, seed=0):
    """Two interleaving half-circles, standardised, float32 `[N, 2]`."""
    x, _ = sk_datasets.make_moons(num_samples, noise=noise, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32)


def circles(num_samples=4096, noise=0.05, factor=0.5, seed=0):
    """Two concentric circles, standardised, float32 `[N, 2]`."""
    x, _ = sk_datasets.make_circles(num_samples, noise=noise, factor=factor,
                                    random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32)


def _check_finite_rows(x, path, first_line=None, allow_missing=False):
    """Rows are numbered from 1 in every message; CSV rows also by line.
    With `allow_missing`, NaN passes (a missing entry) and only Inf fails."""
    bad = (np.isinf(x) if allow_missing else ~np.isfinite(x)).reshape(len(x), -1).any(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        where = f"row {row + 1}" + ("" if first_line is None
                                    else f", line {row + first_line}")
        what = "Inf (missing entries are empty cells or NaN)" if allow_missing else "NaN or Inf"
        raise ValueError(f"{path}: {int(bad.sum())} rows with {what} "
                         f"(first: {where})")


def _is_number(text, allow_missing=False):
    if allow_missing and not text.strip():
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


def _is_header(row, allow_missing=False):
    """A first row is a header unless every field is a number; `0,1,...,n-1`
    (pandas' default column names) is a header too."""
    if not all(_is_number(v, allow_missing) for v in row):
        return True
    return [v.strip() for v in row] == [str(i) for i in range(len(row))]


def _read_csv(path, allow_missing=False):
    """`(rows, line of the first data row)`; the header row is optional.
    With `allow_missing`, an empty cell reads as NaN."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f)]
    # Trailing blank lines; with allow_missing a line of empty cells
    # (",,") is a row with nothing observed.
    while rows and (not rows[-1] or len(rows[-1]) == 1 and not rows[-1][0].strip()
                    or not allow_missing and not any(v.strip() for v in rows[-1])):
        rows.pop()
    if not rows:
        raise ValueError(f"{path}: the file is empty")
    header = rows[0] if _is_header(rows[0], allow_missing) else None
    first_line = 2 if header is not None else 1
    body = rows[first_line - 1:]
    if not body:
        raise ValueError(f"{path}: a header row and no data rows")
    width = len(rows[0])
    values = []
    for line, row in enumerate(body, start=first_line):
        if len(row) != width:
            raise ValueError(f"{path}: line {line} has {len(row)} fields, the "
                             f"first row has {width}")
        try:
            values.append([float(v) if v.strip() or not allow_missing else np.nan
                           for v in row])
        except ValueError:
            column = next(i for i, v in enumerate(row)
                          if not _is_number(v, allow_missing))
            name = repr(header[column]) if header is not None else column + 1
            if not row[column].strip():
                raise ValueError(f"{path}: column {name} has an empty cell (line "
                                 f"{line}); fill missing values first, e.g. with "
                                 "`tfflows impute`") from None
            raise ValueError(f"{path}: column {name} is not numeric "
                             f"(line {line}: {row[column]!r})") from None
    return np.asarray(values), first_line


def csv_header(path, allow_missing=False):
    """The column names of a CSV file's header row, or None if it has none."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = next(csv.reader(f), None)
    return first if first and _is_header(first, allow_missing) else None


def load_array(path, allow_missing=False):
    """Loads a `.npy` or `.csv` file as float32 rows, checked.

    CSV files have numeric columns only and an optional header row: a first
    row of numbers is data, except `0,1,...,n-1` (pandas' default column
    names), which is a header. Messages number rows from 1 (and CSV lines
    too). Raises
    `ValueError` for a missing file, another extension, a non-numeric
    column, an empty file, or rows with NaN or Inf.

    `allow_missing=True` (for imputation) reads empty CSV cells as NaN and
    lets NaN through as a missing entry; Inf is still refused.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No such file: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path}: not a numeric .npy array ({err})") from None
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"{path}: not numeric (dtype {x.dtype})")
    elif ext == ".csv":
        x, first_line = _read_csv(path, allow_missing)
    else:
        raise ValueError(f"{path}: expected a .npy or .csv file")
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{path}: expected rows of examples, got shape {x.shape}")
    _check_finite_rows(x, path, first_line if ext == ".csv" else None, allow_missing)
    return x.astype(np.float32)


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4",
              0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path, num_bins=256):
    """Reads an IDX file (MNIST's format; `.gz` too).

    Image files (`[N, H, W]` of uint8) come back as float32 pixels
    `k / num_bins` shaped `[N, H, W, 1]`, ready for an image flow; other
    files come back as arrays. Debian's `dataset-fashion-mnist` package
    installs Fashion-MNIST in this format.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No such file: {path}")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[data[2]])
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)) * dtype.itemsize:
        raise ValueError(f"{path}: header says {dims} but the file holds "
                         f"{len(body)} bytes of data")
    array = np.frombuffer(body, dtype=dtype).reshape(dims)
    if array.dtype == np.uint8 and array.ndim == 3:
        return (array[..., None] / num_bins).astype(np.float32)
    return array


def digits():
    """sklearn's 8x8 digits as `[1797, 8, 8, 1]` float32 pixels `k / 17`.

    Shipped inside scikit-learn (no download). Levels `k` are 0..16, so
    `num_bins=17`; `Flow.fit` adds the dequantization noise.
    """
    images = sk_datasets.load_digits().images
    return (images[..., None] / DIGITS_NUM_BINS).astype(np.float32)


def breast_cancer():
    """sklearn's Wisconsin breast-cancer data: `(x, y)`, standardised.

    569 tumours, 30 features each (`x`, float32 `[569, 30]`, every column
    scaled to zero mean and unit variance), and the label (`y`, float32
    `[569]`: 1 for benign, 0 for malignant). Shipped inside scikit-learn
    (no download). Used as the worked case of `tfflows.vi`: the posterior
    of a Bayesian logistic regression on it, 31 parameters.
    """
    data = sk_datasets.load_breast_cancer()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    return x.astype(np.float32), data.target.astype(np.float32)


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
