"""The `tfflows` command.

`tfflows` (or `tfflows train`) trains a RealNVP on two moons and reports the
held-out negative log-likelihood beside the best single Gaussian's.
"""

import argparse
import os
import sys

__all__ = ["main"]


def _parser():
    parser = argparse.ArgumentParser(
        prog="tfflows", description="Normalizing flows for TensorFlow.")
    sub = parser.add_subparsers(dest="command")
    train = sub.add_parser("train", help="train a flow on two moons")
    train.add_argument("--epochs", type=int, default=40)
    train.add_argument("--num-layers", type=int, default=8)
    train.add_argument("--batch-size", type=int, default=256)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--seed", type=int, default=0)
    export = sub.add_parser("export", help="export a .keras flow: SavedModel, "
                            "ONNX, TF Serving config and request bodies")
    export.add_argument("model", help="a .keras file holding a tfflows.Flow")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--name", help="served model name (default: file stem)")
    return parser


def export(args):
    """Runs the export pipeline (tfflows.export.pipeline)."""
    from tfflows.export import ExportError, pipeline

    try:
        summary = pipeline.run(args.model, args.out, name=args.name)
    except (ValueError, ExportError) as err:
        print(f"tfflows: error: {err}", file=sys.stderr)
        return 1
    print(f"SavedModel: {summary['saved_model']}")
    for name, info in summary["onnx"].items():
        print(f"ONNX {name}: {info['path']} (max abs diff {info['max_abs_diff']:.2g})")
    print(f"TF Serving config and requests: {args.out}")
    return 0


def train(args):
    """Trains RealNVP on two moons with `Flow.fit`; prints held-out NLLs."""
    import keras
    import tensorflow as tf

    import tfflows as tff
    from tfflows import data

    keras.utils.set_random_seed(args.seed)
    x_train, x_val, x_test = data.split(data.two_moons(8192, seed=args.seed),
                                        seed=args.seed)
    flow = tff.models.realnvp(event_dim=2, num_layers=args.num_layers,
                              hidden_units=(128, 128))
    flow.compile(optimizer=keras.optimizers.Adam(args.learning_rate,
                                                 global_clipnorm=1.0))
    flow.fit(x_train, batch_size=args.batch_size, epochs=args.epochs,
             validation_data=x_val, verbose=1 if sys.stdout.isatty() else 2)
    nll = lambda x: float(-tf.reduce_mean(flow.log_prob(x)))
    rows = [("RealNVP train NLL", nll(x_train)),
            ("RealNVP validation NLL", nll(x_val)),
            ("RealNVP test NLL", nll(x_test)),
            ("best Gaussian test NLL", data.gaussian_nll(x_train, x_test))]
    print("\nTwo moons, nats per example (lower is better):")
    for name, value in rows:
        print(f"  {name:<24}{value:8.3f}")
    return 0


def main(argv=None):
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command in (None, "train"):
        if args.command is None:
            args = _parser().parse_args(["train"])
        if args.epochs < 1:
            print("tfflows: error: --epochs must be >= 1", file=sys.stderr)
            return 2
        return train(args)
    if args.command == "export":
        return export(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
