"""Eager calls of a Flow's maps check their inputs (`flow.check_inputs`):
generated bad inputs end in a ValueError naming the problem, good ones in
finite results."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tfflows as tff

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def flow():
    return tff.models.maf(3, num_layers=2, hidden_units=(8,))


@pytest.fixture(scope="module")
def conditional():
    return tff.models.maf(2, num_layers=2, hidden_units=(8,), context_dim=3)


def _rows(rows):
    return hnp.arrays(np.float64, (rows, 3), elements=st.floats(-10, 10))


@SETTINGS
@given(data=st.data(), rows=st.integers(1, 6), bad=st.sampled_from([np.nan, np.inf, -np.inf]),
       dtype=st.sampled_from([np.float16, np.float32, np.float64]),
       method=st.sampled_from(["log_prob", "encode", "decode", "encode_and_log_det"]))
def test_non_finite_entries_are_named_with_their_row(flow, data, rows, bad, dtype, method):
    x = data.draw(_rows(rows)).astype(dtype)
    row = data.draw(st.integers(0, rows - 1))
    x[row, data.draw(st.integers(0, 2))] = bad
    kind = "NaN" if np.isnan(bad) else "Inf"
    name = "z" if method == "decode" else "x"
    first = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
    with pytest.raises(ValueError, match=rf"{name} contains {kind} \(first in row {first}\)"):
        getattr(flow, method)(x)


@SETTINGS
@given(x=_rows(4), dtype=st.sampled_from([np.float16, np.float32, np.float64]))
def test_finite_rows_of_any_float_dtype_give_finite_log_densities(flow, x, dtype):
    lp = np.asarray(flow.log_prob(x.astype(dtype)))
    assert lp.shape == (4,) and np.isfinite(lp).all()


def test_the_switch_lets_nan_propagate(flow):
    x = np.array([[0.0, np.nan, 1.0], [0.1, 0.2, 0.3]], np.float32)
    flow.check_inputs = False
    try:
        lp = np.asarray(flow.log_prob(x))
    finally:
        flow.check_inputs = True
    assert np.isnan(lp[0]) and np.isfinite(lp[1])


@SETTINGS
@given(count=st.one_of(st.integers(-100, -1), st.floats(allow_nan=True, allow_infinity=True),
                       st.just(True), st.just("3"), st.just([2])))
def test_bad_sample_counts_are_refused(flow, count):
    with pytest.raises(ValueError, match="num_samples must be a whole number >= 0"):
        flow.sample(count)


@SETTINGS
@given(count=st.integers(0, 5), temperature=st.floats(0.0, 10))
def test_good_counts_and_temperatures_sample(flow, count, temperature):
    x = np.asarray(flow.sample(np.int64(count), temperature=temperature, seed=1))
    assert x.shape == (count, 3) and np.isfinite(x).all()


@SETTINGS
@given(temperature=st.one_of(st.floats(max_value=-1e-6), st.just(float("nan")),
                             st.just(float("inf")), st.just(True), st.just("1")))
def test_bad_temperatures_are_refused(flow, temperature):
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0 \(0 gives the base's mean\)"):
        flow.sample(4, temperature=temperature)


@SETTINGS
@given(rows=st.integers(1, 5), context_rows=st.integers(1, 5))
def test_a_context_of_another_batch_is_refused(conditional, rows, context_rows):
    x = np.zeros((rows, 2), np.float32)
    context = np.zeros((context_rows, 3), np.float32)
    if rows == context_rows:
        assert np.isfinite(np.asarray(conditional.log_prob(x, context=context))).all()
        assert conditional.sample(rows, context=context, seed=0).shape == (rows, 2)
        return
    with pytest.raises(ValueError, match=f"context has {context_rows} rows for {rows} input rows"):
        conditional.log_prob(x, context=context)
    with pytest.raises(ValueError, match=f"context has {context_rows} rows for {rows} draws"):
        conditional.sample(rows, context=context)


def test_a_non_finite_context_is_refused(conditional):
    context = np.zeros((2, 3), np.float32)
    context[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"context contains NaN \(first in row 1\)"):
        conditional.log_prob(np.zeros((2, 2), np.float32), context=context)


@pytest.mark.parametrize("x, match", [
    (np.array([["a", "b", "c"]]), "x must be a floating-point array"),
    (np.array([[1, 2, 3]], dtype=object), "x must be a floating-point array"),
    (np.array(1.0), "x must be an array with a batch axis"),
    (np.array([[True, False, True]]), "x must be a floating-point array"),
    (np.array([[1, 2, 3]]), "x must be floating point. Received dtype int64"),
])
def test_arrays_of_other_kinds_are_refused(flow, x, match):
    with pytest.raises(ValueError, match=match):
        flow.log_prob(x)
