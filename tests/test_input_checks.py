"""Eager calls of a Flow's maps check their inputs (`flow.check_inputs`):
generated bad inputs end in a ValueError naming the problem, good ones in
finite results."""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
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
    (np.array([["a", "b", "c"]]), "x must be an array of real numbers"),
    (np.array([[1, 2, 3]], dtype=object), "x must be an array of real numbers"),
    (np.array(1.0), "x must be an array with a batch axis"),
    (np.array([[True, False, True]]), "x must be an array of real numbers"),
    (np.array([[1j, 2, 3]]), r"x must be an array of real numbers \(floats or "
                             r"integers\)\. Received dtype complex128"),
])
def test_arrays_of_other_kinds_are_refused(flow, x, match):
    with pytest.raises(ValueError, match=match):
        flow.log_prob(x)


# -- generated arrays of every kind ------------------------------------------------
@pytest.fixture(scope="module")
def flows(flow):
    """Flows whose maps are not the identity at initialisation (MADE starts
    random), one affine and one spline."""
    return {"maf": flow, "nsf": tff.models.nsf(3, num_layers=2, hidden_units=(8,))}


@pytest.fixture(scope="module")
def image_flow():
    return tff.models.glow(image_shape=(4, 4, 1), levels=1, steps_per_level=1,
                           hidden_channels=4, num_bins=17)


_MAPS = ["log_prob", "encode", "decode", "encode_and_log_det"]


@settings(SETTINGS, max_examples=60)
@given(data=st.data(), name=st.sampled_from(["maf", "nsf"]),
       method=st.sampled_from(_MAPS))
def test_finite_inputs_of_any_magnitude_give_a_result_or_an_overflow_error(
        flows, data, name, method):
    # Every finite float32, up to 3.4e38: far points' log-densities may
    # underflow to -inf (an honest float32 answer), but NaN, +inf or an
    # infinite point is never returned: it is an error that says why.
    big = float(np.finfo(np.float32).max)
    x = data.draw(hnp.arrays(np.float32, (3, 3), elements=st.one_of(
        st.floats(-10, 10, width=32, allow_subnormal=False),
        st.floats(-big, big, width=32, allow_subnormal=False),
        st.sampled_from([big, -big, 1e30, -1e30, 1e20, -1e20])), fill=st.nothing()))
    try:
        out = getattr(flows[name], method)(x)
    except ValueError as err:
        assert re.match(rf"{method} gave (NaN|Inf) in \d row\(s\) \(first: row \d\) "
                        r"from finite inputs: the flow's float32 arithmetic "
                        r"overflowed \(largest input magnitude", str(err)), str(err)
        assert np.abs(x).max() > 1e15  # overflow needs huge inputs
        event("overflow named")
        return
    event("-inf log-density" if method != "decode" and np.isneginf(
        np.asarray(out if method == "log_prob" else out[-1])).any() else "finite")
    points, densities = {"log_prob": ((), (out,)), "encode": ((out,), ()),
                         "decode": ((out,), ()), "encode_and_log_det": ((out[0],), (out[1],))}[method]
    for value in points:
        assert np.isfinite(np.asarray(value)).all()
    for value in densities:
        value = np.asarray(value)
        assert value.shape == (3,) and not np.isnan(value).any() and (value < np.inf).all()


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
       method=st.sampled_from(_MAPS))
def test_arrays_of_any_shape_give_a_result_or_a_shape_error(flow, shape, method):
    x = np.zeros(shape, np.float32)
    if len(shape) == 2 and shape[1] == 3:
        out = getattr(flow, method)(x)
        first = out[0] if method == "encode_and_log_det" else out
        assert first.shape[0] == shape[0]  # zero rows too
        return
    name = "z" if method == "decode" else "x"
    with pytest.raises(ValueError, match=rf"{name} must (have shape \[batch, 3\] for "
                                         rf"this flow|be an array with a batch axis)"):
        getattr(flow, method)(x)


_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64, np.float16,
           np.float32, np.float64, np.bool_, np.complex64, np.object_, np.str_,
           "datetime64[s]"]


@SETTINGS
@given(dtype=st.sampled_from(_DTYPES), method=st.sampled_from(_MAPS))
def test_integers_are_read_as_numbers_and_other_kinds_refused(flow, dtype, method):
    values = np.array([[0, 1, 2], [3, 0, 1]])
    x = values.astype(dtype)
    name = "z" if method == "decode" else "x"
    if np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating):
        out = getattr(flow, method)(x)
        expected = getattr(flow, method)(values.astype(np.float32))
        for got, want in zip(tf_flat(out), tf_flat(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-6)
        return
    with pytest.raises(ValueError, match=rf"{name} must be an array of real numbers"):
        getattr(flow, method)(x)


def tf_flat(out):
    return [np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))]


