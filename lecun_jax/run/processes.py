"""The processes and devices a run uses, and moving its arrays between them.

Who a process is, :class:`Processes`, is passed as an argument: :func:`job` (every
process of a multi-process job on JAX's own runtime, or this one alone) or
:func:`local` (this process alone on its own devices, as a multi-process sweep runs
each of its rows). Process 0 of a run alone inspects, locks and writes its workdir
(:mod:`lecun_jax.run.store`), and the others take its verdicts
(:func:`from_process_0`). Replicas (seeds) are spread over the devices by a 1-D
mesh (:func:`replica_layout`); results come back to the host gathered from every
process (:func:`to_numpy`). A job stops together: a process that stops with an
error says so in the job's key-value store (:func:`announce_stop`), and every
other process, watching it (:func:`watch_for_stop`), stops within a second with
that line. A Ctrl-C stops this process's run even if a library swallows it
(:func:`interruptible`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import signal
import threading
from typing import Callable

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lecun_jax.core import epoch as epoch_lib

_STOPPED = "lecun_jax/stopped/"  # key prefix: one entry per process that stopped with an error


@dataclasses.dataclass(frozen=True)
class Processes:
    """The processes a run spans: this one's ``index`` of ``count``, and the ``devices``
    the run may use (every process's in a job, this process's own when alone)."""

    index: int
    count: int
    devices: tuple


def job() -> Processes:
    """Every process of the job JAX was started in (a lone process: itself)."""
    return Processes(jax.process_index(), jax.process_count(), tuple(jax.devices()))


def local() -> Processes:
    """This process alone, on its own devices, writing its own workdirs: how a
    multi-process sweep gives each process its own rows."""
    return Processes(0, 1, tuple(jax.local_devices()))


def device_info(processes: Processes | None = None, mesh: Mesh | None = None) -> dict:
    """The devices of ``processes`` (default: the whole :func:`job`) and how many ``mesh`` used."""
    processes = processes or job()
    d = processes.devices[0]
    return {
        "platform": d.platform, "kind": d.device_kind, "count": len(processes.devices),
        "processes": processes.count, "used": 1 if mesh is None else mesh.size,
    }


def replica_layout(num_seeds: int, chunk_target: int | None = None,
                   processes: Processes | None = None) -> tuple[Mesh | None, int]:
    """(mesh, replicas): how ``num_seeds`` replicas are spread over the devices of
    ``processes`` (default: the whole :func:`job`).

    With several devices the replica axis is sharded over a 1-D mesh of up to
    ``num_seeds`` of them; each device's replicas train in chunks of
    :func:`lecun_jax.core.epoch.chunk_size`. The axis is padded with spare replicas to a whole number
    of chunks on every device (5 seeds on 2 devices run as 3 + 3; the spares are
    dropped from every result). On a CPU,
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes N devices of N
    cores; ``launch.py`` sets it to the core count.
    """
    devices = (processes or job()).devices
    n = min(len(devices), num_seeds)
    per_device = math.ceil(num_seeds / n)
    chunk = epoch_lib.chunk_size(per_device, chunk_target)
    replicas = n * math.ceil(per_device / chunk) * chunk
    return (None if n == 1 else Mesh(np.asarray(devices[:n]), ("seed",))), replicas


def device_data(dataset, mesh: Mesh | None = None) -> dict[str, jax.Array]:
    """The dataset's arrays on the device (on every device of ``mesh``) for the whole run."""
    arrays = {}
    for s in ("train", "test"):
        split = dataset.split(s)
        arrays[f"{s}_images"], arrays[f"{s}_labels"] = split.images, split.labels
    return jax.device_put(arrays, None if mesh is None else NamedSharding(mesh, PartitionSpec()))


def real_replicas(num_seeds: int, tree):
    """Drops the spare replicas that only pad the replica axis to the mesh."""
    return jax.tree.map(lambda a: a[:num_seeds], tree)


