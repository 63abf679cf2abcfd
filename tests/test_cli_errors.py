"""The `tfflows` command at its edges: bad options, broken files, outputs that
would lose something, interruptions, failed exports. Every failure is one
line, writes nothing (or keeps what was finished), and never a traceback."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import tfflows as tff
from tfflows import cli
from tfflows.export import ExportError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK_TRAIN = ["train", "--epochs", "1", "--num-layers", "2", "--no-export"]


def _one_line_error(capsys, match):
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfflows: error: ") and "\n" not in err, err
    assert re.search(match, err), err
    return err


def _leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith(".")]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    flow = tff.models.realnvp(event_dim=2, num_layers=2, hidden_units=(8,))
    flow.compile()
    flow.save(folder / "m.keras")
    return folder / "m.keras"


# -- start-up -----------------------------------------------------------------
@pytest.mark.parametrize("args, code, out", [
    (["--help"], 0, "usage: tfflows"),
    (["train", "--help"], 0, "--batch-size"),
    (["--version"], 0, r"tfflows \d+\.\d+"),
    (["train", "--batch-size", "0"], 2, "--batch-size: must be a positive integer"),
    (["train", "--data", "missing.csv"], 1, "No such file: missing.csv"),
])
def test_help_version_and_usage_errors_answer_without_tensorflow(args, code, out):
    probe = ("import sys, tfflows_cli; code = tfflows_cli.main(sys.argv[1:]); "
             "sys.stdout.flush(); print('tensorflow' in sys.modules); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items()
                                 if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert result.returncode == code, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"  # no TensorFlow import
    assert re.search(out, result.stdout + result.stderr)
    if code:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_commands_start_quietly(model, tmp_path):
    # TensorFlow's C++ start-up lines (oneDNN, CUDA probing) are not shown.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "tfflows_cli", "sample", str(model),
                             "--num", "3", "--out", str(tmp_path / "s.npy")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert np.load(tmp_path / "s.npy").shape == (3, 2)


# -- options -----------------------------------------------------------------
@pytest.mark.parametrize("args, match", [
    (["train", "--batch-size", "0"], "--batch-size: must be a positive integer. Received: 0"),
    (["train", "--batch-size", "-5"], "--batch-size: must be a positive integer. Received: -5"),
    (["train", "--learning-rate", "-1"], "--learning-rate: must be a positive number"),
    (["train", "--learning-rate", "nan"], "--learning-rate: must be a positive number"),
    (["train", "--epochs", "0"], "--epochs: must be a positive integer"),
    (["train", "--num-layers", "0"], "--num-layers: must be a positive integer"),
    (["sample", "m.keras", "--num", "-1", "--out", "s.npy"], "--num: must be a positive integer"),
    (["sample", "m.keras", "--temperature", "0", "--out", "s.npy"], "--temperature: must be a positive"),
    (["train", "--flow", "nope"], "argument --flow: invalid choice"),
])
def test_bad_options_are_usage_errors(tmp_path, capsys, args, match):
    if args[0] == "train":
        args = args + ["--out", str(tmp_path / "out")]
    assert cli.main(args) == 2
    _one_line_error(capsys, match)
    assert os.listdir(tmp_path) == []


def test_a_diverged_run_fails_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(QUICK_TRAIN + ["--learning-rate", "1e30", "--out", str(out)]) == 1
    _one_line_error(capsys, r"training diverged: .* nothing was written")
    assert os.listdir(tmp_path) == []


# -- outputs -----------------------------------------------------------------
def test_train_refuses_a_used_out_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    assert cli.main(QUICK_TRAIN + ["--out", str(out)]) == 1
    _one_line_error(capsys, "exists and is not empty; pass --overwrite")
    assert os.listdir(out) == ["old.txt"]
    assert cli.main(QUICK_TRAIN + ["--out", str(out), "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["density.png", "loss.png", "metrics.json",
                                       "realnvp.keras"]
    assert _leftovers(tmp_path) == []


def test_train_never_replaces_its_own_data(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    data = out / "rows.npy"
    np.save(data, np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32))
    assert cli.main(QUICK_TRAIN + ["--data", str(data), "--out", str(out), "--overwrite"]) == 1
    _one_line_error(capsys, "is inside --out")
    assert data.is_file()


@pytest.mark.parametrize("make_out, match", [
    (lambda t: t / "nodir" / "s.npy", "folder .*nodir does not exist"),
    (lambda t: t / "file.txt" / "s.npy", "folder .*file.txt does not exist"),
    (lambda t: t, "must be a .npy file"),
])
def test_sample_output_path_problems_are_one_line(model, tmp_path, capsys, make_out, match):
    (tmp_path / "file.txt").write_text("x")
    assert cli.main(["sample", str(model), "--out", str(make_out(tmp_path))]) in (1, 2)
    _one_line_error(capsys, match)
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]


def test_sample_refuses_to_overwrite_unless_asked(model, tmp_path, capsys):
    out = tmp_path / "s.npy"
    np.save(out, np.zeros(3))
    assert cli.main(["sample", str(model), "--num", "5", "--out", str(out)]) == 1
    _one_line_error(capsys, "exists; pass --overwrite")
    assert np.load(out).shape == (3,)
    assert cli.main(["sample", str(model), "--num", "5", "--out", str(out),
                     "--overwrite"]) == 0
    assert np.load(out).shape == (5, 2)
    assert _leftovers(tmp_path) == []


def test_score_never_writes_onto_an_input(model, tmp_path, capsys):
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b\n0.1,0.2\n0.3,0.4\n")
    for out in (rows, model):
        assert cli.main(["score", str(model), "--data", str(rows), "--out", str(out),
                         "--overwrite"]) == 1
        _one_line_error(capsys, "is also an input")
    assert rows.read_text() == "a,b\n0.1,0.2\n0.3,0.4\n"
    assert cli.main(["score", str(model), "--data", str(rows),
                     "--out", str(tmp_path / "scores.csv")]) == 0
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0] == "row,log_prob" and [l.split(",")[0] for l in lines[1:]] == ["1", "2"]


# -- broken model files -------------------------------------------------------
def _flip_bytes(src, dst):
    data = bytearray(src.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(255 - b for b in data[middle:middle + 64])
    dst.write_bytes(bytes(data))


def _cut_weights(src, dst):
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for item in old.infolist():
            body = old.read(item.filename)
            if item.filename.endswith(".h5"):
                body = body[:len(body) // 3]
            new.writestr(item, body)


@pytest.mark.parametrize("damage, match", [
    (lambda s, d: d.write_bytes(s.read_bytes()[:len(s.read_bytes()) // 2]),
     "not a zip archive \\(truncated or corrupted\\?\\)"),
    (_flip_bytes, "(corrupted|not a zip archive)"),
    (_cut_weights, "cannot load the model"),
    (lambda s, d: d.write_text("hello"), "not a zip archive"),
    (lambda s, d: zipfile.ZipFile(d, "w").writestr("a.txt", "x"), "has no config.json"),
])
def test_broken_model_files_are_one_line_errors(model, tmp_path, capsys, damage, match):
    broken = tmp_path / "broken.keras"
    damage(model, broken)
    assert cli.main(["sample", str(broken), "--out", str(tmp_path / "s.npy")]) == 1
    err = _one_line_error(capsys, match)
    assert str(broken) in err
    assert "File not found" not in err
    assert not (tmp_path / "s.npy").exists()


# -- interruptions and failed exports --------------------------------------------
def test_sigterm_during_train_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "tfflows_cli", "train", "--epochs",
                             "500", "--no-export", "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not _leftovers(tmp_path) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert _leftovers(tmp_path), "the run never started staging"
    time.sleep(2)  # inside fit
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("error", [ExportError("ONNX 'log_prob' differs"),
                                   RuntimeError("a bug in the exporter")])
def test_a_failed_export_keeps_the_trained_model(tmp_path, capsys, monkeypatch, error):
    from tfflows.export import pipeline

    def failing_export(*args, **kwargs):
        raise error

    monkeypatch.setattr(pipeline, "run", failing_export)
    out = tmp_path / "out"
    assert cli.main(["train", "--epochs", "1", "--num-layers", "2", "--out", str(out)]) == 1
    err = _one_line_error(capsys, r"export failed \(.*\); the model, metrics and plots "
                                  r"are kept in .*: retry with `tfflows export")
    assert str(error) in err
    assert sorted(os.listdir(out)) == ["density.png", "loss.png", "metrics.json",
                                       "realnvp.keras"]
    assert json.loads((out / "metrics.json").read_text())["test_nll"] < 3
    assert _leftovers(tmp_path) == []
