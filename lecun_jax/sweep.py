"""Sweeps: presets of one config file, crossed with a grid of overrides, in one table.

A config whose ``sweep.rows`` names presets (``configs/ablations.py:all``) or
whose ``sweep.grid`` lists values runs every combination, each as an ordinary
run in ``<workdir>/<name>/``, then writes::

    <workdir>/table.md    rows: train/test error mean +- std, test min-max, passes,
                          seeds, wall time, and the published figure beside ours
    <workdir>/table.csv   the same, one column per number
    <workdir>/sweep.json  the rows and the sweep's own wall time

Fields set on the command line apply to every row (``--config.num_seeds=5``,
``--config.data.name=usps``). A row that fails (a diverging run, a missing
data file) is reported as failed in the table; the others still run.
Re-running the same command reuses the rows already finished.
"""

from __future__ import annotations

import ast
import csv
import io
import itertools
import time
from pathlib import Path
from typing import Any, Callable

import ml_collections
import numpy as np

from lecun_jax import config as config_lib
from lecun_jax import data as data_lib
from lecun_jax import experiment, reporting

TABLE_MD, TABLE_CSV, SWEEP_JSON = reporting.TABLE_MD, reporting.TABLE_CSV, reporting.SWEEP_JSON


def parse_grid(grid: str) -> list[dict[str, Any]]:
    """``"a.b=1,2;c=x"`` -> [{'a.b': 1, 'c': 'x'}, {'a.b': 2, 'c': 'x'}] (values as Python literals)."""
    if not grid.strip():
        return [{}]
    axes = []
    for part in grid.split(";"):
        path, sep, values = part.partition("=")
        if not sep or not path.strip() or not values.strip():
            raise config_lib.ConfigError(f"config.sweep.grid={grid!r}: expected 'field=v1,v2;field=v1,...'")
        axes.append([(path.strip(), _literal(v.strip())) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _tag(assignment: dict[str, Any]) -> str:
    return "-".join(f"{k.split('.')[-1]}={v}" for k, v in assignment.items())


def expand(
    config_file: str | Path, config: ml_collections.ConfigDict, overrides: dict[str, Any]
) -> list[tuple[str, ml_collections.ConfigDict]]:
    """(name, config) of every run: each preset of ``sweep.rows`` (or ``config``
    itself) with the command-line ``overrides`` and one grid assignment applied."""
    rows = [r.strip() for r in config.sweep.rows.split(",") if r.strip()]
    runs = []
    for row in rows or [None]:
        base = config_lib.load_file(config_file, row) if row else config
        for assignment in parse_grid(config.sweep.grid):
            c = ml_collections.ConfigDict(base.to_dict())
            for path, value in {**overrides, **assignment}.items():
                if not path.startswith("sweep."):
                    try:
                        config_lib.set_path(c, path, value)
                    except (KeyError, AttributeError, TypeError) as e:
                        raise config_lib.ConfigError(f"config.{path}={value!r}: cannot be set ({e})") from None
            c.sweep.rows, c.sweep.grid = "", ""
            config_lib.validate(c)
            name = "-".join(p for p in (row or "run", _tag(assignment)) if p)
            runs.append((name, c))
    return runs


def _stats(values) -> dict[str, float]:
    v = np.atleast_1d(np.asarray(values, dtype=np.float64))
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def row_record(name: str, config, summary: dict | None, error: str | None, workdir: Path) -> dict:
    """One line of the table."""
    same_digits = config.reference.dataset == config.data.name and config.data.validation_size is None
    ref = config.reference if same_digits else None  # published figures only beside runs on the same test digits
    rec: dict[str, Any] = {
        "row": name, "passes": config.train.passes, "seeds": config.num_seeds,
        "dataset": config.data.name + ("" if config.data.validation_size is None else f" (held-out {config.data.validation_size})"),
        "train_size": config.data.train_size, "reference_label": ref.label if ref else "",
        "reference_train_error": ref.train_error if ref else None,
        "reference_test_error": ref.test_error if ref else None,
        "workdir": str(workdir), "status": "ok" if error is None else f"failed: {error}",
    }
    if summary is not None:
        for split in ("train", "test"):
            for key, value in _stats(summary["final"][split]["error"]).items():
                rec[f"{split}_error_{key}"] = value
            losses = summary["final"][split]["loss"]
            rec[f"{split}_loss_mean"] = _stats(losses)["mean"] if losses is not None else None
        rec["wall_s"] = summary["time"]["wall_s"]
    return rec


def _pm(rec, key) -> str:
    if f"{key}_mean" not in rec:
        return "—"
    return f"{rec[f'{key}_mean']:.2f}" + (f" ± {rec[f'{key}_std']:.2f}" if rec["seeds"] > 1 else "")


def table_markdown(records: list[dict], wall_s: float) -> str:
    lines = [
        "| row | data | passes | seeds | train error % | test error % | test min–max % | wall | published test % (train) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        ref = "—" if r["reference_test_error"] is None else f"{r['reference_test_error']:.2f}"
        if r["reference_train_error"] is not None:
            ref += f" ({r['reference_train_error']:.2f})"
        if r["status"] != "ok":
            lines.append(f"| {r['row']} | {r['dataset']} | {r['passes']} | {r['seeds']} | {r['status']} | | | | {ref} |")
            continue
        span = f"{r['test_error_min']:.2f}–{r['test_error_max']:.2f}"
        data = r["dataset"] if r["train_size"] is None else f"{r['dataset']} ({r['train_size']})"
        lines.append(
            f"| {r['row']} | {data} | {r['passes']} | {r['seeds']} | {_pm(r, 'train_error')} "
            f"| {_pm(r, 'test_error')} | {span} | {r['wall_s']:.0f} s | {ref} |"
        )
    lines.append("")
    lines.append(f"mean ± std over seeds (population std); whole sweep {wall_s:.0f} s wall.")
    return "\n".join(lines) + "\n"


def table_csv(records: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in records for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def run(
    config_file: str | Path,
    config: ml_collections.ConfigDict,
    overrides: dict[str, Any],
    workdir: str | Path,
    *,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Runs every row of the sweep and writes the tables; returns the table's records."""
    start = time.perf_counter()
    workdir = Path(workdir)
    runs = expand(config_file, config, overrides)
    echo(f"sweep: {len(runs)} runs: {', '.join(n for n, _ in runs)}")
    records = []
    for i, (name, c) in enumerate(runs, 1):
        echo(f"== [{i}/{len(runs)}] {name}")
        summary, error = None, None
        try:
            summary = experiment.train_and_evaluate(c, workdir / name, overwrite=overwrite, label=name, echo=echo)
        except (experiment.NumericalError, data_lib.DataError, config_lib.ConfigError, experiment.WorkdirError) as e:
            error = str(e)
            echo(f"== {name} failed: {error}")
        records.append(row_record(name, c, summary, error, workdir / name))
        _write(workdir, records, time.perf_counter() - start)  # a table after every row
    wall_s = time.perf_counter() - start
    _write(workdir, records, wall_s)
    from lecun_jax import plots, scaling

    plots.write_sweep(workdir)
    if "data.train_size" in config.sweep.grid and "model.width" in config.sweep.grid:
        for path in scaling.write(workdir):
            echo(f"wrote {path}")
    echo(table_markdown(records, wall_s))
    echo(f"wrote {workdir / TABLE_MD} and {workdir / TABLE_CSV}")
    return records


def _write(workdir: Path, records: list[dict], wall_s: float) -> None:
    reporting.atomic_write_bytes(workdir / TABLE_MD, table_markdown(records, wall_s).encode())
    reporting.atomic_write_bytes(workdir / TABLE_CSV, table_csv(records).encode())
    reporting.write_json(workdir / SWEEP_JSON, {"rows": records, "wall_s": wall_s})


def failed(records: list[dict]) -> list[str]:
    return [r["row"] for r in records if r["status"] != "ok"]

