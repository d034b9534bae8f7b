"""What runs leave behind: TensorBoard events, plots, the ledger, load_run, resume, the notebook."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import lecun_jax
from lecun_jax.run import checkpoints, experiment, reporting
from lecun_jax.studies import sweep
from conftest import REPO, small_config
from events import read_scalars

PNG = b"\x89PNG\r\n\x1a\n"


def _config(**fields):
    return small_config(**fields)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs") / "short"
    summary = experiment.train_and_evaluate(_config(), workdir, echo=lambda s: None)
    return workdir, summary


def test_tensorboard_events_read_back_equal_the_metrics(short_run):
    workdir, _ = short_run
    scalars = read_scalars(workdir / "tensorboard")
    records = reporting.read_jsonl(workdir / "metrics.jsonl")
    for split in ("train", "test"):
        want = [(r["pass"], r["error"]) for r in records if r["split"] == split]
        assert [(s, pytest.approx(v, rel=1e-6)) for s, v in scalars[f"error/{split}"]] == want
        assert len(scalars[f"loss/{split}"]) == 3
    assert [v for _, v in scalars["learning_rate"]] == pytest.approx([0.03] * 3)


def test_plots_are_pngs_of_the_run(short_run):
    workdir, _ = short_run
    for name in ("curves.png", "misclassified.png", "confusion.png"):
        assert (workdir / "plots" / name).read_bytes()[:8] == PNG
    # on demand, from the workdir alone
    (workdir / "plots" / "curves.png").unlink()
    result = subprocess.run([sys.executable, "-m", "lecun_jax.run.plots", str(workdir)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert (workdir / "plots" / "curves.png").read_bytes()[:8] == PNG


def test_the_ledger(short_run):
    _, summary = short_run
    led = summary["ledger"]
    assert led["presentations"] == 3 * 300
    assert led["forward_macs_per_digit"] == 63_660 and led["training_macs"] == 3 * 63_660 * 900
    assert led["evaluation_macs"] == 63_660 * 3 * (300 + 2007)
    per_presentation = led["wall_s_per_network"] / 900
    assert led["speedup_vs_sun4_260_1989"] == pytest.approx(3 * 86400 / (23 * 7291) / per_presentation)
    assert led["speedup_vs_karpathy_m1_2022"] == pytest.approx(90 / (23 * 7291) / per_presentation)


def test_load_run_gives_config_params_and_metrics(short_run):
    workdir, summary = short_run
    run = lecun_jax.load_run(workdir)
    assert run.config.data.train_size == 300 and run.summary == summary
    assert lecun_jax.core.model.count_params(run.params, run.model)["total"] == 9760
    assert run.final("test")["misses"] == summary["final"]["test"]["misses"]
    # the model it returns, on the saved parameters, gives the saved test outputs
    ds = run.dataset()
    outputs = run.model.apply({"params": run.params}, ds.test.images[:50])
    np.testing.assert_allclose(outputs, run.test_outputs[0, :50], atol=1e-5)
    assert int((run.test_outputs[0].argmax(-1) != run.test_labels).sum()) == summary["final"]["test"]["misses"]


def test_resume_after_a_lost_tail_gives_the_uninterrupted_numbers(short_run, tmp_path):
    """The fast tier's resume: a copy of the 3-pass run that stopped after pass 2 (its last
    checkpoint and its summary gone) resumes and ends with the uninterrupted run's numbers."""
    ref, _ = short_run
    cut = tmp_path / "cut"
    shutil.copytree(ref, cut)
    shutil.rmtree(cut / "checkpoints" / "3")
    (cut / "summary.json").unlink()
    lines = []
    resumed = experiment.train_and_evaluate(_config(), cut, echo=lines.append, plots=False)
    assert any("resuming" in l and "after pass 2" in l for l in lines)
    assert resumed["resumed_after_pass"] == 2
    assert reporting.read_jsonl(cut / "metrics.jsonl") == reporting.read_jsonl(ref / "metrics.jsonl")
    jax.tree.map(np.testing.assert_array_equal, reporting.load_params(cut / "params.npz"),
                 reporting.load_params(ref / "params.npz"))


def test_checkpoints_keep_the_last_few(short_run):
    workdir, _ = short_run
    kept = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == [1, 2, 3][-checkpoints.KEEP:]


@pytest.mark.slow
def test_sweep_writes_a_chart(tmp_path):
    c = _config(**{"train__passes": 1})
    c.sweep.grid = "optimizer.learning_rate=0.01,0.03"
    records = sweep.run(REPO / "configs" / "lecun1989.py", c, {}, tmp_path, echo=lambda s: None)
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert (tmp_path / "ablations.png").read_bytes()[:8] == PNG
    table = (tmp_path / "table.md").read_text()
    assert "run-learning_rate=0.01" in table and "run-learning_rate=0.03" in table
    assert {r["row"] for r in json.loads((tmp_path / "sweep.json").read_text())["rows"]} == {
        "run-learning_rate=0.01", "run-learning_rate=0.03"}


@pytest.mark.slow
def test_notebook_runs_against_two_short_runs(short_run, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = REPO / "notebooks" / "explore.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit the notebook without outputs"
    other = tmp_path / "other"
    experiment.train_and_evaluate(_config(**{"optimizer__learning_rate": 0.01}), other, echo=lambda s: None, plots=False)
    # the kernel starts in a folder of its own, outside the checkout: the notebook takes it as
    # the root (no launch.py above it), so what it writes (runs/notebook_nnx_cnn) lands there
    folder = tmp_path / "kernel"
    folder.mkdir()
    env = os.environ | {"LECUN_JAX_RUN": str(short_run[0]), "LECUN_JAX_RUN_B": str(other)}
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute(cwd=str(folder), env=env)
    text = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []))
    assert "misclassified" in text and "final test error" in text and "predicted" in text
    assert f"run A: {short_run[0]}" in text and (folder / "runs" / "notebook_nnx_cnn" / "summary.json").is_file()
