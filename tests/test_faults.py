"""Bad data, diverging runs, kill -9, determinism across processes, sweeps that lose a row."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lecun_jax import data, reporting
from conftest import REPO

ENV = os.environ | {"JAX_PLATFORMS": "cpu"}


def launch(*args, wait=True):
    cmd = [sys.executable, str(REPO / "launch.py"), *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


def one_error_line(result) -> str:
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


# --- data faults --------------------------------------------------------------------------


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _rewrite_gz(path, transform):
    payload = gzip.open(path, "rb").read()
    with gzip.open(path, "wb") as f:
        f.write(transform(payload))


def _idx_fault(kind):
    def fault(d):
        if kind == "magic":
            _rewrite_gz(d / "t10k-labels-idx1-ubyte.gz", lambda b: (0x0803).to_bytes(4, "big") + b[4:])
        elif kind == "count_mismatch":  # 10,000 images but 9,999 labels
            _rewrite_gz(d / "t10k-labels-idx1-ubyte.gz", lambda b: b[:4] + (9999).to_bytes(4, "big") + b[8:-1])
        elif kind == "label_range":
            _rewrite_gz(d / "t10k-labels-idx1-ubyte.gz", lambda b: b[:8] + bytes([11]) + b[9:])
        elif kind == "truncated":
            blob = (d / "train-images-idx3-ubyte.gz").read_bytes()
            (d / "train-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])
        elif kind == "missing_file":
            (d / "train-labels-idx1-ubyte.gz").unlink()
    return fault


def _esl_fault(kind):
    def fault(d):
        if kind == "values":
            _rewrite_gz(d / "zip.test.gz", lambda b: b.replace(b"\n", b" 0.5\n", 1))
        elif kind == "label_range":
            _rewrite_gz(d / "zip.test.gz", lambda b: b"12.0000" + b[b.index(b" "):])
        elif kind == "corrupt":
            blob = bytearray((d / "zip.train.gz").read_bytes())
            blob[len(blob) // 2] ^= 0xFF
            (d / "zip.train.gz").write_bytes(bytes(blob))
    return fault


DATA_FAULTS = [
    ("mnist1989", "mnist", _idx_fault("magic"), r"t10k-labels-idx1-ubyte.gz: IDX magic number 0x00000803 where 0x00000801"),
    ("mnist1989", "mnist", _idx_fault("count_mismatch"), r"t10k-images-idx3-ubyte.gz holds 10000 images but .* holds 9999 labels"),
    ("mnist1989", "mnist", _idx_fault("label_range"), r"t10k-labels-idx1-ubyte.gz: label 11 at example 0 is outside 0-9"),
    ("mnist1989", "mnist", _idx_fault("truncated"), r"train-images-idx3-ubyte.gz: not a complete gzip file"),
    ("mnist1989", "mnist", _idx_fault("missing_file"), r"train-labels-idx1-ubyte.gz: file not found"),
    ("usps", "usps", _esl_fault("values"), r"zip.test.gz, line 1: 258 values where 257"),
    ("usps", "usps", _esl_fault("label_range"), r"zip.test.gz: label 12 at example 0 is outside 0-9"),
    ("usps", "usps", _esl_fault("corrupt"), r"zip.train.gz: not a complete gzip file"),
]


@pytest.mark.parametrize("dataset,folder,fault,message", DATA_FAULTS, ids=[m[:40] for *_, m in DATA_FAULTS])
def test_data_faults_name_the_file_and_never_run_on_partial_data(shared_data, tmp_path, dataset, folder, fault, message):
    src = _copy(shared_data / folder, tmp_path / folder)
    fault(src)
    with pytest.raises(data.DataError, match=message):
        data.load(dataset, source_dir=src, data_dir=tmp_path / "tfds")
    assert not any((tmp_path / "tfds").rglob("*.array_record*"))  # nothing half-prepared was kept


def test_a_data_fault_through_launch_is_one_line_and_exit_1(shared_data, tmp_path):
    src = _copy(shared_data / "usps", tmp_path / "usps")
    _esl_fault("values")(src)
    result = launch("--config=configs/lecun1989.py:usps", f"--config.data.source_dir={src}", f"--workdir={tmp_path / 'w'}")
    assert result.returncode == 1
    assert "zip.test.gz, line 1: 258 values where 257" in one_error_line(result)
    missing = launch(f"--config.data.source_dir={tmp_path / 'nowhere'}", f"--workdir={tmp_path / 'w2'}")
    assert missing.returncode == 1 and "nowhere: directory not found" in one_error_line(missing)


# --- numerical faults ----------------------------------------------------------------------

DIVERGING = ["--config.model.output_activation=linear", "--config.model.activation=relu",
             "--config.optimizer.schedule=linear", "--config.optimizer.final_learning_rate=1e4",
             "--config.data.train_size=300", "--config.train.passes=3"]  # pass 1 at 0.03 is fine, pass 2 at 5,000 is not


def test_divergence_stops_at_the_end_of_the_pass_and_keeps_what_was_good(tmp_path):
    result = launch(*DIVERGING, f"--workdir={tmp_path / 'w'}")
    assert result.returncode == 1
    line = one_error_line(result)
    assert "pass 2: loss became NaN/Inf; its learning rate, 5000.02" in line and "try a smaller one" in line
    assert "the checkpoint of pass 1" in line
    records = reporting.read_jsonl(tmp_path / "w" / "metrics.jsonl")
    assert [(r["pass"], r["loss"] is None) for r in records] == [(1, False), (1, False), (2, True), (2, True)]
    assert sorted(p.name for p in (tmp_path / "w" / "checkpoints").iterdir() if p.name.isdigit()) == ["1"]
    assert not (tmp_path / "w" / "summary.json").exists()


def test_a_sweep_survives_a_diverging_row(tmp_path):
    result = launch(*DIVERGING[:4], "--config.data.train_size=300", "--config.train.passes=2",
                    "--config.sweep.grid=optimizer.final_learning_rate=0.03,1e4", f"--workdir={tmp_path / 's'}")
    assert result.returncode == 1
    assert "1 of 2 runs failed: run-final_learning_rate=10000.0" in one_error_line(result)
    rows = json.loads((tmp_path / "s" / "sweep.json").read_text())["rows"]
    assert rows[0]["status"] == "ok" and rows[0]["test_error_mean"] > 0
    assert rows[1]["status"].startswith("failed: pass 2: loss became NaN/Inf")
    assert "failed: pass 2" in (tmp_path / "s" / "table.md").read_text()


# --- interruptions and determinism ---------------------------------------------------------

RUN = ["--config=configs/ablations.py:relu_dropout", "--config.data.train_size=1500", "--config.train.passes=8"]


def _passes_done(workdir) -> int:
    try:
        return max((r["pass"] for r in reporting.read_jsonl(workdir / "metrics.jsonl")), default=0)
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_numbers(tmp_path):
    """Dropout, shifts, AdamW and its schedule: everything a resume could get wrong."""
    reference = launch(*RUN, f"--workdir={tmp_path / 'ref'}")
    assert reference.returncode == 0, reference.stderr
    workdir, rng = tmp_path / "killed", np.random.default_rng(0)
    kills = []
    # One kill during start-up or compilation, then kills after 2, 4 and 6 passes, each a random
    # few milliseconds in (during the next pass, a checkpoint or a metrics write).
    plan = [("start", rng.uniform(0.5, 3.0))] + [("pass", k) for k in (2, 4, 6)]
    for kind, value in plan:
        proc = launch(*RUN, f"--workdir={workdir}", wait=False)
        deadline = time.monotonic() + 300
        if kind == "start":
            time.sleep(value)
        else:
            while _passes_done(workdir) < value and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append((kind, value, _passes_done(workdir)))
        else:
            proc.communicate()
    print("kills (kind, when, passes done):", kills)
    assert len(kills) >= 3, kills  # the process was really killed, mid-run, several times
    final = launch(*RUN, f"--workdir={workdir}")
    assert final.returncode == 0, final.stderr
    assert "resuming" in final.stdout
    assert reporting.read_jsonl(workdir / "metrics.jsonl") == reporting.read_jsonl(tmp_path / "ref" / "metrics.jsonl")
    with np.load(workdir / "params.npz") as a, np.load(tmp_path / "ref" / "params.npz") as b:
        for k in b.files:
            np.testing.assert_array_equal(a[k], b[k])


def test_same_config_same_numbers_in_two_processes(tmp_path):
    args = ["--config=configs/ablations.py:relu_dropout", "--config.data.train_size=500", "--config.train.passes=2"]
    a, b = launch(*args, f"--workdir={tmp_path / 'a'}"), launch(*args, f"--workdir={tmp_path / 'b'}")
    assert a.returncode == b.returncode == 0
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    assert (tmp_path / "a" / "params.npz").read_bytes() == (tmp_path / "b" / "params.npz").read_bytes()
