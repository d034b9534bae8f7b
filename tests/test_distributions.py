"""Rows over many seeds: the per-seed CSV files, their statistics, and the report drawn from them."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import lecun_jax
from lecun_jax.studies import distributions
from lecun_jax.run import reporting
from conftest import REPO, small_config

SAMPLE = REPO / "tests" / "data" / "distributions_sample"  # 3 rows x 3 seeds of a short run, made by `run`


def _column(path, name):
    with open(path, newline="") as f:
        return np.asarray([float(r[name]) for r in csv.DictReader(f)])


def test_the_report_of_the_committed_sample_has_its_table_and_figures(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(SAMPLE, results)
    assert distributions.main(["report", str(results)]) == 0
    for name in ("mnist1989.png", "usps.png"):
        assert (results / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stats = json.loads((results / "stats.json").read_text())
    assert [s["key"] for s in stats] == ["mnist1989_repro", "mnist1989_ce", "usps_sgd"]  # the order of ROWS
    for s in stats:
        errors = _column(results / f"{s['key']}.csv", "test_error")
        assert s["seeds"] == len(errors) == 3
        assert s["mean"] == pytest.approx(errors.mean()) and s["std"] == pytest.approx(errors.std(ddof=1))
        assert s["median"] == pytest.approx(np.median(errors))
        assert s["mean_ci95"][0] <= s["mean"] <= s["mean_ci95"][1]
    repro, ce = (_column(results / f"mnist1989_{r}.csv", "test_error") for r in ("repro", "ce"))
    assert stats[1]["change"]["mean"] == pytest.approx(ce.mean() - repro.mean())
    assert stats[0]["change"] is None and stats[2]["change"] is None  # the first row of each dataset
    table = (results / "table.md").read_text().splitlines()
    assert len(table) == 2 + 3 and table[3].startswith("| mnist1989 | ce | 3 | ")


def test_describe_against_hand_computed_figures():
    s = distributions.describe(np.asarray([1.0, 2.0, 3.0, 4.0]), published=2.0, previous=np.asarray([5.0, 5.0]))
    assert (s["mean"], s["median"], s["std"]) == (2.5, 2.5, pytest.approx(np.sqrt(5 / 3)))
    assert s["published_percentile"] == 100 * (1 + 0.5) / 4  # one seed below, one tied
    assert (s["p5"], s["p95"]) == (pytest.approx(1.15), pytest.approx(3.85))  # linear interpolation
    assert s["change"]["mean"] == -2.5 and s["change"]["ci95"][1] < 0  # every resample is lower than 5
    assert 1.0 <= s["mean_ci95"][0] < 2.5 < s["mean_ci95"][1] <= 4.0


@pytest.mark.slow
def test_a_finished_run_exports_one_line_per_seed_from_its_last_pass(tmp_path):
    workdir = tmp_path / "run"
    lecun_jax.train_and_evaluate(small_config(train__passes=2, num_seeds=2), workdir, echo=lambda s: None, plots=False)
    row = distributions.Row("mnist1989", "repro", "configs/ablations.py:repro")
    path = distributions.export(row, workdir, tmp_path / "results", "python launch.py ...", 12.5)
    with open(path, newline="") as f:
        lines = list(csv.DictReader(f))
    assert tuple(lines[0]) == distributions.COLUMNS
    final = [r for r in reporting.read_jsonl(workdir / "metrics.jsonl") if r["pass"] == 2]
    for split in ("train", "test"):
        want = [r["misses"] for r in sorted(final, key=lambda r: r["replica"]) if r["split"] == split]
        assert [int(l[f"{split}_misses"]) for l in lines] == want
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["seeds"] == 2 and manifest["wall_s_this_process"] == 12.5 and manifest["versions"]["jax"]
    # base() names no published figure
    assert manifest["published"] == {"label": "", "test_error": None, **dict.fromkeys(distributions.PUBLISHED_COUNTS)}


def test_unknown_rows_are_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        distributions.main(["run", "--rows=mnist1989/nope"])
    assert e.value.code == 2 and "--rows: mnist1989/nope? valid: mnist1989/repro" in capsys.readouterr().err


# --- from any folder, with the package installed -------------------------------------------


def test_the_wheel_lists_every_package_and_ships_the_configs():
    """pyproject.toml lists the packages (configs/ ships as lecun_jax.configs), so none can be left out of a wheel."""
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "lecun_jax").rglob("__init__.py")}
    assert set(setuptools["packages"]) == found | {"lecun_jax.configs"}
    assert setuptools["package-dir"] == {"lecun_jax.configs": "configs"} and (REPO / "configs" / "__init__.py").is_file()


def test_a_rows_command_reruns_from_any_folder():
    for row in distributions.ROWS:
        cmd = distributions.command(row, 3, Path("runs/distributions") / row.key)
        assert cmd[:4] == ["python", "-m", "lecun_jax.launch", f"--config={row.config}"]
        assert row.config.startswith("configs/") and not any(str(REPO) in word for word in cmd)


@pytest.mark.slow
def test_run_from_a_folder_without_configs_writes_the_rows_csv(tmp_path, monkeypatch):
    """`run` from a folder that holds no configs/ (the package's own are used), on a sample of
    the usps/sgd row: its CSV holds the run's final misses, its manifest the command that made it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    sample = ("--override=--config.data.train_size=100", "--override=--config.train.passes=1")
    assert distributions.main(["run", "--seeds=2", "--rows=usps/sgd", *sample]) == 0
    manifest = json.loads((tmp_path / "results" / "usps_sgd.json").read_text())
    assert manifest["command"] == ("python -m lecun_jax.launch --config=configs/lecun1989.py:usps --config.num_seeds=2 "
                                   "--config.train.eval_every=23 --config.data.train_size=100 --config.train.passes=1 "
                                   "--workdir=runs/distributions/usps_sgd")
    summary = json.loads((tmp_path / "runs" / "distributions" / "usps_sgd" / "summary.json").read_text())
    for split in ("train", "test"):
        assert _column(tmp_path / "results" / "usps_sgd.csv", f"{split}_misses").tolist() == summary["final"][split]["misses"]
    assert manifest["seeds"] == 2 and manifest["passes"] == 1 and manifest["published"]["test_error"] == 5.0
    assert not (tmp_path / "configs").exists() and not list(tmp_path.rglob("*.py"))
