"""Continuous flows (CNF, flow matching) beside MAF and NSF-AR.

Held-out NLL on two moons and breast cancer with the quality table's
protocol (`quality.BUDGETS`: widths, epochs, batch, learning rate; early
stopping with patience 10, best weights kept), tfflows only (TFP and zuko
have no flow-matching CNF). The CNF (library defaults: 8 flow-matching
draws per example) has a velocity network of three hidden layers of the
budget's width and stops early like the others, on its validation loss:
the flow-matching loss (its `fit` computes no likelihood) with each
validation row's times and base points fixed, so epochs compare fairly.
Its test NLL uses the exact trace and RK4 at 32 steps. Training time per warm epoch, and
the time of `log_prob` and `sample` of 10,000 points on two moons with
each solver: RK4 at the default 32 steps and Dormand-Prince at the
default tolerances (rtol = atol = 1e-5).

    python -m benchmarks.continuous [--quick] [--seeds 0,1,2]

prints the two tables; `python -m benchmarks` (full run only) adds them
to BENCHMARKS.md.
"""

import argparse
import os

import keras
import numpy as np

import tfflows as tff
from benchmarks import quality
from benchmarks.timing import EpochTimer, median_seconds

KINDS = ("CNF", "MAF", "NSF-AR")
SEEDS = quality.SEEDS
DATASETS = ("two moons (2-D)", "breast cancer (26-D)")


def build(kind, event_dim, hidden):
    if kind == "CNF":
        return tff.models.cnf(event_dim, hidden_units=tuple(hidden) + hidden[-1:],
                              trace="exact")
    if kind == "MAF":
        return tff.models.maf(event_dim, num_layers=quality.LAYERS["MAF"],
                              hidden_units=hidden)
    return tff.models.nsf(event_dim, num_layers=quality.LAYERS["NSF-AR"],
                          hidden_units=hidden, actnorm=False)


def held_out(kind, data, budget, seed=0, patience=10):
    """`(flow, test NLL, median warm epoch seconds, epochs run)`."""
    train, val, test = data
    hidden, epochs, batch, lr = budget
    keras.utils.set_random_seed(seed)
    flow = build(kind, train.shape[1], hidden)
    flow.compile(keras.optimizers.Adam(lr))
    timer = EpochTimer()
    callbacks = [timer, keras.callbacks.EarlyStopping(
        "val_loss", patience=patience, restore_best_weights=True)]
    flow.fit(train, batch_size=batch, epochs=epochs, verbose=0,
             validation_data=val, callbacks=callbacks)
    nll = quality._nll(flow.log_prob, test, batch=2048)
    warm = timer.times[1:] or timer.times
    return flow, nll, float(np.median(warm)), len(timer.times)


def solver_seconds(flow, num_points, repeats, seed=0):
    """`{solver: (log_prob seconds, sample seconds)}` for `num_points`
    points, warm (the flow's cached graphs), medians of `repeats`."""
    layer = flow.continuous_layer
    saved = layer.solver, layer.trace
    x = np.asarray(flow.sample(num_points, seed=seed))
    out = {}
    try:
        layer.trace = "exact"
        for solver in ("rk4", "dopri5"):
            layer.solver = solver
            out[solver] = median_seconds(
                lambda: flow.log_prob(x), lambda: flow.sample(num_points, seed=seed),
                repeats=repeats)
    finally:
        layer.solver, layer.trace = saved
    return out


def run(quick=False, seeds=(0,), num_points=10_000, repeats=3):
    """Rows of the two tables: `quality_rows` `(data, flow, [NLL per seed],
    baseline)` and `speed_rows` `(task, seconds)`."""
    quality_rows, speed_rows = [], []
    moons_cnf = None
    for label in DATASETS:
        budget = quality.BUDGETS[label]
        if quick:
            budget = ((16, 16), 1) + budget[2:]
        nlls = {kind: [] for kind in KINDS}
        epoch_times = {kind: [] for kind in KINDS}
        baselines = []
        for seed in seeds:
            data = (quality.moons(1024 if quick else 8192, seed) if label.startswith("two")
                    else quality.breast_cancer(seed))
            baselines.append(tff.data.gaussian_nll(data[0], data[2]))
            for kind in KINDS:
                flow, nll, epoch, count = held_out(kind, data, budget, seed)
                print(f"{label} {kind} seed {seed}: NLL {nll:.3f}, "
                      f"{epoch:.3f} s/epoch, {count} epochs", flush=True)
                nlls[kind].append(nll)
                epoch_times[kind].append(epoch)
                if kind == "CNF" and label.startswith("two") and seed == seeds[0]:
                    moons_cnf = flow
        for kind in KINDS:
            quality_rows.append((label, kind, nlls[kind], baselines))
            speed_rows.append((f"{label}: {kind} warm epoch (s), batch {budget[2]}",
                               float(np.median(epoch_times[kind]))))
    n = 100 if quick else num_points
    for solver, (log_prob, sample) in solver_seconds(
            moons_cnf, n, 1 if quick else repeats).items():
        name = ("RK4, 32 steps" if solver == "rk4"
                else "Dormand-Prince, rtol = atol = 1e-5")
        speed_rows.append((f"two moons CNF log_prob {n:,} ({name}, exact trace)", log_prob))
        speed_rows.append((f"two moons CNF sample {n:,} ({name})", sample))
    return quality_rows, speed_rows


def tables(quick=False, seeds=(0,)):
    from benchmarks.run import Table, _median_and_range

    quality_rows, speed_rows = run(quick, seeds)
    nll = Table("Continuous flows: held-out NLL (tfflows, same budget)",
                ["data", "flow", "NLL (nats)", "best Gaussian"],
                notes=__doc__.split("\n\n")[1].replace("\n", " ") + "\n")
    for label, kind, values, baselines in quality_rows:
        nll.add(label, kind, _median_and_range(values), _median_and_range(baselines))
    speed = Table("Continuous flows: training and solver times (seconds)",
                  ["task", "seconds"])
    for task, seconds in speed_rows:
        speed.add(task, f"{seconds:.3f}")
    return [nll, speed]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.continuous")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", default="0",
                        type=lambda s: tuple(int(v) for v in s.split(",")))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for table in tables(args.quick, args.seeds):
        print(table.markdown())


if __name__ == "__main__":
    main()
