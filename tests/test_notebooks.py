"""The Colab notebooks: each runs top to bottom (quick mode) and is stored clean."""

import os
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
COLAB = "https://colab.research.google.com/github/tfflows/tfflows/blob/main/colab/"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_the_tutorials_are_there():
    assert {"01_two_moons_density.ipynb", "02_glow_digits.ipynb",
            "03_fit_to_serving.ipynb", "04_variational_inference.ipynb",
            "05_continuous_flows.ipynb"} <= {
        p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_clean_with_badge_and_install_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    title = nb.cells[0]
    assert title.cell_type == "markdown" and title.source.startswith("# ")
    assert f"[![Open In Colab]({BADGE})]({COLAB}{path.name})" in title.source
    # Every "open in Colab" badge in the notebook opens this notebook.
    badges = re.findall(r"\[!\[Open In Colab\]\([^)]*\)\]\(([^)]*)\)",
                        "\n".join(cell.source for cell in nb.cells))
    assert badges == [COLAB + path.name]
    install = _code_cells(nb)[0].source
    assert 'importlib.util.find_spec("tfflows") is None' in install
    assert ('os.environ.get("TFFLOWS_SOURCE", "git+https://github.com/tfflows/tfflows")'
            in install)
    assert '[sys.executable, "-m", "pip", "install", "-q", source]' in install
    assert any('QUICK = os.environ.get("TFFLOWS_QUICK") == "1"' in cell.source
               for cell in _code_cells(nb)[1:3])
    for cell in _code_cells(nb):
        assert cell.outputs == [] and cell.execution_count is None, (
            f"{path.name} has stored outputs: clear them before committing")
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.colab == {"provenance": []}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch):
    # The kernel inherits this environment: quick budgets, and this checkout's
    # tfflows ahead of any installed copy (so the install cell does nothing).
    monkeypatch.setenv("TFFLOWS_QUICK", "1")
    monkeypatch.setenv("TFFLOWS_SOURCE", str(ROOT))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, showing the failing cell
    # Anything a notebook writes goes to a temporary directory it removes.
    assert os.listdir(tmp_path) == []
