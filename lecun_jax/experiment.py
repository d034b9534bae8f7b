"""The host loop of a run: load, compile, pass after pass, and everything it leaves behind.

``train_and_evaluate(config, workdir)`` trains as the config says and keeps
the workdir complete and consistent after every pass:

    config.json         the validated config
    metrics.jsonl       one record per pass, split and replica
    checkpoints/        <pass>/state.npz: train state (params, optimiser state, rng,
                        pass), the metrics so far and the data's digests, after
                        every pass; the last 3 kept
    tensorboard/        event files: loss, error, learning rate per pass
                        (one run per replica when num_seeds > 1, and their mean)
    params.npz          final parameters
    test_outputs.npz    the final networks' outputs on the test split
    summary.json        final metrics, times, device, versions, time-travel ledger
    plots/              curves, misclassified digits, confusion matrix (PNG)

Every file is written whole and renamed into place; a checkpoint is committed
only when complete, and one that cannot be read is set aside for the newest
good one. One run at a time holds a workdir (a lock the kernel drops when the
process dies). A resume checks that the data are those the checkpoint was
trained on. The outputs after the last pass (params, test outputs, plots) come
from the last checkpoint and ``summary.json`` is written last, so a run killed
anywhere finishes them when run again. So a run killed at any moment (even ``kill -9``) resumes
from its last committed pass when the same command runs again, and ends with
the numbers an uninterrupted run gives: every random stream is a pure function
of (seed, replica, pass). A workdir holding another config is refused unless
``overwrite``; a finished one just reports its results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path
from typing import Callable

import jax
import flax.linen as nn
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lecun_jax import config as config_lib
from lecun_jax import data as data_lib
from lecun_jax import model as model_lib
from lecun_jax import optimizers, reporting
from lecun_jax import train as train_lib

SPLITS = train_lib.SPLITS
CHECKPOINTS, TENSORBOARD, PLOTS, TEST_OUTPUTS = reporting.CHECKPOINTS, reporting.TENSORBOARD, reporting.PLOTS, reporting.TEST_OUTPUTS
KEEP_CHECKPOINTS = 3
PROGRESS_AFTER_S = 3.0  # print elapsed time and ETA once a run is past this

# The time-travel ledger's yardsticks: one network, the 1989 recipe.
SUN4_1989_S = 3 * 24 * 3600  # LeCun et al.: "3 days" on a SUN-4/260
KARPATHY_M1_S = 90.0  # Karpathy 2022: about 90 s on a MacBook Air M1 CPU


_SCOPE = threading.local()


@contextlib.contextmanager
def this_process_only():
    """Inside, runs use only this process's devices and write their own workdir, as a
    lone process would: how a multi-process sweep spreads its rows over the processes."""
    before = getattr(_SCOPE, "local", False)
    _SCOPE.local = True
    try:
        yield
    finally:
        _SCOPE.local = before


def process_index() -> int:
    return 0 if getattr(_SCOPE, "local", False) else jax.process_index()


def process_count() -> int:
    return 1 if getattr(_SCOPE, "local", False) else jax.process_count()


def devices() -> list:
    return jax.local_devices() if getattr(_SCOPE, "local", False) else jax.devices()


load_data = data_lib.for_config  # the dataset of a config, as its run trains on it


def device_data(dataset, mesh: Mesh | None = None) -> dict[str, jax.Array]:
    """The dataset's arrays on the device (on every device of ``mesh``) for the whole run."""
    arrays = {}
    for s in SPLITS:
        split = dataset.split(s)
        arrays[f"{s}_images"], arrays[f"{s}_labels"] = split.images, split.labels
    return jax.device_put(arrays, None if mesh is None else NamedSharding(mesh, PartitionSpec()))


def replica_layout(num_seeds: int) -> tuple[Mesh | None, int]:
    """(mesh, replicas): how ``num_seeds`` replicas are spread over the devices.

    With several devices the replica axis is sharded over a 1-D mesh of up to
    ``num_seeds`` of them, and padded with spare replicas to a multiple of the
    mesh (5 seeds on 2 devices run as 3 + 3; the spare is dropped from every
    result). On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
    makes N devices of N cores; ``launch.py`` sets it to the core count.
    """
    n = min(len(devices()), num_seeds)
    if num_seeds == 1 or n == 1:
        return None, num_seeds
    return Mesh(np.asarray(devices()[:n]), ("seed",)), math.ceil(num_seeds / n) * n


def real_replicas(config, tree):
    """Drops the spare replicas that only pad the replica axis to the mesh."""
    if config.num_seeds == 1:
        return tree
    return jax.tree.map(lambda a: a[: config.num_seeds], tree)


