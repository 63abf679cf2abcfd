"""The `tfflows` command's entry point: options parsed and checked before
TensorFlow is imported.

`import tfflows` imports TensorFlow, Keras and TFP (seconds, and TensorFlow's
start-up logs), since the package registers its Keras classes on import. This
module sits outside the package so that `tfflows --help`, `--version` and
every usage error answer at once and quietly; the commands themselves live in
`tfflows.cli`.

Exit codes: 0 success, 1 a failure said in one line (bad data, a broken
file, a diverged run, a failed export), 2 a usage error, 130 interrupted.
"""

import argparse
import math
import os
import signal
import sys

__all__ = ["main", "parser", "CommandError", "UsageError"]

FLOWS = ("nice", "realnvp", "glow", "maf", "iaf", "nsf", "cnf")
BUILTIN_DATA = ("moons", "circles", "digits")


class CommandError(Exception):
    """A command failed (bad data, a broken file, a diverged run, a failed
    export): said in one line, exit code 1."""

    exit_code = 1


class UsageError(CommandError):
    """A bad option or argument: said in one line, exit code 2."""

    exit_code = 2


class _Parser(argparse.ArgumentParser):
    """argparse's parser with its errors raised as one-line `UsageError`s."""

    def error(self, message):
        raise UsageError(message)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Received: {text}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Received: {text}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number. Received: {text}")
    return value


def _seed(text):
    # What NumPy, scikit-learn and Keras take as a seed.
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(
            f"must be an integer in [0, {2**32 - 1}]. Received: {text}")
    return value


def _rate(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1). Received: {text}")
    return value


def _version():
    from importlib import metadata
    try:
        return metadata.version("tfflows")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def parser():
    """The `tfflows` argument parser (no TensorFlow import)."""
    top = _Parser(prog="tfflows", description="Normalizing flows for TensorFlow: "
                  "train, sample, score and export flows. `tfflows` alone trains "
                  "RealNVP on two moons into runs/realnvp-moons.")
    top.add_argument("--version", action="version", version=f"tfflows {_version()}")
    sub = top.add_subparsers(dest="command", parser_class=_Parser)

    train = sub.add_parser("train", help="train a flow, plot it, export it")
    train.add_argument("--flow", choices=FLOWS, default="realnvp",
                       help="cnf: a continuous flow (vectors only) trained by flow "
                       "matching, velocity network 3x64, RK4 with 32 steps; its "
                       "ONNX export is skipped (SavedModel only)")
    train.add_argument("--data", default="moons",
                       help="moons, circles, digits, or a PATH.npy / PATH.csv")
    train.add_argument("--epochs", type=_positive_int, default=40)
    train.add_argument("--out", help="output folder (default runs/<flow>-<data>)")
    train.add_argument("--batch-size", type=_positive_int, default=256)
    train.add_argument("--learning-rate", type=_positive_float, default=1e-3)
    train.add_argument("--num-layers", type=_positive_int, default=8,
                       help="flow layers (default 8); ignored by cnf, which has "
                       "one continuous layer")
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument("--no-export", action="store_true",
                       help="skip the SavedModel and ONNX export")
    train.add_argument("--overwrite", action="store_true",
                       help="replace --out if it exists and is not empty")

    sample = sub.add_parser("sample", help="draw samples from a saved flow")
    sample.add_argument("model", help="a .keras file")
    sample.add_argument("--num", type=_positive_int, default=1000)
    sample.add_argument("--temperature", type=_positive_float, default=1.0)
    sample.add_argument("--seed", type=_seed, default=0)
    sample.add_argument("--out", required=True, help="output .npy file")
    sample.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists")

    score = sub.add_parser("score", help="log-likelihood of each row of a file")
    score.add_argument("model", help="a .keras file")
    score.add_argument("--data", required=True, help="a .npy or .csv file")
    score.add_argument("--out", help="output .csv (default: print)")
    score.add_argument("--overwrite", action="store_true",
                       help="replace --out if it exists")
    score.add_argument("--threshold-from", metavar="VALIDATION",
                       help="held-out in-distribution rows (.npy/.csv): adds a flag "
                       "column, 1 where log_prob is below their --fpr quantile")
    score.add_argument("--batch-size", type=_positive_int, metavar="M",
                       help="with --threshold-from: flag consecutive batches of M "
                       "rows by the typicality test instead of single rows")
    score.add_argument("--fpr", type=_rate, default=0.01,
                       help="false-positive rate of the flag (default 0.01)")

    impute = sub.add_parser("impute", help="fill in missing entries (empty cells "
                            "or NaN) from the flow's conditional distribution")
    impute.add_argument("model", help="a .keras file")
    impute.add_argument("--data", required=True,
                        help="a .csv (empty cells or NaN missing) or .npy file")
    impute.add_argument("--out", required=True, help=".csv: the mean of the draws "
                        "per cell; .npy: all draws [num-samples, rows, ...]")
    impute.add_argument("--num-samples", type=_positive_int, default=100)
    impute.add_argument("--num-burnin-steps", type=_positive_int, default=200,
                        help="MCMC warm-up steps per chain (default 200)")
    impute.add_argument("--num-chains", type=_positive_int, default=4,
                        help="MCMC chains per row (default 4)")
    impute.add_argument("--seed", type=_seed, default=0)
    impute.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists")

    export = sub.add_parser("export", help="export a .keras flow: SavedModel, "
                            "ONNX, TF Serving config and request bodies")
    export.add_argument("model", help="a .keras file holding a tfflows.Flow")
    export.add_argument("--out", required=True,
                        help="output folder (a new model version each run)")
    export.add_argument("--name", help="served model name (default: file stem)")
    return top


