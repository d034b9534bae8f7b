"""A run resumes whatever happened to it: unreadable checkpoints fall back to older good
ones, changed data are refused, one run at a time holds a workdir, a run killed after
its last pass finishes its outputs, and another device count re-lays the replicas."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lecun_jax.run import checkpoints, experiment, reporting
from lecun_jax.run.workdir import WorkdirError, describe_parts
from conftest import REPO, small_config


def _config(**fields):
    return small_config(**{"train__passes": 4, **fields})


def _quiet(s):
    pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 4-pass run."""
    workdir = tmp_path_factory.mktemp("ref") / "run"
    experiment.train_and_evaluate(_config(), workdir, echo=_quiet, plots=False)
    return workdir


def _same_results(a, b):
    assert reporting.read_jsonl(a / "metrics.jsonl") == reporting.read_jsonl(b / "metrics.jsonl")
    jax.tree.map(np.testing.assert_array_equal, reporting.load_params(a / "params.npz"), reporting.load_params(b / "params.npz"))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _empty(folder):
    for f in folder.iterdir():
        f.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_an_unreadable_newest_checkpoint_is_set_aside_and_an_older_one_resumes(reference, tmp_path, damage):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    (workdir / "summary.json").unlink()  # as if killed after pass 4's checkpoint
    newest = workdir / "checkpoints" / "4"
    {"truncate": lambda: _truncate(newest / "state.npz"), "flip": lambda: _flip(newest / "state.npz"),
     "empty": lambda: _empty(newest)}[damage]()
    lines = []
    summary = experiment.train_and_evaluate(_config(), workdir, echo=lines.append, plots=False)
    told = [l for l in lines if "cannot be read" in l]
    assert len(told) == 1 and "pass 4" in told[0] and "4.unreadable" in told[0], lines
    assert (workdir / "checkpoints" / "4.unreadable").is_dir()  # set aside, not deleted
    assert any("resuming" in l and "after pass 3" in l for l in lines)
    assert summary["resumed_after_pass"] == 3
    _same_results(workdir, reference)


