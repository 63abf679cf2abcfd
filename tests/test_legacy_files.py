"""`.keras` files written before the transformer refactor still load.

The files in tests/data/legacy were saved by commit 2f6cb73 (one bijector
and layer class per coupling flavour) with `tests/data/legacy/make.py`;
`expected.npz` holds the log-densities and seeded samples that code gave.
"""

import pathlib

import keras
import numpy as np
import pytest

import tfflows as tff

HERE = pathlib.Path(__file__).parent / "data" / "legacy"
FLOWS = {"nice": "vector", "realnvp": "vector", "realnvp_image": "image",
         "glow": "image", "maf": "vector", "iaf": "vector",
         "maf_conditional": "vector"}


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(HERE / "expected.npz"))


@pytest.mark.parametrize("name", list(FLOWS))
def test_legacy_file_loads_with_the_same_density(name, expected):
    flow = keras.models.load_model(HERE / f"{name}.keras", safe_mode=True)
    assert isinstance(flow, tff.Flow)
    context = expected["context"] if name.endswith("conditional") else None
    x = expected[FLOWS[name]]
    np.testing.assert_allclose(flow.log_prob(x, context=context),
                               expected[name], rtol=1e-6, atol=1e-5)
    sample_context = None if context is None else context[:4]
    np.testing.assert_allclose(flow.sample(4, seed=3, context=sample_context),
                               expected[name + "_sample"], atol=1e-5)
