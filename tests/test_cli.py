"""The `tfflows` command: the README's main job."""

import re

from tfflows import cli


def test_train_command_prints_held_out_nll(capsys):
    assert cli.main(["train", "--epochs", "2", "--num-layers", "2"]) == 0
    out = capsys.readouterr().out
    values = dict(re.findall(r"^\s+(.+?)\s{2,}(-?\d+\.\d+)$", out, re.M))
    assert set(values) == {"RealNVP train NLL", "RealNVP validation NLL",
                           "RealNVP test NLL", "best Gaussian test NLL"}
    # Even two epochs move a fresh (identity) flow below the standard normal
    # NLL of standardised data, 2 * 0.5 * (log(2 pi) + 1) = 2.84 nats.
    assert float(values["RealNVP test NLL"]) < 2.8


def test_bad_epochs_is_a_one_line_error(capsys):
    assert cli.main(["train", "--epochs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "tfflows: error: --epochs must be >= 1"
