"""The checkpoint format: the train state after a pass, the metrics so far and the
identity of the data trained on, in one ``npz``; and reading it back.

``checkpoints/<pass>/state.npz`` holds every leaf of the state (host copies of the
real replicas), the metrics records so far and the digest of the data trained on;
the zip's CRC-32 covers each member. :class:`lecun_jax.run.store.RunStore` writes
them (whole, renamed into place, the last :data:`KEEP` kept) and sets aside the
ones that cannot be read; this module only encodes and reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from lecun_jax import data as data_lib
from lecun_jax.run.workdir import WorkdirError

KEEP = 3  # checkpoints kept: the newest, and older ones to fall back on
FILE = "state.npz"  # in checkpoints/<pass>/


class CheckpointMismatch(ValueError):
    """A readable checkpoint of another train state (another module, optimiser or layout)."""


def encode(pass_number: int, state, records: list[dict], data: dict) -> dict[str, np.ndarray]:
    """The arrays of one checkpoint. ``state``: host arrays (numpy); ``data``: what it
    trained on (see :func:`data_identity`)."""
    paths, leaves = zip(*[(jax.tree_util.keystr(k), np.asarray(v)) for k, v in jax.tree_util.tree_flatten_with_path(state)[0]])
    meta = {"pass": pass_number, "paths": list(paths), "data": data}
    return dict(meta=np.asarray(json.dumps(meta)), records=np.asarray(json.dumps(records)),
                **{f"leaf_{i}": leaf for i, leaf in enumerate(leaves)})


class Checkpoints:
    """The checkpoints in a run's ``checkpoints/`` folder, for reading."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def passes(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and p.is_dir())

    def latest(self) -> int | None:
        return (self.passes() or [None])[-1]

    def read(self, pass_number: int, template):
        """(state, records, meta) of one pass's checkpoint; raises if it cannot be read, and
        :class:`CheckpointMismatch` if it is of another train state than ``template``'s
        (host arrays shaped like the state)."""
        with np.load(self.directory / str(pass_number) / FILE, allow_pickle=False) as z:
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