@pytest.mark.slow
def test_when_every_checkpoint_is_unreadable_the_run_starts_again(reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    (workdir / "summary.json").unlink()
    for p in (workdir / "checkpoints").iterdir():
        _truncate(p / "state.npz")
    lines = []
    experiment.train_and_evaluate(_config(), workdir, echo=lines.append, plots=False)
    assert sum("cannot be read" in l for l in lines) == checkpoints.KEEP
    assert any("no readable checkpoint; starting from pass 1" in l for l in lines)
    _same_results(workdir, reference)


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_starts_again(reference, tmp_path):
    # config.json written, no checkpoint yet: the run trains from pass 1, silently, to the same numbers
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    (workdir / "summary.json").unlink()
    shutil.rmtree(workdir / "checkpoints")
    lines = []
    summary = experiment.train_and_evaluate(_config(), workdir, echo=lines.append, plots=False)
    assert summary["resumed_after_pass"] is None
    assert not any("readable" in l or "resuming" in l for l in lines), lines
    _same_results(workdir, reference)


@pytest.mark.slow
def test_a_checkpoint_of_another_state_is_refused_not_set_aside(reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    (workdir / "summary.json").unlink()
    # another optimiser state in the same config's workdir: momentum instead of plain SGD
    import optax

    with pytest.raises(WorkdirError, match="holds a run with a different config"):
        experiment.train_and_evaluate(_config(), workdir, optimizer=optax.sgd(0.03, momentum=0.9), echo=_quiet, plots=False)
    config = json.loads((workdir / "config.json").read_text())
    config["parts"] = describe_parts(optimizer=optax.sgd(0.03, momentum=0.9))
    reporting.write_json(workdir / "config.json", config)  # the parts match: only the state's shape differs
    with pytest.raises(WorkdirError, match="checkpoint does not fit this run's train state"):
        experiment.train_and_evaluate(_config(), workdir, optimizer=optax.sgd(0.03, momentum=0.9), echo=_quiet, plots=False)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "3", "4"]  # nothing set aside


def _usps_copy(shared_data, folder, keep_train_lines=None):
    folder.mkdir()
    for name in ("zip.train.gz", "zip.test.gz"):
        shutil.copy(shared_data / "usps" / name, folder / name)
    if keep_train_lines is not None:
        import gzip

        lines = gzip.decompress((folder / "zip.train.gz").read_bytes()).splitlines(keepends=True)[:keep_train_lines]
        (folder / "zip.train.gz").write_bytes(gzip.compress(b"".join(lines)))
    return folder


@pytest.mark.slow
def test_resuming_on_changed_data_is_refused(shared_data, tmp_path):
    source = _usps_copy(shared_data, tmp_path / "usps")
    c = _config(**{"data__name": "usps", "data__source_dir": str(source), "data__train_size": None, "train__passes": 2})
    workdir = tmp_path / "run"
    experiment.train_and_evaluate(c, workdir, echo=_quiet, plots=False)
    (workdir / "summary.json").unlink()
    shutil.rmtree(workdir / "checkpoints" / "2")  # killed during pass 2
    metrics_before = (workdir / "metrics.jsonl").read_bytes()
    shutil.rmtree(source)
    _usps_copy(shared_data, source, keep_train_lines=7000)  # other training files under the same path
    with pytest.raises(WorkdirError) as e:
        experiment.train_and_evaluate(c, workdir, echo=_quiet, plots=False)
    message = str(e.value)
    assert "\n" not in message and "the data differ from what pass 1 was trained on" in message
    assert "train: 7,291 digits then, 7,000 now" in message
    assert (workdir / "metrics.jsonl").read_bytes() == metrics_before  # nothing trained on the other data


@pytest.mark.slow
def test_the_data_trained_on_are_recorded(reference):
    summary = json.loads((reference / "summary.json").read_text())
    from lecun_jax import data

    ds = data.select_train(data.load("mnist1989"), 300)
    assert summary["data"]["train_sha256"] == data.array_digest(ds.train.images, ds.train.labels)
    assert summary["data"]["test_sha256"] == data.manifest()["arrays"]["mnist1989"]["test"]
    assert (summary["data"]["train_digits"], summary["data"]["test_digits"]) == (300, 2007)
    assert summary["data"]["source"] == {"where": "shipped", "kind": "shipped", "files": {"mnist1989.npz": data.manifest()["files"]["mnist1989.npz"]["sha256"]}}


@pytest.mark.slow
def test_a_run_killed_after_its_last_checkpoint_finishes_its_outputs(tmp_path):
    workdir = tmp_path / "run"
    experiment.train_and_evaluate(_config(), workdir, echo=_quiet)
    plots_before = {p.name: p.read_bytes() for p in (workdir / "plots").iterdir()}
    for name in ("summary.json", "params.npz", "test_outputs.npz"):
        (workdir / name).unlink()
    shutil.rmtree(workdir / "plots")
    lines = []
    summary = experiment.train_and_evaluate(_config(), workdir, echo=lines.append)
    assert any("resuming" in l and "after pass 4" in l for l in lines)
    assert summary["resumed_after_pass"] == 4 and summary["ledger"]["wall_s"] is None
    assert {p.name for p in (workdir / "plots").iterdir()} == set(plots_before)
    for name in ("params.npz", "test_outputs.npz"):
        assert (workdir / name).exists()
    json.loads((workdir / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))


_HOLD = """
import sys, time
from pathlib import Path
from lecun_jax.run import store
Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
lock = store.WorkdirLock(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_one_run_at_a_time_holds_a_workdir_and_a_killed_one_leaves_no_lock(tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(workdir)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirError) as e:
            experiment.train_and_evaluate(_config(), workdir, echo=_quiet, plots=False)
        assert f"is in use by process {holder.pid}" in str(e.value) and "\n" not in str(e.value)
        assert not (workdir / "config.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    experiment.train_and_evaluate(_config(**{"train__passes": 1}), workdir, echo=_quiet, plots=False)
    assert (workdir / "summary.json").exists()


@pytest.mark.slow
def test_two_launches_on_one_workdir_one_trains_the_other_stops_with_one_line(tmp_path):
    workdir = tmp_path / "run"
    args = [sys.executable, str(REPO / "launch.py"), f"--workdir={workdir}", "--config.data.train_size=300",
            "--config.train.passes=3", "--compilation_cache="]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 120
    while not (workdir / ".lock").exists() or not (workdir / ".lock").read_text():
        assert time.time() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    if second.returncode == 0:  # the first had finished already: the second only reports it
        assert "already holds this run, finished" in second.stdout
    else:
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines() == [f"error: {workdir} is in use by process {first.pid} on {os.uname().nodename}; "
                                                       "wait for it to finish, or choose another --workdir"]
    assert len(reporting.read_jsonl(workdir / "metrics.jsonl")) == 6


_RUN_SEEDS = """
import sys
from lecun_jax import config as config_lib
from lecun_jax.run import experiment
c = config_lib.base()
c.data.train_size, c.train.passes, c.num_seeds = 300, int(sys.argv[2]), 3
experiment.train_and_evaluate(c, sys.argv[1], echo=lambda s: None, plots=False)
import jax; print(jax.device_count())
"""


def _seeds_run(workdir, devices, passes=3):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    result = subprocess.run([sys.executable, "-c", _RUN_SEEDS, str(workdir), str(passes)], capture_output=True,
                            text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


@pytest.mark.slow
def test_a_run_resumed_on_another_device_count_relays_its_replicas(tmp_path):
    # 3 seeds on 2 devices run as 2 + 2 (a spare pads the mesh); resumed on 1 device, as 3
    assert _seeds_run(tmp_path / "ref", devices=2) == 2
    assert _seeds_run(tmp_path / "cut", devices=2) == 2
    (tmp_path / "cut" / "summary.json").unlink()
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "3")
    assert _seeds_run(tmp_path / "cut", devices=1) == 1
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["resumed_after_pass"] == 2 and summary["device"]["used"] == 1
    ref, cut = (reporting.read_jsonl(tmp_path / w / "metrics.jsonl") for w in ("ref", "cut"))
    assert [(r["pass"], r["split"], r["replica"]) for r in ref] == [(r["pass"], r["split"], r["replica"]) for r in cut]
    # another replica layout is another compiled program: equal to float rounding, not bit for bit
    for a, b in zip(ref, cut):
        assert a["misses"] == b["misses"] and a["loss"] == pytest.approx(b["loss"], rel=1e-4)