@SETTINGS
@given(rows=st.integers(0, 3), method=st.sampled_from(["log_prob", "encode", "decode"]))
def test_empty_and_single_row_batches_of_images(image_flow, rows, method):
    x = np.full((rows, 4, 4, 1), 0.5, np.float32)
    out = np.asarray(getattr(image_flow, method)(x))
    assert out.shape == ((rows,) if method == "log_prob" else x.shape)
    assert np.isfinite(out).all()
    assert image_flow.sample(rows, seed=0).shape == (rows, 4, 4, 1)


def test_decoded_images_encode_again(image_flow):
    z = np.random.default_rng(0).standard_normal((8, 4, 4, 1)).astype(np.float32) * 3
    x = np.asarray(image_flow.decode(z))
    np.testing.assert_allclose(image_flow.encode(x), z, atol=1e-3)


@SETTINGS
@given(x=hnp.arrays(np.float32, (2, 4, 4, 1), elements=st.floats(-2, 3, width=32,
                                                                allow_subnormal=False)),
       method=st.sampled_from(["log_prob", "encode", "encode_and_log_det"]))
@example(x=np.full((2, 4, 4, 1), -0.05, np.float32), method="log_prob")
@example(x=np.full((2, 4, 4, 1), 1.05, np.float32), method="encode")
@example(x=np.full((2, 4, 4, 1), 1.06, np.float32), method="encode")
def test_image_pixels_outside_the_unit_interval_are_refused(image_flow, x, method):
    # Within the logit's margin (alpha = 0.05) the density is defined, and
    # decode's outputs fall there: they must encode again.
    margin = 0.05 / 0.9
    if -margin < x.min() and x.max() < 1 + margin:
        assert all(np.isfinite(o).all() for o in tf_flat(getattr(image_flow, method)(x)))
        event("inside [0, 1]" if x.min() >= 0 and x.max() <= 1 else "in the margin")
        return
    event("refused")
    with pytest.raises(ValueError, match=r"x holds pixels outside \[0, 1\] \(from "
                                         rf"{x.min():g} to {x.max():g}\)"):
        getattr(image_flow, method)(x)


_GOOD_SEEDS = st.one_of(st.none(), st.integers(-2**63, 2**63 - 1),
                        st.tuples(st.integers(-2**63, 2**63 - 1),
                                  st.integers(-2**63, 2**63 - 1)))
_FLOATS = st.floats(allow_subnormal=False)
_BAD_SEEDS = st.one_of(_FLOATS, st.booleans(), st.text(max_size=3),
                       st.integers(2**63, 2**80),
                       st.lists(st.integers(0, 9), min_size=3, max_size=4),
                       st.tuples(_FLOATS, _FLOATS))


@SETTINGS
@given(seed=_GOOD_SEEDS, method=st.sampled_from(["sample", "sample_and_log_prob"]))
def test_integer_seeds_draw_reproducibly(flow, seed, method):
    first, second = (tf_flat(getattr(flow, method)(3, seed=seed)) for _ in range(2))
    assert first[0].shape == (3, 3) and np.isfinite(first[0]).all()
    if seed is not None:
        np.testing.assert_array_equal(first[0], second[0])


@SETTINGS
@given(seed=_BAD_SEEDS, method=st.sampled_from(["sample", "sample_and_log_prob"]))
def test_other_seeds_are_refused(flow, seed, method):
    with pytest.raises(ValueError, match="seed must be None, an int or a pair of ints"):
        getattr(flow, method)(3, seed=seed)


@SETTINGS
@given(temperature=st.floats(0, float(np.finfo(np.float32).max), width=32,
                             allow_subnormal=False))
def test_any_finite_temperature_samples_or_names_the_overflow(flow, temperature):
    try:
        x = np.asarray(flow.sample(4, temperature=temperature, seed=0))
    except ValueError as err:
        assert "sample gave" in str(err) and "Lower the temperature" in str(err)
        assert temperature > 1e15
        event("overflow named")
        return
    assert np.isfinite(x).all()


@SETTINGS
@given(width=st.integers(1, 5), rows=st.integers(1, 3))
def test_a_context_of_another_width_is_refused(conditional, width, rows):
    x = np.zeros((rows, 2), np.float32)
    context = np.zeros((rows, width), np.float32)
    if width == 3:
        assert np.isfinite(np.asarray(conditional.log_prob(x, context=context))).all()
        return
    with pytest.raises(ValueError, match=r"context must have shape \[3\] or \[batch, 3\]"):
        conditional.log_prob(x, context=context)


# -- builder arguments --------------------------------------------------------------
_BUILDERS = {
    "maf": (tff.models.maf, dict(event_dim=3, num_layers=1, hidden_units=(4,))),
    "iaf": (tff.models.iaf, dict(event_dim=3, num_layers=1, hidden_units=(4,))),
    "nice": (tff.models.nice, dict(event_dim=3, num_layers=1, hidden_units=(4,))),
    "realnvp": (tff.models.realnvp, dict(event_dim=3, num_layers=1, hidden_units=(4,))),
    "nsf": (tff.models.nsf, dict(event_dim=3, num_layers=1, hidden_units=(4,),
                                 spline_bins=4, tail_bound=3.0)),
    "planar": (tff.models.planar, dict(event_dim=3, num_layers=1)),
    "radial": (tff.models.radial, dict(event_dim=3, num_layers=1)),
    "glow": (tff.models.glow, dict(image_shape=(4, 4, 1), levels=1, steps_per_level=1,
                                   hidden_channels=4, num_bins=17)),
}
# Values no integer argument takes: each must be refused by name.
_NOT_COUNTS = st.one_of(st.integers(-3, 0), st.floats(allow_subnormal=False),
                        st.booleans(), st.text(max_size=2), st.none())


