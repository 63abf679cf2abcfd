"""One worker of a multi-worker `distributed_fit` run (launched by
tests/test_distributed.py with TF_CONFIG set), or, with `--mirrored N`, a
`Flow.fit` run under `MirroredStrategy` over N logical CPUs.

Prints one JSON line (prefixed `RESULT `) and saves the final weights to
`--out` (.npz).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_flow(tff, num_pairs, hidden):
    layers = []
    for i in range(num_pairs):
        layers += [tff.layers.ActNorm(),
                   tff.layers.AffineCoupling(flip=bool(i % 2),
                                             hidden_units=hidden)]
    return tff.Flow(layers, event_shape=(2,))


def mixed_flow(tff):
    """Actnorm before each of a spline coupling (NSF-C), a spline MADE layer
    (NSF-AR), an affine coupling and a flipped spline coupling: every
    transformer family under one strategy (spline layers ask for XLA)."""
    L = tff.layers
    couplings = [L.Coupling("spline", hidden_units=(32, 32)),
                 L.MaskedAutoregressive(hidden_units=(32, 32), transformer="spline",
                                        seed=1),
                 L.AffineCoupling(flip=True, hidden_units=(32, 32)),
                 L.Coupling("spline", flip=True, hidden_units=(32, 32))]
    layers = []
    for layer in couplings:
        layers += [L.ActNorm(), layer]
    return tff.Flow(layers, event_shape=(2,))


def actnorm_state(flow):
    return {layer.name: {"initialized": float(layer.initialized.numpy()),
                         "loc": layer.loc.numpy().tolist(),
                         "log_scale": layer.log_scale.numpy().tolist()}
            for layer in flow.flow_layers if hasattr(layer, "initialized")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-examples", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--mirrored", type=int, default=0,
                        help="run Flow.fit under MirroredStrategy over this "
                        "many of 2 logical CPUs instead of multi-worker")
    args = parser.parse_args()

    import tensorflow as tf
    if args.mirrored:
        # Must happen before TF initialises its devices.
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices[:args.mirrored])
    else:
        # Reads TF_CONFIG; must be created before any other TF op runs.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()

    import keras
    import numpy as np
    import tfflows as tff
    from tfflows import data

    keras.utils.set_random_seed(0)
    x, x_val, _ = data.split(data.two_moons(args.num_examples))
    result = {"num_replicas": strategy.num_replicas_in_sync}

    if args.mirrored:
        with strategy.scope():
            flow = mixed_flow(tff)
            # Plain SGD: Adam divides by the gradients' running RMS, so a
            # weight whose gradient is near 0 takes learning-rate-sized steps
            # whose sign follows rounding, and two devices' summation order
            # drifts the weights apart by ~1e-2 in 30 steps (measured, with
            # one device against itself on half batches too). SGD keeps a
            # rounding a rounding; a dropped replica or other batches still
            # move weights by ~1e-2 per step.
            flow.compile(optimizer=keras.optimizers.SGD(0.05))
        captured = {}

        class Capture(keras.callbacks.Callback):
            # fit initialises actnorm before Keras's loop starts.
            def on_train_begin(self, logs=None):
                captured.update(actnorm_state(self.model))

        history = flow.fit(x, batch_size=args.batch_size, epochs=args.epochs,
                           validation_data=x_val, shuffle=False, verbose=0,
                           callbacks=[Capture()])
        result.update(history=history.history, actnorm_init=captured)
    else:
        with strategy.scope():
            flow = small_flow(tff, 2, (16, 16))
            flow.compile(optimizer=keras.optimizers.Adam(1e-2))
        dataset = (tf.data.Dataset.from_tensor_slices(x)
                   .batch(args.batch_size))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        dataset = dataset.with_options(options)
        history = tff.train.distributed_fit(
            flow, dataset, strategy, epochs=args.epochs,
            checkpoint_dir=args.checkpoint_dir, verbose=0)
        resolver = strategy.cluster_resolver
        result.update(history=history.history, epochs_run=history.epoch,
                      task=[resolver.task_type, resolver.task_id],
                      actnorm=actnorm_state(flow))

    weights = {v.path: np.asarray(v.numpy()) for v in flow.variables}
    np.savez(args.out, **{k.replace("/", "__"): v for k, v in weights.items()})
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
