"""examples/notebooks/quickstart.ipynb runs top to bottom without an error."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs_top_to_bottom(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on the first error
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and all(c.get("execution_count") for c in code_cells), "every code cell ran"
    errors = [o for c in code_cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    outputs = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for c in code_cells for o in c.get("outputs", [])
    )
    assert "FeatureNotSupported FEATURE_NOT_SUPPORTED" in outputs
    assert "create_vm succeeded" in outputs or "succeeded" in outputs
    # The clean-up deletes every VM the notebook made, the async engine's included, and leaves
    # both engines empty.
    assert "deleted: ['async-1', 'db-1', 'web-1', 'web-2', 'web-3']" in outputs
    last = code_cells[-1]["outputs"][-1]["data"]["text/plain"]
    assert last == "{'engine': [], 'aengine': []}"
