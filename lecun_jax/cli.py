"""What the command (:mod:`lecun_jax.launch`) needs beyond absl: one-line errors and default workdirs.

Every failure a user can cause (a bad flag, a config file or field that does
not exist or holds an invalid value, a workdir of another run or that cannot be
written, a bad data file) ends the process with one line on stderr and a
non-zero exit: 2 for usage and config, 1 for data, numerical and I/O faults
(a full disk included), 130 for Ctrl-C (the table: :mod:`lecun_jax.errors`).
No tracebacks from deep inside XLA.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from absl import flags

from lecun_jax import config as config_lib
from lecun_jax import errors
from lecun_jax.errors import FAULT, INTERRUPTED, USAGE
from lecun_jax.run import experiment, processes

STOP_GRACE_S = 1.0  # a stopping process of a job waits this long for the others to read why


def fail(message: str, code: int = USAGE):
    """One line on stderr and exit ``code``; in a multi-process job every process stops with it."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    _stop_job(message, code)
    sys.exit(code)


def _stop_job(line: str, code: int) -> None:
    """In a multi-process job: tells the others, then exits at once, without the runtime's
    shutdown barrier, which would wait for processes that are stopping too."""
    if processes.announce_stop(line, code):
        time.sleep(STOP_GRACE_S)  # process 0 holds the job's store: the others read it from there
        sys.stdout.flush()  # os._exit skips it: keep what the run printed
        os._exit(code)


def _stopped_elsewhere(line: str, code: int) -> None:
    sys.stdout.flush()
    print(f"error: {line}", file=sys.stderr, flush=True)
    os._exit(code)


@contextlib.contextmanager
def stopping_together():
    """A multi-process job stops together: when another process stops with an error,
    this one stops within a second with that process's line and exit code; when this
    one meets a bug, its traceback is printed and the others stop too."""
    done = processes.watch_for_stop(_stopped_elsewhere)
    try:
        yield
    except Exception as e:
        if done is None:
            raise
        traceback.print_exc()
        _stop_job(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}", FAULT)
    finally:
        if done is not None:
            done.set()


def load_config_file(spec: str):
    """``path[:arg]`` -> the ConfigDict its ``get_config(arg)`` returns (exit 2 on failure)."""
    path, _, arg = spec.partition(":")
    try:
        return config_lib.load_file(path, arg or None)
    except config_lib.ConfigError as e:  # its message starts with the file's name: said once
        fail(f"--config={spec}: {str(e).removeprefix(f'{spec}: ').removeprefix(f'{path}: ')}")


def with_overrides(config, overrides: dict):
    """A copy of ``config`` with the command line's ``overrides`` (field -> value) set (exit 2
    if one cannot be); ``config`` itself stays the config file's own."""
    config = copy.deepcopy(config)
    for path, value in overrides.items():
        try:
            config_lib.set_path(config, path, value)
        except (KeyError, AttributeError, TypeError) as e:  # a config file that changed a field's type or dropped it
            fail(f"--config.{path}={value!r}: cannot be set ({type(e).__name__}: {' '.join(str(e).split())})")
    return config


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags parser that turns every parsing problem into one line and exit code 2."""
    try:
        return flags.FLAGS(argv)
    except flags.UnrecognizedFlagError as e:
        if e.flagname.startswith("config."):  # every field has a flag: this one names none
            path = e.flagname.removeprefix("config.")
            fail(f"--{e.flagname}: no such config field; {config_lib.field_hint(path, list(config_lib.FIELDS))}")
        fail(_first_line(e))
    except flags.Error as e:
        fail(_first_line(e))


def _first_line(e: Exception) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


def config_label(spec: str) -> str:
    path, _, arg = spec.partition(":")
    return Path(path).stem + (f":{arg}" if arg else "")


def default_workdir(spec: str, config, loaded, root: str = "runs") -> str:
    """runs/<config>_<arg>, plus a hash of the config when overrides changed it from ``loaded``
    (what the config file returned)."""
    path, _, arg = spec.partition(":")
    name = f"{Path(path).stem}_{arg or config.data.name}"
    as_json = json.loads(config.to_json())
    if as_json != json.loads(loaded.to_json()):
        name += "_" + hashlib.sha256(json.dumps(as_json, sort_keys=True).encode()).hexdigest()[:8]
    return os.path.join(root, name)


_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")


def maybe_initialize_distributed() -> None:
    """``jax.distributed.initialize()`` when a multi-process cluster environment is present.

    JAX reads the coordinator, process count and index from the environment
    (its own JAX_* variables, SLURM, Open MPI, Cloud TPU); a lone process skips it.
    """
    present = [v for v in _CLUSTER_ENV if os.environ.get(v)]
    if present and not (present == ["SLURM_STEP_NUM_TASKS"] and os.environ["SLURM_STEP_NUM_TASKS"] == "1"):
        import jax

        jax.distributed.initialize()


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}


def os_error_in(e: BaseException) -> OSError | None:
    """``e`` if it is an OSError, or the storage failure (disk full, quota, I/O, read-only)
    that caused it: TFDS and array_record re-raise those wrapped in their own exceptions."""
    if isinstance(e, OSError):
        return e
    seen = {id(e)}
    while (e := e.__cause__ or e.__context__) is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
            return e
        seen.add(id(e))
    return None


def io_message(e: OSError) -> str:
    """One line for an I/O failure: what, where, and for a full disk what to do."""
    where = f"{e.filename}: " if e.filename else ""
    if e.errno == errno.ENOSPC:
        return f"disk full: {where}{e.strerror or 'No space left on device'}; free some space and run the same command again to resume"
    return f"{where}{e.strerror or e}"


def prepare_workdir(workdir: str | os.PathLike) -> None:
    """Creates ``workdir`` (and checks it takes a file) before any data is loaded; exit 2 if it
    cannot be (a file, a path under a file, too long a name, no permission, a read-only place)."""
    path = Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        reason = {
            errno.EEXIST: "exists and is not a directory",
            errno.ENOTDIR: "a part of the path is a file, not a directory",
            errno.ENAMETOOLONG: "a name in the path is too long",
        }.get(e.errno, f"cannot be created or written ({e.strerror or e})")
        fail(f"--workdir={workdir}: {reason}", USAGE)


@contextlib.contextmanager
def one_line_errors():
    """Every expected failure inside the block as one line and its exit code."""
    try:
        yield
    except errors.USER_ERRORS as e:
        fail(str(e), errors.exit_code(e))
    except KeyboardInterrupt:
        fail("interrupted; run the same command again to resume", INTERRUPTED)
    except Exception as e:
        if (os_error := os_error_in(e)) is None:
            raise  # not an expected failure: a bug, with its traceback
        fail(io_message(os_error), FAULT)


def run(config, workdir: str, **kwargs) -> dict:
    """train_and_evaluate with every expected failure as one line and an exit code."""
    with one_line_errors():
        config_lib.validate(config)
        prepare_workdir(workdir)
        return experiment.train_and_evaluate(config, workdir, **kwargs)


def run_sweep(spec: str, config, overrides: dict, workdir: str, **kwargs) -> list[dict]:
    """sweep.run with the command line's ``overrides`` (field -> value), which apply to every
    row; exit 1 if any row failed."""
    from lecun_jax.studies import sweep

    with one_line_errors():
        prepare_workdir(workdir)
        records = sweep.run(spec.partition(":")[0], config, overrides, workdir, **kwargs)
    if sweep.failed(records):
        fail(f"{len(sweep.failed(records))} of {len(records)} runs failed: {', '.join(sweep.failed(records))}", FAULT)
    return records
