"""Training every vector flow at its defaults on heavy-tailed data: shared
by test_heavy_tails_coupling.py and test_heavy_tails_autoregressive.py (two
files, so the suite's per-file workers run them side by side)."""

import keras
import numpy as np

import tfflows as tff

EVENT_DIM, ROWS, BATCH, EPOCHS = 16, 2048, 256, 20

BUILDERS = {
    "nice": tff.models.nice,
    "realnvp": tff.models.realnvp,
    "nsf_coupling": lambda event_dim: tff.models.nsf(event_dim, coupling=True),
    "planar": tff.models.planar,
    "radial": tff.models.radial,
    "maf": tff.models.maf,
    "iaf": tff.models.iaf,
    "nsf": tff.models.nsf,
}


def student_t(rows, seed):
    """Student-t draws with 2 degrees of freedom (infinite variance)."""
    rng = np.random.default_rng(seed)
    return rng.standard_t(2, size=(rows, EVENT_DIM)).astype(np.float32)


def extreme_rows():
    """Rows as far out as the largest of about a million Student-t(2) draws
    (~1e3): one large coordinate, and every coordinate large."""
    rows = np.zeros((6, EVENT_DIM), np.float32)
    rows[0, 0], rows[1, 7], rows[2, -1] = 1e2, -1e3, 3e3
    rows[3], rows[4] = 1e3, -1e3
    rows[5, ::2] = 5e2
    return rows


def train_and_check(name, seed=0):
    keras.utils.set_random_seed(seed)
    flow = BUILDERS[name](event_dim=EVENT_DIM)
    flow.compile(optimizer="adam")  # every default, as a user starts
    x = student_t(ROWS, seed)
    assert np.abs(x).max() > 50  # the draws do have heavy tails
    history = flow.fit(x, batch_size=BATCH, epochs=EPOCHS, verbose=0).history
    nll = np.asarray(history["nll"])
    assert len(nll) == EPOCHS and np.all(np.isfinite(nll)), nll
    assert nll[-1] < nll[0], nll  # it trained
    held_out = np.concatenate([student_t(512, seed + 1), extreme_rows()])
    log_prob = np.asarray(flow.log_prob(held_out))
    bad = np.flatnonzero(~np.isfinite(log_prob))
    assert bad.size == 0, (bad, held_out[bad[:3]], log_prob[bad[:3]])
