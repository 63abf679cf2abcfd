"""The `tfflows` command: train, sample, score, export.

`tfflows` alone trains the default flow (RealNVP on two moons) into
`runs/realnvp-moons`. Bad input ends with a one-line error and a non-zero
exit code, and leaves no output folder behind.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

__all__ = ["main"]

FLOWS = ("nice", "realnvp", "glow", "maf", "iaf")
BUILTIN_DATA = ("moons", "circles", "digits")


class UsageError(ValueError):
    """Bad input from the command line: reported in one line."""


def _parser():
    parser = argparse.ArgumentParser(
        prog="tfflows", description="Normalizing flows for TensorFlow.")
    sub = parser.add_subparsers(dest="command")
    train = sub.add_parser("train", help="train a flow, plot it, export it")
    train.add_argument("--flow", choices=FLOWS, default="realnvp")
    train.add_argument("--data", default="moons",
                       help="moons, circles, digits, or a PATH.npy / PATH.csv")
    train.add_argument("--epochs", type=int, default=40)
    train.add_argument("--out", help="output folder (default runs/<flow>-<data>)")
    train.add_argument("--batch-size", type=int, default=256)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--num-layers", type=int, default=8)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-export", action="store_true",
                       help="skip the SavedModel and ONNX export")
    sample = sub.add_parser("sample", help="draw samples from a saved flow")
    sample.add_argument("model", help="a .keras file")
    sample.add_argument("--num", type=int, default=1000)
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", required=True, help="output .npy file")
    score = sub.add_parser("score", help="log-likelihood of each row of a file")
    score.add_argument("model", help="a .keras file")
    score.add_argument("--data", required=True, help="a .npy or .csv file")
    score.add_argument("--out", help="output .csv (default: print)")
    export = sub.add_parser("export", help="export a .keras flow: SavedModel, "
                            "ONNX, TF Serving config and request bodies")
    export.add_argument("model", help="a .keras file holding a tfflows.Flow")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--name", help="served model name (default: file stem)")
    return parser


def _load_data(spec, seed):
    """`(x, num_bins)`: vectors `[N, D]` or images in [0, 1] `[N, H, W, C]`."""
    from tfflows import data

    if spec == "moons":
        return data.two_moons(8192, seed=seed), None
    if spec == "circles":
        return data.circles(8192, seed=seed), None
    if spec == "digits":
        return data.digits(), data.DIGITS_NUM_BINS
    if not spec.lower().endswith((".npy", ".csv")):
        raise UsageError(f"--data must be one of {', '.join(BUILTIN_DATA)} or a "
                         f".npy/.csv file. Received: {spec}")
    x = data.load_array(spec)
    if x.ndim == 2:
        return x, None
    if x.ndim == 4:
        if x.min() < 0 or x.max() > 1:
            raise UsageError(f"{spec}: images must be pixels in [0, 1]; found "
                             f"values in [{x.min():g}, {x.max():g}]")
        return x, 256
    raise UsageError(f"{spec}: expected [N, D] vectors or [N, H, W, C] images; "
                     f"got shape {x.shape}")


def _build(flow, x, num_bins, num_layers):
    import tfflows as tff

    if num_bins is None:
        dim = x.shape[1]
        if flow == "glow":
            raise UsageError("--flow glow needs image data (e.g. --data digits)")
        if dim < 2 and flow in ("nice", "realnvp"):
            raise UsageError(f"--flow {flow} needs at least 2 columns; the data has {dim}")
        builders = {"nice": tff.models.nice, "realnvp": tff.models.realnvp,
                    "maf": tff.models.maf, "iaf": tff.models.iaf}
        kwargs = {"hidden_units": (128, 128), "num_layers": num_layers}
        return builders[flow](event_dim=dim, **kwargs)
    shape = x.shape[1:]
    if flow == "glow":
        levels = 2 if shape[0] % 4 == 0 and shape[1] % 4 == 0 else 1
        if shape[0] % 2 or shape[1] % 2:
            raise UsageError(f"glow needs even image height and width; got {shape}")
        return tff.models.glow(image_shape=shape, levels=levels, steps_per_level=4,
                               hidden_channels=64, num_bins=num_bins)
    if flow == "realnvp":
        return tff.models.realnvp(image_shape=shape, levels=2 if shape[0] % 2 == 0
                                  and shape[1] % 2 == 0 else 1,
                                  hidden_channels=64, num_bins=num_bins)
    raise UsageError(f"--flow {flow} models vectors; use glow or realnvp for images")


def _plots(flow, history, x_val, num_bins, out):
    import numpy as np

    from tfflows import plots

    plots.loss_curves(history, os.path.join(out, "loss.png"),
                      "bits_per_dim" if num_bins else "nll")
    if num_bins is None and x_val.shape[1] == 2:
        samples = np.asarray(flow.sample(2000, seed=1))
        plots.density_2d(flow, x_val, samples, os.path.join(out, "density.png"))
    elif num_bins is not None:
        rows = [np.asarray(flow.sample(8, temperature=t, seed=2)) for t in (0.5, 0.7, 1.0)]
        z = np.asarray(flow.encode(x_val[:2]))
        weights = np.linspace(0, 1, 8)[:, None, None, None]
        rows.append(np.asarray(flow.decode((1 - weights) * z[:1] + weights * z[1:2])))
        plots.image_grid(rows, ["T = 0.5", "T = 0.7", "T = 1.0", "latent interpolation"],
                         os.path.join(out, "samples.png"))


def train(args):
    """Trains, writes model, metrics, plots and exports into --out."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tfflows import data

    if args.epochs < 1:
        raise UsageError("--epochs must be >= 1")
    x, num_bins = _load_data(args.data, args.seed)
    name = os.path.splitext(os.path.basename(args.data))[0]
    out = args.out or os.path.join("runs", f"{args.flow}-{name}")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UsageError(f"--out {out} exists and is not empty")
    keras.utils.set_random_seed(args.seed)
    flow = _build(args.flow, x, num_bins, args.num_layers)
    x_train, x_val, x_test = data.split(x, seed=args.seed)
    flow.compile(optimizer=keras.optimizers.Adam(args.learning_rate, global_clipnorm=1.0))
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tfflows-", dir=parent)
    try:
        history = flow.fit(x_train, batch_size=args.batch_size, epochs=args.epochs,
                           validation_data=x_val,
                           verbose=1 if sys.stdout.isatty() else 2).history
        test = x_test
        if num_bins:
            from tfflows.bijectors import bits_per_dim, uniform_dequantize
            test = uniform_dequantize(x_test, num_bins, seed=(args.seed, 1))
        log_prob = flow.log_prob(test)
        metrics = {"flow": args.flow, "data": args.data, "epochs": args.epochs,
                   "train_nll": history["nll"], "val_nll": history["val_nll"],
                   "test_nll": float(-tf.reduce_mean(log_prob))}
        if num_bins:
            metrics.update(
                train_bits_per_dim=history["bits_per_dim"],
                val_bits_per_dim=history["val_bits_per_dim"],
                test_bits_per_dim=float(tf.reduce_mean(bits_per_dim(
                    log_prob, int(np.prod(x.shape[1:])), num_bins))))
        else:
            metrics["test_nll_best_gaussian"] = data.gaussian_nll(x_train, x_test)
        model_path = os.path.join(staging, f"{args.flow}.keras")
        flow.save(model_path)
        with open(os.path.join(staging, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        _plots(flow, history, x_val, num_bins, staging)
        if not args.no_export:
            from tfflows.export import pipeline
            pipeline.run(model_path, os.path.join(staging, "serving"), name=args.flow)
        if os.path.isdir(out):
            os.rmdir(out)  # empty, checked above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"\n{args.flow} on {args.data}: test NLL {metrics['test_nll']:.3f} nats"
          + (f", {metrics['test_bits_per_dim']:.3f} bits/dim" if num_bins else
             f" (best Gaussian {metrics['test_nll_best_gaussian']:.3f})"))
    print(f"Wrote {out}")
    return 0


def _load_flow(path):
    import keras

    import tfflows as tff

    if not os.path.isfile(path):
        raise UsageError(f"No such model file: {path}")
    flow = keras.models.load_model(path, safe_mode=True)
    if not isinstance(flow, tff.Flow):
        raise UsageError(f"{path} does not hold a tfflows.Flow")
    return flow


def sample(args):
    import numpy as np

    if args.num < 1:
        raise UsageError("--num must be >= 1")
    if not args.out.endswith(".npy"):
        raise UsageError("--out must be a .npy file")
    flow = _load_flow(args.model)
    if flow.context_dim is not None:
        raise UsageError("conditional flows need a context; use the Python API")
    x = np.asarray(flow.sample(args.num, temperature=args.temperature, seed=args.seed))
    np.save(args.out, x)
    print(f"Wrote {args.num} samples {x.shape[1:]} to {args.out}")
    return 0


def score(args):
    import numpy as np

    from tfflows import data

    flow = _load_flow(args.model)
    x = data.load_array(args.data)
    if tuple(x.shape[1:]) != flow.event_shape:
        raise UsageError(f"{args.data}: rows have shape {tuple(x.shape[1:])}, the "
                         f"flow models {flow.event_shape}")
    log_prob = np.asarray(flow.log_prob(x))
    lines = ["row,log_prob"] + [f"{i},{v:.6f}" for i, v in enumerate(log_prob)]
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"Wrote {len(log_prob)} scores to {args.out}")
    else:
        print("\n".join(lines))
    return 0


def export(args):
    """Runs the export pipeline (tfflows.export.pipeline)."""
    from tfflows.export import pipeline

    summary = pipeline.run(args.model, args.out, name=args.name)
    print(f"SavedModel: {summary['saved_model']}")
    for name, info in summary["onnx"].items():
        print(f"ONNX {name}: {info['path']} (max abs diff {info['max_abs_diff']:.2g})")
    print(f"TF Serving config and requests: {args.out}")
    return 0


def main(argv=None):
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command is None:
        args = _parser().parse_args(["train"])
    commands = {"train": train, "sample": sample, "score": score, "export": export}
    from tfflows.export import ExportError

    try:
        return commands[args.command](args)
    except (ValueError, ExportError) as err:  # UsageError is a ValueError
        message = " ".join(str(err).split())
        print(f"tfflows: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
