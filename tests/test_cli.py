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


def test_impute_fills_empty_cells_and_nan(moons_run, tmp_path, capsys):
    model = str(moons_run / "realnvp.keras")
    rows = _write(tmp_path, "rows.csv", "a,b\n0.5,\nnan,-0.3\n0.1,0.2\n,\n")
    out = tmp_path / "filled.csv"
    assert cli.main(["impute", model, "--data", rows, "--out", str(out),
                     "--num-samples", "20", "--num-burnin-steps", "50"]) == 0
    assert "Filled 4 missing entries in 4 rows" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert lines[0] == "a,b"
    filled = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    assert filled.shape == (4, 2) and np.all(np.isfinite(filled))
    assert filled[0, 0] == 0.5 and filled[1, 1] == pytest.approx(-0.3)
    np.testing.assert_allclose(filled[2], [0.1, 0.2])
    draws = tmp_path / "draws.npy"
    assert cli.main(["impute", model, "--data", rows, "--out", str(draws),
                     "--num-samples", "6", "--num-burnin-steps", "50"]) == 0
    all_draws = np.load(draws)
    assert all_draws.shape == (6, 4, 2)
    assert np.all(all_draws[:, 0, 0] == 0.5) and all_draws[:, 0, 1].std() > 0
    # The usual output rules: an existing file needs --overwrite.
    assert cli.main(["impute", model, "--data", rows, "--out", str(draws)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("content, out, code, match", [
    ("a,b\n0.5,inf\n,1\n", "f.csv", 1, r"rows with Inf \(missing entries are empty cells or NaN\) \(first: row 1, line 2\)"),
    ("a,b,c\n0.5,,1\n", "f.csv", 1, r"rows have shape \(3,\), the flow models \(2,\)"),
    ("a,b\n0.5,x\n", "f.csv", 1, "column 'b' is not numeric"),
    ("a,b\n0.5,\n", "f.txt", 2, r"--out must be a .csv \(means\) or .npy"),
])
def test_impute_bad_input_is_one_line(moons_run, tmp_path, capsys, content, out, code, match):
    rows = _write(tmp_path, "rows.csv", content)
    assert cli.main(["impute", str(moons_run / "realnvp.keras"), "--data", rows,
                     "--out", str(tmp_path / out)]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfflows: error: ") and "\n" not in err
    assert re.search(match, err), err
    assert sorted(os.listdir(tmp_path)) == ["rows.csv"]


def test_score_flags_rows_below_a_calibrated_threshold(moons_run, tmp_path, capsys):
    model = str(moons_run / "realnvp.keras")
    from tfflows import data
    validation = tmp_path / "val.npy"
    np.save(validation, data.two_moons(400, seed=7))
    rows = np.concatenate([data.two_moons(6, seed=8), [[6.0, 6.0], [-7.0, 5.0]]])
    np.save(tmp_path / "rows.npy", rows.astype(np.float32))
    assert cli.main(["score", model, "--data", str(tmp_path / "rows.npy"),
                     "--threshold-from", str(validation), "--fpr", "0.05"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "row,log_prob,flag" and len(lines) == 9
    flags = [int(line.split(",")[2]) for line in lines[1:]]
    assert flags[-2:] == [1, 1] and sum(flags[:6]) <= 2
    assert re.search(r"Flagged \d of 8 rows: log_prob below .* fpr=0.05 threshold of 400 rows",
                     captured.err)
    assert cli.main(["score", model, "--data", str(tmp_path / "rows.npy"),
                     "--threshold-from", str(validation), "--fpr", "1.5"]) == 2
    assert "--fpr: must be a number in (0, 1)" in capsys.readouterr().err


def test_score_flags_batches_by_typicality(moons_run, tmp_path, capsys):
    import keras

    from tfflows import data
    model = str(moons_run / "realnvp.keras")
    flow = keras.saving.load_model(model)
    validation = data.two_moons(800, seed=7)
    np.save(tmp_path / "val.npy", validation)
    # Batches of 10: two of fresh data, one of the validation set's ten
    # likeliest rows (likelier than any typical batch), one far away.
    likeliest = validation[np.argsort(np.asarray(flow.log_prob(validation)))[-10:]]
    rows = np.concatenate([data.two_moons(20, seed=8), likeliest,
                           np.full((10, 2), 5.0)]).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    assert cli.main(["score", model, "--data", str(tmp_path / "rows.npy"),
                     "--threshold-from", str(tmp_path / "val.npy"), "--fpr", "0.05",
                     "--batch-size", "10"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "row,log_prob,batch,flag" and len(lines) == 41
    table = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_array_equal(table[:, 0], np.arange(1, 41))
    np.testing.assert_array_equal(table[:, 2], np.repeat([1, 2, 3, 4], 10))
    flags = table[::10, 3]
    assert flags[2:].tolist() == [1, 1] and flags[:2].sum() <= 1, flags
    # The likeliest batch is flagged although every row in it passes a
    # row-wise likelihood threshold.
    assert table[20:30, 1].min() > np.quantile(table[:20, 1], 0.5)
    assert re.search(r"Flagged \d of 4 batches of 10 rows: mean NLL more than .* "
                     r"\(typicality test at fpr=0.05, calibrated on 800 rows", captured.err)
    assert cli.main(["score", model, "--data", str(tmp_path / "rows.npy"),
                     "--threshold-from", str(tmp_path / "val.npy"),
                     "--batch-size", "7"]) == 1
    assert "40 rows are not whole batches of --batch-size 7" in capsys.readouterr().err
    np.save(tmp_path / "few.npy", validation[:15])
    assert cli.main(["score", model, "--data", str(tmp_path / "rows.npy"),
                     "--threshold-from", str(tmp_path / "few.npy"),
                     "--batch-size", "10"]) == 1
    assert "15 rows; the typicality test of batches of 10 needs at least 20" in \
        capsys.readouterr().err
    assert cli.main(["score", model, "--data", str(tmp_path / "rows.npy"),
                     "--batch-size", "10"]) == 2
    assert "--batch-size needs --threshold-from" in capsys.readouterr().err


def test_impute_warns_of_unconverged_rows_numbered_from_one(moons_run, tmp_path, capsys,
                                                            monkeypatch):
    import tfflows as tff
    impute = tff.Flow.impute

    def unconverged(self, x, **kwargs):  # row 2 (index 1) did not mix
        draws, info = impute(self, x, **kwargs)
        # The others did: 8 draws of 2 chains after 20 steps may not have,
        # whichever way two epochs of training happened to go.
        info.r_hat[np.isfinite(info.r_hat)] = 1.0
        info.r_hat[1] = 1.7
        return draws, info

    monkeypatch.setattr(tff.Flow, "impute", unconverged)
    rows = _write(tmp_path, "rows.csv", "a,b\n0.5,\n0.1,\n0.2,0.3\n")
    assert cli.main(["impute", str(moons_run / "realnvp.keras"), "--data", rows,
                     "--out", str(tmp_path / "f.csv"), "--num-samples", "8",
                     "--num-burnin-steps", "20", "--num-chains", "2"]) == 0
    err = capsys.readouterr().err.strip()
    assert err == ("tfflows: warning: the chains disagree (R-hat above 1.1, largest "
                   "1.70) in 1 of 2 partly observed rows (rows 2): their draws may not "
                   "have converged; raise --num-burnin-steps or --num-chains")


def test_train_cnf_then_sample_score_and_export(tmp_path, capsys):
    # A continuous flow through the command: fit logs fm_loss (not nll), the
    # held-out NLL comes from -log_prob (ODE solve), the export writes the
    # SavedModel and ONNX (the RK4 loop as an ONNX Loop). The export runs once, by `tfflows export` (train's export is the same
    # pipeline), to keep the test short.
    out = tmp_path / "cnf"
    assert cli.main(["train", "--flow", "cnf", "--epochs", "2", "--no-export",
                     "--out", str(out)]) == 0
    for name in ("cnf.keras", "metrics.json", "loss.png", "density.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["train_fm_loss"]) == len(metrics["val_fm_loss"]) == 2
    assert "train_nll" not in metrics and "val_nll" not in metrics
    assert np.all(np.isfinite(metrics["train_fm_loss"] + metrics["val_fm_loss"]))
    assert np.isfinite(metrics["test_nll"]) and metrics["test_nll"] < 2.8

    model = str(out / "cnf.keras")
    assert cli.main(["sample", model, "--num", "20", "--seed", "3",
                     "--out", str(tmp_path / "s.npy")]) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (20, 2) and np.all(np.isfinite(samples))
    assert cli.main(["score", model, "--data", str(tmp_path / "s.npy")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert all(np.isfinite(float(line.split(",")[1])) for line in lines[-20:])

    serving = out / "serving"
    assert cli.main(["export", model, "--out", str(serving)]) == 0
    assert "ONNX: not exported" not in capsys.readouterr().out
    summary = json.loads((serving / "export.json").read_text())
    assert (serving / summary["saved_model"] / "saved_model.pb").is_file()
    assert max(summary["saved_model_max_abs_diff"].values()) <= 1e-5
    assert sorted(summary["onnx"]) == ["decode", "encode", "log_prob"]
    assert max(v["max_abs_diff"] for v in summary["onnx"].values()) <= 1e-4
    assert "onnx_note" not in summary
    assert sorted(os.listdir(serving / "requests"))[0] == "decode.grpc.json"
