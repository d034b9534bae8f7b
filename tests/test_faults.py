"""Bad data, diverging runs, kill -9, determinism across processes, sweeps that lose a row."""

import contextlib
import errno
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

from lecun_jax import cli, data, files
from lecun_jax.run import experiment, reporting
from lecun_jax import config as config_lib
from conftest import REPO

ENV = os.environ | {"JAX_PLATFORMS": "cpu"}


def launch(*args, wait=True, sigint=None):
    """Run launch.py. ``sigint`` (signal.SIG_DFL or signal.SIG_IGN) is the child's SIGINT
    disposition at exec, whatever pytest inherited (a background job of a shell without job
    control starts with SIGINT ignored); None leaves it inherited."""
    cmd = [sys.executable, str(REPO / "launch.py"), *args]
    if not wait:
        with _sigint_at_exec(sigint):
            return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


@contextlib.contextmanager
def _sigint_at_exec(sigint):
    """This process's SIGINT set so that a child started inside gets ``sigint`` at exec:
    exec resets a caught signal to its default and keeps an ignored one ignored. Set here,
    not in a preexec_fn, which would fork a multithreaded (JAX) process."""
    if sigint is None:
        yield
        return
    before = signal.signal(signal.SIGINT, signal.default_int_handler if sigint == signal.SIG_DFL else signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


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
        elif kind in ("nan", "inf"):  # float() reads both: the 7th grey value of line 3
            def poison(b):
                lines = b.split(b"\n")
                values = lines[2].split(b" ")
                values[7] = kind.encode()
                lines[2] = b" ".join(values)
                return b"\n".join(lines)
            _rewrite_gz(d / "zip.train.gz", poison)
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
    ("usps", "usps", _esl_fault("nan"), r"zip.train.gz, line 3: a grey value is 'nan', not a finite number"),
    ("usps", "usps", _esl_fault("inf"), r"zip.train.gz, line 3: a grey value is 'inf', not a finite number"),
]


@pytest.mark.slow
@pytest.mark.parametrize("dataset,folder,fault,message", DATA_FAULTS, ids=[m[:40] for *_, m in DATA_FAULTS])
def test_data_faults_name_the_file_and_never_run_on_partial_data(shared_data, tmp_path, dataset, folder, fault, message):
    src = _copy(shared_data / folder, tmp_path / folder)
    fault(src)
    with pytest.raises(data.DataError, match=message):
        data.load(dataset, source_dir=src, data_dir=tmp_path / "tfds")
    assert not any((tmp_path / "tfds").rglob("*.array_record*"))  # nothing half-prepared was kept


@pytest.mark.slow
def test_a_data_fault_through_launch_is_one_line_and_exit_1(shared_data, tmp_path):
    src = _copy(shared_data / "usps", tmp_path / "usps")
    _esl_fault("values")(src)
    result = launch("--config=configs/lecun1989.py:usps", f"--config.data.source_dir={src}", f"--workdir={tmp_path / 'w'}")
    assert result.returncode == 1
    assert "zip.test.gz, line 1: 258 values where 257" in one_error_line(result)
    missing = launch(f"--config.data.source_dir={tmp_path / 'nowhere'}", f"--workdir={tmp_path / 'w2'}")
    assert missing.returncode == 1 and "nowhere: directory not found" in one_error_line(missing)


@pytest.mark.slow
def test_a_nan_grey_value_through_launch_is_one_line_and_exit_1(shared_data, tmp_path):
    src = _copy(shared_data / "usps", tmp_path / "usps")
    _esl_fault("nan")(src)
    result = launch("--config=configs/lecun1989.py:usps", f"--config.data.source_dir={src}", f"--workdir={tmp_path / 'w'}")
    assert result.returncode == 1
    assert one_error_line(result).endswith("zip.train.gz, line 3: a grey value is 'nan', not a finite number")
    assert not (tmp_path / "w" / "metrics.jsonl").exists()  # not a pass trained on it


# --- prepared TFDS copies --------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared_usps(tmp_path_factory):
    """usps prepared from a directory (the package's own official files): (source dir, TFDS dir, prepared folder)."""
    root = tmp_path_factory.mktemp("prepared")
    src = _copy(data.SHIPPED_DIR / "usps", root / "usps_files")
    data.load("usps", source_dir=src, data_dir=root / "tfds")
    (folder,) = (root / "tfds" / "usps").glob("dir-*/*.*.*")
    return src, root / "tfds", folder


def _edit_examples(folder):
    info = folder / "dataset_info.json"
    info.write_text(info.read_text().replace('"7291"', '"5000"'))  # the attack: TFDS then serves 5,000 digits