@SETTINGS
@given(data=st.data(), builder=st.sampled_from(sorted(_BUILDERS)))
def test_builders_name_the_argument_they_refuse(data, builder):
    make, good = _BUILDERS[builder]
    arg = data.draw(st.sampled_from(
        [a for a in good if a not in ("image_shape", "tail_bound")]))
    bad = data.draw(st.one_of(_NOT_COUNTS, st.just((2,))) if arg != "hidden_units"
                    else st.one_of(_NOT_COUNTS,
                                   st.just(()), st.tuples(st.integers(-3, 0)),
                                   st.tuples(st.floats(0.5, 9.5).filter(
                                       lambda f: f != int(f)))))
    if arg in ("num_bins", "spline_bins") and bad is None:
        bad = 1  # None is valid: no dequantization; the default bins
    # (realnvp without event_dim asks for it or image_shape: named too)
    with pytest.raises(ValueError, match=rf"{arg} must be |exactly one of {arg}"):
        make(**{**good, arg: bad})


@settings(max_examples=8, deadline=None)
@given(builder=st.sampled_from(sorted(_BUILDERS)), numpy_ints=st.booleans())
def test_builders_take_python_and_numpy_integers(builder, numpy_ints):
    make, good = _BUILDERS[builder]
    cast = np.int64 if numpy_ints else int
    args = {k: (cast(v) if isinstance(v, int) else v) for k, v in good.items()}
    flow = make(**args)
    x = flow.sample(2, seed=0)
    assert np.isfinite(np.asarray(flow.log_prob(x))).all()


# -- fit, evaluate, predict -----------------------------------------------------------
@pytest.fixture(scope="module")
def compiled():
    flow = tff.models.maf(3, num_layers=1, hidden_units=(4,))
    flow.compile(jit_compile=False)
    return flow


_ROWS = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)


@SETTINGS
@given(arg=st.sampled_from(["batch_size", "epochs", "validation_split"]),
       bad=st.one_of(st.integers(-3, -1), st.floats(allow_subnormal=False).filter(
           lambda f: not 0 <= f < 1), st.booleans(), st.text(max_size=2)))
def test_fit_names_a_bad_argument(compiled, arg, bad):
    if arg == "batch_size" and bad is False:
        bad = 0
    with pytest.raises(ValueError, match=rf"{arg} must be "):
        compiled.fit(_ROWS, verbose=0, **{arg: bad})


@pytest.mark.parametrize("kwargs, match", [
    (dict(x=_ROWS[:0]), "x has no rows"),
    (dict(x=_ROWS, validation_data=_ROWS[:0]), "validation_data has no rows"),
    (dict(x=_ROWS, validation_split=0.95), r"validation_split=0\.95 of 10 rows "
                                           r"leaves 0 for training and 10 for validation"),
    (dict(x=_ROWS.astype(np.float64) * 1e300), r"x holds values beyond the flow's "
                                                r"float32 range \(\|x\| up to"),
    (None, None),
])
def test_fit_refuses_data_it_cannot_train_on(compiled, kwargs, match):
    if match is None:  # a dataset of single rows, and one of none
        import tensorflow as tf
        rows = tf.data.Dataset.from_tensor_slices(_ROWS)
        with pytest.raises(ValueError, match=r"x yields single examples of shape "
                                             r"\(3,\): batch the dataset"):
            compiled.fit(rows, verbose=0)
        with pytest.raises(ValueError, match="x is a tf.data.Dataset with no elements"):
            compiled.fit(rows.take(0).batch(2), verbose=0)
        return
    with pytest.raises(ValueError, match=match):
        compiled.fit(verbose=0, **kwargs)


@pytest.mark.parametrize("wrap", [list, lambda x: (x,), lambda x: (x, None),
                                  lambda x: x.astype(np.int64)])
def test_fit_takes_lists_tuples_and_integers(compiled, wrap):
    data = wrap(np.round(_ROWS)) if wrap is not list else np.round(_ROWS).tolist()
    history = compiled.fit(data, epochs=1, batch_size=5, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("method", ["evaluate", "predict"])
def test_evaluate_and_predict_refuse_nan_rows(compiled, method):
    x = _ROWS.copy()
    x[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"x has 1 rows with NaN or Inf \(first at "
                                         r"index 4\); clean them first"):
        getattr(compiled, method)(x, verbose=0)
    assert np.isfinite(np.asarray(getattr(compiled, method)(_ROWS, verbose=0))).all()
