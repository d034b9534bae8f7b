"""Two processes on this machine (loopback coordinator, one CPU device each) run one
multi-seed job: one writer, killed with SIGKILL and restarted, ending with the metrics
of a single process with the same two devices."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lecun_jax.run import reporting
from conftest import REPO
from test_faults import DIVERGING

ARGS = ["--config.data.train_size=300", "--config.train.passes=5", "--config.num_seeds=4", "--compilation_cache="]
RECORDS_PER_PASS = 4 * 2  # replicas x splits


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONUNBUFFERED="1")


def _start_job(workdir, logs, tag):
    port = _free_port()
    procs = []
    for i in range(2):
        log = open(logs / f"{tag}_{i}.log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, str(REPO / "launch.py"), f"--workdir={workdir}", *ARGS,
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=logs, env=_env(1)))
    return procs


def _passes_done(workdir) -> int:
    try:
        return len(reporting.read_jsonl(workdir / "metrics.jsonl")) // RECORDS_PER_PASS
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
def test_two_processes_killed_and_restarted_end_with_a_single_process_metrics(tmp_path):
    single = tmp_path / "single"
    result = subprocess.run([sys.executable, str(REPO / "launch.py"), f"--workdir={single}", *ARGS],
                            capture_output=True, text=True, cwd=tmp_path, env=_env(2))
    assert result.returncode == 0, result.stderr

    workdir, logs = tmp_path / "shared", tmp_path
    procs = _start_job(workdir, logs, "first")
    deadline = time.time() + 240
    while _passes_done(workdir) < 2:
        assert time.time() < deadline and all(p.poll() is None for p in procs), (logs / "first_0.log").read_text()
        time.sleep(0.02)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()
    killed_after = _passes_done(workdir)
    assert 2 <= killed_after < 5

    procs = _start_job(workdir, logs, "again")
    for p in procs:
        assert p.wait(timeout=300) == 0, (logs / "again_0.log").read_text() + (logs / "again_1.log").read_text()
    outputs = [(logs / f"again_{i}.log").read_text() for i in range(2)]
    assert not any("Traceback" in o for o in outputs), outputs
    assert "resuming" in outputs[0] and "done:" in outputs[0]
    assert "eval:" not in outputs[1] and "done:" not in outputs[1]  # one writer: process 1 prints and writes nothing of the run

    assert reporting.read_jsonl(workdir / "metrics.jsonl") == reporting.read_jsonl(single / "metrics.jsonl")
    jax.tree.map(np.testing.assert_array_equal, reporting.load_params(workdir / "params.npz"),
                 reporting.load_params(single / "params.npz"))
    summary = __import__("json").loads((workdir / "summary.json").read_text())
    assert summary["device"]["processes"] == 2 and summary["device"]["used"] == 2
    assert summary["resumed_after_pass"] == killed_after
    assert sorted(p.name for p in (workdir / "plots").iterdir()) == ["confusion.png", "curves.png", "misclassified.png"]


@pytest.mark.slow
def test_a_partial_multiprocess_command_line_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "launch.py"), "--coordinator_address=127.0.0.1:1234", "--num_processes=2"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: a multi-process job needs --coordinator_address, --num_processes and --process_id; missing --process_id"]


SWEEP = ["--config.data.train_size=200", "--config.train.passes=2", "--config.num_seeds=2", "--compilation_cache=",
         "--config.sweep.grid=optimizer.learning_rate=0.01,0.03;train.passes=1,2", "--config.sweep.together=true"]


def _table(workdir):
    import csv

    rows = list(csv.DictReader((workdir / "table.csv").open()))
    for r in rows:  # where and how fast it ran differ; what it computed must not
        del r["wall_s"], r["workdir"]
    return rows


@pytest.mark.slow
def test_a_sweep_spread_over_two_processes_gives_the_one_process_table(tmp_path):
    one = subprocess.run([sys.executable, str(REPO / "launch.py"), f"--workdir={tmp_path / 'one'}", *SWEEP],
                         capture_output=True, text=True, cwd=tmp_path, env=_env(1))
    assert one.returncode == 0, one.stderr
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(REPO / "launch.py"), f"--workdir={tmp_path / 'two'}", *SWEEP,
                               f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=_env(1))
             for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert not any("Traceback" in o for o in outputs)
    # two units of rows that differ only in the learning rate, one per process (each trains
    # its two rows together in one program); process 0 wrote the table
    assert "== [1, 3] " in outputs[0] and "== [2, 4] " not in outputs[0]
    assert "== [2, 4] " in outputs[1] and "== [1, 3] " not in outputs[1] and "wrote" not in outputs[1]
    assert len(_table(tmp_path / "two")) == 4
    assert _table(tmp_path / "two") == _table(tmp_path / "one")


@pytest.mark.slow
def test_a_slurm_job_step_is_detected_and_gives_the_same_run(tmp_path):
    """Two processes started as ``srun --ntasks=2`` starts them: JAX finds the coordinator,
    the count and the index in SLURM's variables (no flags)."""
    args = ["--config.data.train_size=300", "--config.train.passes=2", "--config.num_seeds=4", "--compilation_cache="]
    single = subprocess.run([sys.executable, str(REPO / "launch.py"), f"--workdir={tmp_path / 'single'}", *args],
                            capture_output=True, text=True, cwd=tmp_path, env=_env(2))
    assert single.returncode == 0, single.stderr
    job = str(_free_port())  # JAX derives the coordinator's port from the job id
    procs = [subprocess.Popen([sys.executable, str(REPO / "launch.py"), f"--workdir={tmp_path / 'slurm'}", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                              env=dict(_env(1), SLURM_JOB_ID=job, SLURM_NTASKS="2", SLURM_PROCID=str(i), SLURM_LOCALID=str(i),
                                       SLURM_STEP_NODELIST="localhost", SLURM_NODELIST="localhost", SLURM_STEP_NUM_TASKS="2",
                                       SLURM_STEP_TASKS_PER_NODE="2", SLURM_TASKS_PER_NODE="2"))
             for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and not any("Traceback" in o for o in outputs), outputs
    summary = __import__("json").loads((tmp_path / "slurm" / "summary.json").read_text())
    assert summary["device"]["processes"] == 2
    assert reporting.read_jsonl(tmp_path / "slurm" / "metrics.jsonl") == reporting.read_jsonl(tmp_path / "single" / "metrics.jsonl")


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from lecun_jax.run import store
lock = store.WorkdirLock(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_job_whose_workdir_is_locked_stops_together_with_one_line_each(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(workdir)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.time()
        procs = _start_job(workdir, tmp_path, "locked")
        ends = {}
        while len(ends) < 2 and time.time() < start + 120:
            for i, p in enumerate(procs):
                if i not in ends and p.poll() is not None:
                    ends[i] = time.time()
            time.sleep(0.05)
        for p in procs:
            if p.poll() is None:
                p.kill()
    finally:
        holder.kill()
        holder.wait()
    outputs = [(tmp_path / f"locked_{i}.log").read_text() for i in range(2)]
    assert len(ends) == 2, f"a process still ran after 120 s: {outputs}"
    print("exit times after launch:", {i: round(t - start, 2) for i, t in ends.items()})
    assert max(ends.values()) - min(ends.values()) < 10, (ends, outputs)  # the other one followed within seconds
    assert [p.returncode for p in procs] == [2, 2], outputs
    lines = [o.strip().splitlines() for o in outputs]
    assert lines[0] == [f"error: {workdir} is in use by process {holder.pid} on {socket.gethostname()}; "
                        "wait for it to finish, or choose another --workdir"], outputs
    assert lines[1] == [f"error: process 0 stopped: {lines[0][0].removeprefix('error: ')}"], outputs


# sitecustomize.py for a process whose file writes are watched: an audit hook logs, as it
# happens, every file or folder it creates, writes, renames or removes inside
# $LECUN_JAX_WATCH, whichever module does it.
_WATCH = """
import os, sys
_root = os.path.abspath(os.environ["LECUN_JAX_WATCH"])
_log = open(os.environ["LECUN_JAX_WATCH_LOG"], "a", buffering=1)
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_CHANGES = ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate")

def _watch(event, args):
    if event == "open":
        paths = [args[0]] if isinstance(args[2], int) and args[2] & _WRITE else []
    elif event in _CHANGES:
        paths = list(args[:2]) if event == "os.rename" else [args[0]]
    else:
        return
    for path in paths:
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(path))
            # not the folder itself, nor tempfile's unnamed file in it: the command line's check
            # that --workdir takes a file, before any data is loaded
            if path.startswith(_root + os.sep) and not (os.path.dirname(path) == _root
                                                        and os.path.basename(path).startswith("tmp")):
                _log.write(f"{event} {path}\\n")

sys.addaudithook(_watch)
"""


@pytest.mark.slow
def test_a_diverging_job_writes_its_metrics_once_from_process_0_and_nothing_from_process_1(tmp_path, mnist1989):
    # mnist1989: the digits prepared before the job starts, which two processes would race to do
    hooks, workdir = tmp_path / "hooks", tmp_path / "run"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_WATCH)
    port = _free_port()
    procs = []
    for i in range(2):
        env = dict(_env(1), PYTHONPATH=os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])),
                   LECUN_JAX_WATCH=str(workdir), LECUN_JAX_WATCH_LOG=str(tmp_path / f"writes_{i}.log"))
        procs.append(subprocess.Popen(
            [sys.executable, str(REPO / "launch.py"), f"--workdir={workdir}", *DIVERGING, "--config.num_seeds=2",
             "--compilation_cache=", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    # process 1 stops with the same error, or on process 0's word; or, when process 0 (which
    # holds the job's coordinator) is gone first, the runtime ends it
    assert procs[0].returncode == 1 and procs[1].returncode != 0, outputs
    assert "pass 2: loss became NaN/Inf" in outputs[0] and not any("Traceback" in o for o in outputs), outputs
    writes = [(tmp_path / f"writes_{i}.log").read_text().splitlines() for i in range(2)]
    assert any(w.endswith(f"{os.sep}metrics.jsonl") for w in writes[0]), writes[0]  # the watch sees the writer's writes
    assert writes[1] == []  # process 1 wrote nothing: not the metrics of the pass that failed, nor any other file
    records = reporting.read_jsonl(workdir / "metrics.jsonl")
    keys = [(r["pass"], r["split"], r["replica"]) for r in records]
    assert sorted(keys) == sorted(set(keys)) == [(p, s, r) for p in (1, 2) for s in ("test", "train") for r in (0, 1)]
    assert any(r["loss"] is None for r in records if r["pass"] == 2) and all(r["loss"] is not None for r in records if r["pass"] == 1)
