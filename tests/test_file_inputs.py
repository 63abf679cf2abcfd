"""Users' files, generated: CSV tables in many dialects and breakages, `.npy`
arrays of every dtype and rank (pickles, truncations, flipped bytes), broken
`.keras` models and SavedModel folders, through the API and the `tfflows`
command.

Every case ends in the exact result, or in a ValueError (API) or one line on
stderr with exit code 1 (CLI) that names the file and the problem; never a
traceback from deep inside NumPy, Keras or TensorFlow, never NaN returned
silently, never an output half-written.

Decided behaviours (see `tfflows.data.load_array`): semicolon-separated files
are read (their delimiter is sniffed) but a decimal comma is refused; quoted
numbers are numbers; blank lines before and after the table are ignored and
blank lines inside it refused; 0-d and 1-D arrays, booleans, complex numbers,
text, dates, structured and object (pickled) arrays are refused with a
message saying what to do.
"""

import json
import os
import pickle
import re
import shutil
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tfflows as tff
from tfflows import cli, data, files

SETTINGS = {"deadline": None, "derandomize": True,
            "suppress_health_check": [HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow]}


def _gist(err, path):
    """A message without its path and details, for hypothesis' statistics."""
    text = str(err).replace(path, "FILE").replace("FILE: ", "FILE ")
    text = re.split(r"[(:;]", text, maxsplit=2)[:2][-1].strip()[:70]
    return re.sub(r"0x[0-9a-f]+|\d+", "N", text)


def _parses(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _one_line_error(capsys, path):
    """The CLI's stderr: one line naming `path`; returns it."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfflows: error: ") and "\n" not in err, err
    assert str(path) in err, err
    return err


@pytest.fixture
def folder(tmp_path):
    """A fresh folder per generated example (tmp_path is shared by them)."""
    def make():
        return tempfile.mkdtemp(dir=tmp_path)
    return make


# -- CSV tables ---------------------------------------------------------------
WORDS = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,6}", fullmatch=True).filter(
    lambda w: not _parses(w))
VALUES = st.one_of(st.floats(-1e3, 1e3, width=32),
                   st.floats(width=32, allow_nan=False, allow_infinity=False))
FORMATS = {"repr": repr, "g9": "{:.9g}".format, "e": "{:e}".format,
           "int": lambda v: str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)}


@st.composite
def tables(draw, min_rows=1, max_rows=6, min_width=1, max_width=4):
    """`(cells, header)`: rows of number texts, header names or None."""
    width = draw(st.integers(min_width, max_width))
    rows = draw(st.integers(min_rows, max_rows))
    fmt = FORMATS[draw(st.sampled_from(sorted(FORMATS)))]
    cells = [[fmt(float(draw(VALUES))) for _ in range(width)] for _ in range(rows)]
    header = draw(st.sampled_from(["none", "names", "pandas"]))
    if header == "names":
        header = draw(st.lists(WORDS, min_size=width, max_size=width))
    elif header == "pandas":  # pandas' default column names
        header = [str(i) for i in range(width)]
    else:
        header = None
    return cells, header


DIALECTS = st.fixed_dictionaries({
    "bom": st.booleans(), "sep": st.sampled_from([",", ";"]), "quote": st.booleans(),
    "newline": st.sampled_from(["\n", "\r\n"]), "trailing": st.booleans(),
    "pad": st.sampled_from(["", " ", "  "])})


def _render(lines, d):
    """CSV text of `lines` (lists of cell texts; None for a blank line)."""
    def cell(c):
        return d["pad"] + (f'"{c}"' if d["quote"] else c) + d["pad"]
    text = d["newline"].join(d["pad"] if row is None else d["sep"].join(map(cell, row))
                             for row in lines)
    return ("\ufeff" if d["bom"] else "") + text + (d["newline"] if d["trailing"] else "")


def _is_header(row):
    """The documented rule: a first row is a header unless every cell is a
    number (a decimal comma counts as a number, to be refused), and
    `0,1,...,n-1` (pandas' default names) is a header."""
    if not all(_parses(c) or re.fullmatch(r"[+-]?\d+,\d+", c) for c in row):
        return True
    return row == [str(i) for i in range(len(row))]


def _expected(lines):
    """`(array, header or None)` of well-formed lines."""
    header = lines[0] if _is_header(lines[0]) else None
    body = lines[1:] if header is not None else lines
    x = np.array([[np.float32(float(c)) for c in row] for row in body], np.float32)
    return x.reshape(len(body), len(lines[0])), header


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _write(folder, name, content):
    path = os.path.join(folder, name)
    if isinstance(content, str):
        with open(path, "w", newline="", encoding="utf-8") as f:
            f.write(content)
    else:
        with open(path, "wb") as f:
            f.write(content)
    return path


@settings(max_examples=150, **SETTINGS)
@given(table=tables(), d=DIALECTS)
@example(table=([["1.5", "2"], ["3", "-4e-1"]], ["a", "b"]),
         d={"bom": True, "sep": ";", "quote": True, "newline": "\r\n", "trailing": False,
            "pad": " "})
def test_valid_tables_are_read_exactly(folder, table, d):
    cells, header = table
    lines = ([header] if header else []) + cells
    path = _write(folder(), "t.csv", _render(lines, d))
    x, found_header = _expected(lines)
    if len(x) == 0:  # a first data row `0,1,...` is pandas' header (documented)
        with pytest.raises(ValueError, match=re.escape(f"{path}: a header row and no data rows")):
            data.load_array(path)
        return
    got = data.load_array(path)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x)
    names = data.csv_header(path)
    assert names == (None if found_header is None else found_header)


BREAKAGES = ["header_only", "ragged", "text", "empty_cell", "nonfinite", "overflow",
             "decimal_comma", "blank_line"]


@st.composite
def broken_tables(draw):
    """`(lines, dialect, kind, expected message regex or None, expected array)`."""
    cells, header = draw(tables())
    d = draw(DIALECTS)
    kind = draw(st.sampled_from(BREAKAGES))
    width = len(cells[0])
    lines = ([header] if header else []) + [list(r) for r in cells]
    first = 1 if header else 0  # index of the first data line
    i = draw(st.integers(first, len(lines) - 1))  # the line to break
    j = draw(st.integers(0, width - 1))
    if kind == "header_only":
        lines = [header or draw(st.lists(WORDS, min_size=width, max_size=width))]
    elif kind == "ragged":
        assume(len(lines) > 1)
        if width == 1 or draw(st.booleans()):
            lines[i].append(cells[0][0])
        else:
            lines[i].pop()
    elif kind == "text":
        lines[i][j] = draw(WORDS)
    elif kind == "empty_cell":
        assume(width > 1)
        lines[i][j] = ""
    elif kind == "nonfinite":
        lines[i][j] = draw(st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity",
                                            "1e999", "-1E400"]))
    elif kind == "overflow":
        lines[i][j] = draw(st.sampled_from(["3.5e38", "-1e39", "1.7976931348623157e308"]))
    elif kind == "decimal_comma":
        assume(width > 1)
        d = dict(d, sep=";")
        lines[i][j] = f"{draw(st.integers(0, 99))},{draw(st.integers(0, 99))}"
    elif kind == "blank_line":
        assume(len(lines) > 1)
        i = draw(st.integers(1, len(lines) - 1))
        lines.insert(i, None)
    event(kind)
    return lines, d, kind, i, j


