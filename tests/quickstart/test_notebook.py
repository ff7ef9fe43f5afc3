"""``examples/notebooks/quickstart.ipynb`` executed with nbclient on a kernel that is this
python (the shared venv), no network, with a short training run (TRAIN_ITERS=60; the full
length is what tests/quickstart/test_quickstart.py checks through run.sh): every cell runs,
the kernel is this interpreter, the loss falls, the loss curve is shown inline, and all 60
held-out questions get an answer among the answer words."""
from __future__ import annotations

import json
import os
import sys

import nbformat
from nbclient import NotebookClient

from test_quickstart import REPO, free_port

NOTEBOOK = os.path.join(REPO, "examples", "notebooks", "quickstart.ipynb")
ANSWER_WORDS = {"red", "green", "blue", "yellow", "circle", "square", "triangle"}


def test_notebook_runs_the_quickstart(tmp_path, monkeypatch):
    kernel_dir = tmp_path / "jupyter" / "kernels" / "msmm-test"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "msmm test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("TRAIN_ITERS", "60")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("PYTHONPATH", REPO)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name="msmm-test", timeout=600, resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    result = json.loads(text.split("NOTEBOOK_RESULT ", 1)[1].splitlines()[0])
    assert result["python"] == sys.executable and result["train_iters"] == 60
    losses = result["losses"]
    assert len(losses) == 6 and losses[-1] < losses[0] / 3, losses
    assert len(result["answers"]) == 60 and set(result["answers"]) <= ANSWER_WORDS, result["answers"]
    assert 0 <= result["accuracy"] <= 1
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    loss_cell = next(c for c in nb.cells if "loss_curve.png" in c.source and c.cell_type == "code")
    assert any(o.output_type == "display_data" and "image/png" in o.data for o in loss_cell.outputs)
    assert len(images) >= 4  # training samples, loss curve, held-out answers, the new scene
