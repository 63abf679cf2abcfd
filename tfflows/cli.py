"""The `tfflows` command's work: train, sample, score, impute, export.

Options are parsed and checked in `tfflows_cli` (the entry point, which
answers `--help` and usage errors before TensorFlow is imported); `run`
carries a parsed command out. Every failure the user can act on is raised as
a one-line `CommandError`; outputs are staged and moved into place only when
complete, inputs are never written over, and a trained model is never
discarded because a later step (export) failed.
"""

import json
import math
import os
import shutil
import sys

from tfflows_cli import BUILTIN_DATA, CommandError, main

__all__ = ["main", "run"]


def _load_data(spec, seed):
    """`(x, num_bins)`: vectors `[N, D]` or images in [0, 1] `[N, H, W, C]`."""
    from tfflows import data

    if spec == "moons":
        return data.two_moons(8192, seed=seed), None
    if spec == "circles":
        return data.circles(8192, seed=seed), None
    if spec == "digits":
        return data.digits(), data.DIGITS_NUM_BINS
    x = data.load_array(spec)
    if x.ndim == 2:
        return x, None
    if x.ndim == 4:
        if x.min() < 0 or x.max() > 1:
            raise CommandError(f"{spec}: images must be pixels in [0, 1]; found "
                               f"values in [{x.min():g}, {x.max():g}]")
        return x, 256
    raise CommandError(f"{spec}: expected [N, D] vectors or [N, H, W, C] images; "
                       f"got shape {x.shape}")


def _build(flow, x, num_bins, num_layers):
    import tfflows as tff

    if num_bins is None:
        dim = x.shape[1]
        if flow == "glow":
            raise CommandError("--flow glow needs image data (e.g. --data digits)")
        if dim < 2 and flow in ("nice", "realnvp"):
            raise CommandError(f"--flow {flow} needs at least 2 columns; the data has {dim}")
        if flow == "cnf":  # one continuous layer: num_layers has no meaning
            return tff.models.cnf(event_dim=dim, hidden_units=(64, 64, 64))
        builders = {"nice": tff.models.nice, "realnvp": tff.models.realnvp,
                    "maf": tff.models.maf, "iaf": tff.models.iaf,
                    "nsf": tff.models.nsf}
        kwargs = {"hidden_units": (128, 128), "num_layers": num_layers}
        return builders[flow](event_dim=dim, **kwargs)
    shape = x.shape[1:]
    if flow == "glow":
        levels = 2 if shape[0] % 4 == 0 and shape[1] % 4 == 0 else 1
        if shape[0] % 2 or shape[1] % 2:
            raise CommandError(f"glow needs even image height and width; got {shape}")
        return tff.models.glow(image_shape=shape, levels=levels, steps_per_level=4,
                               hidden_channels=64, num_bins=num_bins)
    if flow == "realnvp":
        return tff.models.realnvp(image_shape=shape, levels=2 if shape[0] % 2 == 0
                                  and shape[1] % 2 == 0 else 1,
                                  hidden_channels=64, num_bins=num_bins)
    raise CommandError(f"--flow {flow} models vectors; use glow or realnvp for images")


def _plots(flow, history, x_val, num_bins, out):
    import numpy as np

    from tfflows import latent, plots
    from tfflows.continuous import ContinuousFlow

    plots.loss_curves(history, os.path.join(out, "loss.png"),
                      "bits_per_dim" if num_bins else flow.objective.metric_names[0])
    if num_bins is None and x_val.shape[1] == 2:
        samples = np.asarray(flow.sample(2000, seed=1))
        # A continuous flow's log_prob solves an ODE: 24 s for the 200x200
        # grid on 2 loaded cores, 100x100 takes a quarter of that.
        grid = 100 if isinstance(flow, ContinuousFlow) else 200
        plots.density_2d(flow, x_val, samples, os.path.join(out, "density.png"),
                         grid=grid)
    elif num_bins is not None:
        rows = [np.asarray(flow.sample(8, temperature=t, seed=2)) for t in (0.5, 0.7, 1.0)]
        rows.append(latent.interpolate(flow, x_val[0], x_val[1], num=8, method="linear"))
        plots.image_grid(rows, ["T = 0.5", "T = 0.7", "T = 1.0", "latent interpolation"],
                         os.path.join(out, "samples.png"))


# A run's files are written to a staging folder beside --out
# (`.tfflows-<host>-<pid>-<random>`) and renamed to --out once the model,
# metrics and plots are complete; the export then writes --out/serving (its
# own staging, one rename) while this marker in --out says it is under way.
STAGING = ".tfflows-"
REPLACED = ".tfflows-old-"
EXPORT_PENDING = ".export-pending"


