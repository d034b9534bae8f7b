"""A study: the rows of a config file, each with its hyper-parameter chosen on
training digits held out from the training split, then run on fresh seeds on
the test split.

    python -m lecun_jax.distributions study paper1989

``configs/<name>.py:study`` says what to run (see ``configs/paper1989.py``):
``rows`` (presets of that file), ``search`` (per optimiser: one field and the
values tried), ``validation_size`` and ``validation_seeds`` (the search's
held-out digits and seeds), ``seeds`` (each chosen row's final run) and
``secondary`` (knobs tried on the row the search found best). For every row,
each value is trained on the training split less its last ``validation_size``
digits and scored by its mean mistakes on those; the value with the fewest is
kept (no choice sees the test split); the row is then trained on the whole
training split with ``seeds`` fresh seeds and tested. Every run is an ordinary
``python -m lecun_jax.launch`` run, so an interrupted study resumes where it
stopped; each finished run leaves a CSV and a manifest (its command, wall time,
and for a final row the chosen value and every value's held-out figure).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
from pathlib import Path

import numpy as np

from lecun_jax import config as config_lib
from lecun_jax import files
from lecun_jax.studies import rows as rows_lib

VALIDATION = "validation"  # the search's runs and CSV files, under the study's folders


@dataclasses.dataclass(frozen=True)
class Plan:
    """What ``configs/<name>.py:study`` asks for."""

    name: str
    rows: tuple[str, ...]
    search: dict[str, tuple[str, tuple[str, ...]]]  # optimiser -> (field, values)
    validation_size: int
    validation_seeds: int
    seeds: int
    secondary: dict[str, tuple[str, ...]]  # knob -> its overrides


def plan(name: str) -> Plan:
    spec = config_lib.load_file(f"configs/{name}.py", "study")
    search = {}
    for optimizer, text in spec.search.items():
        field, _, values = text.partition("=")
        search[optimizer] = (field, tuple(v for v in values.split(",") if v))
    secondary = {k: tuple(f"--config.{o}" for o in v.split(";") if o) for k, v in spec.secondary.items()}
    return Plan(name, tuple(r for r in spec.rows.split(",") if r), search, spec.validation_size,
                spec.validation_seeds, spec.seeds, secondary)


@functools.cache
def _preset(name: str, preset: str):
    """A preset's config, loaded once (read, never changed)."""
    return config_lib.load_file(f"configs/{name}.py", preset)


def _mean_test_misses(csv_path: Path) -> float:
    with open(csv_path, newline="") as f:
        return float(np.mean([int(line["test_misses"]) for line in csv.DictReader(f)]))


def _finished(results: Path, row: rows_lib.Row) -> Path | None:
    path = results / f"{row.key}.csv"
    return path if path.is_file() and path.with_suffix(".json").is_file() else None


def search(p: Plan, row: rows_lib.Row, optimizer: str, runs: Path, results: Path, extra: tuple[str, ...]) -> dict:
    """Each value of the optimiser's searched field on held-out training digits: the chosen
    override and every value's mean held-out mistakes."""
    field, values = p.search[optimizer]
    held_out = (*extra, f"--config.data.validation_size={p.validation_size}")
    scores = {}
    for value in values:
        candidate = dataclasses.replace(row, name=f"{row.name}.{field.rsplit('.', 1)[-1]}_{value}",
                                        overrides=row.overrides + (f"--config.{field}={value}",))
        try:
            path = _finished(results / VALIDATION, candidate) or rows_lib.run_row(
                candidate, p.validation_seeds, runs / VALIDATION, results / VALIDATION, held_out)
            scores[value] = _mean_test_misses(path)
        except SystemExit as e:  # a value whose loss diverges is out of the running, not the end of the study
            print(f"== {candidate.key}: {e}; not a candidate", flush=True)
            scores[value] = None
    ranked = [v for v in values if scores[v] is not None]
    if not ranked:
        raise SystemExit(f"error: {row.key}: every value of {field} failed on the held-out digits; try others in its search")
    best = min(ranked, key=lambda v: scores[v])  # the first of equals: values are listed small to large
    return {"field": field, "chosen": best, "held_out_digits": p.validation_size, "seeds": p.validation_seeds,
            "mean_held_out_misses": scores}


def study_row(p: Plan, preset: str, runs: Path, results: Path, extra: tuple[str, ...] = (), name: str | None = None,
              overrides: tuple[str, ...] = ()) -> dict:
    """One row: its search, then its final run; returns its search record."""
    config = _preset(p.name, preset)
    row = rows_lib.Row(config.data.name, name or preset, f"configs/{p.name}.py:{preset}", overrides)
    chosen = search(p, row, config.optimizer.name, runs, results, extra)
    final = dataclasses.replace(row, overrides=row.overrides + (f"--config.{chosen['field']}={chosen['chosen']}",))
    if not _finished(results, final):
        rows_lib.run_row(final, p.seeds, runs, results, extra, manifest={"search": chosen})
    return chosen


def run(name: str, runs: Path, results: Path, extra: tuple[str, ...] = ()) -> None:
    """The whole study: the rows of the paper's optimiser; the secondary knobs on the one
    whose chosen value had the fewest held-out mistakes (never a test figure); the other rows."""
    p = plan(name)
    _preset.cache_clear()  # the configs as they are now, for this study
    sdlm = [r for r in p.rows if _preset(p.name, r).optimizer.name == "sdlm"]
    found = {preset: study_row(p, preset, runs, results, extra) for preset in sdlm}
    if p.secondary and sdlm:
        best = min(sdlm, key=lambda r: found[r]["mean_held_out_misses"][found[r]["chosen"]])
        print(f"== secondary knobs on {best}, the best on held-out digits", flush=True)
        for knob, overrides in p.secondary.items():
            study_row(p, best, runs, results, extra, name=f"{best}+{knob}", overrides=overrides)
        files.write_json(results / "study.json", {"best_on_held_out_digits": best, "knobs": list(p.secondary)})
    for preset in (r for r in p.rows if r not in sdlm):
        study_row(p, preset, runs, results, extra)
