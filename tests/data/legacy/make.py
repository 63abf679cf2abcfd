"""Writes .keras files with the pre-transformer code (commit 2f6cb73), and
the log-densities they give, so later code can prove it still loads them."""
import pathlib, sys, numpy as np, tensorflow as tf, keras
sys.path.insert(0, str(pathlib.Path(__file__).parents[3]))
import tfflows as tff
from tests.helpers import perturb

out = str(pathlib.Path(__file__).parent)
rng = np.random.default_rng(0)
vec = rng.normal(size=(8, 3)).astype("float32")
img = ((rng.integers(0, 17, (8, 8, 8, 1)) + 0.5) / 17).astype("float32")
ctx = rng.normal(size=(8, 2)).astype("float32")
flows = {
    "nice": (lambda: tff.models.nice(3, num_layers=2, hidden_units=(8,)), vec, None),
    "realnvp": (lambda: tff.models.realnvp(3, num_layers=2, hidden_units=(8,)), vec, None),
    "realnvp_image": (lambda: tff.models.realnvp(image_shape=(8, 8, 1), levels=2, hidden_channels=4, num_bins=17), img, None),
    "glow": (lambda: tff.models.glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=4, num_bins=17), img, None),
    "maf": (lambda: tff.models.maf(3, num_layers=2, hidden_units=(8,)), vec, None),
    "iaf": (lambda: tff.models.iaf(3, num_layers=2, hidden_units=(8,)), vec, None),
    "maf_conditional": (lambda: tff.models.maf(3, num_layers=2, hidden_units=(8,), context_dim=2), vec, ctx),
}
arrays = {"vector": vec, "image": img, "context": ctx}
for name, (build, x, c) in flows.items():
    keras.utils.set_random_seed(1)
    flow = build()
    flow.initialize(x, c)
    perturb(flow, scale=0.1)
    arrays[name] = flow.log_prob(x, context=c).numpy()
    arrays[name + "_sample"] = flow.sample(4, seed=3, context=None if c is None else c[:4]).numpy()
    flow.save(f"{out}/{name}.keras")
np.savez(f"{out}/expected.npz", **arrays)
print({k: v.shape for k, v in arrays.items()})