def _export_hint(out):
    models = sorted(n for n in os.listdir(out) if n.endswith(".keras"))
    model = os.path.join(out, models[0] if models else "MODEL.keras")
    return f"`tfflows export {model} --out {os.path.join(out, 'serving')}`"


def _export_pending(out):
    """Whether `out` holds a run whose export was interrupted."""
    return (os.path.exists(os.path.join(out, EXPORT_PENDING))
            and not os.path.exists(os.path.join(out, "serving", "export.json")))


def _clean_stale_staging(parent):
    """Removes what runs killed on this host left beside their --out: staging
    folders without a saved model (killed while training) and replaced runs
    (their --overwrite was under way). A staging folder that holds a saved
    model is kept, and said, not thrown away."""
    from tfflows import staging

    staging.remove_stale(parent, REPLACED)
    for path in staging.stale(parent, STAGING):
        if any(n.endswith(".keras") for n in os.listdir(path)):
            print(f"tfflows: note: {path} holds the model of a run that was killed "
                  "before it finished; move out what you need and delete it",
                  file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _prepare_out(out, overwrite, data_path):
    """Refuses an --out that would lose something; returns its parent."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise CommandError(f"--out {out} is a file, not a folder")
    if os.path.isdir(out) and _export_pending(out) and not overwrite:
        raise CommandError(
            f"--out {out} holds a trained model whose export did not finish (the "
            f"run was interrupted); finish it with {_export_hint(out)}, or pass "
            "--overwrite to train again")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise CommandError(f"--out {out} exists and is not empty; pass --overwrite "
                           "to replace it")
    if data_path is not None and os.path.isfile(data_path):
        inside = os.path.commonpath([os.path.abspath(out), os.path.abspath(data_path)])
        if inside == os.path.abspath(out):
            raise CommandError(f"the data file {data_path} is inside --out {out}, "
                               "which the run replaces: move it or choose another --out")
    parent = os.path.dirname(os.path.abspath(out))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise CommandError(f"Cannot write --out {out}: {parent} is a file")
    os.makedirs(parent, exist_ok=True)
    _clean_stale_staging(parent)
    return parent


def _publish_run(staging, out):
    """Moves a finished run into `out`, replacing what was there (moved aside
    first, so a kill leaves the old run or the new one under `out`)."""
    from tfflows import staging as staged

    staged.fsync_tree(staging)
    old = None
    if os.path.exists(out):
        parent = os.path.dirname(os.path.abspath(out))
        old = staged.make(parent, REPLACED)
        os.replace(out, os.path.join(old, "run"))
    os.replace(staging, out)
    staged.fsync(os.path.dirname(os.path.abspath(out)))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _export_run(out, model_path, name):
    """Exports a published run into `out/serving`; returns the error that
    stopped it (the model is kept), or None. The `EXPORT_PENDING` marker
    stays in `out` only if the export was killed or interrupted."""
    from tfflows.export import ExportError, pipeline

    try:
        summary = pipeline.run(model_path, os.path.join(out, "serving"), name=name)
    except (ExportError, ValueError, OSError) as err:
        error = str(err)
    except KeyboardInterrupt:
        err = CommandError(f"interrupted during the export; the model, metrics and "
                           f"plots are kept in {out}: finish with "
                           f"{_export_hint(out)}")
        err.exit_code = 130
        raise err from None
    except Exception as err:  # a bug in export must not cost the model
        error = f"{type(err).__name__}: {err}"
    else:
        error = None
        if summary.get("onnx_note"):  # e.g. a continuous flow: SavedModel only
            print(f"ONNX: {summary['onnx_note']}")
    os.remove(os.path.join(out, EXPORT_PENDING))
    return error


def _check_finite_history(history):
    for key, values in history.items():
        if key.endswith("loss"):
            bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
            if bad:
                raise CommandError(
                    f"training diverged: {key} became {values[bad[0]]} in epoch "
                    f"{bad[0] + 1}; nothing was written (try a smaller --learning-rate)")
    if not history.get("loss"):
        raise CommandError("training diverged: the loss was not finite in the first "
                           "epoch; nothing was written (try a smaller --learning-rate)")


def _metrics(args, flow, history, x, x_train, x_test, num_bins):
    """metrics.json's figures, each named for the density it measures."""
    import numpy as np
    import tensorflow as tf

    from tfflows import data

    objective = flow.objective
    test = objective.dequantize(x_test, seed=(args.seed, 1))
    log_prob = np.asarray(flow.log_prob(test))
    if not np.all(np.isfinite(log_prob)):
        raise CommandError(f"the trained flow gives a non-finite log-density to "
                           f"{int(np.sum(~np.isfinite(log_prob)))} test rows; "
                           "nothing was written (try a smaller --learning-rate)")
    metrics = {"flow": args.flow, "data": args.data, "epochs": args.epochs}
    if num_bins:
        bpd = float(tf.reduce_mean(objective.bits_per_dim(log_prob)))
        # Images: `nll` (from fit) is the continuous density of the pixels
        # scaled to [0, 1]; bits/dim is the discrete data's figure papers
        # report, with the bin width and every preprocessing Jacobian counted.
        metrics.update(
            about=("bits_per_dim: negative log2-likelihood of the discrete pixel "
                   "levels per dimension (the figure papers report; uniform = "
                   "log2(num_bins)); nll: nats per image of the continuous "
                   "density of the pixels scaled to [0, 1], which is negative "
                   "when that density exceeds 1"),
            num_bins=num_bins,
            train_bits_per_dim=history["bits_per_dim"],
            val_bits_per_dim=history["val_bits_per_dim"],
            test_bits_per_dim=bpd,
            test_bits_per_dim_uniform=math.log2(num_bins),
            train_nll=history["nll"], val_nll=history["val_nll"],
            test_nll=float(-np.mean(log_prob)))
    elif "nll" in history:
        metrics.update(
            about="nll: negative log-likelihood in nats per example",
            train_nll=history["nll"], val_nll=history["val_nll"],
            test_nll=float(-np.mean(log_prob)),
            test_nll_best_gaussian=data.gaussian_nll(x_train, x_test))
    else:  # a continuous flow: fit logs its objective's loss, not an NLL
        name = objective.metric_names[0]
        metrics.update(
            about=(f"{name}: the training objective per epoch (not a likelihood); "
                   "test_nll: negative log-likelihood in nats per example, "
                   "-log_prob of the test rows (ODE solve)"),
            **{f"train_{name}": history[name], f"val_{name}": history[f"val_{name}"]},
            test_nll=float(-np.mean(log_prob)),
            test_nll_best_gaussian=data.gaussian_nll(x_train, x_test))
    return metrics


def train(args):
    """Trains; writes the model, metrics, plots and exports into --out.

    Nothing is written when data or training fail, or the run is
    interrupted (even by SIGKILL) before the model is saved: --out appears,
    by one rename, only with the model, metrics and plots in it. The export
    then writes --out/serving; when it fails, the model, metrics and plots
    are kept and the export error is raised after them. When it is
    interrupted or killed, --out keeps them with a marker
    (`EXPORT_PENDING`) that makes a second run with the same --out refuse
    (unless --overwrite) and say how to finish the export.
    """
    import keras

    from tfflows import data, staging as staged

    x, num_bins = _load_data(args.data, args.seed)
    x_train, x_val, x_test = data.split(x, seed=args.seed)
    if not (len(x_train) and len(x_val) and len(x_test)):
        raise CommandError(f"{args.data}: {len(x)} rows are too few to train on: train "
                           "splits them 80/10/10 into training, validation and test "
                           f"rows ({len(x_train)}/{len(x_val)}/{len(x_test)} here) and "
                           "needs at least one of each")
    name = os.path.splitext(os.path.basename(args.data))[0]
    out = args.out or os.path.join("runs", f"{args.flow}-{name}")
    data_path = None if args.data in BUILTIN_DATA else args.data
    parent = _prepare_out(out, args.overwrite, data_path)
    keras.utils.set_random_seed(args.seed)
    flow = _build(args.flow, x, num_bins, args.num_layers)
    flow.compile(optimizer=keras.optimizers.Adam(args.learning_rate, global_clipnorm=1.0))
    staging = staged.make(parent, STAGING)
    export_error = None
    try:
        history = flow.fit(x_train, batch_size=args.batch_size, epochs=args.epochs,
                           validation_data=x_val,
                           callbacks=[keras.callbacks.TerminateOnNaN()],
                           verbose=1 if sys.stdout.isatty() else 2).history
        _check_finite_history(history)
        metrics = _metrics(args, flow, history, x, x_train, x_test, num_bins)
        flow.save(os.path.join(staging, f"{args.flow}.keras"))
        with open(os.path.join(staging, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        _plots(flow, history, x_val, num_bins, staging)
        if not args.no_export:
            with open(os.path.join(staging, EXPORT_PENDING), "w") as f:
                f.write("The export of this run did not finish (interrupted); "
                        "run `tfflows export` on the .keras model here, with "
                        "--out pointing at this folder's serving/.\n")
        _publish_run(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not args.no_export:
        export_error = _export_run(out, os.path.join(out, f"{args.flow}.keras"),
                                   args.flow)
    if num_bins:
        print(f"\n{args.flow} on {args.data}: test {metrics['test_bits_per_dim']:.3f} "
              f"bits/dim (uniform {metrics['test_bits_per_dim_uniform']:.3f})")
    else:
        print(f"\n{args.flow} on {args.data}: test NLL {metrics['test_nll']:.3f} nats "
              f"(best Gaussian {metrics['test_nll_best_gaussian']:.3f})")
    print(f"Wrote {out}")
    if export_error is not None:
        model = os.path.join(out, f"{args.flow}.keras")
        raise CommandError(f"export failed ({export_error}); the model, metrics and "
                           f"plots are kept in {out}: retry with `tfflows export "
                           f"{model} --out {os.path.join(out, 'serving')}`")
    return 0


def sample(args):
    import numpy as np

    from tfflows import files

    files.check_output(args.out, args.overwrite, inputs=[args.model])
    flow = files.load_flow(args.model)
    if flow.context_dim is not None:
        raise CommandError("conditional flows need a context; use the Python API")
    x = np.asarray(flow.sample(args.num, temperature=args.temperature, seed=args.seed))
    with files.atomic_output(args.out, args.overwrite, inputs=[args.model]) as tmp:
        np.save(tmp, x)
    print(f"Wrote {args.num} samples {x.shape[1:]} to {args.out}")
    return 0


def _rows_for(flow, x, path):
    if tuple(x.shape[1:]) != flow.event_shape:
        raise CommandError(f"{path}: rows have shape {tuple(x.shape[1:])}, the "
                           f"flow models {flow.event_shape}")
    return x


def score(args):
    """Log-density of each row; with --threshold-from, a flag column from a
    threshold calibrated on held-out rows at --fpr (`tfflows.ood`), or with
    --batch-size also, the typicality test of consecutive batches."""

    from tfflows import data, files, ood

    inputs = [args.model, args.data, args.threshold_from]
    if args.out:
        files.check_output(args.out, args.overwrite, inputs=inputs)
    x = data.load_array(args.data)  # the cheaper check first
    flow = files.load_flow(args.model)
    if flow.context_dim is not None:
        raise CommandError("conditional flows need a context; use the Python API")
    x = _rows_for(flow, x, args.data)
    batch = args.batch_size
    if batch is not None and len(x) % batch:
        raise CommandError(f"{args.data}: {len(x)} rows are not whole batches of "
                           f"--batch-size {batch}")
    scorer = None
    if args.threshold_from is not None:
        validation = _rows_for(flow, data.load_array(args.threshold_from),
                               args.threshold_from)
        if batch is None:
            scorer = ood.LikelihoodThreshold.fit(flow, validation, fpr=args.fpr)
        else:
            # Alternate held-out rows estimate the entropy and calibrate epsilon.
            if len(validation) < 2 * batch:
                raise CommandError(f"{args.threshold_from}: {len(validation)} rows; the "
                                   f"typicality test of batches of {batch} needs at "
                                   f"least {2 * batch} held-out rows")
            scorer = ood.TypicalityTest.fit(flow, validation[0::2], validation[1::2],
                                            batch_size=batch, fpr=args.fpr)
    log_prob = ood.log_prob(flow, x)
    # Rows and batches are numbered from 1, as in every message about a data file.
    if scorer is None:
        lines = ["row,log_prob"] + [f"{i},{v:.6f}" for i, v in enumerate(log_prob, 1)]
    elif batch is None:
        flags = log_prob < scorer.threshold
        lines = ["row,log_prob,flag"] + [f"{i},{v:.6f},{int(f)}" for i, (v, f)
                                         in enumerate(zip(log_prob, flags), 1)]
    else:
        flags = scorer.flag(x.reshape((-1, batch) + x.shape[1:]))
        lines = ["row,log_prob,batch,flag"] + [
            f"{i},{v:.6f},{(i - 1) // batch + 1},{int(flags[(i - 1) // batch])}"
            for i, v in enumerate(log_prob, 1)]
    if args.out:
        with files.atomic_output(args.out, args.overwrite, inputs=inputs) as tmp:
            with open(tmp, "w") as f:
                f.write("\n".join(lines) + "\n")
        print(f"Wrote {len(log_prob)} scores to {args.out}")
    else:
        print("\n".join(lines))
    if scorer is not None and batch is None:
        print(f"Flagged {int(flags.sum())} of {len(flags)} rows: log_prob below "
              f"{scorer.threshold:.6g}, the fpr={args.fpr:g} threshold of "
              f"{scorer.num_calibration} rows of {args.threshold_from}", file=sys.stderr)
    elif scorer is not None:
        print(f"Flagged {int(flags.sum())} of {len(flags)} batches of {batch} rows: "
              f"mean NLL more than {scorer.epsilon:.4g} from the entropy estimate "
              f"{scorer.entropy:.4g} (typicality test at fpr={args.fpr:g}, calibrated "
              f"on {len(validation)} rows of {args.threshold_from})", file=sys.stderr)
    return 0


def impute(args):
    """Fills in missing entries: `.csv` out gets the mean of the draws per
    cell (observed cells as given), `.npy` out all draws."""
    import numpy as np

    from tfflows import data, files

    inputs = [args.model, args.data]
    files.check_output(args.out, args.overwrite, inputs=inputs)
    x = data.load_array(args.data, allow_missing=True)  # the cheaper check first
    flow = files.load_flow(args.model)
    if flow.context_dim is not None:
        raise CommandError("conditional flows need a context; use the Python API")
    x = _rows_for(flow, x, args.data)
    if args.out.lower().endswith(".csv") and x.ndim != 2:
        raise CommandError(f"--out {args.out}: a .csv holds vectors; these rows have "
                           f"shape {x.shape[1:]}: write a .npy")
    missing = int(np.isnan(x).sum())
    draws, info = flow.impute(x, num_samples=args.num_samples, seed=args.seed,
                              num_chains=args.num_chains,
                              num_burnin_steps=args.num_burnin_steps,
                              r_hat_warning=np.inf, return_diagnostics=True)
    with files.atomic_output(args.out, args.overwrite, inputs=inputs) as tmp:
        if args.out.lower().endswith(".npy"):
            np.save(tmp, draws)
        else:
            mean = np.where(np.isnan(x), draws.mean(axis=0), x)
            names = (data.csv_header(args.data, allow_missing=True)
                     if args.data.lower().endswith(".csv") else None)
            header = ",".join(names or [f"x{i}" for i in range(1, x.shape[1] + 1)])
            np.savetxt(tmp, mean, delimiter=",", header=header, comments="", fmt="%.6g")
    high = np.flatnonzero(info.r_hat > 1.1)
    if len(high):
        shown = ", ".join(str(i + 1) for i in high[:10]) + (", ..." if len(high) > 10 else "")
        print(f"tfflows: warning: the chains disagree (R-hat above 1.1, largest "
              f"{np.nanmax(info.r_hat):.2f}) in {len(high)} of {int(info.mcmc_rows.sum())} "
              f"partly observed rows (rows {shown}): their draws may not have "
              "converged; raise --num-burnin-steps or --num-chains", file=sys.stderr)
    print(f"Filled {missing} missing entries in {len(x)} rows ({args.num_samples} "
          f"draws each) into {args.out}")
    return 0


def export(args):
    """Runs the export pipeline (tfflows.export.pipeline)."""
    from tfflows.export import pipeline

    summary = pipeline.run(args.model, args.out, name=args.name)
    # Finishing the export of a `tfflows train` run that was interrupted.
    run = os.path.dirname(os.path.abspath(args.model))
    if os.path.abspath(args.out) == os.path.join(run, "serving"):
        try:
            os.remove(os.path.join(run, EXPORT_PENDING))
        except FileNotFoundError:
            pass
    print(f"SavedModel: {os.path.join(args.out, summary['saved_model'])}")
    for name, info in summary["onnx"].items():
        print(f"ONNX {name}: {os.path.join(args.out, info['path'])} "
              f"(max abs diff {info['max_abs_diff']:.2g})")
    if summary.get("onnx_note"):
        print(f"ONNX: {summary['onnx_note']}")
    print(f"TF Serving config and requests: {args.out}")
    return 0


COMMANDS = {"train": train, "sample": sample, "score": score, "impute": impute,
            "export": export}


def run(args):
    """Carries out a command parsed by `tfflows_cli.parser()`.

    Library errors the user can act on (bad data, broken files, failed
    exports, unwritable paths) become one-line `CommandError`s.
    """
    from tfflows.export import ExportError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, ExportError, OSError) as err:
        raise CommandError(str(err)) from err