def _message(path, lines, kind, i, j):
    """What load_array must say about `lines` broken by `kind` at line i, cell j
    (or `None` when the breakage made a header row: the rest is then data)."""
    p = re.escape(path)
    if kind == "header_only":
        return rf"^{p}: a header row and no data rows$"
    if kind == "blank_line":
        return rf"^{p}: line {i + 1} is blank, between rows of data: delete it"
    header = lines[0] if _is_header(lines[0]) else None
    if kind == "ragged":
        counts = [len(row) for row in lines]
        mode = max(counts, key=lambda n: (counts.count(n), n == counts[0]))
        odd = next(k for k, n in enumerate(counts) if n != mode)
        where = "the first row has" if counts[0] == mode else "most rows have"
        return rf"^{p}: ragged rows: line {odd + 1} has {counts[odd]} fields where {where} {mode}$"
    if header is not None and i == 0:
        return None  # the broken first row is read as a header (documented)
    name = re.escape(repr(header[j].strip())) if header is not None else j + 1
    first = 1 if header is not None else 0
    if kind == "text":
        return rf"^{p}: column {name} is not numeric \(line {i + 1}: '\s*{lines[i][j]}\s*'\)$"
    if kind == "empty_cell":
        return (rf"^{p}: column {name} has an empty cell \(line {i + 1}\); fill missing "
                r"values first, e\.g\. with `tfflows impute`$")
    if kind == "decimal_comma":
        return (rf"^{p}: column {name} has a decimal comma \(line {i + 1}: "
                rf"'\s*{lines[i][j]}\s*'\): tfflows reads '\.' as the decimal point")
    if kind == "nonfinite":
        return rf"^{p}: 1 rows with NaN or Inf \(first: row {i + 1 - first}, line {i + 1}\)$"
    return (rf"^{p}: 1 rows with values beyond float32's range, \|x\| > 3\.4e\+38 "
            rf"\(first: row {i + 1 - first}, line {i + 1}\)")


