"""launch.py end to end, as a user runs it."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

EVAL_LINE = re.compile(r"^eval: split (train|test )\. loss \d\.\d\de[-+]\d\d\. error \d+\.\d\d%\. misses: \d+$")


def launch(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args], cwd=cwd, capture_output=True, text=True,
        env=os.environ | {"JAX_PLATFORMS": "cpu"}, timeout=600,
    )


@pytest.fixture(scope="module")
def one_pass(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run") / "w"
    result = launch("--config.train.passes=1", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr
    return workdir, result


def test_one_pass_run_prints_karpathys_lines(one_pass):
    _, result = one_pass
    lines = [l for l in result.stdout.splitlines() if l.startswith("eval:")]
    assert len(lines) == 2 and all(EVAL_LINE.match(l) for l in lines), result.stdout
    assert lines[0].startswith("eval: split train.") and lines[1].startswith("eval: split test .")
    assert "Traceback" not in result.stderr


def test_one_pass_run_writes_the_workdir(one_pass):
    workdir, result = one_pass
    config = json.loads((workdir / "config.json").read_text())
    assert config["train"]["passes"] == 1 and (config["optimizer"]["name"], config["optimizer"]["learning_rate"]) == ("sgd", 0.03)
    records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["pass"], r["split"]) for r in records] == [(1, "train"), (1, "test")]
    for r, n in zip(records, (7291, 2007)):
        assert isinstance(r["misses"], int) and r["error"] == pytest.approx(100 * r["misses"] / n)
    # the printed line and the record agree
    assert f"misses: {records[1]['misses']}" in result.stdout
    with np.load(workdir / "params.npz") as z:
        assert z["h2/kernel"].shape == (12, 12, 5, 5)  # dense, (out, in, 5, 5); a third structural zeros
        assert sum(z[k].size for k in z.files) == 9760 + 1200
        assert sum(z[k].size for k in z.files if k != "h2/kernel") + int(np.sum(z["h2/kernel"] != 0)) == 9760
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["final"]["test"]["misses"] == records[1]["misses"]
    assert summary["time"]["wall_s"] > summary["time"]["compile_s"] > 0
    assert summary["device"]["platform"] == "cpu"
    assert summary["ledger"]["presentations"] == 7291 and summary["macs_per_digit"] == 63_660


@pytest.mark.slow
def test_rerun_reports_the_finished_run_and_refuses_another_config(one_pass):
    workdir, first = one_pass
    again = launch("--config.train.passes=1", f"--workdir={workdir}")
    assert again.returncode == 0 and "already holds this run" in again.stdout
    assert [l for l in again.stdout.splitlines() if l.startswith("eval:")] == [
        l for l in first.stdout.splitlines() if l.startswith("eval:")
    ]
    other = launch("--config.train.passes=2", f"--workdir={workdir}")
    assert other.returncode == 2
    assert "different config (fields train.passes)" in other.stderr and "--overwrite" in other.stderr


SLOW = pytest.mark.slow  # the fast tier keeps one bad input through launch.py, the first


@pytest.mark.parametrize(
    "args,message",
    [
        (["--config.optimizer.lr=0.1"], r"--config.optimizer.lr: no such config field; did you mean config.optimizer.learning_rate\?"),
        pytest.param(["--config.foo=1"], r"--config.foo: no such config field", marks=SLOW),
        pytest.param(["--config.optimizer.name=adam"], r"config.optimizer.name='adam': valid: sgd", marks=SLOW),
        pytest.param(["--config.optimizer.learning_rate=-1"], r"config.optimizer.learning_rate=-1.0: valid: in \(0, inf\)$", marks=SLOW),
        pytest.param(["--config.train.passes=abc"], r"--config.train.passes=abc", marks=SLOW),
        pytest.param(["--config=configs/nope.py"], r"--config=configs/nope.py: config file configs/nope.py not found", marks=SLOW),
        pytest.param(["--config=configs/lecun1989.py:cifar"], r"unknown dataset; valid: mnist1989, usps", marks=SLOW),
        pytest.param(["--config.data.name=cifar"], r"config.data.name='cifar': valid: mnist1989, usps", marks=SLOW),
        pytest.param(["stray"], r"unexpected arguments: stray", marks=SLOW),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, args, message):
    result = launch(*args, f"--workdir={tmp_path / 'w'}")
    assert result.returncode == 2, result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w").exists()  # nothing ran
