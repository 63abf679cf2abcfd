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
    return parser


def train(args):
    """Trains RealNVP on two moons with the bijector suite; prints NLLs."""
    import keras
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    import tfflows as tff
    from tfflows import data

    tfb, tfd = tfp.bijectors, tfp.distributions
    keras.utils.set_random_seed(args.seed)
    x_train, x_val, x_test = data.split(data.two_moons(8192, seed=args.seed),
                                        seed=args.seed)
    nets, bijectors = [], []
    for i in range(args.num_layers):
        net = tff.nn.CouplingMLP(output_size=1, hidden_units=(128, 128))
        nets.append(net)
        bijectors.append(tff.bijectors.AffineCoupling(
            net, event_shape=[2], flip=bool(i % 2)))
    flow = tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(tf.zeros(2)), tfb.Chain(bijectors))
    flow.log_prob(x_train[:2])  # builds the networks
    variables = [v for net in nets for v in net.trainable_variables]
    optimizer = keras.optimizers.Adam(args.learning_rate, global_clipnorm=1.0)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(flow.log_prob(batch))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    nll = lambda x: float(-tf.reduce_mean(flow.log_prob(x)))
    batches = tf.data.Dataset.from_tensor_slices(x_train)
    steps = int(np.ceil(len(x_train) / args.batch_size))
    for epoch in range(args.epochs):
        print(f"Epoch {epoch + 1}/{args.epochs}")
        bar = keras.utils.Progbar(steps)
        for batch in batches.shuffle(len(x_train), seed=epoch).batch(args.batch_size):
            bar.add(1, [("nll", float(step(batch)))])
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
    return 2


if __name__ == "__main__":
    sys.exit(main())