@settings(max_examples=300, **SETTINGS)
@given(case=broken_tables())
def test_broken_tables_are_named_errors(folder, case):
    lines, d, kind, i, j = case
    path = _write(folder(), "b.csv", _render(lines, d))
    match = _message(path, lines, kind, i, j)
    if match is None:  # a header row was made: the remaining rows are the data
        event("the broken first row is read as a header")
        rest = lines[1:]
        if not rest:
            match = rf"^{re.escape(path)}: a header row and no data rows$"
        else:
            # (a second `0,1,...` row is data: only the first row can be a header)
            x = np.array([[np.float32(float(c)) for c in row] for row in rest], np.float32)
            np.testing.assert_array_equal(data.load_array(path), x)
            return
    with pytest.raises(ValueError) as err:
        data.load_array(path)
    assert re.search(match, str(err.value)), (str(err.value), match)


@settings(max_examples=40, **SETTINGS)
@given(text=st.sampled_from(["", "\n", "\r\n\r\n", "\ufeff", "\ufeff\n", "   \n  ", "\t\n",
                             " , \n"]),
       allow_missing=st.booleans())
def test_empty_files_are_named(folder, text, allow_missing):
    path = _write(folder(), "e.csv", text)
    if text == " , \n" and allow_missing:  # one row, nothing observed
        assert np.isnan(data.load_array(path, allow_missing=True)).all()
        return
    with pytest.raises(ValueError, match=re.escape(f"{path}: the file is empty")):
        data.load_array(path, allow_missing=allow_missing)


CSV_ALPHABET = "0123456789.,;-+eE \t\n\r\"'naifNAIFx\ufeff\x00é"


@settings(max_examples=300, **SETTINGS)
@given(content=st.one_of(st.text(CSV_ALPHABET, max_size=60), st.binary(max_size=60)),
       allow_missing=st.booleans())
def test_any_csv_content_gives_finite_rows_or_a_named_error(folder, content, allow_missing):
    path = _write(folder(), "f.csv", content)
    try:
        x = data.load_array(path, allow_missing=allow_missing)
    except ValueError as err:
        assert str(err).startswith(path) and "\n" not in str(err), str(err)
        event(_gist(err, path))
        return
    event("loads")
    assert x.dtype == np.float32 and x.ndim == 2 and x.size > 0
    assert not np.isinf(x).any()
    assert allow_missing or np.isfinite(x).all()


def test_semicolon_files_with_decimal_commas_never_become_other_numbers(tmp_path):
    # A European spreadsheet export: `;` separates, `,` is the decimal point.
    for text in ("a;b\n1,5;2,5\n3;4\n", "1,5;2,5\n3,25;4,75\n"):
        path = _write(str(tmp_path), "eu.csv", text)
        with pytest.raises(ValueError, match=r"has a decimal comma \(line [12]: '1,5'\)"):
            data.load_array(path)
    path = _write(str(tmp_path), "semi.csv", "\ufeffa;b\r\n1.5;2\r\n3;-4\r\n")
    np.testing.assert_array_equal(data.load_array(path), [[1.5, 2], [3, -4]])
    assert data.csv_header(path) == ["a", "b"]
    # A comma-separated file whose header names hold semicolons stays comma-separated.
    path = _write(str(tmp_path), "names.csv", "a;x,b;y\n1,2\n")
    np.testing.assert_array_equal(data.load_array(path), [[1, 2]])


def test_a_quoted_number_with_a_comma_is_refused(tmp_path):
    path = _write(str(tmp_path), "q.csv", 'a,b\n"1,000",2\n')
    with pytest.raises(ValueError, match=r"column 'a' has a decimal comma \(line 2: '1,000'\)"):
        data.load_array(path)


# -- .npy arrays ------------------------------------------------------------------
NPY_DTYPES = ["float16", "float32", "float64", "int8", "int32", "int64", "uint8",
              "uint64", "bool", "complex64", "complex128", "U3", "S2", "datetime64[s]",
              "timedelta64[ms]", "struct", "object"]


@st.composite
def npy_arrays(draw):
    name = draw(st.sampled_from(NPY_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3))
    if name == "object":
        x = np.empty(shape, object)
        x[...] = 1.5
        return x
    if name == "struct":
        dtype = np.dtype([("a", "f4"), ("b", "i2")])
    else:
        dtype = np.dtype(name)
    return draw(hnp.arrays(dtype, shape))


