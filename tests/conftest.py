"""Fixtures shared by test files."""

import keras
import pytest

import tfflows as tff
from tfflows import data


@pytest.fixture(scope="session")
def digits_glow():
    """A small Glow trained briefly on sklearn's digits, and the split.

    Three epochs without XLA (its compile costs more than it saves here):
    about 16 s on 2 loaded CPU cores, 2.8 bits/dim."""
    keras.utils.set_random_seed(0)
    x_train, x_val, x_test = data.split(data.digits(), seed=0)
    flow = tff.models.glow(image_shape=(8, 8, 1), levels=2, steps_per_level=2,
                           hidden_channels=16, num_bins=data.DIGITS_NUM_BINS)
    flow.compile(optimizer=keras.optimizers.Adam(3e-3, global_clipnorm=1.0),
                 jit_compile=False)
    flow.fit(x_train, batch_size=64, epochs=3, verbose=0)
    return flow, (x_train, x_val, x_test)