def _check_paths(args):
    """File checks that need no TensorFlow, so they answer at once."""
    model = getattr(args, "model", None)
    if model is not None and os.path.isdir(model):
        raise CommandError(f"{model} is a folder (a SavedModel?), not a .keras file: "
                           "tfflows commands read the .keras model that `tfflows "
                           "train` or Flow.save wrote")
    if model is not None and not os.path.isfile(model):
        raise CommandError(f"No such model file: {model}")
    data = getattr(args, "data", None)
    if data is not None and data not in BUILTIN_DATA:
        if not data.lower().endswith((".npy", ".csv")):
            raise UsageError(f"--data must be one of {', '.join(BUILTIN_DATA)} or a "
                             f".npy/.csv file. Received: {data}")
        if not os.path.isfile(data):
            raise CommandError(f"No such file: {data}")
    if args.command == "sample" and not args.out.endswith(".npy"):
        raise UsageError("--out must be a .npy file")
    if args.command == "impute" and not args.out.lower().endswith((".npy", ".csv")):
        raise UsageError(f"--out must be a .csv (means) or .npy (all draws) file. "
                         f"Received: {args.out}")
    if args.command == "score" and args.batch_size is not None and args.threshold_from is None:
        raise UsageError("--batch-size needs --threshold-from (held-out rows to "
                         "calibrate the typicality test on)")
    if args.command == "score" and args.threshold_from is not None:
        if not args.threshold_from.lower().endswith((".npy", ".csv")):
            raise UsageError("--threshold-from must be a .npy/.csv file. Received: "
                             f"{args.threshold_from}")
        if not os.path.isfile(args.threshold_from):
            raise CommandError(f"No such file: {args.threshold_from}")


def _import_tensorflow_quietly():
    """Imports TensorFlow without its start-up logs on the terminal.

    TensorFlow's C++ start-up messages (oneDNN, CUDA probing) are written to
    stderr before its logging is initialised, whatever TF_CPP_MIN_LOG_LEVEL
    says; they go to a temporary file instead and are shown only if the
    import fails. Set TF_CPP_MIN_LOG_LEVEL yourself to see them all.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        import tensorflow  # noqa: F401  (the user chose the log level)
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import logging
    import tempfile
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()  # the device probes log too
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    # Deprecation notices that TF and tf2onnx log while exporting.
    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)


def _interrupt(signum, frame):
    # SIGTERM ends the command like Ctrl-C: `finally` blocks remove staging
    # folders and temporary files.
    raise KeyboardInterrupt


def main(argv=None):
    """Runs `tfflows ARGS`; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        try:
            args = parser().parse_args(argv or ["train"])
        except SystemExit as done:  # --help, --version
            return done.code or 0
        _check_paths(args)
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            _import_tensorflow_quietly()
            from tfflows import cli
            return cli.run(args)
        finally:
            signal.signal(signal.SIGTERM, previous)
    except CommandError as err:
        _say(err)
        return err.exit_code
    except KeyboardInterrupt:
        print("tfflows: interrupted; nothing was written", file=sys.stderr)
        return 130


def _say(err):
    message = " ".join(str(err).split())
    print(f"tfflows: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    # `python -m tfflows_cli`: run the importable module, not this copy, so
    # `tfflows.cli` and this entry point share one CommandError class.
    import tfflows_cli
    sys.exit(tfflows_cli.main())
