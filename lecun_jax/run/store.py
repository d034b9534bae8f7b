"""A run's workdir, and the one place that creates, locks, inspects, clears, writes and reads it.

What the workdir holds, file by file, is the table under "What the output means"
in the README (tests/test_store.py holds this module to it). A run talks to its
:class:`RunStore` in a few verbs, in this order::

    open      create and lock the workdir; 'new', 'resume' or 'done' (another config refused;
              with overwrite, the run's files cleared)
    resume    the newest readable checkpoint (unreadable ones set aside)
    begin     config.json, the metrics so far, TensorBoard from the start
    commit    after every pass: its checkpoint, then its metrics and TensorBoard scalars
    diverged  the metrics with the failing pass, and nothing else
    write_outputs, finish   params, model state, test outputs; then plots, and summary.json last

A store is built for the processes of a run (:class:`lecun_jax.run.processes.Processes`):
process 0 alone writes, and the others' stores write nothing (their verbs that
write return at once), take process 0's verdicts, and read the same files. A store
built without processes only reads (:func:`lecun_jax.run.runs.load_run`). Every
file is written whole to a temporary name and renamed into place
(:mod:`lecun_jax.files`), so a reader, or a crash, never sees half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import zipfile
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from absl import logging

from lecun_jax import config as config_lib
from lecun_jax import data as data_lib
from lecun_jax import files
from lecun_jax.run import checkpoints as checkpoints_lib
from lecun_jax.run import processes as processes_lib
from lecun_jax.run.workdir import WorkdirError, config_json

CONFIG, METRICS, CHECKPOINTS, TENSORBOARD = "config.json", "metrics.jsonl", "checkpoints", "tensorboard"
PARAMS, MODEL_STATE, TEST_OUTPUTS = "params.npz", "model_state.npz", "test_outputs.npz"
SUMMARY, PLOTS, LOCK = "summary.json", "plots", ".lock"
RUN_FILES = (CONFIG, METRICS, PARAMS, MODEL_STATE, TEST_OUTPUTS, SUMMARY)  # what overwrite clears, and nothing else
RUN_FOLDERS = (CHECKPOINTS, TENSORBOARD, PLOTS)
STATUSES = ("new", "resume", "done")


class RunStore:
    """The workdir of one run. ``processes``: who runs it (its process 0 writes); None: a reader."""

    def __init__(self, workdir: str | Path, processes: processes_lib.Processes | None = None,
                 echo: Callable[[str], None] = print):
        self.workdir, self.processes, self.echo = Path(workdir), processes, echo
        self.writes = processes is not None and processes.index == 0
        self.seconds = {"checkpoint_s": 0.0, "plots_s": 0.0}  # time spent writing, for the summary's timeline
        self._lock: WorkdirLock | None = None
        self._board: TensorBoard | None = None
        self._rates: list[float] = []
        self._num_seeds = 1
        self._set_aside = 0

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._board is not None:
            self._board.close()
            self._board = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- reading: any process, any store ---------------------------------------------------

    def exists(self) -> bool:
        return (self.workdir / CONFIG).exists()

    def config_json(self) -> dict:
        return json.loads((self.workdir / CONFIG).read_text())

    def metrics(self) -> list[dict]:
        return files.read_jsonl(self.workdir / METRICS) if (self.workdir / METRICS).exists() else []

    def summary(self) -> dict | None:
        """The summary of a finished run; None while unfinished."""
        return json.loads((self.workdir / SUMMARY).read_text()) if (self.workdir / SUMMARY).exists() else None

    def params(self) -> dict | None:
        return files.load_params(self.workdir / PARAMS) if (self.workdir / PARAMS).exists() else None

    def model_state(self) -> dict:
        """The module's collections beside its parameters (batch statistics); empty for most modules."""
        return files.load_params(self.workdir / MODEL_STATE) if (self.workdir / MODEL_STATE).exists() else {}

    def test_outputs(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(outputs (replicas, N, 10), labels (N,)) on the test split, or None."""
        if not (self.workdir / TEST_OUTPUTS).exists():
            return None
        with np.load(self.workdir / TEST_OUTPUTS) as z:
            return z["outputs"], z["labels"]

    def checkpoints(self) -> checkpoints_lib.Checkpoints:
        return checkpoints_lib.Checkpoints(self.workdir / CHECKPOINTS)

    def inspect(self, config, parts: dict | None = None, overwrite: bool = False) -> str:
        """'new' (nothing there, or to be overwritten), 'resume' (same config, unfinished) or
        'done'; raises WorkdirError for a run of another config. Changes nothing."""
        if not self.exists() or overwrite:
            return "new"
        previous, wanted = self.config_json(), config_json(config, parts)
        if previous != wanted:
            old, new = config_lib.flatten(previous), config_lib.flatten(wanted)
            changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>"))
            raise WorkdirError(
                f"{self.workdir} holds a run with a different config (fields {', '.join(changed)}); "
                "pass --overwrite to replace it, or choose another --workdir"
            )
        return "done" if (self.workdir / SUMMARY).exists() else "resume"

    # --- a run, in order --------------------------------------------------------------------

    def open(self, config, parts: dict | None = None, overwrite: bool = False) -> str:
        """'new', 'resume' or 'done', the same in every process: process 0 creates and locks the
        workdir, inspects it and, with ``overwrite``, clears the run's files; the others take
        its verdict rather than race it."""
        if self.processes is None:
            raise ValueError(f"{self.workdir}: a store built without processes only reads")
        status = "new"
        if self.writes:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._lock = WorkdirLock(self.workdir)
            status = self.inspect(config, parts, overwrite)
            if overwrite and self.exists():
                self._clear()
        return STATUSES[processes_lib.from_process_0(STATUSES.index(status), self.processes)]

    def resume(self, template, identity: dict) -> tuple[object, list[dict], dict] | None:
        """(host state, records, meta) of the newest readable checkpoint, the one process 0
        chose (every process reads it), or None when there is none. ``template``: host arrays
        shaped like the state; ``identity``: the data this run trains on, which must be the
        checkpoint's."""
        restored, mismatch = None, None
        if self.writes:
            try:
                restored = self._restore(template)
            except checkpoints_lib.CheckpointMismatch as e:  # e.g. another module's parameters
                mismatch = str(e)
        chosen = processes_lib.from_process_0(-2 if mismatch else -1 if restored is None else restored[2]["pass"],
                                              self.processes)
        if chosen == -2:
            raise WorkdirError(
                f"{self.workdir}: its checkpoint does not fit this run's train state ({mismatch or 'see process 0'}); "
                "pass --overwrite to start again, or choose another --workdir"
            )
        if not self.writes and chosen >= 0:
            restored = self.checkpoints().read(chosen, template)
        if restored is None:  # killed before its first checkpoint, or every one set aside
            if self._set_aside:
                self.echo(f"{self.workdir}: no readable checkpoint; starting from pass 1")
            return None
        checkpoints_lib.check_same_data(self.workdir, restored[2], identity)
        return restored

    def begin(self, config, parts: dict | None, records: list[dict], learning_rates: list[float]) -> None:
        """config.json, the metrics so far (a resumed run's, from its checkpoint) and TensorBoard
        written again from them (what an interrupted writer left is dropped)."""
        self._rates, self._num_seeds = list(learning_rates), config.num_seeds
        if not self.writes:
            return
        files.write_json(self.workdir / CONFIG, config_json(config, parts))
        files.write_jsonl(self.workdir / METRICS, records)
        self._board = TensorBoard(self.workdir / TENSORBOARD, config.num_seeds)
        self._board.write(records, self._rates)

    def commit(self, pass_number: int, state, records: list[dict], new: list[dict], identity: dict) -> None:
        """After pass ``pass_number``: its checkpoint (``state``: host arrays; ``records``: all so
        far), which commits the pass; then ``new``, its records (none when it was not evaluated),
        into metrics.jsonl and TensorBoard."""
        if not self.writes:
            return
        t = time.perf_counter()
        self._save_checkpoint(pass_number, state, records, identity)
        self.seconds["checkpoint_s"] += time.perf_counter() - t
        if new:
            files.write_jsonl(self.workdir / METRICS, records)
            self._board.write(new, self._rates)

    def diverged(self, records: list[dict]) -> None:
        """The metrics with the pass that failed (its loss None), for the record; its state is
        not checkpointed."""
        if self.writes:
            files.write_jsonl(self.workdir / METRICS, records)

    def write_outputs(self, params: dict, model_state: dict, outputs: np.ndarray, labels: np.ndarray) -> None:
        """The final parameters, the module's other collections (if any) and the networks'
        outputs on the test split (replicas, N, 10), each with the replica axis of the state;
        the files of a one-seed run hold one network, without it (the README's promise)."""
        if not self.writes:
            return
        if self._num_seeds == 1:
            params, model_state = jax.tree.map(lambda a: a[0], (params, model_state))
        files.save_params(self.workdir / PARAMS, params)
        if model_state:
            files.save_params(self.workdir / MODEL_STATE, model_state)
        files.write_npz(self.workdir / TEST_OUTPUTS, outputs=outputs.astype(np.float32), labels=labels)

    def finish(self, summary: Callable[[], dict], figures: Callable[[], dict] | None = None) -> dict:
        """The plots (``figures()``: file name -> matplotlib Figure), then ``summary()`` into
        summary.json, last: its presence marks the run finished, so a run killed before it
        redoes its outputs when run again. Returns the summary ({} in a process that does not write)."""
        if not self.writes:
            return {}
        if figures is not None:
            t = time.perf_counter()
            try:  # a broken matplotlib costs the plots, never the run
                self.write_plots(figures())
            except ImportError as e:
                logging.warning("no plots: %s", e)
            self.seconds["plots_s"] = time.perf_counter() - t
        done = summary()
        files.write_json(self.workdir / SUMMARY, done)
        return done

    def write_plots(self, figures: dict) -> list[Path]:
        """Each figure as ``plots/<name>``; redrawing a run's plots needs no lock (it changes no result)."""
        if not self.writes:
            return []
        paths = [files.save_figure(fig, self.workdir / PLOTS / name) for name, fig in figures.items()]
        for path in paths:
            logging.info("wrote %s", path)
        return paths

    # --- the files behind the verbs ----------------------------------------------------------

    def _clear(self) -> None:
        """Removes what a run writes (and nothing else) from the workdir."""
        for name in RUN_FILES:
            (self.workdir / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(self.workdir / name, ignore_errors=True)

    def _save_checkpoint(self, pass_number: int, state, records: list[dict], identity: dict) -> None:
        """Written into a hidden folder and renamed into place, so a pass's checkpoint exists
        whole or not at all; the last ``KEEP`` kept. About a millisecond per pass, on the host."""
        directory = self.workdir / CHECKPOINTS
        final, tmp = directory / str(pass_number), directory / f".{pass_number}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        files.write_npz(tmp / checkpoints_lib.FILE, **checkpoints_lib.encode(pass_number, state, records, identity))
        if final.exists():  # only after a fallback left a later pass to redo
            shutil.rmtree(final)
        os.rename(tmp, final)
        for old in self.checkpoints().passes()[: -checkpoints_lib.KEEP]:
            shutil.rmtree(directory / str(old), ignore_errors=True)

    def _restore(self, template):
        """The newest readable checkpoint; one that cannot be read (truncated, flipped bytes,
        emptied) is set aside, renamed ``<pass>.unreadable``, with one line, and the next older
        one is used; one of another train state raises CheckpointMismatch."""
        reader = self.checkpoints()
        for p in reversed(reader.passes()):
            try:
                return reader.read(p, template)
            except checkpoints_lib.CheckpointMismatch:
                raise
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                aside = reader.directory / f"{p}.unreadable"
                shutil.rmtree(aside, ignore_errors=True)
                os.rename(reader.directory / str(p), aside)
                self._set_aside += 1
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

        self.path = Path(workdir) / LOCK
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

    def __init__(self, directory: Path, num_seeds: int):
        from tensorboardX import SummaryWriter

        # purge_step=1: TensorBoard drops what an interrupted earlier writer left;
        # the whole history is written again from the checkpointed records.
        if num_seeds == 1:
            self.writers = {None: SummaryWriter(str(directory), purge_step=1)}
        else:
            names = [f"replica_{r}" for r in range(num_seeds)] + ["mean"]
            self.writers = {n: SummaryWriter(str(directory / n), purge_step=1) for n in names}

    def write(self, records: list[dict], learning_rates: list[float]) -> None:
        by_pass: dict[int, list[dict]] = {}
        for r in records:
            by_pass.setdefault(r["pass"], []).append(r)
        for p, rows in sorted(by_pass.items()):
            for name, writer in self.writers.items():
                chosen = [r for r in rows if name in (None, "mean") or f"replica_{r['replica']}" == name]
                for split in data_lib.SPLITS:
                    split_rows = [r for r in chosen if r["split"] == split]
                    for key in ("loss", "error"):
                        writer.add_scalar(f"{key}/{split}", float(np.mean([r[key] for r in split_rows])), p)
                writer.add_scalar("learning_rate", learning_rates[p - 1], p)
        for w in self.writers.values():
            w.flush()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
