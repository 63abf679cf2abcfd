"""Datasets that ship with the install, user files, and fixed splits.

Generated 2-D toys (two moons, circles), sklearn's digits and breast-cancer
data (a small real classification problem for Bayesian models), and loaders for
user data: `.npy`, `.csv` (numeric columns, an optional header row; comma- or
semicolon-separated) and IDX files
(the MNIST / Fashion-MNIST format, gzipped or not). Loaders reject bad data
with a `ValueError` that names the problem.
"""

import collections
import csv
import gzip
import io
import itertools
import os
import re

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


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_finite_rows(x, path, lines=None, allow_missing=False):
    """Rows are numbered from 1 in every message; CSV rows also by their line
    (`lines[i]` is row i's line). With `allow_missing`, NaN passes (a missing
    entry) and only Inf fails. Values that float32 cannot hold (|x| above
    3.4e38, which would become Inf) fail too."""
    def where(bad):
        row = int(np.argmax(bad))
        return f"row {row + 1}" + ("" if lines is None else f", line {lines[row]}")

    flat = x.reshape(len(x), -1)
    bad = (np.isinf(flat) if allow_missing else ~np.isfinite(flat)).any(axis=1)
    if bad.any():
        what = "Inf (missing entries are empty cells or NaN)" if allow_missing else "NaN or Inf"
        raise ValueError(f"{path}: {int(bad.sum())} rows with {what} "
                         f"(first: {where(bad)})")
    if flat.dtype.itemsize > 4 or flat.dtype.kind != "f":
        with np.errstate(over="ignore"):
            big = np.isinf(flat.astype(np.float32)).any(axis=1)
        if big.any():
            raise ValueError(f"{path}: {int(big.sum())} rows with values beyond "
                             f"float32's range, |x| > {_FLOAT32_MAX:.2g} (first: "
                             f"{where(big)}); rescale the data")


