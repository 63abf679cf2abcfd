"""The `tfflows` command: train, sample, score, export, and its errors."""

import json
import os
import re

import numpy as np
import pytest

from tfflows import cli


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "moons"
    assert cli.main(["train", "--epochs", "2", "--num-layers", "2",
                     "--out", str(out)]) == 0
    return out


def test_train_writes_model_metrics_plots_and_exports(moons_run):
    out = moons_run
    for name in ("realnvp.keras", "metrics.json", "loss.png", "density.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["train_nll"]) == len(metrics["val_nll"]) == 2
    # Two short epochs already beat an identity flow on standardised data
    # (2.84 nats); the figure is a real held-out NLL.
    assert metrics["test_nll"] < 2.8
    assert os.listdir(out / "serving" / "models" / "realnvp") == ["1"]
    assert sorted(os.listdir(out / "serving" / "onnx" / "realnvp")) == [
        "decode.onnx", "encode.onnx", "log_prob.onnx"]
    assert not [n for n in os.listdir(out.parent) if n.startswith(".tfflows-")]
    # export.json names the files where they are now, not the staging folder.
    summary = json.loads((out / "serving" / "export.json").read_text())
    assert (out / "serving" / summary["saved_model"] / "saved_model.pb").is_file()
    for info in summary["onnx"].values():
        assert (out / "serving" / info["path"]).is_file()
    assert ".tfflows-" not in json.dumps(summary)


def test_sample_and_score(moons_run, tmp_path, capsys):
    model = str(moons_run / "realnvp.keras")
    assert cli.main(["sample", model, "--num", "50", "--seed", "3",
                     "--out", str(tmp_path / "s.npy")]) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (50, 2) and np.all(np.isfinite(samples))
    np.savetxt(tmp_path / "rows.csv", samples[:4], delimiter=",", header="a,b",
               comments="")
    assert cli.main(["score", model, "--data", str(tmp_path / "rows.csv")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-5] == "row,log_prob" and len(lines[-4:]) == 4
    assert all(np.isfinite(float(line.split(",")[1])) for line in lines[-4:])


def test_train_nsf_exports_with_parity(tmp_path):
    # The spline flow through the whole command: train, SavedModel, ONNX
    # (bins found without searchsorted), each checked against Keras.
    out = tmp_path / "nsf"
    assert cli.main(["train", "--flow", "nsf", "--epochs", "1", "--num-layers", "2",
                     "--out", str(out)]) == 0
    summary = json.loads((out / "serving" / "export.json").read_text())
    assert sorted(summary["onnx"]) == ["decode", "encode", "log_prob"]
    assert max(v["max_abs_diff"] for v in summary["onnx"].values()) <= 1e-4
    assert json.loads((out / "metrics.json").read_text())["test_nll"] < 2.8


def test_train_glow_on_digits_plots_samples(tmp_path, capsys):
    out = tmp_path / "glow"
    assert cli.main(["train", "--flow", "glow", "--data", "digits", "--epochs", "1",
                     "--batch-size", "128", "--no-export", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["test_bits_per_dim"] < 8
    assert metrics["test_bits_per_dim_uniform"] == pytest.approx(np.log2(17))
    assert "continuous density" in metrics["about"]
    # The summary line gives the figure users compare, not a negative NLL.
    summary = capsys.readouterr().out.strip().splitlines()[-2]
    assert re.fullmatch(r"glow on digits: test \d\.\d{3} bits/dim \(uniform 4\.087\)",
                        summary), summary
    assert (out / "samples.png").is_file() and (out / "loss.png").is_file()


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_text(content)
    return str(path)


@pytest.mark.parametrize("make_args, match", [
    (lambda t: ["train", "--data", str(t / "missing.csv")], "No such file"),
    (lambda t: ["train", "--data", _write(t, "w.csv", "a,b\n1,x\n")], "column 'b' is not numeric"),
    (lambda t: ["train", "--data", _write(t, "n.csv", "a,b\n1,2\nnan,1\n")], "rows with NaN or Inf"),
    (lambda t: ["train", "--flow", "glow", "--data", _write(
        t, "odd.npy", np.full((10, 5, 5, 1), 0.5, np.float32))], "even image height"),
    (lambda t: ["train", "--data", _write(t, "big.npy", np.full((10, 4, 4, 1), 3.0, np.float32))], r"pixels in \[0, 1\]"),
    (lambda t: ["train", "--flow", "maf", "--data", "digits"], "models vectors"),
    (lambda t: ["sample", str(t / "none.keras"), "--out", str(t / "s.npy")], "No such model file"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, make_args, match):
    out = tmp_path / "out"
    args = make_args(tmp_path)
    if args[0] == "train":
        args += ["--out", str(out)]
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfflows: error: ") and "\n" not in err
    assert re.search(match, err), err
    assert not out.exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tfflows-")]


def test_plots_leave_pyplot_backend_alone():
    # Notebooks import tfflows.plots next to their inline pyplot figures.
    import subprocess
    import sys
    code = ("import matplotlib; matplotlib.use('pdf'); import tfflows.plots; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    assert out.strip() == "pdf"
