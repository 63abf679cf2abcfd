"""log_prob latency of exported flows: SavedModel vs ONNX Runtime.

    python export/latency.py

Exports an (untrained, weights perturbed) RealNVP on 2-D data and a MAF on
16-D data, then times `log_prob` at batch 1 and 1024 through the reloaded
SavedModel signature and through onnxruntime, printing medians side by side.
"""

import tempfile
import time

import numpy as np
import onnxruntime
import tensorflow as tf

import tfflows as tff


def _median_ms(fn, repeats=50, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    flows = {
        "RealNVP 2-D (8 couplings, 128x128)": tff.models.realnvp(
            event_dim=2, num_layers=8, hidden_units=(128, 128)),
        "MAF 16-D (5 layers, 128x128)": tff.models.maf(
            event_dim=16, num_layers=5, hidden_units=(128, 128)),
    }
    rng = np.random.default_rng(0)
    print(f"{'model':<38}{'batch':>6}{'SavedModel ms':>15}{'ONNX RT ms':>12}")
    for label, flow in flows.items():
        for w in flow.trainable_weights:
            w.assign(w.numpy() + 0.02 * rng.standard_normal(w.shape).astype(w.dtype))
        with tempfile.TemporaryDirectory() as tmp:
            path = tff.export.saved_model(flow, f"{tmp}/m")
            onnx_path = tff.export.onnx(path, f"{tmp}/onnx")["log_prob"][0]
            signature = tf.saved_model.load(path).signatures["log_prob"]
            session = onnxruntime.InferenceSession(
                onnx_path, providers=["CPUExecutionProvider"])
            for batch in (1, 1024):
                x = rng.standard_normal((batch,) + flow.event_shape).astype(np.float32)
                xt = tf.constant(x)
                sm = _median_ms(lambda: signature(x=xt)["log_prob"].numpy())
                ort = _median_ms(lambda: session.run(None, {"x": x}))
                print(f"{label:<38}{batch:>6}{sm:>15.3f}{ort:>12.3f}", flush=True)


if __name__ == "__main__":
    main()
