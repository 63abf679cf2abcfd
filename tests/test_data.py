"""Data loaders: shipped datasets, user files, fixed splits, clear errors."""

import gzip

import numpy as np
import pytest

from tfflows import data


def test_generated_sets_are_standardised_and_seeded():
    for make in (data.two_moons, data.circles):
        x = make(512, seed=3)
        assert x.shape == (512, 2) and x.dtype == np.float32
        np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(x.std(0), 1, atol=1e-5)
        np.testing.assert_array_equal(x, make(512, seed=3))


def test_digits_are_pixels_in_the_unit_interval():
    x = data.digits()
    assert x.shape == (1797, 8, 8, 1)
    levels = np.unique(np.round(x * data.DIGITS_NUM_BINS))
    assert levels.min() == 0 and levels.max() == 16 and x.max() < 1


def test_split_is_fixed_by_seed_and_disjoint():
    x = np.arange(100)[:, None].astype(np.float32)
    a = data.split(x, seed=1)
    b = data.split(x, seed=1)
    assert [len(p) for p in a] == [80, 10, 10]
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)
    assert len(np.unique(np.concatenate(a))) == 100


def test_gaussian_nll_of_a_gaussian():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 2))
    assert data.gaussian_nll(x, x) == pytest.approx(np.log(2 * np.pi) + 1, abs=0.02)


def test_load_csv_and_npy(tmp_path):
    (tmp_path / "ok.csv").write_text("a,b\n1,2\n3.5,-4e-1\n")
    np.testing.assert_allclose(data.load_array(tmp_path / "ok.csv"), [[1, 2], [3.5, -0.4]])
    np.save(tmp_path / "ok.npy", np.ones((3, 2)))
    assert data.load_array(tmp_path / "ok.npy").shape == (3, 2)


def test_csv_header_is_optional_and_no_row_is_lost(tmp_path):
    (tmp_path / "plain.csv").write_text("1,2\n3,4\n5,6\n")
    np.testing.assert_array_equal(data.load_array(tmp_path / "plain.csv"),
                                  [[1, 2], [3, 4], [5, 6]])
    # pandas' default header (`df.to_csv(index=False)` of unnamed columns).
    (tmp_path / "pandas.csv").write_text("0,1\n3,4\n")
    np.testing.assert_array_equal(data.load_array(tmp_path / "pandas.csv"), [[3, 4]])
    (tmp_path / "bom.csv").write_text("\ufeffa,b\n1,2\n", encoding="utf-8")
    np.testing.assert_array_equal(data.load_array(tmp_path / "bom.csv"), [[1, 2]])


@pytest.mark.parametrize("name, content, match", [
    # Rows counted from 1 everywhere; CSV messages also give the file's line.
    ("words.csv", "a,b\n1,x\n", r"column 'b' is not numeric \(line 2: 'x'\)"),
    ("empty.csv", "a,b\n1,\n", r"column 'b' has an empty cell \(line 2\); fill missing values first, e\.g\. with `tfflows impute`"),
    ("nan.csv", "a,b\n1,2\nnan,3\n1,inf\n", r"2 rows with NaN or Inf \(first: row 2, line 3\)"),
    ("nohead.csv", "1,2\nnan,3\n", r"1 rows with NaN or Inf \(first: row 2, line 2\)"),
    ("ragged.csv", "a,b\n1,2,3\n", "line 2 has 3 fields"),
    ("empty.csv", "a,b\n", "a header row and no data rows"),
    ("blank.csv", "\n", "the file is empty"),
    ("x.txt", "1 2\n", "expected a .npy or .csv"),
])
def test_bad_files(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=match):
        data.load_array(tmp_path / name)
    with pytest.raises(ValueError, match="No such file"):
        data.load_array(tmp_path / "missing.csv")


def test_npy_rows_are_counted_from_one(tmp_path):
    x = np.ones((4, 2))
    x[2, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match=r"\(first: row 3\)"):
        data.load_array(tmp_path / "x.npy")


def _idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_images_plain_and_gzipped(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    (tmp_path / "img-idx3-ubyte").write_bytes(_idx_bytes(images))
    with gzip.open(tmp_path / "img-idx3-ubyte.gz", "wb") as f:
        f.write(_idx_bytes(images))
    for name in ("img-idx3-ubyte", "img-idx3-ubyte.gz"):
        x = data.load_idx(tmp_path / name)
        assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
        np.testing.assert_array_equal(np.round(x[..., 0] * 256), images)
    labels = np.arange(5, dtype=np.uint8)
    (tmp_path / "labels").write_bytes(_idx_bytes(labels))
    np.testing.assert_array_equal(data.load_idx(tmp_path / "labels"), labels)


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="bad magic number"):
        data.load_idx(tmp_path / "bad")
    truncated = _idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-4]
    (tmp_path / "short").write_bytes(truncated)
    with pytest.raises(ValueError, match=r"header says \[2, 3, 3\]"):
        data.load_idx(tmp_path / "short")