def to_numpy(tree):
    """Host copies; with several processes, gathered from all of them."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))


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


def describe_parts(model=None, optimizer=None, loss=None) -> dict:
    """What ``config.json`` and ``summary.json`` record of the parts a user passed in:
    the module's class and fields, the optimiser's and the loss's function names and
    fingerprints (so a workdir trained with other hyperparameters is refused)."""
    out = {}
    if model is not None:
        fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in ("parent", "name")}
        out["model"] = {"class": _name(type(model)), "fields": json.loads(json.dumps(fields, default=repr))}
    if optimizer is not None:
        out["optimizer"] = {"init": _name(optimizer.init), "update": _name(optimizer.update),
                            "fingerprint": _fingerprint(optimizer)}
    if loss is not None:
        out["loss"] = {"function": _name(loss), "fingerprint": _fingerprint(loss)}
    return out


class WorkdirError(ValueError):
    """The workdir holds a different run."""


class NumericalError(FloatingPointError):
    """Loss or parameters stopped being finite."""


def _config_json(config, parts: dict | None = None) -> dict:
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
    if previous != _config_json(config, parts):
        old, new = config_lib.flatten(previous), config_lib.flatten(_config_json(config, parts))
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>"))
        raise WorkdirError(
            f"{workdir} holds a run with a different config (fields {', '.join(changed)}); "
            "pass --overwrite to replace it, or choose another --workdir"
        )
    return "done" if (workdir / reporting.SUMMARY).exists() else "resume"


def clear_workdir(workdir: Path) -> None:
    """Removes what a run writes (and nothing else) from ``workdir``."""
    for name in (reporting.CONFIG, reporting.METRICS, reporting.PARAMS, reporting.SUMMARY, TEST_OUTPUTS):
        (workdir / name).unlink(missing_ok=True)
    for name in (CHECKPOINTS, TENSORBOARD, PLOTS):
        shutil.rmtree(workdir / name, ignore_errors=True)


class CheckpointMismatch(ValueError):
    """A readable checkpoint of another train state (another module, optimiser or layout)."""


class Checkpoints:
    """The train state and the metrics records after every pass, the last ``keep`` kept.

    ``checkpoints/<pass>/state.npz`` holds every leaf of the state (host copies
    of the real replicas), the metrics records so far and the digest of the data
    trained on; the zip's CRC-32 covers each member. It is written into a hidden
    folder and renamed into place, so a pass's checkpoint exists whole or not at
    all. About a millisecond per pass, on the host: the pass loop does not wait
    for a checkpoint library. Every process of a multi-process job reads the
    same files; only the writer (process 0) writes them.
    """

    FILE = "state.npz"

    def __init__(self, directory: Path, keep: int = KEEP_CHECKPOINTS, echo: Callable[[str], None] = print):
        self.directory, self.keep, self.echo = Path(directory), keep, echo
        self.seconds = 0.0  # time spent saving
        self.set_aside = 0  # unreadable checkpoints renamed by restore()

    def passes(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and p.is_dir())

    def latest(self) -> int | None:
        return (self.passes() or [None])[-1]

    def save(self, pass_number: int, state, records: list[dict], data: dict) -> None:
        """``state``: host arrays (numpy); ``data``: what it trained on (see :func:`data_identity`)."""
        if process_index() != 0:
            return
        t = time.perf_counter()
        paths, leaves = zip(*[(jax.tree_util.keystr(k), np.asarray(v)) for k, v in jax.tree_util.tree_flatten_with_path(state)[0]])
        meta = {"pass": pass_number, "paths": list(paths), "data": data}
        final = self.directory / str(pass_number)
        tmp = self.directory / f".{pass_number}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        reporting.write_npz(tmp / self.FILE, meta=np.asarray(json.dumps(meta)), records=np.asarray(json.dumps(records)),
                            **{f"leaf_{i}": leaf for i, leaf in enumerate(leaves)})
        if final.exists():  # only after a fallback left a later pass to redo
            shutil.rmtree(final)
        os.rename(tmp, final)
        for old in self.passes()[: -self.keep]:
            shutil.rmtree(self.directory / str(old), ignore_errors=True)
        self.seconds += time.perf_counter() - t

    def read(self, pass_number: int, template):
        """(state, records, meta) of one pass's checkpoint; raises if it cannot be read."""
        with np.load(self.directory / str(pass_number) / self.FILE, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            records = json.loads(str(z["records"]))
            leaves = [z[f"leaf_{i}"] for i in range(len(meta["paths"]))]  # reading checks each member's CRC
        flat, treedef = jax.tree_util.tree_flatten_with_path(template)
        paths = [jax.tree_util.keystr(k) for k, _ in flat]
        if paths != meta["paths"]:
            raise CheckpointMismatch(f"its state has other entries ({len(meta['paths'])} against this run's {len(paths)})")
        for path, (_, want), got in zip(paths, flat, leaves):
            if want.shape != got.shape or np.dtype(want.dtype) != got.dtype:
                raise CheckpointMismatch(f"state{path} is {got.dtype}{list(got.shape)}, this run's {np.dtype(want.dtype)}{list(want.shape)}")
        return jax.tree_util.tree_unflatten(treedef, leaves), records, meta

    def restore(self, template) -> tuple[dict, list[dict], dict] | None:
        """(state, records, meta) of the newest readable checkpoint, or None when there is none.

        ``template``: host arrays shaped like the state. A checkpoint that cannot
        be read (truncated, flipped bytes, emptied) is set aside, renamed
        ``<pass>.unreadable``, with one line, and the next older one is used;
        one of another train state raises :class:`CheckpointMismatch`.
        """
        for p in reversed(self.passes()):
            try:
                return self.read(p, template)
            except CheckpointMismatch:
                raise
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                aside = self.directory / f"{p}.unreadable"
                shutil.rmtree(aside, ignore_errors=True)
                if process_index() == 0:
                    os.rename(self.directory / str(p), aside)
                self.set_aside += 1
                self.echo(f"checkpoint of pass {p} cannot be read ({type(e).__name__}: {str(e)[:80]}); "
                          f"set aside as {aside}, using an older one")
        return None


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


class TensorBoard:
    """Scalars per pass: one event-file run, or one per replica plus their mean."""

    def __init__(self, directory: Path, num_seeds: int, seed: int):
        from tensorboardX import SummaryWriter

        # purge_step=1: TensorBoard drops what an interrupted earlier writer left;
        # the whole history is written again from the checkpointed records.
        if num_seeds == 1:
            self.writers = {None: SummaryWriter(str(directory), purge_step=1)}
        else:
            names = [f"replica_{r}" for r in range(num_seeds)] + ["mean"]
            self.writers = {n: SummaryWriter(str(directory / n), purge_step=1) for n in names}
        self.seed = seed

    def write(self, records: list[dict], learning_rates: list[float]) -> None:
        by_pass: dict[int, list[dict]] = {}
        for r in records:
            by_pass.setdefault(r["pass"], []).append(r)
        for p, rows in sorted(by_pass.items()):
            for name, writer in self.writers.items():
                chosen = [r for r in rows if name in (None, "mean") or f"replica_{r['replica']}" == name]
                for split in SPLITS:
                    split_rows = [r for r in chosen if r["split"] == split]
                    for key in ("loss", "error"):
                        writer.add_scalar(f"{key}/{split}", float(np.mean([r[key] for r in split_rows])), p)
                writer.add_scalar("learning_rate", learning_rates[p - 1], p)
        self.flush()

    def flush(self) -> None:
        for w in self.writers.values():
            w.flush()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def device_info(mesh: Mesh | None = None) -> dict:
    d = devices()[0]
    return {
        "platform": d.platform, "kind": d.device_kind, "count": len(devices()),
        "processes": process_count(), "used": 1 if mesh is None else mesh.size,
    }


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("lecun_jax", "jax", "jaxlib", "flax", "optax", "tensorflow-datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def ledger(config, sizes: dict[str, int], train_s: float | None, macs: int | None = None) -> dict:
    """The time-travel ledger: what was computed, and how long it took against 1989 and 2022.

    ``train_s``: the passes' wall time (for a resumed run, the median pass times the passes).
    """
    presentations = config.train.passes * sizes["train"] * config.num_seeds
    if train_s is None:  # no pass timed (resumed after the last one)
        train_s = per_network_s = per_presentation_s = None
    else:
        per_network_s = train_s / config.num_seeds
        # per presentation (one SGD step, its share of the evaluation), against the 1989 recipe's 23 x 7,291
        per_presentation_s = per_network_s / (config.train.passes * sizes["train"])
    yardstick = 23 * data_lib.SPLIT_SIZES["train"]
    return {
        "presentations": presentations,
        "forward_macs_per_digit": macs,
        "training_macs": None if macs is None else 3 * macs * presentations,  # forward, and the backward's two products
        "evaluation_macs": None if macs is None else macs * config.train.passes * (sizes["train"] + sizes["test"]) * config.num_seeds,
        "wall_s": train_s,
        "wall_s_per_network": per_network_s,
        "speedup_vs_sun4_260_1989": None if train_s is None else SUN4_1989_S / yardstick / per_presentation_s,
        "speedup_vs_karpathy_m1_2022": None if train_s is None else KARPATHY_M1_S / yardstick / per_presentation_s,
        "note": "per network and per presentation; the yardsticks are 3 days (LeCun et al. 1989, SUN-4/260) "
        "and about 90 s (Karpathy 2022, MacBook Air M1) for the 23 x 7,291 presentations of the 1989 "
        "recipe, evaluation included",
    }


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    model: nn.Module | None = None,
    optimizer: optax.GradientTransformation | None = None,
    loss: train_lib.Loss | None = None,
    overwrite: bool = False,
    label: str | None = None,
    echo: Callable[[str], None] = print,
    plots: bool = True,
    group: train_lib.Group | None = None,
) -> dict:
    """Trains as ``config`` says, in (or resuming) ``workdir``; returns the run summary.

    ``model`` (a Flax module called as ``apply({'params': p}, images (B, 16, 16, 1),
    train=bool, rngs={'dropout': key})`` -> (B, 10)), ``optimizer`` (an Optax
    ``GradientTransformation``) and ``loss`` (``loss(outputs, labels) -> (B,)``
    per-example losses) replace the config's parts; ``config.json`` and
    ``summary.json`` record them under ``parts``.

    ``group``: the ``num_seeds`` replicas are the rows of a sweep side by side, each
    with its own optimiser hyperparameters (see :func:`lecun_jax.sweep.run`, which
    writes each row's own workdir from this one with :func:`write_group_row`).
    """
    start = time.perf_counter()
    startup_s = process_age()
    config_lib.validate(config)
    workdir = Path(workdir)
    given = describe_parts(model, optimizer, loss)
    if process_index() != 0:
        echo = _silent  # one writer, one speaker: process 0 prints the run
    if group is not None:
        if optimizer is not None or config.num_seeds != group.rows * group.seeds:
            raise ValueError(f"a group of {group.rows} rows x {group.seeds} seeds needs num_seeds={group.rows * group.seeds} "
                             "and the config's optimiser")
        given["group"] = {"seeds": group.seeds, "values": {k: list(v) for k, v in group.values.items()}}
        optimizer = optimizers.make(config.optimizer, steps_per_pass=1, passes=1,
                                    injected={k: getattr(config.optimizer, k) for k in group.values})
    writer = process_index() == 0
    if writer:
        workdir.mkdir(parents=True, exist_ok=True)
    lock = WorkdirLock(workdir) if writer else None
    try:
        with _interruptible():
            return _train_and_evaluate(config, workdir, model, optimizer, loss, given, overwrite, label, echo, plots,
                                       start, startup_s, group)
    finally:
        if lock is not None:
            lock.release()


_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def _interruptible():
    """Ctrl-C raises KeyboardInterrupt as usual, and is also remembered: a library that
    swallows the exception cannot make the run go on (the pass loop checks after every
    pass). A SIGINT ignored by the parent (a background job) stays ignored."""
    import signal

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


def _train_and_evaluate(config, workdir, model, optimizer, loss, given, overwrite, label, echo, plots,
                        start, startup_s, group) -> dict:
    # With several processes, process 0 inspects (and, with overwrite, clears) the
    # workdir; the others take its verdict rather than race it.
    statuses = ("new", "resume", "done")
    status = inspect_workdir(config, workdir, overwrite, given) if process_index() == 0 else "new"
    status = statuses[_from_process_0(statuses.index(status))]
    if status == "done":
        done = json.loads((workdir / reporting.SUMMARY).read_text())
        echo(f"{workdir} already holds this run, finished; its results:")
        for split in SPLITS:
            f = done["final"][split]
            echo(reporting.eval_line(split, f["loss"], f["error"], f["misses"]))
        return done

    mesh, replicas = replica_layout(config.num_seeds)
    dataset = load_data(config)
    identity = data_identity(config, dataset)
    arrays = device_data(dataset, mesh)
    sizes = {s: len(dataset.split(s)) for s in SPLITS}
    data_s = time.perf_counter() - start

    parts = train_lib.make_parts(config, sizes["train"], model=model, optimizer=optimizer, loss=loss)
    state = train_lib.init_states(config, parts.model, parts.optimizer, replicas, group=group)
    checkpoints = Checkpoints(workdir / CHECKPOINTS, echo=echo)
    records: list[dict] = []
    if status == "resume":
        template = real_replicas(config, to_numpy(state))
        restored, mismatch = None, None
        if process_index() == 0:
            try:
                restored = checkpoints.restore(template)
            except CheckpointMismatch as e:  # e.g. parameters of another layout (before 2026-11-30: HWIO)
                mismatch = str(e)
        # every process resumes from the checkpoint process 0 chose (or stops with it)
        chosen = _from_process_0(-2 if mismatch else -1 if restored is None else restored[2]["pass"])
        if chosen == -2:
            raise WorkdirError(
                f"{workdir}: its checkpoint does not fit this run's train state ({mismatch or 'see process 0'}); "
                "pass --overwrite to start again, or choose another --workdir"
            )
        if process_index() != 0 and chosen >= 0:
            restored = checkpoints.read(chosen, template)
        if restored is None:  # killed before its first checkpoint, or every one set aside
            if checkpoints.set_aside:
                echo(f"{workdir}: no readable checkpoint; starting from pass 1")
        else:
            host_state, records, meta = restored
            _check_same_data(workdir, meta, identity)
            state = _relay_replicas(config, host_state, replicas)
            echo(f"resuming {workdir} after pass {meta['pass']} of {config.train.passes}")
    if mesh is not None:
        state = jax.device_put(state, NamedSharding(mesh, PartitionSpec("seed")))
    first = int(np.asarray(to_numpy(state["pass"])).reshape(-1)[0]) + 1

    t = time.perf_counter()
    # a compilation the cache does not hold takes seconds (10 seeds: about 4 s here): say so
    told = threading.Timer(1.0, echo, ["compiling the training pass and evaluation (once per shape: "
                                       "later runs load it from the compilation cache)..."])
    told.start()
    epochs = {
        evaluated: train_lib.make_epoch(config, parts, sizes["train"], sizes["test"], mesh=mesh, evaluate_splits=evaluated)
        .lower(state, arrays).compile()
        for evaluated in ((True, False) if config.train.eval_every > 1 else (True,))
    }
    compile_s = time.perf_counter() - t
    told.cancel()

    if process_index() == 0:
        reporting.write_json(workdir / reporting.CONFIG, _config_json(config, given))
        reporting.write_jsonl(workdir / reporting.METRICS, records)
    rates = optimizers.pass_learning_rates(config.optimizer, config.train.passes)
    board = TensorBoard(workdir / TENSORBOARD, config.num_seeds, config.seed) if process_index() == 0 else None
    if board is not None:
        board.write(records, rates)
    abstract = model_lib.abstract_params(parts.model)
    n_params = model_lib.count_params(abstract, parts.model)
    macs = model_lib.count_macs(abstract, parts.model)
    echo(
        f"{dataset.name}: {sizes['train']:,} train / {sizes['test']:,} {'held-out' if config.data.validation_size else 'test'} digits; "
        f"{type(parts.model).__name__}, {n_params['total']:,} parameters; "
        f"{config.num_seeds} seed(s) from {config.seed}; "
        f"{device_info()['kind']} x{1 if mesh is None else mesh.size}; compiled in {compile_s:.1f} s"
    )

    prefetch = _prefetch_plots() if plots and first <= config.train.passes else None
    pass_times: list[float] = []
    loop_start = time.perf_counter()
    try:
        for p in range(first, config.train.passes + 1):
            t = time.perf_counter()
            evaluated = p % config.train.eval_every == 0 or p == config.train.passes
            new_state, metrics = epochs[evaluated](state, arrays)
            metrics = real_replicas(config, to_numpy(metrics))
            new = reporting.pass_records(p, metrics, sizes, config.seed) if evaluated else []
            _check_finite(config, p, new, metrics, workdir, records, checkpoints)
            state = new_state
            records += new
            checkpoints.save(p, real_replicas(config, to_numpy(state)), records, identity)
            if evaluated and board is not None:
                reporting.write_jsonl(workdir / reporting.METRICS, records)
                board.write(new, rates)
            if _INTERRUPTED.is_set():
                raise KeyboardInterrupt  # a Ctrl-C that some library swallowed
            pass_times.append(time.perf_counter() - t)
            echo(_progress(p, config.train.passes, first, pass_times, time.perf_counter() - loop_start))
            for split in SPLITS if evaluated else ():
                m = metrics[split]
                echo(reporting.eval_line(split, m["loss"], 100.0 * m["misses"] / sizes[split], m["misses"]))
    finally:
        if board is not None:
            board.close()
        if prefetch is not None:  # never exit with a thread mid-import (a fatal error at shutdown)
            prefetch.join()

    # What follows is derived from the last checkpoint's state: a run killed anywhere
    # below redoes it when run again, and summary.json, written last, marks it done.
    t = time.perf_counter()
    params = real_replicas(config, to_numpy(state["params"]))
    if process_index() != 0:
        return {}
    reporting.save_params(workdir / reporting.PARAMS, params)
    _save_test_outputs(config, parts.model, params, dataset, workdir)
    outputs_s = time.perf_counter() - t
    t = time.perf_counter()
    if plots:
        _plots(workdir, dataset.test.images)
    plots_s = time.perf_counter() - t
    steps = train_lib.steps_per_pass(sizes["train"], config.train.batch_size)
    train_s = sum(pass_times)
    summary = {
        "label": label,
        "dataset": config.data.name,
        "data": identity,
        "num_seeds": config.num_seeds,
        "passes": config.train.passes,
        "steps_per_pass": steps,
        "resumed_after_pass": first - 1 if first > 1 else None,
        "model": type(parts.model).__name__,
        "parts": given,
        "params": n_params,
        "macs_per_digit": None if macs is None else macs["total"],
        "final": {s: reporting.summarize(records, s, config.train.passes) for s in SPLITS},
        "time": {
            "wall_s": time.perf_counter() - start,
            "startup_s": startup_s,
            "data_s": data_s,
            "compile_s": compile_s,
            "train_s": train_s,
            "checkpoint_s": checkpoints.seconds,
            "outputs_s": outputs_s,
            "plots_s": plots_s,
            "pass_s": pass_times,
            "us_per_step": 1e6 * float(np.median(pass_times)) / steps if pass_times else None,
        },
        # no pass ran when resumed after the last checkpoint: no time to put in the ledger
        "ledger": ledger(config, sizes, None if not pass_times else train_s if first == 1
                         else float(np.median(pass_times)) * config.train.passes, None if macs is None else macs["total"]),
        "device": device_info(mesh),
        "versions": versions(),
    }
    reporting.write_json(workdir / reporting.SUMMARY, summary)
    logging.info("%s", timeline(summary["time"]))
    led = summary["ledger"]
    speed = (f"; {led['speedup_vs_sun4_260_1989']:,.0f}x the 1989 SUN-4, "
             f"{led['speedup_vs_karpathy_m1_2022']:.1f}x Karpathy's M1 per network" if led["wall_s"] is not None else "")
    echo(
        f"done: {len(pass_times)} passes in {train_s:.1f} s "
        f"({summary['time']['us_per_step'] or 0:.1f} µs per step, median pass) + {compile_s:.1f} s compile; "
        f"wall {summary['time']['wall_s']:.1f} s{speed}; results in {workdir}"
    )
    return summary


def _silent(line: str) -> None:
    pass


def _from_process_0(value: int) -> int:
    """Process 0's ``value`` in every process (itself with one process)."""
    if process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def process_age() -> float | None:
    """Seconds since this process started (Linux: from /proc), for the start-up phase; None elsewhere."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def timeline(t: dict) -> str:
    """One line of a run's phases: where the wall time of the process went."""
    phases = [("start-up", t.get("startup_s")), ("data", t["data_s"]), ("compile", t["compile_s"]),
              ("passes", t["train_s"] - t.get("checkpoint_s", 0.0)), ("checkpoints", t.get("checkpoint_s")),
              ("params+test outputs", t.get("outputs_s")), ("plots", t.get("plots_s"))]
    total = (t.get("startup_s") or 0.0) + t["wall_s"]
    return "timeline: " + " | ".join(f"{n} {v:.2f} s" for n, v in phases if v is not None) + f" | process {total:.2f} s"


def data_identity(config, dataset) -> dict:
    """What a run trains and tests on: digests of the exact arrays, their sizes and their source."""
    d = config.data
    return {
        "name": dataset.name,
        # where the digits came from, and each source file's SHA-256 (lecun_jax.data's record)
        "source": {"where": d.source_dir or (d.mnist_url if d.name == "mnist" else "shipped"),
                   **{k: v for k, v in dataset.source.items() if k in ("kind", "files")}},
        **{f"{s}_digits": len(dataset.split(s)) for s in SPLITS},
        **{f"{s}_sha256": data_lib.array_digest(dataset.split(s).images, dataset.split(s).labels) for s in SPLITS},
    }


def _check_same_data(workdir: Path, meta: dict, identity: dict) -> None:
    before = meta.get("data") or {}
    changed = [s for s in SPLITS if before.get(f"{s}_sha256") != identity[f"{s}_sha256"]]
    if changed:
        what = ", ".join(f"{s}: {before.get(f'{s}_digits', '?'):,} digits then, {identity[f'{s}_digits']:,} now"
                         if isinstance(before.get(f"{s}_digits"), int) else s for s in changed)
        raise WorkdirError(
            f"{workdir}: the data differ from what pass {meta['pass']} was trained on ({what}; source "
            f"{(before.get('source') or {}).get('where', '?')}); restore those files, or pass --overwrite to start again"
        )


def _relay_replicas(config, host_state, replicas: int):
    """The checkpoint's real replicas, padded again to this machine's replica layout
    (the spares repeat replica 0: they only fill the mesh and are dropped from every result)."""
    if config.num_seeds == 1 or replicas == config.num_seeds:
        return jax.tree.map(jax.numpy.asarray, host_state)
    return jax.tree.map(lambda a: jax.numpy.asarray(np.concatenate([a, np.repeat(a[:1], replicas - config.num_seeds, 0)])),
                        host_state)


def write_group_row(group_dir: Path, group: train_lib.Group, row: int, config, workdir: Path,
                    label: str | None = None) -> dict:
    """Row ``row`` of a finished :class:`~lecun_jax.train.Group` run in ``group_dir``, written
    into ``workdir`` as an ordinary finished run of ``config`` (its replicas, renumbered
    from 0; config, metrics, parameters, test outputs, TensorBoard, plots, summary)."""
    lo, hi = row * group.seeds, (row + 1) * group.seeds
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lock = WorkdirLock(workdir)
    try:
        clear_workdir(workdir)
        together = json.loads((group_dir / reporting.SUMMARY).read_text())
        records = [dict(r, replica=r["replica"] - lo) for r in reporting.read_jsonl(group_dir / reporting.METRICS)
                   if lo <= r["replica"] < hi]
        reporting.write_json(workdir / reporting.CONFIG, _config_json(config))
        reporting.write_jsonl(workdir / reporting.METRICS, records)
        take = (lambda a: a[lo]) if group.seeds == 1 else (lambda a: a[lo:hi])  # one seed: no replica axis
        reporting.save_params(workdir / reporting.PARAMS, jax.tree.map(take, reporting.load_params(group_dir / reporting.PARAMS)))
        with np.load(group_dir / TEST_OUTPUTS) as z:
            reporting.write_npz(workdir / TEST_OUTPUTS, outputs=z["outputs"][lo:hi], labels=z["labels"])
        board = TensorBoard(workdir / TENSORBOARD, group.seeds, config.seed)
        board.write(records, optimizers.pass_learning_rates(config.optimizer, config.train.passes))
        board.close()
        _plots(workdir, None)
        sizes = {s: together["data"][f"{s}_digits"] for s in SPLITS}
        train_s = together["ledger"]["wall_s"]
        summary = together | {
            "label": label,
            "num_seeds": group.seeds,
            "parts": {},
            "final": {s: reporting.summarize(records, s, config.train.passes) for s in SPLITS},
            "together": {"workdir": str(group_dir), "row": row, "rows": group.rows,
                         "values": {k: v[row] for k, v in group.values.items()},
                         "note": "trained side by side with the other rows in one program; time is the group's"},
            "ledger": ledger(config, sizes, None if train_s is None else train_s / group.rows, together["macs_per_digit"]),
        }
        reporting.write_json(workdir / reporting.SUMMARY, summary)
        return summary
    finally:
        lock.release()


def _check_finite(config, p, new, metrics, workdir, records, checkpoints) -> None:
    """Stops at the end of a pass whose loss or parameters are not finite; keeps what was good."""
    bad = sorted({r["replica"] for r in new if r["loss"] is None})
    if not bad and np.all(metrics["finite"]):
        return
    reporting.write_jsonl(workdir / reporting.METRICS, records + new)  # the failing pass too, for the record
    last = checkpoints.latest()
    raise NumericalError(
        f"pass {p}: {'loss' if bad else 'parameters'} became NaN/Inf"
        f"{f' (replicas {bad})' if config.num_seeds > 1 and bad else ''}; "
        f"its learning rate, {optimizers.pass_learning_rates(config.optimizer, config.train.passes)[p - 1]:g} "
        f"(optimizer.learning_rate={config.optimizer.learning_rate:g}), is the likely cause: try a smaller one; "
        f"kept: metrics up to pass {p} in {workdir / reporting.METRICS}, "
        + (f"the checkpoint of pass {last}" if last else "no checkpoint (pass 1 failed)")
    )


def _progress(p: int, passes: int, first: int, times: list[float], elapsed: float) -> str:
    line = f"pass {p}/{passes} ({times[-1]:.2f} s)"
    if elapsed > PROGRESS_AFTER_S or times[-1] * passes > PROGRESS_AFTER_S:
        eta = float(np.median(times)) * (passes - p)
        line += f"; elapsed {elapsed:.1f} s, ETA {eta:.1f} s"
    return line


def _save_test_outputs(config, model, params, dataset, workdir: Path) -> None:
    """The final networks' outputs on the test split, for plots and notebooks."""
    predict = train_lib.make_predict(model, len(dataset.test))
    if config.num_seeds > 1:
        predict = jax.vmap(predict, in_axes=(0, None))
    outputs = np.asarray(jax.jit(predict)(params, dataset.test.images))
    outputs = outputs if config.num_seeds > 1 else outputs[None]
    reporting.write_npz(workdir / TEST_OUTPUTS, outputs=outputs.astype(np.float32), labels=dataset.test.labels)


def _prefetch_plots() -> threading.Thread:
    """Imports matplotlib (a third of a second) on a thread while the passes run: the pass
    loop waits on XLA with the GIL released, so the plots after it start at once."""
    import threading

    def load():
        try:
            from lecun_jax import plots  # noqa: F401

            plots.prefetch()
        except ImportError:
            pass  # _plots says so

    thread = threading.Thread(target=load, name="import-plots", daemon=True)
    thread.start()
    return thread


def _plots(workdir: Path, test_images: np.ndarray | None) -> None:
    try:
        from lecun_jax import plots
    except ImportError as e:  # matplotlib is a dependency; a broken install should not lose the run
        logging.warning("no plots: %s", e)
        return
    for path in plots.write_run(workdir, test_images):
        logging.info("wrote %s", path)


class Run:
    """A finished (or interrupted) run, loaded from its workdir for notebooks.

    Attributes: ``workdir``, ``config`` (ConfigDict), ``metrics`` (records),
    ``summary`` (dict, None while unfinished), ``params`` (the final
    parameters; leading replica axis when num_seeds > 1), ``test_outputs``
    ((replicas, N, 10) outputs on the test split) and ``test_labels``.
    """

    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        if not (self.workdir / reporting.CONFIG).exists():
            raise FileNotFoundError(f"{self.workdir}: no config.json; not a lecun_jax run")
        config = json.loads((self.workdir / reporting.CONFIG).read_text())
        self.parts = config.pop("parts", {})  # the parts a user passed in, as recorded
        self.config = ml_collections.ConfigDict(config)
        self.metrics = reporting.read_jsonl(self.workdir / reporting.METRICS) if (self.workdir / reporting.METRICS).exists() else []
        summary = self.workdir / reporting.SUMMARY
        self.summary = json.loads(summary.read_text()) if summary.exists() else None
        self.params = reporting.load_params(self.workdir / reporting.PARAMS) if (self.workdir / reporting.PARAMS).exists() else None
        self.test_outputs = self.test_labels = None
        if (self.workdir / TEST_OUTPUTS).exists():
            with np.load(self.workdir / TEST_OUTPUTS) as z:
                self.test_outputs, self.test_labels = z["outputs"], z["labels"]

    @property
    def model(self) -> nn.Module:
        """The network the run trained (evaluate it with ``model.apply({'params': p}, x)``);
        a run of a user's module cannot rebuild it: use that module with ``params``."""
        if "model" in self.parts:
            raise ValueError(f"{self.workdir} trained a user's module, {self.parts['model']['class']}: "
                             "apply that module to run.params")
        return train_lib.make_model(self.config)

    def replica_params(self, replica: int = 0) -> dict:
        """One network's parameters."""
        if self.config.num_seeds == 1:
            return self.params
        return jax.tree.map(lambda a: a[replica], self.params)

    def dataset(self) -> data_lib.Dataset:
        """The run's data, as it trained on it."""
        return load_data(self.config)

    def final(self, split: str = "test") -> dict:
        """Final metrics of a split across replicas (see reporting.summarize)."""
        return reporting.summarize(self.metrics, split, max(r["pass"] for r in self.metrics))

    def __repr__(self) -> str:
        done = "finished" if self.summary else "unfinished"
        return f"Run({str(self.workdir)!r}, {self.config.data.name}, {self.config.num_seeds} seed(s), {done})"


def load_run(workdir: str | Path) -> Run:
    """The config, trained parameters and metrics of the run in ``workdir``."""
    return Run(workdir)
