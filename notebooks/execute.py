"""Run the notebooks top to bottom and save them with their outputs (plots embedded as PNG).

The saved outputs are a full run with the defaults: the offline all-MiniLM-L6-v2 embedder, the whole CISI
collection. The kernel runs with this interpreter (the ``python3`` kernel resolves to ``sys.executable``),
so run it with the project's virtualenv:

    .venv/bin/python notebooks/execute.py                      # both notebooks, in place
    .venv/bin/python notebooks/execute.py notebooks/quickstart.ipynb
    RAGKIT_NB_QUICK=1 .venv/bin/python notebooks/execute.py --out /tmp/nb   # a quick run, elsewhere

``tests/test_notebooks.py`` runs the same function on temporary copies with ``RAGKIT_NB_QUICK=1``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NOTEBOOKS = (HERE / "quickstart.ipynb", HERE / "evaluation.ipynb")


def execute(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    timeout: int = 1800,
) -> Any:
    """Execute the notebook at ``path`` in its own directory and write it, with outputs, to ``out``.

    ``out`` defaults to ``path`` (in place). ``env`` is added to this process's environment for the
    kernel; progress bars are off unless the environment turns them on. A cell that raises stops the
    run with ``nbclient.exceptions.CellExecutionError``, which carries the cell's traceback.

    Returns:
        The executed notebook (an ``nbformat.NotebookNode``).
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # no timestamps in the saved file: re-running changes only real outputs
        resources={"metadata": {"path": str(path.parent)}},
    )
    # Progress bars and tqdm's "IProgress not found" (no ipywidgets) would be saved as noise.
    quiet = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONWARNINGS": "ignore:IProgress not found"}
    client.execute(env={**quiet, **os.environ, **(env or {})})
    nbformat.write(nb, Path(out) if out is not None else path)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="*", type=Path, default=list(NOTEBOOKS))
    parser.add_argument("--out", type=Path, help="write the executed notebooks to this directory")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        target = None
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            target = args.out / path.name
        start = time.perf_counter()
        execute(path, target)
        size = (target or path).stat().st_size
        print(f"{path.name}: {time.perf_counter() - start:.0f} s, {size / 1024:.0f} KiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
