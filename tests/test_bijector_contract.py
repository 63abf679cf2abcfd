"""Every registered bijector against the shared contract (tfflows.testing)."""

import pytest
import tensorflow as tf

from tfflows import testing
from tests.bijector_cases import CASES

DTYPES = [tf.float32, tf.float64]


@pytest.fixture(params=sorted(CASES), ids=str)
def case_name(request):
    return request.param


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_contract(case_name, dtype):
    case = CASES[case_name](dtype)
    testing.assert_bijector_contract(case.bijector, case.x, case.event_ndims,
                                     variables=case.variables)
