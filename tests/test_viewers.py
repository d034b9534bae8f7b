"""The viewers the README tells a user to run read what runs write: TensorBoard
serves a run's scalars over its HTTP API, and Jupyter executes the notebook
with its kernel in the repository root or in notebooks/.

Both come with ``pip install '.[viewers]'`` (and ``.[test]``); a test is skipped,
saying so, only where the viewer's executable is absent."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from lecun_jax import config as config_lib
from lecun_jax.run import experiment, reporting
from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "explore.ipynb"
pytestmark = pytest.mark.slow  # a TensorBoard server and two notebook kernels


def executable(name: str) -> str | None:
    """``name`` installed beside this Python (a venv not activated), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.is_file() else shutil.which(name)


def tiny_run(workdir: Path, num_seeds: int = 1) -> Path:
    c = config_lib.base()
    c.data.train_size, c.train.passes, c.num_seeds = 200, 2, num_seeds
    experiment.train_and_evaluate(c, workdir, echo=lambda s: None, plots=False)
    return workdir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_tensorboard_serves_the_runs_scalars(tmp_path):
    tensorboard = executable("tensorboard")
    if tensorboard is None:
        pytest.skip("no `tensorboard` executable: pip install '.[viewers]'")
    workdir = tiny_run(tmp_path / "run", num_seeds=2)
    records = reporting.read_jsonl(workdir / "metrics.jsonl")
    port = free_port()
    server = subprocess.Popen(
        [tensorboard, "--logdir", str(workdir), "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/data/plugin/scalars"
    runs = {f"tensorboard/replica_{r}": r for r in range(2)} | {"tensorboard/mean": None}
    try:
        tags, deadline = {}, time.monotonic() + 90
        while not all("error/test" in tags.get(run, {}) for run in runs):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tensorboard did not serve the run's scalars; it printed:\n{server.communicate(timeout=10)[0]}"
                            if server.poll() is not None else f"no scalars after 90 s; tags: {tags}")
            try:
                tags = get_json(f"{base}/tags")
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        for run, replica in runs.items():
            assert {"error/train", "error/test", "loss/train", "loss/test", "learning_rate"} <= set(tags[run])
            for tag in ("error/train", "error/test", "loss/test"):
                split, key = tag.split("/")[1], tag.split("/")[0]
                query = urllib.parse.urlencode({"run": run, "tag": tag})
                served = [(step, value) for _, step, value in get_json(f"{base}/scalars?{query}")]
                want = {}
                for r in records:
                    if r["split"] == split and replica in (None, r["replica"]):
                        want.setdefault(r["pass"], []).append(r[key])
                assert [s for s, _ in served] == [1, 2]
                np.testing.assert_allclose([v for _, v in served], [np.mean(want[p]) for p in (1, 2)], rtol=1e-6,
                                           err_msg=f"{run} {tag}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A tree shaped like the repository (launch.py and pyproject.toml at its root,
    the notebook in notebooks/) with a finished run where the notebook looks by
    default, runs/lecun1989_mnist1989."""
    assert (REPO / "launch.py").is_file() and (REPO / "pyproject.toml").is_file()  # what the notebook looks for
    root = tmp_path_factory.mktemp("checkout")
    for name in ("launch.py", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    (root / "notebooks").mkdir()
    shutil.copy(NOTEBOOK, root / "notebooks" / NOTEBOOK.name)
    tiny_run(root / "runs" / "lecun1989_mnist1989")
    return root


@pytest.mark.parametrize("where", ["root", "notebooks"])
def test_nbconvert_executes_the_notebook(checkout, tmp_path, where):
    """``jupyter nbconvert --execute`` from the root and from notebooks/; nbconvert
    starts the kernel in the notebook's folder, as Jupyter does."""
    jupyter = executable("jupyter")
    if jupyter is None:
        pytest.skip("no `jupyter` executable: pip install '.[viewers]'")
    cwd, notebook = (checkout, "notebooks/explore.ipynb") if where == "root" else (checkout / "notebooks", "explore.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in ("LECUN_JAX_RUN", "LECUN_JAX_RUN_B")}
    result = subprocess.run(
        [jupyter, "nbconvert", "--to", "notebook", "--execute", notebook, "--output-dir", str(tmp_path),
         "--output", "executed", "--ExecutePreprocessor.timeout=600"],
        cwd=cwd, env=env | {"JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    executed = json.loads((tmp_path / "executed.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert f"run A: {checkout.resolve() / 'runs' / 'lecun1989_mnist1989'}" in text
    assert "misclassified" in text and "predicted" in text and "no second run" in text
    # the committed notebook stays without outputs
    assert all(not c.get("outputs") for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code")
