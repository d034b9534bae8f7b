"""Files written whole: to a temporary name, then renamed into place, so that a
reader (or a crash) never sees half a file; and parameter trees as flat ``npz``
keys (``h1/kernel``). Imports nothing of the package: data and runs both write
through it.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def _umask() -> int:
    """The process's umask. Reading it means setting it (os.umask), so it is set back at once;
    for that instant it is the strict 077, so a file another thread creates is never too open."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a plain open would give 0666 less the umask
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    # allow_nan=False: a NaN would make the file invalid JSON; records hold None for it
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in records).encode())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def flatten_params(params, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out |= flatten_params(v, f"{prefix}{k}/")
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def unflatten_params(flat: dict[str, np.ndarray]) -> dict:
    out: dict = {}
    for key, v in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """``np.savez`` of ``arrays``, written whole and renamed into place."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def save_figure(fig, path: str | os.PathLike) -> Path:
    """A matplotlib figure as a PNG, at the figure's own dpi, written whole and renamed into place."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi="figure")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_params(path: str | os.PathLike, params) -> None:
    write_npz(path, **flatten_params(params))


def load_params(path: str | os.PathLike) -> dict:
    with np.load(path) as z:
        return unflatten_params({k: z[k] for k in z.files})