def _truncate_train(folder):
    (shard,) = folder.glob("usps-train.array_record*")
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)


PREPARED_FAULTS = [
    ("edited example count", _edit_examples, r"usps/train: the prepared copy in .* holds 5,000 examples where 7,291 were prepared"),
    ("truncated array_record", _truncate_train, r"usps: the prepared copy in .* cannot be read \(RuntimeError: .*Riegeli"),
    ("digest record deleted", lambda f: (f / "lecun_jax_digests.json").unlink(), r"has no readable record of what was prepared"),
    ("digest record edited", lambda f: (f / "lecun_jax_digests.json").write_text('{"arrays": {"train": "0"}}'),
     r"usps/train: the prepared copy in .* holds arrays that differ from the ones prepared"),
    ("dataset_info.json garbled", lambda f: (f / "dataset_info.json").write_text("{"), r"usps: the prepared copy in .* cannot be read"),
]


@pytest.mark.slow
@pytest.mark.parametrize("what,fault,message", PREPARED_FAULTS, ids=[p[0] for p in PREPARED_FAULTS])
def test_a_damaged_prepared_copy_from_a_source_dir_is_refused(prepared_usps, tmp_path, what, fault, message):
    src, tfds, folder = prepared_usps
    copy = _copy(tfds, tmp_path / "tfds")
    damaged = copy / folder.relative_to(tfds)
    fault(damaged)
    with pytest.raises(data.DataError, match=message) as e:
        data.load("usps", source_dir=src, data_dir=copy)
    assert str(e.value).endswith("; delete that folder and run again") and f"{damaged}" in str(e.value)
    if what != "edited example count":
        return
    shutil.rmtree(damaged)  # what the message says to do: prepared again, whole
    again = data.load("usps", source_dir=src, data_dir=copy)
    assert (len(again.train), len(again.test)) == (7291, 2007)
    assert again.source["kind"] == "directory" and again.source["files"]["zip.train.gz"] == data.sha256(src / "zip.train.gz")


