"""The notebooks run top to bottom, offline, in quick mode; the saved ones carry their outputs and plots.

The run uses ``notebooks/execute.py`` (what refreshes the saved outputs) on temporary copies, with
``RAGKIT_NB_QUICK=1`` (a CISI subset) and the default offline models.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DATASET = Path(os.environ.get("RAGKIT_DATASET", ROOT.parent / "shared" / "data" / "cisi"))
# A kernel started from another interpreter would test another installation of ragkit.
PREFIX_CELL = "import sys\nprint(sys.prefix)"


def _execute_module():
    spec = importlib.util.spec_from_file_location("ragkit_notebooks_execute", NOTEBOOKS / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(nb):
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def _images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for out in _outputs(nb))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quickstart.ipynb", "evaluation.ipynb"])
def test_notebook_runs(name, tmp_path):
    if name == "evaluation.ipynb" and not DATASET.is_dir():
        pytest.skip(f"the CISI collection is not at {DATASET} (set RAGKIT_DATASET)")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PREFIX_CELL))
    copy = tmp_path / name
    nbformat.write(nb, copy)

    env = {
        "RAGKIT_NB_QUICK": "1",
        "RAGKIT_DATASET": str(DATASET),
        "RAGKIT_EMBEDDER": "minilm",
        "RAGKIT_RERANKER": "",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    # A cell that raises stops the run with CellExecutionError, which shows the cell and its traceback.
    executed = _execute_module().execute(copy, env=env, timeout=500)

    errors = [out for out in _outputs(executed) if out.output_type == "error"]
    assert not errors, errors
    unexecuted = [
        c.source[:60] for c in executed.cells if c.cell_type == "code" and c.execution_count is None
    ]
    assert not unexecuted, unexecuted
    prefix = "".join(o.text for o in executed.cells[-1].outputs if o.output_type == "stream").strip()
    assert Path(prefix).resolve() == Path(sys.prefix).resolve(), "the kernel ran another interpreter"
    if name == "evaluation.ipynb":
        assert _images(executed) >= 1


@pytest.mark.parametrize("name", ["quickstart.ipynb", "evaluation.ipynb"])
def test_saved_notebook_has_outputs(name):
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "save it executed: notebooks/execute.py"
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    assert path.stat().st_size < 400_000, "keep saved notebooks small (figure size, dpi)"
    if name == "evaluation.ipynb":
        assert _images(nb) >= 3  # the modes bar chart, the Matryoshka curve, the flat/HNSW trade-off
        assert any("report.plot(" in c.source for c in code)  # the library's plot, not a hand-made one
    else:  # hits render as ragkit's own table, not through a helper the notebook defines
        tables = [o for o in _outputs(nb) if "<table><caption>" in o.get("data", {}).get("text/html", "")]
        assert len(tables) >= 3
    assert not [c.source for c in code if "def show(" in c.source]