def _npy_message(x):
    kind = x.dtype.kind
    if x.dtype.hasobject:
        return r"holds Python objects \(dtype object\), which np\.save stores pickled: " \
               r"pickled \.npy files are not loaded, for safety"
    if x.dtype.names:
        return r"holds a structured array \(fields a, b\), not plain numbers"
    if kind == "b":
        return r"holds booleans \(dtype bool\), not real numbers"
    if kind == "c":
        return rf"holds complex numbers \(dtype {x.dtype}\), not real ones"
    if kind in "US":
        return r"holds text \(dtype .*\), not numbers"
    if kind in "mM":
        return r"holds dates or durations \(dtype .*\), not numbers"
    if x.ndim == 0:
        return r"holds a single number \(a 0-d array\); expected rows of examples"
    if x.ndim == 1:
        return (rf"holds a 1-D array of shape \({len(x)},\); expected rows of examples, "
                r"shape \[N, D\]: save x\[:, None\]")
    if x.size == 0:
        return rf"holds no values \(shape {re.escape(str(x.shape))}\)"
    rows = (~np.isfinite(x.astype(np.float64))).reshape(len(x), -1).any(axis=1)
    if rows.any():
        return rf"{int(rows.sum())} rows with NaN or Inf \(first: row {int(np.argmax(rows)) + 1}\)"
    with np.errstate(over="ignore"):
        big = np.isinf(x.astype(np.float32)).reshape(len(x), -1).any(axis=1)
    if big.any():
        return (rf"{int(big.sum())} rows with values beyond float32's range, "
                rf"\|x\| > 3\.4e\+38 \(first: row {int(np.argmax(big)) + 1}\)")
    return None


@settings(max_examples=200, **SETTINGS)
@given(x=npy_arrays())
def test_npy_arrays_of_every_dtype_and_rank(folder, x):
    path = os.path.join(folder(), "a.npy")
    np.save(path, x, allow_pickle=True)
    match = _npy_message(x)
    if match is None:
        event("loads")
        got = data.load_array(path)
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_array_equal(got, x.astype(np.float32))
        return
    with pytest.raises(ValueError) as err:
        data.load_array(path)
    assert str(err.value).startswith(path), str(err.value)
    assert re.search(match, str(err.value)), (str(err.value), match)
    event(_gist(err.value, path))


@settings(max_examples=80, **SETTINGS)
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 3)),
       dtype=st.sampled_from(["float32", "float64", "int16"]),
       version=st.sampled_from([None, (1, 0), (2, 0), (3, 0)]), cut=st.floats(0, 1))
def test_truncated_npy_files_are_named(folder, shape, dtype, version, cut):
    x = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    path = os.path.join(folder(), "a.npy")
    with open(path, "wb") as f:
        if version is None:
            np.save(f, x)
        else:
            np.lib.format.write_array(f, x, version=version)
    whole = _read(path)
    keep = min(int(cut * len(whole)), len(whole) - 1)
    _write(os.path.dirname(path), "a.npy", whole[:keep])
    match = "the file is empty" if keep == 0 else "truncated"
    with pytest.raises(ValueError, match=re.escape(path) + ".*" + match):
        data.load_array(path)


@settings(max_examples=100, **SETTINGS)
@given(flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1,
                      max_size=3))
def test_npy_files_with_flipped_bytes_load_or_are_named(folder, flips):
    x = np.linspace(-1, 1, 12).reshape(4, 3)
    path = os.path.join(folder(), "a.npy")
    np.save(path, x)
    body = bytearray(_read(path))
    for where, mask in flips:
        body[min(int(where * len(body)), len(body) - 1)] ^= mask
    _write(os.path.dirname(path), "a.npy", bytes(body))
    try:
        got = data.load_array(path)
    except ValueError as err:
        assert str(err).startswith(path) and "\n" not in str(err), str(err)
        event(_gist(err, path))
        return
    event("loads (a flip in the data or a harmless header byte)")
    assert got.dtype == np.float32 and np.isfinite(got).all() and got.ndim >= 2


@settings(max_examples=30, **SETTINGS)
@given(obj=st.one_of(st.lists(st.lists(st.floats(allow_nan=False), min_size=2, max_size=2),
                              min_size=1, max_size=3),
                     hnp.arrays(np.float64, (3, 2)), st.dictionaries(st.text(max_size=3),
                                                                     st.integers())),
       protocol=st.integers(2, pickle.HIGHEST_PROTOCOL))
