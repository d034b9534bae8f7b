"""Checkpoints of the train state after every pass, and the identity of the data they trained on."""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from lecun_jax import data as data_lib
from lecun_jax.run import reporting
from lecun_jax.run.processes import process_index
from lecun_jax.run.workdir import WorkdirError

KEEP = 3  # checkpoints kept: the newest, and older ones to fall back on


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

    def __init__(self, directory: Path, keep: int = KEEP, echo: Callable[[str], None] = print):
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



def data_identity(config, dataset) -> dict:
    """What a run trains and tests on: digests of the exact arrays, their sizes and their source."""
    d = config.data
    return {
        "name": dataset.name,
        # where the digits came from, and each source file's SHA-256 (lecun_jax.data's record)
        "source": {"where": d.source_dir or (d.mnist_url if d.name == "mnist" else "shipped"),
                   **{k: v for k, v in dataset.source.items() if k in ("kind", "files")}},
        **{f"{s}_digits": len(dataset.split(s)) for s in data_lib.SPLITS},
        **{f"{s}_sha256": data_lib.array_digest(dataset.split(s).images, dataset.split(s).labels) for s in data_lib.SPLITS},
    }


def check_same_data(workdir: Path, meta: dict, identity: dict) -> None:
    before = meta.get("data") or {}
    changed = [s for s in data_lib.SPLITS if before.get(f"{s}_sha256") != identity[f"{s}_sha256"]]
    if changed:
        what = ", ".join(f"{s}: {before.get(f'{s}_digits', '?'):,} digits then, {identity[f'{s}_digits']:,} now"
                         if isinstance(before.get(f"{s}_digits"), int) else s for s in changed)
        raise WorkdirError(
            f"{workdir}: the data differ from what pass {meta['pass']} was trained on ({what}; source "
            f"{(before.get('source') or {}).get('where', '?')}); restore those files, or pass --overwrite to start again"
        )