# A number written with a decimal comma (or a thousands separator): `1,5`.
_DECIMAL_COMMA = re.compile(r"\s*[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?\s*")


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
    (pandas' default column names) is a header too. A decimal comma counts
    as a number here, so that it is refused rather than taken for a name."""
    if not all(_is_number(v, allow_missing) or _DECIMAL_COMMA.fullmatch(v) for v in row):
        return True
    return [v.strip() for v in row] == [str(i) for i in range(len(row))]


def _read_text(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        utf16 = " (it looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ValueError(f"{path}: not UTF-8 text{utf16}: byte {raw[err.start]:#04x} at "
                         f"offset {err.start}; save the CSV as UTF-8") from None


def _split_line(line, delimiter):
    try:
        return next(csv.reader([line], delimiter=delimiter, skipinitialspace=True), [])
    except csv.Error:
        return [line]


def _delimiter(text):
    """`;` for semicolon-separated files (spreadsheets saved where the comma
    is the decimal point), else `,`. A line votes for `;` when it splits on
    `;` and either not on `,` or only into numbers with decimal commas (which
    are then refused); the first 20 non-blank lines vote."""
    votes = {",": 0, ";": 0}
    lines = itertools.islice((line for line in io.StringIO(text, newline="")
                              if line.strip()), 20)
    for line in lines:
        line = line.rstrip("\r\n")
        semi, comma = _split_line(line, ";"), _split_line(line, ",")
        if len(semi) > 1 and (len(comma) == 1 or all(
                _is_number(v, True) or _DECIMAL_COMMA.fullmatch(v) for v in semi)):
            votes[";"] += 1
        elif len(comma) > 1:
            votes[","] += 1
    return ";" if votes[";"] > votes[","] else ","


def _is_blank(row):
    return not row or len(row) == 1 and not row[0].strip()


def _csv_rows(path, allow_missing=False):
    """`(header or None, data rows, their line numbers, delimiter)`, checked
    for everything but the cells' values: an empty file, blank lines inside
    the table, ragged rows, a header and no data."""
    text = _read_text(path)
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ValueError(f"{path}: line {line} holds a NUL byte: a binary file, not "
                         "CSV text?")
    delimiter = _delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter,
                        skipinitialspace=True)
    rows, lines, start = [], [], 1
    try:
        for row in reader:
            rows.append(row)
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as err:
        raise ValueError(f"{path}: line {reader.line_num}: {err}") from None
    # Blank lines before and after the table are dropped; with allow_missing a
    # line of empty cells (",,") is a row with nothing observed, except at the
    # end without it.
    while rows and (_is_blank(rows[-1])
                    or not allow_missing and not any(v.strip() for v in rows[-1])):
        rows.pop()
        lines.pop()
    while rows and _is_blank(rows[0]):
        rows.pop(0)
        lines.pop(0)
    if not rows:
        raise ValueError(f"{path}: the file is empty")
    for row, line in zip(rows, lines):
        if _is_blank(row):
            hint = " (or write NaN in the cells of a row with nothing observed)" \
                if allow_missing else ""
            raise ValueError(f"{path}: line {line} is blank, between rows of data: "
                             f"delete it{hint}")
    counts = [len(row) for row in rows]
    # The odd row is the first whose count differs from the most common one
    # (the first row's count on a tie).
    frequency = collections.Counter(counts)
    width = max(frequency, key=lambda n: (frequency[n], n == counts[0]))
    odd = next((k for k, n in enumerate(counts) if n != width), None)
    if odd is not None:
        where = "the first row has" if counts[0] == width else "most rows have"
        raise ValueError(f"{path}: ragged rows: line {lines[odd]} has {counts[odd]} "
                         f"fields where {where} {width}")
    header = [v.strip() for v in rows[0]] if _is_header(rows[0], allow_missing) else None
    if header is not None:
        rows, lines = rows[1:], lines[1:]
    if not rows:
        raise ValueError(f"{path}: a header row and no data rows")
    return header, rows, lines, delimiter


def _read_csv(path, allow_missing=False):
    """`(rows, line of each row)`; the header row is optional.
    With `allow_missing`, an empty cell reads as NaN."""
    header, rows, lines, _ = _csv_rows(path, allow_missing)
    values = []
    for line, row in zip(lines, rows):
        try:
            values.append([float(v) if v.strip() or not allow_missing else np.nan
                           for v in row])
        except ValueError:
            column = next(i for i, v in enumerate(row)
                          if not _is_number(v, allow_missing))
            name = repr(header[column]) if header is not None else column + 1
            cell = row[column].strip()
            if not cell:
                raise ValueError(f"{path}: column {name} has an empty cell (line "
                                 f"{line}); fill missing values first, e.g. with "
                                 "`tfflows impute`") from None
            if _DECIMAL_COMMA.fullmatch(cell):
                raise ValueError(f"{path}: column {name} has a decimal comma (line "
                                 f"{line}: {cell!r}): tfflows reads '.' as the "
                                 "decimal point and no thousands separators; save the "
                                 "file with '.' decimals") from None
            raise ValueError(f"{path}: column {name} is not numeric "
                             f"(line {line}: {cell!r})") from None
    return np.asarray(values), lines


def csv_header(path, allow_missing=False):
    """The column names of a CSV file's header row, or None if it has none."""
    return _csv_rows(os.fspath(path), allow_missing)[0]


_NPY_MAGIC = b"\x93NUMPY"


def _npy_header(path):
    """`(shape, dtype, offset of the data)` of a `.npy` file, read without
    loading it: pickles, `.npz` archives, other formats and truncated or
    corrupted headers are named."""
    with open(path, "rb") as f:
        start = f.read(len(_NPY_MAGIC))
        if start != _NPY_MAGIC:
            if not start:
                raise ValueError(f"{path}: the file is empty (0 bytes)")
            if _NPY_MAGIC.startswith(start):
                raise ValueError(f"{path}: a truncated .npy file ({len(start)} bytes, "
                                 "cut inside NumPy's magic string)")
            if start[:1] == b"\x80":
                raise ValueError(
                    f"{path} is a Python pickle, not a .npy array: pickled files are "
                    "not loaded, for safety (unpickling can run any code). If you "
                    "trust the file, unpickle it yourself and save the array with "
                    "np.save(path, x.astype(np.float32))")
            if start[:4] == b"PK\x03\x04":
                raise ValueError(f"{path} is a .npz archive (several arrays), not a .npy "
                                 "array: save one of them with np.save")
            raise ValueError(f"{path} is not a .npy file: it does not start with "
                             "NumPy's magic string (another format, or corrupted?)")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise ValueError(f"unknown format version {version}")
            # Version 3.0 differs from 2.0 only in encoding the header as
            # UTF-8, which 2.0's reader decodes as Latin-1: field names aside,
            # the same header.
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
        except Exception as err:  # ValueError, SyntaxError, tokenize.TokenError...
            detail = " ".join(str(err).split())[:200]
            raise ValueError(f"{path}: a truncated or corrupted .npy file: its header "
                             f"cannot be read ({type(err).__name__}: {detail})") from None
        return tuple(shape), dtype, f.tell()


def _check_npy_dtype(path, dtype):
    kind = dtype.kind
    if dtype.hasobject:
        raise ValueError(
            f"{path} holds Python objects (dtype object), which np.save stores "
            "pickled: pickled .npy files are not loaded, for safety (unpickling can "
            "run any code). If you trust the file, convert it: np.save(path, "
            "np.load(path, allow_pickle=True).astype(np.float32))")
    if dtype.names:
        raise ValueError(f"{path} holds a structured array (fields "
                         f"{', '.join(dtype.names)}), not plain numbers: save "
                         "numpy.lib.recfunctions.structured_to_unstructured(x) instead")
    if kind == "b":
        raise ValueError(f"{path} holds booleans (dtype bool), not real numbers: a "
                         "flow models real-valued data; if 0/1 values are meant, "
                         "save x.astype(np.float32)")
    if kind == "c":
        raise ValueError(f"{path} holds complex numbers (dtype {dtype}), not real ones: "
                         "save the real and imaginary parts as columns, "
                         "np.concatenate([x.real, x.imag], axis=-1)")
    if kind in "US":
        raise ValueError(f"{path} holds text (dtype {dtype}), not numbers")
    if kind in "mM":
        raise ValueError(f"{path} holds dates or durations (dtype {dtype}), not numbers")
    if kind not in "fiu":
        raise ValueError(f"{path}: not numeric (dtype {dtype})")


def _load_npy(path):
    """A real-valued `.npy` array of at least one row of one value, checked
    before its data is read."""
    shape, dtype, offset = _npy_header(path)
    _check_npy_dtype(path, dtype)
    if len(shape) == 0:
        raise ValueError(f"{path} holds a single number (a 0-d array); expected rows "
                         "of examples, shape [N, D]")
    if len(shape) == 1:
        raise ValueError(f"{path} holds a 1-D array of shape {shape}; expected rows of "
                         "examples, shape [N, D]: save x[:, None] for rows of one value "
                         "each, or x[None, :] for a single row")
    if 0 in shape:
        raise ValueError(f"{path} holds no values (shape {shape}); expected rows of "
                         "examples")
    need = int(np.prod(shape)) * dtype.itemsize
    have = os.path.getsize(path) - offset
    if have < need:
        raise ValueError(f"{path}: a truncated .npy file: its header says shape {shape} "
                         f"of {dtype} ({need} bytes of data) but it holds {have}")
    if have > need:
        raise ValueError(f"{path}: a corrupted .npy file: it holds {have - need} bytes "
                         f"more than its header's shape {shape} of {dtype} needs")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:
        raise ValueError(f"{path}: cannot read the .npy data ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]})") from None


def load_array(path, allow_missing=False):
    """Loads a `.npy` or `.csv` file as float32 rows, checked.

    CSV files (UTF-8, a BOM allowed) have numeric columns only and an
    optional header row: a first row of numbers is data, except `0,1,...,n-1`
    (pandas' default column names), which is a header. Cells are separated
    by commas, or by semicolons when the file's lines are (a spreadsheet
    saved where the comma is the decimal point); quoted numbers and spaces
    around cells are fine; a decimal comma (`1,5`) is refused, never read as
    other numbers. Blank lines before or after the table are ignored, blank
    lines inside it refused.

    `.npy` files hold real numbers (float, int or uint) shaped `[N, D]` or
    `[N, ...]` (images); pickled (object) arrays are never loaded, for
    safety; booleans, complex numbers, text, dates, structured arrays, 0-d
    and 1-D arrays are refused, each with a message saying what to do.

    Messages number rows from 1 (and CSV lines too). Raises `ValueError`
    naming the file and the problem: a missing file, another extension, a
    truncated or corrupted file, a non-numeric or empty cell, ragged rows,
    an empty file, or rows with NaN or Inf or values beyond float32's range.

    `allow_missing=True` (for imputation) reads empty CSV cells as NaN and
    lets NaN through as a missing entry; Inf is still refused.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No such file: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        x, lines = _load_npy(path), None
    elif ext == ".csv":
        x, lines = _read_csv(path, allow_missing)
    else:
        raise ValueError(f"{path}: expected a .npy or .csv file")
    _check_finite_rows(x, path, lines, allow_missing)
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
