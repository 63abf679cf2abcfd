"""Generated option values for every numeric option of the `tfflows`
command: each is parsed to its value or refused as a one-line usage error
(exit 2) that names the option, before TensorFlow is imported."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfflows_cli

# command -> the arguments it needs besides the option under test
_COMMANDS = {"train": [], "sample": ["m.keras", "--out", "s.npy"],
             "score": ["m.keras", "--data", "d.csv"],
             "impute": ["m.keras", "--data", "d.csv", "--out", "o.csv"]}


def _as_int(text):
    try:
        return int(text)
    except ValueError:
        return None


def _as_float(text):
    try:
        return float(text)
    except ValueError:
        return None


# option -> (commands that take it, the value expected from its text or None)
def _positive(text):
    value = _as_int(text)
    return value if value is not None and value >= 1 else None


def _positive_number(text):
    value = _as_float(text)
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _seed(text):
    value = _as_int(text)
    return value if value is not None and 0 <= value < 2**32 else None


def _rate(text):
    value = _as_float(text)
    return value if value is not None and 0 < value < 1 else None


_OPTIONS = {
    "--epochs": (["train"], _positive), "--batch-size": (["train"], _positive),
    "--num-layers": (["train"], _positive), "--learning-rate": (["train"], _positive_number),
    "--seed": (["train", "sample", "impute"], _seed),
    "--num": (["sample"], _positive), "--temperature": (["sample"], _positive_number),
    "--fpr": (["score"], _rate), "--num-samples": (["impute"], _positive),
    "--num-burnin-steps": (["impute"], _positive), "--num-chains": (["impute"], _positive),
}

_TEXTS = st.one_of(
    st.integers(-2**70, 2**70).map(str),
    st.floats(allow_subnormal=False).map(repr),
    st.sampled_from(["", " ", "1e3", "0x10", "nan", "inf", "-inf", "1_000", "½", "3.0",
                     "١٢"]),  # Arabic-Indic digits: int() reads them
    st.text(max_size=4))


@settings(max_examples=300, deadline=None)
@given(option=st.sampled_from(sorted(_OPTIONS)), data=st.data(), text=_TEXTS)
def test_every_numeric_option_parses_or_is_a_named_usage_error(option, data, text):
    commands, expected = _OPTIONS[option]
    command = data.draw(st.sampled_from(commands))
    argv = [command, *_COMMANDS[command], f"{option}={text}"]
    want = expected(text)
    if want is None:
        with pytest.raises(tfflows_cli.UsageError, match=rf"argument {option}: "):
            tfflows_cli.parser().parse_args(argv)
        return
    args = tfflows_cli.parser().parse_args(argv)
    got = getattr(args, option[2:].replace("-", "_"))
    assert got == want and type(got) is type(want)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # read each time
@given(text=_TEXTS.filter(lambda t: _positive(t) is None))
def test_a_bad_option_is_one_line_and_exit_2(capsys, text):
    assert tfflows_cli.main(["train", f"--epochs={text}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tfflows: error: argument --epochs: ")
