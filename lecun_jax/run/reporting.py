"""What a run prints of its metrics, and the records it keeps of them.

What a run's workdir holds, file by file, is the README's table under "What the
output means", written by :class:`lecun_jax.run.store.RunStore` alone. A sweep's
workdir holds ``table.md``, ``table.csv`` and ``sweep.json`` beside its runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lecun_jax.files import (  # noqa: F401  (the sweeps' and studies' files are written through these)
    atomic_write_bytes, flatten_params, load_params, read_jsonl, save_params, unflatten_params, write_json, write_jsonl,
    write_npz,
)
from lecun_jax.run.store import (  # noqa: F401  (a run's file names, for readers outside run/: studies/distributions.py)
    CHECKPOINTS, CONFIG, METRICS, MODEL_STATE, PARAMS, PLOTS, SUMMARY, TENSORBOARD, TEST_OUTPUTS,
)

TABLE_MD, TABLE_CSV, SWEEP_JSON = "table.md", "table.csv", "sweep.json"  # a sweep's


def eval_line(split: str, loss, error, misses) -> str:
    """Karpathy's line, e.g. ``eval: split test . loss 2.78e-02. error 4.09%. misses: 82``.

    With arrays (one value per replica) it gives mean +- std, the range of the
    error, and the number of replicas.
    """
    loss, error, misses = (np.atleast_1d(np.asarray(v)) for v in (loss, error, misses))
    if loss.size == 1:
        return f"eval: split {split:5s}. loss {loss[0]:.2e}. error {error[0]:.2f}%. misses: {int(misses[0])}"
    return (
        f"eval: split {split:5s}. loss {loss.mean():.2e} ± {loss.std():.1e}. "
        f"error {error.mean():.2f}% ± {error.std():.2f} ({error.min():.2f}-{error.max():.2f}). "
        f"misses: {misses.mean():.1f} ± {misses.std():.1f} ({loss.size} seeds)"
    )


def pass_records(pass_number: int, metrics: dict, sizes: dict[str, int], seed: int) -> list[dict]:
    """metrics.jsonl records of one pass, from host copies of the epoch's metrics (loss None if not finite)."""
    records = []
    for split, n in sizes.items():
        losses = np.atleast_1d(metrics[split]["loss"])
        misses = np.atleast_1d(metrics[split]["misses"])
        for r, (loss, miss) in enumerate(zip(losses, misses)):
            records.append(dict(
                {"pass": pass_number, "split": split, "replica": r, "seed": seed},
                loss=float(loss) if np.isfinite(loss) else None,  # JSON has no NaN: null marks a diverged pass
                error=100.0 * int(miss) / n, misses=int(miss),
            ))
    return records


def summarize(records: list[dict], split: str, pass_number: int) -> dict:
    """Across replicas, at one pass: per-replica lists and mean/std/min/max of each metric."""
    rows = [r for r in records if r["split"] == split and r["pass"] == pass_number]
    out: dict[str, Any] = {}
    for key in ("loss", "error", "misses"):
        v = np.asarray([r[key] for r in rows], dtype=np.float64)
        out[key] = v.tolist() if len(v) > 1 else v[0].item()
        if len(v) > 1:
            out[f"{key}_mean"], out[f"{key}_std"] = float(v.mean()), float(v.std())
            out[f"{key}_min"], out[f"{key}_max"] = float(v.min()), float(v.max())
    if len(rows) == 1:
        out["misses"] = int(out["misses"])
    return out
