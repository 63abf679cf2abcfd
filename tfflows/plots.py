"""Figures of a trained flow: loss curves, 2-D densities, image samples.

Each function writes a PNG through a standalone `matplotlib.figure.Figure`,
so importing this module leaves pyplot's backend (and a notebook's inline
plots) alone.
"""

import numpy as np
from matplotlib.figure import Figure

__all__ = ["loss_curves", "density_2d", "image_grid"]


def loss_curves(history, path, metric="nll"):
    """Training and validation curves of `metric` (a Keras `History.history`)."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
        if key in history:
            ax.plot(np.arange(1, len(history[key]) + 1), history[key], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel({"bits_per_dim": "bits / dim", "fm_loss": "flow-matching loss"}.get(
        metric, "NLL (nats / example)"))
    ax.legend()
    ax.set_title("Training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def density_2d(flow, data, samples, path, grid=200):
    """Learned density on a grid, beside the data and the flow's samples."""
    lo = np.minimum(data.min(0), -3.0) - 0.5
    hi = np.maximum(data.max(0), 3.0) + 0.5
    xs, ys = np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid)
    mesh = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.float32)
    density = np.exp(np.asarray(flow.log_prob(mesh))).reshape(grid, grid)
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 3)
    axes[0].scatter(data[:, 0], data[:, 1], s=2, alpha=0.5)
    axes[0].set_title("data")
    axes[1].imshow(density, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]),
                   cmap="viridis", aspect="auto")
    axes[1].set_title("learned density")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, color="C1")
    axes[2].set_title("samples")
    for ax in (axes[0], axes[2]):
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def image_grid(rows, labels, path):
    """A grid of images: one row per entry of `rows` (`[n, H, W, C]`)."""
    n = max(len(r) for r in rows)
    fig = Figure(figsize=(1.1 * n, 1.2 * len(rows)))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for i, (row, label) in enumerate(zip(rows, labels)):
        for j in range(n):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(row):
                image = np.clip(row[j], 0, 1)
                ax.imshow(image[..., 0] if image.shape[-1] == 1 else image,
                          cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(label, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
