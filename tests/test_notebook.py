"""docs/notebook.ipynb, executed by nbclient with a real ipykernel running this interpreter."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebook.ipynb"
KERNEL = "decaylab-test"


def _kernelspec(root: Path) -> None:
    """A kernelspec named KERNEL that starts ipykernel with this test's interpreter (and its PYTHONPATH)."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "decaylab test", "language": "python"}))


def _outputs(cell: Any) -> list[dict[str, Any]]:
    return [dict(o) for o in cell.get("outputs", [])]


def test_the_notebook_runs_and_shows_the_table_and_the_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _kernelspec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's mkdtemp lands here
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # stored without outputs
    NotebookClient(nb, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in _outputs(c) if o["output_type"] == "error"]
    assert not errors, errors
    by_source = {c.source.splitlines()[0]: _outputs(c) for c in code}

    table = [o for o in by_source['r = lab.run("d2l-linear", lambd=[0, 3], epochs=30, store=store, out=work / "d2l")']
             if o["output_type"] == "execute_result"]
    html = table[0]["data"]["text/html"]
    assert "<table" in html and "test loss" in html and "‖w‖₂" in html and html.count("<tr") == 3  # header + 2 rows
    images = [o for o in by_source["from IPython.display import Image, display"] if "image/png" in o.get("data", {})]
    assert len(images) == 2 and all(o["data"]["image/png"].startswith("iVBORw0KGgo") for o in images)  # base64 of a PNG header
    runs = by_source["lab.runs(store)"][0]["data"]["text/html"]
    assert "d2l-linear" in runs and "epochs=30" in runs and "finished" in runs
    assert by_source["lab.load(r.id, store=store).table.equals(r.table)"][0]["data"]["text/plain"] == "True"
    page = by_source["r"][0]["data"]
    # the run's report page, escaped into an iframe's srcdoc
    assert page["text/html"].startswith("<iframe") and "&lt;table" in page["text/html"]
    assert not (tmp_path / "decaylab.db").exists() and not (tmp_path / "runs").exists()  # the notebook used its temp store
