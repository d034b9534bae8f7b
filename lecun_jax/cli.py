"""What ``launch.py`` needs beyond absl: one-line errors and default workdirs.

Every failure a user can cause (a bad flag, a config file or field that does
not exist or holds an invalid value, a workdir of another run or that cannot be
written, a bad data file) ends the process with one line on stderr and a
non-zero exit: 2 for usage and config, 1 for data, numerical and I/O faults
(a full disk included), 130 for Ctrl-C. No tracebacks from deep inside XLA.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

from absl import flags

from lecun_jax import config as config_lib
from lecun_jax import data as data_lib
from lecun_jax.run import experiment, processes
from lecun_jax.core.modules import PartError
from lecun_jax.run.workdir import WorkdirError

USAGE, FAULT, INTERRUPTED = 2, 1, 130
STOP_GRACE_S = 1.0  # a stopping process of a job waits this long for the others to read why
_CONFIG_FLAG = re.compile(r"^--?config(=|$)")
_OVERRIDE = re.compile(r"^--?config\.([^=]+)(=.*)?$")


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


def config_spec(argv: list[str]) -> str | None:
    for i, a in enumerate(argv[1:], 1):
        if _CONFIG_FLAG.match(a):
            return a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else None)
    return None


def default_config_argv(default: str) -> None:
    """Puts ``--config=...`` first in sys.argv, ``default`` when absent.

    ml_collections parses a default config, with its overrides, while the flag
    is being defined, where a bad override can only raise a traceback; with the
    flag on the command line, parsing happens in :func:`parse_flags`. And it
    wants the file before any ``--config.field=`` override: so it goes first.
    """
    spec = config_spec(sys.argv)
    if spec is None:
        sys.argv.insert(1, f"--config={default}")
        return
    i = next(i for i, a in enumerate(sys.argv[1:], 1) if _CONFIG_FLAG.match(a))
    taken = sys.argv[i : i + (1 if "=" in sys.argv[i] else 2)]
    del sys.argv[i : i + len(taken)]
    sys.argv.insert(1, f"--config={spec}")


def load_config_file(spec: str):
    """``path[:arg]`` -> the ConfigDict its ``get_config(arg)`` returns (exit 2 on failure)."""
    path, _, arg = spec.partition(":")
    try:
        return config_lib.load_file(path, arg or None)
    except config_lib.ConfigError as e:  # its message starts with the file's name: said once
        fail(f"--config={spec}: {str(e).removeprefix(f'{spec}: ').removeprefix(f'{path}: ')}")


def override_paths(argv: list[str]) -> list[str]:
    """The config fields set on the command line (--config.a.b=...)."""
    return [m.group(1) for a in argv[1:] if (m := _OVERRIDE.match(a))]


def _diagnose_overrides(argv: list[str], spec: str) -> str | None:
    fields = config_lib.flatten(load_config_file(spec))
    prefixes = {".".join(k.split(".")[:i]) for k in fields for i in range(1, k.count(".") + 1)}
    for path in override_paths(argv):
        if path not in fields and path not in prefixes:
            return f"--config.{path}: no such config field; {config_lib.field_hint(path, list(fields))}"
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags parser that turns every parsing problem into one line and exit code 2."""
    spec = config_spec(argv)
    if spec is not None:
        path = spec.partition(":")[0]
        if not Path(path).is_file():
            fail(f"--config={spec}: config file {path} not found")
        load_config_file(spec)  # not Python, raises, or returns no ConfigDict: one line before absl sees it
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        lines = [l for l in str(e).splitlines() if l.strip()]
        # a config file that raised: keep the flag and the exception, drop the traceback between
        fail(f"{lines[0]} {lines[-1]}" if "Traceback" in str(e) else lines[0])
    except Exception as e:  # ml_collections raises AttributeError/KeyError for unknown fields
        problem = _diagnose_overrides(argv, spec) if spec else None
        fail(problem or f"--config={spec}: {type(e).__name__}: {e}")


def config_label(spec: str) -> str:
    path, _, arg = spec.partition(":")
    return Path(path).stem + (f":{arg}" if arg else "")


def default_workdir(spec: str, config, root: str = "runs") -> str:
    """runs/<config>_<arg>, plus a hash of the config when overrides changed it."""
    path, _, arg = spec.partition(":")
    name = f"{Path(path).stem}_{arg or config.data.name}"
    as_json = json.loads(config.to_json())
    if as_json != json.loads(load_config_file(spec).to_json()):
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
    except (config_lib.ConfigError, WorkdirError, PartError) as e:
        fail(str(e), USAGE)
    except (data_lib.DataError, experiment.NumericalError) as e:
        fail(str(e), FAULT)
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


def run_sweep(spec: str, config, workdir: str, **kwargs) -> list[dict]:
    """sweep.run with the command line's overrides; exit 1 if any row failed."""
    from lecun_jax.studies import sweep

    overrides = {p: config_lib.get_path(config, p) for p in override_paths(sys.argv)}
    with one_line_errors():
        prepare_workdir(workdir)
        records = sweep.run(spec.partition(":")[0], config, overrides, workdir, **kwargs)
    if sweep.failed(records):
        fail(f"{len(sweep.failed(records))} of {len(records)} runs failed: {', '.join(sweep.failed(records))}", FAULT)
    return records