def test_pickles_are_refused_for_safety(folder, obj, protocol):
    path = _write(folder(), "p.npy", pickle.dumps(obj, protocol=protocol))
    with pytest.raises(ValueError, match=re.escape(path) + r" is a Python pickle, not a \.npy "
                       r"array: pickled files are not loaded, for safety"):
        data.load_array(path)


def test_npz_and_other_formats_named_npy_are_refused(tmp_path):
    path = str(tmp_path / "z.npy")
    with open(path, "wb") as f:
        np.savez(f, x=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"is a \.npz archive \(several arrays\), not a \.npy"):
        data.load_array(path)
    path = _write(str(tmp_path), "t.npy", "1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"is not a \.npy file: it does not start with "
                       "NumPy's magic string"):
        data.load_array(path)


# -- the same files through the command ---------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small trained 2-D RealNVP (weights away from the identity)."""
    import keras

    keras.utils.set_random_seed(0)
    flow = tff.models.realnvp(event_dim=2, num_layers=2, hidden_units=(8,))
    flow.compile(optimizer=keras.optimizers.Adam(1e-2))
    flow.fit(data.two_moons(256), batch_size=64, epochs=2, verbose=0)
    path = tmp_path_factory.mktemp("model") / "m.keras"
    flow.save(path)
    return path


def _bad_data_files():
    """A broken CSV table or a refused `.npy` array: `(name, content)`."""
    csv = broken_tables().map(lambda case: ("b.csv", _render(case[0], case[1])))
    npy = npy_arrays().filter(lambda x: _npy_message(x) is not None)
    return st.one_of(csv, npy.map(lambda x: ("a.npy", x)))


def _save_data(folder, name, content):
    if name.endswith(".npy"):
        path = os.path.join(folder, name)
        np.save(path, content, allow_pickle=True)
        return path
    return _write(folder, name, content)


def _fails_to_load(path):
    try:
        data.load_array(path)
    except ValueError:
        return True
    return False


@settings(max_examples=40, **SETTINGS)
@given(case=_bad_data_files())
def test_cli_score_names_bad_data_in_one_line(model, folder, capsys, case):
    where = folder()
    path = _save_data(where, *case)
    assume(_fails_to_load(path))  # a header-made row can leave a valid table
    out = os.path.join(where, "scores.csv")
    capsys.readouterr()
    assert cli.main(["score", str(model), "--data", path, "--out", out]) == 1
    _one_line_error(capsys, path)
    assert sorted(os.listdir(where)) == [os.path.basename(path)]


@settings(max_examples=25, **SETTINGS)
@given(case=_bad_data_files())
def test_cli_train_names_bad_data_in_one_line(folder, capsys, case):
    where = folder()
    path = _save_data(where, *case)
    assume(_fails_to_load(path))
    capsys.readouterr()
    assert cli.main(["train", "--data", path, "--epochs", "1", "--num-layers", "2",
                     "--no-export", "--out", os.path.join(where, "out")]) == 1
    _one_line_error(capsys, path)
    assert sorted(os.listdir(where)) == [os.path.basename(path)]


@settings(max_examples=15, **SETTINGS)
@given(table=tables(max_rows=7, min_width=2, max_width=2), d=DIALECTS)
def test_cli_train_refuses_too_few_rows_and_writes_nothing(folder, capsys, table, d):
    cells, header = table
    where = folder()
    path = _write(where, "few.csv", _render(([header] if header else []) + cells, d))
    assume(not _fails_to_load(path))
    rows = len(data.load_array(path))
    capsys.readouterr()
    assert cli.main(["train", "--data", path, "--epochs", "1", "--num-layers", "2",
                     "--no-export", "--out", os.path.join(where, "out")]) == 1
    err = _one_line_error(capsys, path)
    assert re.search(rf"{rows} rows are too few to train on", err), err
    assert sorted(os.listdir(where)) == ["few.csv"]


@pytest.fixture(scope="module")
def model_log_prob(model):
    """The saved model's log-density function, loaded once."""
    flow = files.load_flow(model)
    return lambda x: np.asarray(flow.log_prob(np.asarray(x, np.float32)))


