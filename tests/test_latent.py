"""tff.latent: interpolation through the latent space and reconstruction."""

import numpy as np
import pytest

import tfflows as tff
from tests.helpers import perturb


@pytest.fixture(scope="module")
def flow():
    flow = tff.models.realnvp(event_dim=4, num_layers=4, hidden_units=(16,))
    perturb(flow, scale=0.3)
    return flow


@pytest.mark.parametrize("method", ["linear", "spherical"])
def test_paths_start_and_end_at_the_data_and_follow_the_latent(flow, method):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 4)).astype(np.float32)
    path = tff.latent.interpolate(flow, a, b, num=7, method=method)
    assert path.shape == (7, 4)
    np.testing.assert_array_equal(path[0], a)
    np.testing.assert_array_equal(path[-1], b)
    z = np.asarray(flow.encode(path[1:-1]))
    z_a, z_b = np.asarray(flow.encode(np.stack([a, b])))
    t = np.linspace(0, 1, 7)[1:-1, None]
    if method == "linear":
        np.testing.assert_allclose(z, (1 - t) * z_a + t * z_b, atol=1e-4)
    else:  # norms linear in t, directions on the great circle
        norms = np.linalg.norm(z, axis=1)
        np.testing.assert_allclose(norms, (1 - t[:, 0]) * np.linalg.norm(z_a)
                                   + t[:, 0] * np.linalg.norm(z_b), rtol=1e-4)
        unit = z / norms[:, None]
        u_a, u_b = z_a / np.linalg.norm(z_a), z_b / np.linalg.norm(z_b)
        omega = np.arccos(u_a @ u_b)
        np.testing.assert_allclose(unit @ u_a, np.cos(t[:, 0] * omega), atol=1e-4)
    batched = tff.latent.interpolate(flow, np.stack([a, b]), np.stack([b, a]), num=5,
                                     method=method)
    assert batched.shape == (5, 2, 4)
    np.testing.assert_allclose(batched[:, 1], batched[::-1, 0], atol=1e-4)


def test_slerp_stays_in_the_typical_shell_where_a_line_does_not():
    rng = np.random.default_rng(1)
    z_a, z_b = rng.standard_normal((2, 1, 256))
    middle = tff.latent.slerp(z_a, z_b, [0.5])[0, 0]
    assert abs(np.linalg.norm(middle) - 16) < 2
    assert np.linalg.norm(0.5 * (z_a + z_b)) < 13  # about 16 / sqrt(2)


def test_reconstruct_round_trips_and_projects_onto_the_typical_set(flow):
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(tff.latent.reconstruct(flow, x), x, atol=1e-4)
    projected = tff.latent.reconstruct(flow, x, typical=True)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(flow.encode(projected)), axis=1),
                               2.0, rtol=1e-4)  # sqrt(D)
    with pytest.raises(ValueError, match="x must be a batch"):
        tff.latent.reconstruct(flow, x[0])


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "cubic"}, "method must be one of"),
    ({"num": 1}, "num must be an integer >= 2"),
])
def test_bad_interpolation_arguments(flow, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tff.latent.interpolate(flow, np.zeros(4), np.ones(4), **kwargs)


def test_spherical_needs_a_standard_normal_base():
    import tensorflow_probability as tfp
    base = tfp.distributions.MultivariateNormalDiag(loc=[0.0, 0.0], scale_diag=[1.0, 2.0])
    flow = tff.Flow([tff.layers.ActNorm()], (2,), base_distribution=base)
    with pytest.raises(ValueError, match="use method='linear'"):
        tff.latent.interpolate(flow, np.zeros(2), np.ones(2))
    assert tff.latent.interpolate(flow, np.zeros(2), np.ones(2), method="linear").shape == (8, 2)
