"""Sweep tables a researcher can read: a column per varied field, the published
figure only beside its own recipe, per-seed errors, flat row folders, rows that
fail for any reason."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from lecun_jax import config as config_lib
from lecun_jax.run import experiment
from lecun_jax.studies import sweep
from conftest import REPO, small_config

LECUN1989 = REPO / "configs" / "lecun1989.py"
ABLATIONS = REPO / "configs" / "ablations.py"
ISSUE_GRID = "optimizer.learning_rate=0.01,0.03;train.passes=1,2"


def _quiet(_):
    pass


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_issue_grid_changes_the_recipe_on_every_row():
    c = config_lib.load_file(LECUN1989)
    c.sweep.grid = ISSUE_GRID
    runs = sweep.expand(LECUN1989, c, {"sweep.grid": ISSUE_GRID})
    assert [r.varied for r in runs] == [
        {"optimizer.learning_rate": lr, "train.passes": p} for lr in (0.01, 0.03) for p in (1, 2)]
    assert all("train.passes" in r.changed for r in runs)  # 1 or 2 passes is not the published 23
    rec = sweep.row_record(runs[1], None, "x", REPO)
    assert rec["reference_test_error"] is None and rec["reference_label"] == ""


def test_presets_keep_their_published_figure_unless_the_command_line_changes_the_recipe():
    c = config_lib.load_file(ABLATIONS, "all")
    same = sweep.expand(ABLATIONS, c, {"num_seeds": 5, "data.source_dir": "/x", "model.conv": "lax"})
    assert [r.changed for r in same] == [()] * 5
    records = [sweep.row_record(r, None, "not run", REPO) for r in same]
    assert [r["reference_test_error"] for r in records] == [4.09, 4.38, 3.59, 2.19, 1.59]
    table = sweep.table_markdown(records, 0.0)
    assert "| published test % (train) |" in table.splitlines()[0] and "| 2.19 (1.70) |" in table
    shorter = sweep.expand(ABLATIONS, c, {"train.passes": 2})
    assert [r.changed for r in shorter] == [("train.passes",)] * 5
    assert all(sweep.row_record(r, None, "x", REPO)["reference_test_error"] is None for r in shorter)
    # a sweep of one config: an overridden recipe field counts as changed, whatever its value
    one = config_lib.load_file(LECUN1989)
    assert sweep.expand(LECUN1989, one, {"optimizer.learning_rate": 0.03})[0].changed == ("optimizer.learning_rate",)


def test_sweep_fields_are_not_grid_axes():
    for grid in ("sweep.rows=repro,ce", "train.passes=1;sweep.grid=x"):
        with pytest.raises(config_lib.ConfigError, match=r"cannot be a grid axis"):
            sweep.parse_grid(grid)


@pytest.mark.slow
def test_a_sweep_field_in_the_grid_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "--config.sweep.grid=sweep.rows=repro,ce", f"--workdir={tmp_path / 's'}"],
        cwd=REPO, capture_output=True, text=True, env=os.environ | {"JAX_PLATFORMS": "cpu"}, timeout=600)
    assert result.returncode == 2
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "sweep.rows cannot be a grid axis" in errors[0]
    assert not (tmp_path / "s" / "table.csv").exists()  # refused before any row ran


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    """The issue's grid, as launch.py runs it (the command line's fields as overrides),
    on 200 digits and 2 seeds."""
    workdir = tmp_path_factory.mktemp("grid")
    c = config_lib.load_file(LECUN1989)
    overrides = {"data.train_size": 200, "num_seeds": 2, "sweep.grid": ISSUE_GRID}
    for path, value in overrides.items():
        config_lib.set_path(c, path, value)
    records = sweep.run(LECUN1989, c, overrides, workdir, echo=_quiet)
    return workdir, records


@pytest.mark.slow
def test_grid_table_has_a_column_per_varied_field_and_no_published_figure(grid_sweep):
    workdir, records = grid_sweep
    rows = _csv(workdir / "table.csv")
    assert list(rows[0])[:3] == ["row", "optimizer.learning_rate", "train.passes"]
    assert [(float(r["optimizer.learning_rate"]), int(r["train.passes"]), int(r["passes"])) for r in rows] == [
        (0.01, 1, 1), (0.01, 2, 2), (0.03, 1, 1), (0.03, 2, 2)]
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert [(r["reference_test_error"], r["reference_label"]) for r in rows] == [("", "")] * 4
    assert "test_errors" not in rows[0]  # lists stay in sweep.json
    table = (workdir / "table.md").read_text()
    assert table.startswith("| row | optimizer.learning_rate | train.passes | data |")
    assert "published" not in table and "4.09" not in table
    assert "| run-learning_rate=0.03-passes=2 | 0.03 | 2 | mnist1989 (200) | 2 | 2 |" in table
    saved = json.loads((workdir / "sweep.json").read_text())
    assert saved["varied"] == ["optimizer.learning_rate", "train.passes"]
    assert all(r["reference_test_error"] is None for r in saved["rows"])


@pytest.mark.slow
def test_sweep_json_has_every_seeds_final_errors(grid_sweep):
    workdir, _ = grid_sweep
    for row in json.loads((workdir / "sweep.json").read_text())["rows"]:
        summary = json.loads((workdir / row["row"] / "summary.json").read_text())
        for split in ("train", "test"):
            assert row[f"{split}_errors"] == summary["final"][split]["error"]
            assert len(row[f"{split}_errors"]) == 2
            assert row[f"{split}_error_mean"] == pytest.approx(sum(row[f"{split}_errors"]) / 2)


@pytest.mark.slow
def test_a_grid_value_with_a_slash_makes_one_flat_folder(tmp_path):
    c = config_lib.base()
    c.data.train_size, c.train.passes = 200, 1
    c.sweep.grid = "reference.label=../up/and/down"
    workdir = tmp_path / "s"
    records = sweep.run(LECUN1989, c, {}, workdir, echo=_quiet)
    assert [r["status"] for r in records] == ["ok"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # nothing escaped the sweep's folder
    folders = [p for p in workdir.iterdir() if p.is_dir()]
    assert len(folders) == 1 and (folders[0] / "summary.json").exists()
    assert "/" not in folders[0].name and folders[0].name == sweep.folder_name("run-label=../up/and/down")
    assert records[0]["workdir"] == str(folders[0])
    assert _csv(workdir / "table.csv")[0]["reference.label"] == "../up/and/down"  # the real value in its column
    # names that differ only in such characters keep apart
    assert sweep.folder_name("run-x=a/b") != sweep.folder_name("run-x=a_b")
    assert sweep.folder_name("run-lr=0.01") == "run-lr=0.01"


@pytest.mark.slow
def test_a_row_failing_with_an_unexpected_exception_is_marked_failed_and_the_table_is_written(tmp_path, monkeypatch):
    real = experiment.train_and_evaluate

    def flaky(config, workdir, **kwargs):
        if config.optimizer.learning_rate == 0.01:
            raise RuntimeError("something nobody expected\nsecond line of the message")
        return real(config, workdir, **kwargs)

    monkeypatch.setattr(experiment, "train_and_evaluate", flaky)
    c = config_lib.base()
    c.data.train_size, c.train.passes = 200, 1
    c.sweep.grid = "optimizer.learning_rate=0.01,0.03"
    lines = []
    records = sweep.run(LECUN1989, c, {}, tmp_path, echo=lines.append)
    assert records[0]["status"].startswith("failed: RuntimeError: something nobody expected (traceback in ")
    assert "\n" not in records[0]["status"] and records[1]["status"] == "ok"
    assert sweep.failed(records) == ["run-learning_rate=0.01"]
    assert "Traceback" in (tmp_path / "run-learning_rate=0.01" / sweep.ERROR_TXT).read_text()
    rows = _csv(tmp_path / "table.csv")
    assert [r["status"][:30] for r in rows] == ["failed: RuntimeError: somethin", "ok"]
    assert float(rows[1]["test_error_mean"]) > 0
    assert "failed: RuntimeError" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "ablations.png").exists()
    assert any("run-learning_rate=0.01 failed: RuntimeError" in l for l in lines)


@pytest.mark.slow
def test_a_learning_rate_grid_trains_as_one_program_with_each_rows_own_numbers(tmp_path, monkeypatch):
    c = small_config(train__passes=2, num_seeds=2)
    c.sweep.grid = "optimizer.learning_rate=0.005,0.01,0.02,0.03"
    calls = []
    real = experiment.train_and_evaluate
    monkeypatch.setattr(experiment, "train_and_evaluate", lambda *a, **k: calls.append(k.get("init_states")) or real(*a, **k))
    alone = sweep.run(REPO / "configs" / "lecun1989.py", c, {}, tmp_path / "alone", echo=lambda s: None)
    assert len(calls) == 4 and calls == [None] * 4  # by default each row is its own run
    c.sweep.together = True
    calls.clear()
    together = sweep.run(REPO / "configs" / "lecun1989.py", c, {}, tmp_path / "together", echo=lambda s: None)
    assert len(calls) == 1 and calls[0].__self__.values == {"learning_rate": (0.005, 0.01, 0.02, 0.03)}  # one program, 4 x 2 networks
    assert [r["status"] for r in together] == ["ok"] * 4
    for t, a in zip(together, alone):
        row_t = experiment.load_run(t["workdir"])  # an ordinary run in the row's folder
        row_a = experiment.load_run(a["workdir"])
        assert row_t.config == row_a.config and row_t.summary["together"]["rows"] == 4
        assert [(r["pass"], r["split"], r["replica"], r["misses"]) for r in row_t.metrics] == \
               [(r["pass"], r["split"], r["replica"], r["misses"]) for r in row_a.metrics]
        for rt, ra in zip(row_t.metrics, row_a.metrics):  # the rate as data, not a constant: float rounding
            assert rt["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5), row_t.params, row_a.params)
        assert row_t.test_outputs.shape == row_a.test_outputs.shape == (2, 2007, 10)
        assert (Path(t["workdir"]) / "plots" / "curves.png").exists()
        # written by the store's verbs, as a run alone writes it: the same files (but checkpoints,
        # whose optimiser state would be the group's), the same config.json, the same summary keys
        files_t, files_a = _tree(Path(t["workdir"])), _tree(Path(a["workdir"]))
        assert not any(f.startswith("checkpoints") for f in files_t) and "checkpoints/1/state.npz" in files_a
        assert files_t == {f for f in files_a if not f.startswith("checkpoints")}
        assert (Path(t["workdir"]) / "config.json").read_text() == (Path(a["workdir"]) / "config.json").read_text()
        assert set(row_t.summary) == set(row_a.summary) | {"together"}


def _tree(folder: Path) -> set[str]:
    """Every file and folder under ``folder``; TensorBoard's event files by their kind (their names hold a time and a host)."""
    return {re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents.*", str(p.relative_to(folder))) for p in folder.rglob("*")}
