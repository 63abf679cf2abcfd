"""Every entry of the one registry (tests/bijector_cases.py) against the
shared contract (tfflows.testing): float32 and float64, eager, tf.function
and XLA."""

import pytest
import tensorflow as tf

from tfflows import testing
from tests.bijector_cases import CASES, TRANSFORMERS

RUNS = [(name, dtype) for name in sorted(CASES) for dtype in CASES[name].dtypes]


@pytest.mark.parametrize("case_name, dtype", RUNS,
                         ids=[f"{n}-{d.name}" for n, d in RUNS])
def test_contract(case_name, dtype):
    case = CASES[case_name].make(dtype)
    testing.assert_bijector_contract(case.bijector, case.x, case.event_ndims,
                                     variables=case.variables)


@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_every_transformer_has_coupling_autoregressive_and_layer_cases(name):
    forms = [f"coupling_{name}", f"autoregressive_{name}",
             f"layer_coupling_{name}_channel", f"layer_autoregressive_{name}"]
    assert set(forms) <= set(CASES)
    # The bijector-level cases really use this transformer.
    case = CASES[f"coupling_{name}"].make(tf.float64)
    assert case.bijector.transformer.name == name
    case = CASES[f"autoregressive_{name}"].make(tf.float64)
    assert case.bijector.transformer.name == name
