"""Coupling and planar/radial flows at their defaults train on 16-D
Student-t(2) data for 20 epochs without NaN, and give finite densities to
held-out and extreme rows."""

import pytest

from tests.heavy_tails import train_and_check


@pytest.mark.parametrize("name", ["nice", "realnvp", "nsf_coupling", "planar",
                                  "radial"])
def test_defaults_train_on_student_t_without_nan(name):
    train_and_check(name)