@pytest.mark.slow
def test_a_damaged_prepared_copy_through_launch_is_one_line_and_exit_1(prepared_usps, tmp_path):
    src, tfds, folder = prepared_usps
    copy = _copy(tfds, tmp_path / "tfds")
    _edit_examples(copy / folder.relative_to(tfds))
    result = launch("--config=configs/lecun1989.py:usps", f"--config.data.source_dir={src}",
                    f"--config.data.tfds_dir={copy}", f"--workdir={tmp_path / 'w'}")
    assert result.returncode == 1
    assert "holds 5,000 examples where 7,291 were prepared; delete that folder" in one_error_line(result)
    assert not (tmp_path / "w" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_corrupted_shipped_prepared_arrays_through_launch_name_the_copy_to_delete(tmp_path):
    data.load("usps", data_dir=tmp_path / "tfds")  # the shipped copy, prepared (and its decoded cache written)
    (folder,) = (tmp_path / "tfds" / "usps" / "shipped").glob("*.*.*")
    _truncate_train(folder)
    result = launch("--config=configs/lecun1989.py:usps", f"--config.data.tfds_dir={tmp_path / 'tfds'}",
                    f"--workdir={tmp_path / 'w'}")
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"usps: the prepared copy in {folder} cannot be read (RuntimeError: " in line
    assert line.endswith("delete that folder and run again")
    assert not (tmp_path / "w" / "metrics.jsonl").exists()


# --- numerical faults ----------------------------------------------------------------------

DIVERGING = ["--config.model.output_activation=linear", "--config.model.activation=relu",
             "--config.optimizer.schedule=linear", "--config.optimizer.final_learning_rate=1e4",
             "--config.data.train_size=300", "--config.train.passes=3"]  # pass 1 at 0.03 is fine, pass 2 at 5,000 is not


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_same_config_same_numbers_in_two_processes(tmp_path):
    args = ["--config=configs/ablations.py:relu_dropout", "--config.data.train_size=500", "--config.train.passes=2"]
    a, b = launch(*args, f"--workdir={tmp_path / 'a'}"), launch(*args, f"--workdir={tmp_path / 'b'}")
    assert a.returncode == b.returncode == 0
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    assert (tmp_path / "a" / "params.npz").read_bytes() == (tmp_path / "b" / "params.npz").read_bytes()


def _sigint_after_the_first_pass(args, workdir, sigint):
    """Start a run with the given SIGINT disposition, send it SIGINT once a pass is done."""
    proc = launch(*args, wait=False, sigint=sigint)
    deadline = time.monotonic() + 300
    while _passes_done(workdir) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, ("the run ended before it could be interrupted", proc.communicate())
    proc.send_signal(signal.SIGINT)
    return proc


@pytest.mark.slow
def test_ctrl_c_is_one_line_exit_130_and_the_rerun_resumes(tmp_path):
    # SIGINT at its default disposition, as in a terminal, even when pytest itself runs with it ignored.
    args = ["--config.train.passes=6", f"--workdir={tmp_path / 'w'}"]
    proc = _sigint_after_the_first_pass(args, tmp_path / "w", signal.SIG_DFL)
    _, stderr = proc.communicate(timeout=120)  # and no hang at exit
    assert proc.returncode == 130, (stderr, _[-600:])
    assert [l for l in stderr.splitlines() if l.startswith("error: ")] == ["error: interrupted; run the same command again to resume"]
    assert "Traceback" not in stderr and _passes_done(tmp_path / "w") < 6
    final = launch(*args)
    assert final.returncode == 0, final.stderr
    assert "resuming" in final.stdout
    assert [(r["pass"], r["split"]) for r in reporting.read_jsonl(tmp_path / "w" / "metrics.jsonl")] == [
        (p, s) for p in range(1, 7) for s in ("train", "test")]


@pytest.mark.slow
def test_ctrl_c_ignored_at_exec_leaves_the_run_going_to_the_end(tmp_path):
    # SIGINT ignored at exec (nohup, a background job of a shell without job control): honoured.
    args = ["--config.train.passes=3", f"--workdir={tmp_path / 'w'}"]
    proc = _sigint_after_the_first_pass(args, tmp_path / "w", signal.SIG_IGN)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "error: " not in stderr and "Traceback" not in stderr, stderr
    assert [(r["pass"], r["split"]) for r in reporting.read_jsonl(tmp_path / "w" / "metrics.jsonl")] == [
        (p, s) for p in range(1, 4) for s in ("train", "test")]


@pytest.mark.slow
def test_disk_full_is_one_line_exit_1_and_the_rerun_loses_nothing(tmp_path, monkeypatch, capsys):
    c = config_lib.base()
    c.data.train_size, c.train.passes = 200, 2
    workdir = tmp_path / "w"
    write = files.atomic_write_bytes  # every file of a run is written through it

    def full_disk(path, payload):
        if os.path.basename(path) == reporting.METRICS and payload:  # the records of pass 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write(path, payload)

    monkeypatch.setattr(files, "atomic_write_bytes", full_disk)
    with pytest.raises(SystemExit) as e:
        cli.run(c, str(workdir), echo=lambda line: None, plots=False)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err == (f"error: disk full: {workdir / reporting.METRICS}: No space left on device; "
                   "free some space and run the same command again to resume\n")
    monkeypatch.setattr(files, "atomic_write_bytes", write)  # space freed
    cli.run(c, str(workdir), echo=lambda line: None, plots=False)
    assert [(r["pass"], r["split"]) for r in reporting.read_jsonl(workdir / reporting.METRICS)] == [
        (1, "train"), (1, "test"), (2, "train"), (2, "test")]


def _raises(exception):
    def train_and_evaluate(*args, **kwargs):
        raise exception
    return train_and_evaluate


def _chained(outer, inner):
    try:
        try:
            raise inner
        except OSError:
            raise outer
    except type(outer) as e:
        return e


@pytest.mark.parametrize("exception,code,message", [
    # a library (TFDS, array_record) re-raises a full disk wrapped in its own error
    (_chained(RuntimeError("checkpoint save failed"), OSError(errno.ENOSPC, "No space left on device", "/r/checkpoints/2")),
     1, "error: disk full: /r/checkpoints/2: No space left on device; free some space and run the same command again to resume"),
    (OSError(errno.EIO, "Input/output error", "/r/params.npz"), 1, "error: /r/params.npz: Input/output error"),
    (KeyboardInterrupt(), 130, "error: interrupted; run the same command again to resume"),
])
def test_io_failures_and_interrupts_anywhere_in_a_run_are_one_line(tmp_path, monkeypatch, capsys, exception, code, message):
    monkeypatch.setattr(experiment, "train_and_evaluate", _raises(exception))
    with pytest.raises(SystemExit) as e:
        cli.run(config_lib.base(), str(tmp_path / "w"))
    assert e.value.code == code and capsys.readouterr().err == message + "\n"


def test_a_bug_after_a_handled_file_error_still_shows_its_traceback(tmp_path, monkeypatch):
    bug = _chained(KeyError("a bug"), FileNotFoundError(errno.ENOENT, "No such file or directory", "x"))
    monkeypatch.setattr(experiment, "train_and_evaluate", _raises(bug))
    with pytest.raises(KeyError, match="a bug"):
        cli.run(config_lib.base(), str(tmp_path / "w"))