@settings(max_examples=10, **SETTINGS)
@given(table=tables(min_width=2, max_width=2), d=DIALECTS)
def test_cli_score_reads_every_dialect(model, model_log_prob, folder, capsys, table, d):
    cells, header = table
    where = folder()
    cells = [[c if abs(float(c)) < 1e3 else "0.5" for c in row] for row in cells]
    path = _write(where, "rows.csv", _render(([header] if header else []) + cells, d))
    assume(not _fails_to_load(path))
    x = data.load_array(path)
    out = os.path.join(where, "scores.csv")
    assert cli.main(["score", str(model), "--data", path, "--out", out]) == 0
    lines = _read(out).decode().splitlines()
    assert lines[0] == "row,log_prob" and len(lines) == len(x) + 1
    expected = model_log_prob(x)
    got = np.array([float(line.split(",")[1]) for line in lines[1:]])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_cli_trains_on_a_semicolon_export(tmp_path, capsys):
    rows = np.random.default_rng(0).standard_normal((64, 2))
    text = "\ufeff\"a\";\"b\"\r\n" + "".join(f'"{a:.6f}";"{b:.6f}"\r\n' for a, b in rows)
    path = _write(str(tmp_path), "eu.csv", text)
    out = tmp_path / "out"
    assert cli.main(["train", "--data", path, "--epochs", "1", "--num-layers", "2",
                     "--no-export", "--out", str(out)]) == 0
    assert (out / "realnvp.keras").is_file()


@pytest.mark.parametrize("content, match", [
    ("a,b\n1,2\n1,2,3\n", "ragged rows: line 3 has 3 fields"),
    ("a,b\n1,inf\n", r"1 rows with Inf \(missing entries are empty cells or NaN\)"),
    ("a;b\n1,5;2\n", "has a decimal comma"),
    ("a,b\n1,2\n\n3,\n", r"line 3 is blank, between rows of data: delete it \(or write NaN"),
    (b"\xff\xfea\x00,\x00b\x00", "not UTF-8 text"),
])
def test_cli_impute_names_bad_data(model, tmp_path, capsys, content, match):
    path = _write(str(tmp_path), "gaps.csv", content)
    out = str(tmp_path / "filled.csv")
    assert cli.main(["impute", str(model), "--data", path, "--out", out]) == 1
    assert re.search(match, _one_line_error(capsys, path))
    assert sorted(os.listdir(tmp_path)) == ["gaps.csv"]


# -- broken .keras files ----------------------------------------------------------------
COMMANDS = {
    "sample": lambda m, t: ["sample", m, "--out", os.path.join(t, "s.npy")],
    "score": lambda m, t: ["score", m, "--data", _write(t, "x.csv", "a,b\n0,0\n"),
                           "--out", os.path.join(t, "scores.csv")],
    "impute": lambda m, t: ["impute", m, "--data", _write(t, "x.csv", "a,b\n0,\n"),
                            "--out", os.path.join(t, "filled.csv")],
    "export": lambda m, t: ["export", m, "--out", os.path.join(t, "serving")],
}


def _check_broken_model(path, capsys, command, where):
    """The API raises a ValueError naming `path`; the command says it in one
    line and writes nothing."""
    with pytest.raises(ValueError) as err:
        files.load_flow(path)
    message = str(err.value)
    assert path in message and "\n" not in message, message
    args = COMMANDS[command](path, where)  # writes the command's data file
    before = sorted(os.listdir(where))
    capsys.readouterr()
    assert cli.main(args) == 1
    _one_line_error(capsys, path)
    assert sorted(os.listdir(where)) == before
    return message


@settings(max_examples=30, **SETTINGS)
@given(cut=st.floats(0, 1), command=st.sampled_from(sorted(COMMANDS)))
def test_truncated_models_are_named(model, folder, capsys, cut, command):
    whole = model.read_bytes()
    where = folder()
    path = _write(where, "cut.keras", whole[:min(int(cut * len(whole)), len(whole) - 1)])
    message = _check_broken_model(path, capsys, command, where)
    assert re.search("truncated or corrupted|corrupted|not a zip archive", message), message
    event(_gist(message, path))


PROBE = np.array([[0.1, -0.2], [1.0, 0.5]], np.float32)


@settings(max_examples=60, **SETTINGS)
@given(flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1,
                      max_size=4),
       zone=st.sampled_from(["anywhere", "first header", "central directory"]))
def test_models_with_flipped_bytes_load_equal_or_are_named(model, model_log_prob, folder,
                                                           flips, zone):
    body = bytearray(model.read_bytes())
    # Most bytes are weights, where the checksum catches a flip; the zip's
    # headers (the first member's, and the central directory at the end) are
    # aimed at too.
    start, end = 0, len(body)
    if zone == "first header":
        end = 64
    elif zone == "central directory":
        eocd = body.rfind(b"PK\x05\x06")
        start = int.from_bytes(body[eocd + 16:eocd + 20], "little")
    for where, mask in flips:
        body[start + min(int(where * (end - start)), end - start - 1)] ^= mask
    path = _write(folder(), "flipped.keras", bytes(body))
    try:
        flow = files.load_flow(path)
    except ValueError as err:
        assert path in str(err) and "\n" not in str(err), str(err)
        event(_gist(err, path))
        return
    event("loads (a flip in a byte no reader checks)")
    np.testing.assert_array_equal(np.asarray(flow.log_prob(PROBE)), model_log_prob(PROBE))


