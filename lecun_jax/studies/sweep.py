"""Sweeps: presets of one config file, crossed with a grid of overrides, in one table.

A config whose ``sweep.rows`` names presets (``configs/ablations.py:all``) or
whose ``sweep.grid`` lists values runs every combination, each as an ordinary
run in ``<workdir>/<name>/``, then writes::

    <workdir>/table.md    rows: one column per field the grid varies, train/test
                          error mean +- std, test min-max, passes, seeds, wall time,
                          and the published figure beside rows that run its recipe
    <workdir>/table.csv   the same, one column per number
    <workdir>/sweep.json  the rows (with every seed's final errors) and the sweep's wall time

Fields set on the command line apply to every row (``--config.num_seeds=5``,
``--config.data.name=usps``). The published figure (``config.reference``) is
shown only beside a row that runs the recipe it was measured with: on the same
test digits, and with no field of the recipe changed by the grid or the
command line (:data:`NOT_RECIPE` lists the fields that do not count: seeds,
where the files are, speed and evaluation schedule). A row that fails, for
whatever reason, is reported as failed in the table with a one-line error
(the traceback of an unexpected one in ``<row>/error.txt``); the others still
run. Re-running the same command reuses the rows already finished.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import re
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import ml_collections
import numpy as np

from lecun_jax import config as config_lib
from lecun_jax import errors
from lecun_jax.run import experiment, processes, reporting
from lecun_jax.core import optimizers
from lecun_jax.studies import together
from lecun_jax.run.store import RunStore
from lecun_jax.run.workdir import WorkdirError

TABLE_MD, TABLE_CSV, SWEEP_JSON = reporting.TABLE_MD, reporting.TABLE_CSV, reporting.SWEEP_JSON
ERROR_TXT = "error.txt"  # in a failed row's folder: the traceback of an unexpected failure

# Fields that do not change what a run computes, only which draw, where the files
# are, how fast, or how often it is evaluated: changing them keeps a row on the
# published recipe (prefixes end with '.').
NOT_RECIPE = ("seed", "num_seeds", "data.source_dir", "data.tfds_dir", "data.mnist_url", "model.conv",
              "train.eval_every", "sweep.", "reference.")


def parse_grid(grid: str) -> list[dict[str, Any]]:
    """``"a.b=1,2;c=x"`` -> [{'a.b': 1, 'c': 'x'}, {'a.b': 2, 'c': 'x'}] (values as Python literals)."""
    if not grid.strip():
        return [{}]
    axes = []
    for part in grid.split(";"):
        path, sep, values = part.partition("=")
        if not sep or not path.strip() or not values.strip():
            raise config_lib.ConfigError(f"config.sweep.grid={grid!r}: expected 'field=v1,v2;field=v1,...'")
        path = path.strip()
        if path == "sweep" or path.startswith("sweep."):
            raise config_lib.ConfigError(f"config.sweep.grid={grid!r}: {path} cannot be a grid axis (a sweep's rows are not swept)")
        axes.append([(path, config_lib.literal(v.strip())) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def _tag(assignment: dict[str, Any]) -> str:
    return "-".join(f"{k.split('.')[-1]}={v}" for k, v in assignment.items())


def folder_name(name: str) -> str:
    """A row's name as one folder name: characters other than letters, digits and
    ``._=,+-`` (a ``/`` in a grid value) become ``_``, and a short hash of the name
    then keeps two such names apart."""
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)[:150].lstrip(".") or "_"
    if safe != name:
        safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return safe


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a sweep: its name, its folder in the sweep's workdir, its config,
    the grid's assignment (field -> value) and the recipe fields it changed from
    its preset (grid and command line together)."""

    name: str
    folder: str
    config: ml_collections.ConfigDict
    varied: dict[str, Any]
    changed: tuple[str, ...]