def pad_replicas(num_seeds: int, host_state, replicas: int):
    """Host arrays of the real replicas, on the device and padded again to ``replicas``
    (the spares repeat replica 0: they only fill the mesh and are dropped from every result)."""
    if replicas == num_seeds:
        return jax.tree.map(jax.numpy.asarray, host_state)
    return jax.tree.map(lambda a: jax.numpy.asarray(np.concatenate([a, np.repeat(a[:1], replicas - num_seeds, 0)])),
                        host_state)


def to_numpy(tree, processes: Processes | None = None):
    """Host copies; with several processes (default: the whole :func:`job`), gathered
    from all of them: every one of them must call it."""
    if (processes or job()).count > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))


def from_process_0(value: int, processes: Processes | None = None) -> int:
    """Process 0's ``value`` in every process of ``processes`` (default: the whole
    :func:`job`; itself with one process): every one of them must call it."""
    if (processes or job()).count == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def interruptible():
    """Ctrl-C raises KeyboardInterrupt as usual, and is also remembered: a library that
    swallows the exception cannot make the run go on (the pass loop checks after every
    pass). A SIGINT ignored by the parent (a background job) stays ignored."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def handler(signum, frame):
        _INTERRUPTED.set()
        signal.default_int_handler(signum, frame)

    _INTERRUPTED.clear()
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def interrupted() -> bool:
    """Whether a Ctrl-C came inside :func:`interruptible`, even one a library swallowed."""
    return _INTERRUPTED.is_set()


def _job():
    """(the job's key-value store, this process's index), or None outside a multi-process job.

    Read from the runtime's state, so that it starts no backend: a process may stop
    before JAX has chosen its devices. That state is JAX's private module: a release
    that moves it costs stopping together (said once), never the job."""
    try:
        from jax._src import distributed  # the runtime's client: JAX has no public handle to it

        state = distributed.global_state
        client, count, me = state.client, state.num_processes, state.process_id
    except (ImportError, AttributeError):
        if jax.distributed.is_initialized():
            _cannot_stop_together()
        return None
    if client is None or (count or 1) == 1:
        return None
    return client, me


@functools.cache  # once per process, however many times a stop is announced or watched
def _cannot_stop_together() -> None:
    logging.warning("this JAX has no jax._src.distributed.global_state: a process of this job that stops "
                    "cannot stop the others; they stop at the runtime's own timeout")


def announce_stop(line: str, code: int) -> bool:
    """Tells the other processes of the job that this one stops, why (one line) and its
    exit code; False outside a multi-process job."""
    job = _job()
    if job is None:
        return False
    client, me = job
    value = json.dumps({"line": f"process {me} stopped: {line}", "code": code})
    with contextlib.suppress(Exception):  # the job may already be gone: stopping must not fail
        client.key_value_set(f"{_STOPPED}{me}", value, allow_overwrite=True)
    return True


def watch_for_stop(on_stop: Callable[[str, int], None], every_s: float = 0.25) -> threading.Event | None:
    """Calls ``on_stop(line, code)`` from a daemon thread when another process announces
    its stop, or when the job's coordinator has been unreachable for a second (its
    process died). Returns the event that ends the watch: set it before the job shuts
    down, since a shut-down job is unreachable too.

    A process blocked in a collective with a peer that is gone would wait for the
    runtime's timeout and end with a traceback; the watcher ends it at once instead.
    """
    job = _job()
    if job is None:
        return None
    client, me = job[0], f"{_STOPPED}{job[1]}"
    done = threading.Event()

    def watch():
        unreachable = 0
        while not done.wait(every_s):
            try:
                others = sorted(v for k, v in client.key_value_dir_get(_STOPPED) if k != me)
                unreachable = 0
            except Exception:  # noqa: BLE001 - any failure of the store means it cannot be reached
                unreachable += 1
                others = [] if unreachable * every_s < 1.0 else [
                    json.dumps({"line": "process 0 stopped: the job's coordinator is gone", "code": 1})]
            if others and not done.is_set():
                stop = json.loads(others[0])
                on_stop(stop["line"], int(stop["code"]))
                return

    threading.Thread(target=watch, name="watch-for-stop", daemon=True).start()
    return done