def test_a_member_marked_compressed_is_named(model, tmp_path, capsys):
    # Keras stores members uncompressed; a flip of the central directory's
    # method field makes zipfile inflate stored bytes (a zlib.error).
    body = bytearray(model.read_bytes())
    eocd = body.rfind(b"PK\x05\x06")
    body[int.from_bytes(body[eocd + 16:eocd + 20], "little") + 10] = 8  # ZIP_DEFLATED
    path = _write(str(tmp_path), "deflated.keras", bytes(body))
    message = _check_broken_model(path, capsys, "score", str(tmp_path))
    assert "is a corrupted .keras file (zlib.error: Error -3" in message, message


def _with_member(src, dst, member, body):
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for item in old.infolist():
            if item.filename != member:
                new.writestr(item, old.read(item.filename))
        if body is not None:
            new.writestr(member, body)


JSONS = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.sampled_from(["class_name", "config", "module",
                                                        "registered_name", "name"]),
                                       inner, max_size=4), max_leaves=8)


@pytest.fixture(scope="module")
def foreign_members(tmp_path_factory):
    """config.json and model.weights.h5 of other models: a keras.Sequential
    and a MAF flow."""
    import keras

    folder = tmp_path_factory.mktemp("foreign")
    members = {}
    for name, other in [("Sequential", keras.Sequential([keras.Input((2,)),
                                                         keras.layers.Dense(2)])),
                        ("MAF", tff.models.maf(2, num_layers=2, hidden_units=(8,)))]:
        other.save(folder / f"{name}.keras")
        with zipfile.ZipFile(folder / f"{name}.keras") as z:
            members[name] = {m: z.read(m) for m in ("config.json", "model.weights.h5")}
    return members


@settings(max_examples=50, **SETTINGS)
@given(member=st.sampled_from(["config.json", "model.weights.h5"]),
       body=st.one_of(st.none(), st.binary(max_size=40), JSONS.map(json.dumps),
                      st.floats(0, 1), st.sampled_from(["Sequential", "MAF"])),
       command=st.sampled_from(sorted(COMMANDS)))
def test_models_with_replaced_members_are_named(model, foreign_members, folder, capsys, member,
                                                body, command):
    where = folder()
    path = os.path.join(where, "replaced.keras")
    if body in foreign_members:  # another model's member
        event(f"{member} of a {body}")
        body = foreign_members[body][member]
    if isinstance(body, float):  # the member cut short
        with zipfile.ZipFile(model) as z:
            whole = z.read(member)
        body = whole[:int(body * (len(whole) - 1))]
    _with_member(model, path, member, body)
    event(_gist(_check_broken_model(path, capsys, command, where), path))


def test_metadata_is_needed_but_not_read(model, model_log_prob, tmp_path):
    # Keras reads only its version from metadata.json: garbage there loads
    # the model as saved; without the member the file is not a .keras file.
    path = str(tmp_path / "m.keras")
    _with_member(model, path, "metadata.json", b"\x00 not json")
    flow = files.load_flow(path)
    np.testing.assert_array_equal(np.asarray(flow.log_prob(PROBE)), model_log_prob(PROBE))
    _with_member(model, path, "metadata.json", None)
    with pytest.raises(ValueError, match="is not a .keras model file: it has no metadata.json"):
        files.load_flow(path)


@pytest.mark.parametrize("member", ["config.json", "model.weights.h5"])
@pytest.mark.parametrize("other", ["Sequential", "MAF"])
def test_members_of_other_models_are_named(model, foreign_members, tmp_path, capsys, member,
                                           other):
    path = str(tmp_path / "mixed.keras")
    _with_member(model, path, member, foreign_members[other][member])
    message = _check_broken_model(path, capsys, "sample", str(tmp_path))
    if member == "config.json" and other == "Sequential":
        assert "holds a Sequential, not a tfflows.Flow" in message or \
            "cannot load the model" in message, message
    else:
        assert "cannot load the model" in message, message