def _recipe_changes(config, base, overrides: dict[str, Any], base_has_overrides: bool) -> tuple[str, ...]:
    """Recipe fields (not :data:`NOT_RECIPE`) where ``config`` differs from ``base``;
    when ``base`` already holds the command line's overrides (a sweep of ``config``
    itself, no presets) every overridden recipe field counts as changed."""
    def recipe(path):
        return not any(path == n or (n.endswith(".") and path.startswith(n)) for n in NOT_RECIPE)

    mine, theirs = config_lib.flatten(config), config_lib.flatten(base)
    changed = {p for p in mine if recipe(p) and mine[p] != theirs.get(p)}
    if base_has_overrides:
        changed |= {p for p in overrides if recipe(p)}
    return tuple(sorted(changed))


def expand(config_file: str | Path, config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> list[Row]:
    """Every run: each preset of ``sweep.rows`` (or ``config`` itself) with the
    command-line ``overrides`` and one grid assignment applied."""
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
            for field in ("sweep.rows", "sweep.grid", "sweep.together"):  # a row is one run, however the sweep runs it
                config_lib.set_path(c, field, config_lib.FIELDS[field].default)
            config_lib.validate(c)
            name = "-".join(p for p in (row or "run", _tag(assignment)) if p)
            changed = _recipe_changes(c, base, overrides, base_has_overrides=row is None)
            runs.append(Row(name, folder_name(name), c, assignment, changed))
    folders = [r.folder for r in runs]
    if len(set(folders)) < len(folders):
        raise config_lib.ConfigError(f"config.sweep.grid={config.sweep.grid!r}: two rows would share a folder; "
                                     f"rows: {', '.join(r.name for r in runs)}")
    return runs


def _stats(values) -> dict[str, float]:
    v = np.atleast_1d(np.asarray(values, dtype=np.float64))
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def row_record(run: Row, summary: dict | None, error: str | None, workdir: Path) -> dict:
    """One line of the table: the row, one key per field the grid varies, the
    results (with every seed's final errors, ``train_errors`` and ``test_errors``),
    and the published figure where the row runs its recipe."""
    config = run.config
    same_digits = config.reference.dataset == config.data.name and config.data.validation_size is None
    # published figures only beside runs of their recipe on the same test digits
    ref = config.reference if same_digits and not run.changed else None
    rec: dict[str, Any] = {
        "row": run.name, **run.varied, "passes": config.train.passes, "seeds": config.num_seeds,
        "dataset": config.data.name + ("" if config.data.validation_size is None else f" (held-out {config.data.validation_size})"),
        "train_size": config.data.train_size, "reference_label": ref.label if ref else "",
        "reference_train_error": ref.train_error if ref else None,
        "reference_test_error": ref.test_error if ref else None,
        "recipe_changed": ",".join(run.changed),
        "workdir": str(workdir), "status": "ok" if error is None else f"failed: {error}",
    }
    if summary is not None:
        for split in ("train", "test"):
            for key, value in _stats(summary["final"][split]["error"]).items():
                rec[f"{split}_error_{key}"] = value
            rec[f"{split}_errors"] = np.atleast_1d(np.asarray(summary["final"][split]["error"], np.float64)).tolist()
            losses = summary["final"][split]["loss"]
            rec[f"{split}_loss_mean"] = _stats(losses)["mean"] if losses is not None else None
        rec["wall_s"] = summary["time"]["wall_s"]
    return rec


def _pm(rec, key) -> str:
    if f"{key}_mean" not in rec:
        return "—"
    return f"{rec[f'{key}_mean']:.2f}" + (f" ± {rec[f'{key}_std']:.2f}" if rec["seeds"] > 1 else "")


def _cell(value) -> str:
    return str(value).replace("|", "\\|")


def table_markdown(records: list[dict], wall_s: float, varied: list[str] = ()) -> str:
    """The table; ``varied``: the fields the grid varies, a column each. The
    published column appears when some row has a published figure."""
    published = any(r["reference_test_error"] is not None for r in records)
    head = ["row", *varied, "data", "passes", "seeds", "train error %", "test error %", "test min–max %", "wall"]
    head += ["published test % (train)"] if published else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        ref = "—" if r["reference_test_error"] is None else f"{r['reference_test_error']:.2f}"
        if r["reference_train_error"] is not None:
            ref += f" ({r['reference_train_error']:.2f})"
        data = r["dataset"] if r["train_size"] is None else f"{r['dataset']} ({r['train_size']})"
        cells = [r["row"], *(r.get(v, "") for v in varied), data, r["passes"], r["seeds"]]
        if r["status"] != "ok":
            cells += [r["status"], "", "", ""]
        else:
            span = f"{r['test_error_min']:.2f}–{r['test_error_max']:.2f}"
            cells += [_pm(r, "train_error"), _pm(r, "test_error"), span, f"{r['wall_s']:.0f} s"]
        lines.append("| " + " | ".join(_cell(c) for c in cells + ([ref] if published else [])) + " |")
    lines.append("")
    lines.append(f"mean ± std over seeds (population std); whole sweep {wall_s:.0f} s wall.")
    if published:
        lines.append("published: the figure measured with the row's recipe (—: the row changes the recipe or the test digits).")
    return "\n".join(lines) + "\n"


def table_csv(records: list[dict], varied: list[str] = ()) -> str:
    """One column per number: the row, the fields the grid varies, then the rest
    (the per-seed lists stay in sweep.json)."""
    keys = dict.fromkeys(k for r in records for k in r if not isinstance(r[k], list))
    columns = ["row", *varied, *(k for k in keys if k != "row" and k not in varied)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def _one_line(e: BaseException, expected: bool) -> str:
    """The project's own errors whole, their lines joined; another exception: its
    type and the first line of its message, at most 300 characters."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    if expected:
        return " ".join(lines)
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


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
    varied = list(dict.fromkeys(k for r in runs for k in r.varied))
    echo(f"sweep: {len(runs)} runs: {', '.join(r.name for r in runs)}")
    # Units of work: a row alone, or rows that differ only in optimiser hyperparameters,
    # trained together in one program. In a multi-process job each process takes every
    # n-th unit on its own devices; process 0 writes the tables once all are done.
    units = together_units(runs) if config.sweep.together else [[(i, r)] for i, r in enumerate(runs, 1)]
    job = processes.job()
    index, count = job.index, job.count
    done: dict[int, dict] = {}
    for unit in units[index::count]:
        summaries = _train_together(unit, workdir, overwrite, echo) if len(unit) > 1 else {}
        for i, r in unit:
            summary, error = summaries.get(i), None
            if summary is None:
                echo(f"== [{i}/{len(runs)}] {r.name} (sweep {time.perf_counter() - start:.0f} s so far)")
                summary, error = _run_row(r, workdir, overwrite, echo)
            done[i] = row_record(r, summary, error, workdir / r.folder)
            if count == 1:
                _write(workdir, [done[k] for k in sorted(done)], time.perf_counter() - start, varied)  # a table after every row
            else:
                reporting.write_json(workdir / r.folder / ROW_JSON, done[i])
    records = [done[k] for k in sorted(done)]
    if count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("lecun_jax sweep: every row done")
        if index != 0:
            return []
        records = [json.loads((workdir / r.folder / ROW_JSON).read_text()) for r in runs]
    wall_s = time.perf_counter() - start
    _write(workdir, records, wall_s, varied)
    from lecun_jax.run import plots
    from lecun_jax.studies import scaling

    plots.write_sweep(workdir)
    if "data.train_size" in config.sweep.grid and "model.width" in config.sweep.grid:
        for path in scaling.write(workdir):
            echo(f"wrote {path}")
    echo(table_markdown(records, wall_s, varied))
    echo(f"wrote {workdir / TABLE_MD} and {workdir / TABLE_CSV}")
    return records


ROW_JSON = "sweep_row.json"  # a row's table record, from the process that ran it (multi-process sweeps)


def _run_row(r: Row, workdir: Path, overwrite: bool, echo) -> tuple[dict | None, str | None]:
    """(summary, None) of one row run alone, or (None, its one-line error)."""
    (workdir / r.folder / ERROR_TXT).unlink(missing_ok=True)  # from an earlier failed attempt
    try:
        return experiment.train_and_evaluate(r.config, workdir / r.folder, overwrite=overwrite, label=r.name, echo=echo,
                                             processes=processes.local()), None  # a row is this process's own
    except errors.USER_ERRORS as e:  # the same list, and the same one line, as the command's
        error = _one_line(e, expected=True)
    except Exception as e:  # any other fault of one row: the others still run
        error = _one_line(e, expected=False)
        reporting.atomic_write_bytes(workdir / r.folder / ERROR_TXT, traceback.format_exc().encode())
        error += f" (traceback in {workdir / r.folder / ERROR_TXT})"
    echo(f"== {r.name} failed: {error}")
    return None, error


def together_units(runs: list[Row]) -> list[list[tuple[int, Row]]]:
    """The rows (numbered from 1) in units: rows whose configs differ only in fields the
    optimiser can take as data (:func:`lecun_jax.core.optimizers.injectable`) share a unit."""
    units: dict[str, list[tuple[int, Row]]] = {}
    for i, r in enumerate(runs, 1):
        fields = optimizers.injectable(r.config.optimizer)
        data_fields = {f"optimizer.{f}" for f in fields}
        flat = {k: v for k, v in config_lib.flatten(r.config.to_dict()).items() if k not in data_fields}
        key = json.dumps(flat, sort_keys=True, default=repr) if fields else f"alone-{i}"
        units.setdefault(key, []).append((i, r))
    return list(units.values())


def _train_together(unit: list[tuple[int, Row]], workdir: Path, overwrite: bool, echo) -> dict[int, dict]:
    """Summaries of the unit's rows: those already finished, and the others trained side by
    side in one program (replicas = rows x seeds, their hyperparameters as data), each row
    then written as an ordinary run in its folder. A row not here runs alone (e.g. after
    the group failed: a diverging learning rate fails its own row only)."""
    out, pending = {}, []
    for i, r in unit:
        try:
            status = RunStore(workdir / r.folder).inspect(r.config, overwrite=overwrite)
        except WorkdirError:
            continue  # run alone, it fails there with this line
        if status == "done":
            out[i] = RunStore(workdir / r.folder).summary()
        else:
            pending.append((i, r))
    fields = [k for k in optimizers.injectable(unit[0][1].config.optimizer)
              if len({getattr(r.config.optimizer, k) for _, r in pending}) > 1]
    if len(pending) < 2 or not fields:
        return out
    seeds = unit[0][1].config.num_seeds
    group = together.Group(seeds=seeds, values={k: tuple(getattr(r.config.optimizer, k) for _, r in pending) for k in fields})
    config = ml_collections.ConfigDict(pending[0][1].config.to_dict())
    config.num_seeds = len(pending) * seeds
    names = [r.name for _, r in pending]
    group_dir = workdir / f"together-{hashlib.sha256(','.join(names).encode()).hexdigest()[:12]}"  # the group's own run
    echo(f"== [{', '.join(str(i) for i, _ in pending)}] {', '.join(names)}: together in one program, "
         f"{len(pending)} rows x {seeds} seed(s), {', '.join('optimizer.' + k for k in fields)} as data")
    try:
        mine = processes.local()  # the group and its rows are this process's own
        together.train(group, config, group_dir, overwrite=overwrite, label="together: " + ", ".join(names), echo=echo,
                       processes=mine)
        for k, (i, r) in enumerate(pending):
            out[i] = together.write_row(group_dir, group, k, r.config, workdir / r.folder, label=r.name, processes=mine)
    except Exception as e:  # noqa: BLE001 - whatever it was, the rows still run, one by one
        echo(f"== training together failed ({_one_line(e, expected=False)}); those rows run one by one")
        for i, _ in pending:
            out.pop(i, None)
    return out


def _write(workdir: Path, records: list[dict], wall_s: float, varied: list[str]) -> None:
    reporting.atomic_write_bytes(workdir / TABLE_MD, table_markdown(records, wall_s, varied).encode())
    reporting.atomic_write_bytes(workdir / TABLE_CSV, table_csv(records, varied).encode())
    reporting.write_json(workdir / SWEEP_JSON, {"rows": records, "varied": varied, "wall_s": wall_s})


def failed(records: list[dict]) -> list[str]:
    return [r["row"] for r in records if r["status"] != "ok"]

