"""The workdir a run writes: what it holds, who holds it, and whether a run fits it.

A workdir's ``config.json`` records the config and the parts a user passed in
(their classes, fields and fingerprints); a run of another config is refused
unless ``overwrite``. One run at a time holds a workdir (:class:`WorkdirLock`,
a lock the kernel drops when the process dies).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import optax

from lecun_jax import config as config_lib
from lecun_jax.core import modules
from lecun_jax.run import reporting


class WorkdirError(ValueError):
    """The workdir holds a different run."""


def _name(f) -> str:
    return f"{getattr(f, '__module__', None) or '?'}.{getattr(f, '__qualname__', None) or repr(f)}"


def _fingerprint(fn, depth: int = 8) -> str:
    """A hash of a function and what its closures hold, recursively (an Optax
    transformation's hyperparameters live there: ``sgd(0.01)`` and ``sgd(0.1)``
    differ only in a closed-over ``-0.01``)."""
    parts, seen = [], set()

    def walk(v, d):
        if d > depth or id(v) in seen:
            return
        seen.add(id(v))
        if hasattr(v, "__code__"):
            if hasattr(v, "__self__"):  # a bound method: what its object holds counts too
                walk(v.__self__, d + 1)
            parts.append(v.__qualname__)
            parts.append(hashlib.sha256(v.__code__.co_code).hexdigest()[:16])
            for cell in v.__closure__ or ():
                walk(cell.cell_contents, d + 1)
        elif isinstance(v, (tuple, list)):
            for x in v:
                walk(x, d)
        elif isinstance(v, optax.GradientTransformation):
            walk(v.update, d)
        else:
            parts.append(re.sub(r" at 0x[0-9a-f]+", "", repr(v)))

    walk(fn, 0)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def describe_parts(model=None, optimizer=None, loss=None, init_states=None) -> dict:
    """What ``config.json`` and ``summary.json`` record of the parts a user passed in:
    the module's class and fields, the functions' names and fingerprints (so a
    workdir trained with other hyperparameters is refused)."""
    out = {}
    if model is not None:
        out["model"] = json.loads(json.dumps(modules.describe(model), default=repr))
    if optimizer is not None:
        out["optimizer"] = {"init": _name(optimizer.init), "update": _name(optimizer.update),
                            "fingerprint": _fingerprint(optimizer)}
    if loss is not None:
        out["loss"] = {"function": _name(loss), "fingerprint": _fingerprint(loss)}
    if init_states is not None:
        out["init_states"] = {"function": _name(init_states), "fingerprint": _fingerprint(init_states)}
    return out



def config_json(config, parts: dict | None = None) -> dict:
    """config.json: the config, and ``parts`` (what a user passed in) when there are any."""
    out = json.loads(config.to_json())
    return out | {"parts": parts} if parts else out


def inspect_workdir(config, workdir: Path, overwrite: bool, parts: dict | None = None) -> str:
    """'new', 'resume' (same config, unfinished) or 'done'; raises WorkdirError for another config."""
    if not (workdir / reporting.CONFIG).exists():
        return "new"
    if overwrite:
        clear_workdir(workdir)
        return "new"
    previous = json.loads((workdir / reporting.CONFIG).read_text())
    if previous != config_json(config, parts):
        old, new = config_lib.flatten(previous), config_lib.flatten(config_json(config, parts))
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>"))
        raise WorkdirError(
            f"{workdir} holds a run with a different config (fields {', '.join(changed)}); "
            "pass --overwrite to replace it, or choose another --workdir"
        )
    return "done" if (workdir / reporting.SUMMARY).exists() else "resume"


def clear_workdir(workdir: Path) -> None:
    """Removes what a run writes (and nothing else) from ``workdir``."""
    for name in (reporting.CONFIG, reporting.METRICS, reporting.PARAMS, reporting.SUMMARY, reporting.TEST_OUTPUTS,
                 reporting.MODEL_STATE):
        (workdir / name).unlink(missing_ok=True)
    for name in (reporting.CHECKPOINTS, reporting.TENSORBOARD, reporting.PLOTS):
        shutil.rmtree(workdir / name, ignore_errors=True)


class WorkdirLock:
    """An exclusive lock on a workdir (``flock`` on ``<workdir>/.lock``) for as long as a run uses it.

    The kernel releases it when the process ends, however it ends: a killed
    run leaves no stale lock. A second run on the same workdir stops at once
    with one line naming the process that holds it.
    """

    def __init__(self, workdir: Path):
        import fcntl

        self.path = Path(workdir) / ".lock"
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            for _ in range(20):  # the holder writes its name just after it locks
                self.file.seek(0)
                if holder := self.file.read().strip():
                    break
                time.sleep(0.01)
            holder = holder or "another process"
            self.file.close()
            raise WorkdirError(f"{workdir} is in use by {holder}; wait for it to finish, or choose another --workdir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        self.file.flush()

    def release(self) -> None:
        self.file.close()  # closing drops the flock