def _keras_model(kind):
    import keras

    inputs = keras.Input((2,))
    if kind == "lambda":
        outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    else:
        outputs = keras.layers.Dense(2)(inputs)
    if kind == "sequential":
        return keras.Sequential([inputs, keras.layers.Dense(2)])
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind, match", [
    ("sequential", r"holds a Sequential, not a tfflows\.Flow"),
    ("functional", r"holds a Functional, not a tfflows\.Flow"),
    ("lambda", (r"holds Python code \(a lambda in a Lambda layer\), which safe_mode "
                r"refuses to run: .*load_flow\(path, safe_mode=False\)")),
])
def test_other_keras_models_are_named(tmp_path, capsys, command, kind, match):
    path = str(tmp_path / f"{kind}.keras")
    _keras_model(kind).save(path)
    message = _check_broken_model(path, capsys, command, str(tmp_path))
    assert re.search(match, message), message
    if kind == "lambda":  # trusted: it loads, and is then refused as not a Flow
        with pytest.raises(ValueError, match=r"holds a Functional, not a tfflows\.Flow"):
            files.load_flow(path, safe_mode=False)


# -- SavedModel folders --------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    flow = files.load_flow(model)
    return flow, tff.export.saved_model(flow, tmp_path_factory.mktemp("serving") / "m")


SAVED_MODEL_DAMAGES = {
    "no data": ("variables/variables.data-00000-of-00001", "delete",
                r"incomplete: variables/variables\.data-00000-of-00001 is missing"),
    "no index": ("variables/variables.index", "delete",
                 r"incomplete: variables/variables\.index is missing"),
    "no variables": ("variables", "delete", r"incomplete: variables/variables\.index is missing"),
    "no graph": ("saved_model.pb", "delete", r"No SavedModel in .*: it has no saved_model\.pb"),
    "cut data": ("variables/variables.data-00000-of-00001", "cut",
                 r"variables/variables\.data-00000-of-00001 is truncated or corrupted"),
    "cut index": ("variables/variables.index", "cut",
                  r"variables/variables\.index is truncated or corrupted"),
    "cut graph": ("saved_model.pb", "cut", r"saved_model\.pb is truncated or corrupted"),
}


def _damage(version_dir, where, member, how, cut=0.5):
    broken = os.path.join(where, "1")
    shutil.copytree(version_dir, broken)
    target = os.path.join(broken, member)
    if how == "delete":
        (shutil.rmtree if os.path.isdir(target) else os.remove)(target)
    else:
        body = _read(target)
        _write(os.path.dirname(target), os.path.basename(target), body[:int(cut * len(body))])
    return broken


def _check_broken_saved_model(flow, broken, where, match):
    for load in (files.load_saved_model,
                 lambda p: tff.export.onnx(p, os.path.join(where, "onnx")),
                 lambda p: tff.export.check_saved_model(flow, p)):
        with pytest.raises(ValueError) as err:
            load(broken)
        assert broken in str(err.value) and "\n" not in str(err.value), str(err.value)
        assert re.search(match, str(err.value)), str(err.value)
    assert sorted(os.listdir(where)) == ["1"]


@pytest.mark.parametrize("damage", sorted(SAVED_MODEL_DAMAGES))
def test_broken_saved_models_are_named(saved, tmp_path, damage):
    flow, version_dir = saved
    member, how, match = SAVED_MODEL_DAMAGES[damage]
    broken = _damage(version_dir, str(tmp_path), member, how)
    _check_broken_saved_model(flow, broken, str(tmp_path), match)


@settings(max_examples=12, **SETTINGS)
@given(member=st.sampled_from(["variables/variables.data-00000-of-00001",
                               "variables/variables.index", "saved_model.pb"]),
       cut=st.floats(0, 0.999))
def test_saved_models_cut_anywhere_are_named(saved, folder, member, cut):
    _, version_dir = saved
    broken = _damage(version_dir, folder(), member, "cut", cut)
    with pytest.raises(ValueError, match=re.escape(broken) + ": cannot load the SavedModel: "
                       + re.escape(member) + " is truncated or corrupted"):
        files.load_saved_model(broken)


def test_saved_model_paths_that_are_not_version_folders(saved, tmp_path, capsys):
    _, version_dir = saved
    base = os.path.dirname(version_dir)
    with pytest.raises(ValueError, match=re.escape(base) + r" holds model versions \(1\), not "
                       r"a SavedModel: pass a version folder, e\.g\. .*1"):
        files.load_saved_model(base)
    with pytest.raises(ValueError, match="No such SavedModel folder"):
        files.load_saved_model(tmp_path / "none")
    # The command reads .keras files; a SavedModel folder is named as such.
    assert cli.main(["export", version_dir, "--out", str(tmp_path / "o")]) == 1
    err = _one_line_error(capsys, version_dir)
    assert "is a folder (a SavedModel?), not a .keras file" in err
