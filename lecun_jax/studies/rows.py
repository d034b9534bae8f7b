"""The rows of the many-seed tables: what each is (a config file's preset and overrides),
the command that trains it, and its per-seed CSV and manifest once finished.

A row is an ordinary run (``python -m lecun_jax.launch --config=... --config.num_seeds=N``,
only the last pass evaluated) in ``<runs>/<dataset>_<row>``, started in the current folder:
the configs are the package's own where that folder has no ``configs/``, so it runs from a
checkout or from an installed wheel alike. An interrupted row resumes from its last pass.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from lecun_jax import config as config_lib
from lecun_jax.run import reporting

COLUMNS = ("row", "dataset", "seed", "replica", "train_misses", "train_error", "test_misses", "test_error",
           "train_loss", "test_loss")
PUBLISHED_COUNTS = ("train_misses", "test_misses", "train_mse", "test_mse")  # where a paper gives them


@dataclasses.dataclass(frozen=True)
class Row:
    dataset: str
    name: str
    config: str  # the config file and preset, as --config takes it
    overrides: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.dataset}_{self.name}"


ROWS = (
    Row("mnist1989", "repro", "configs/ablations.py:repro"),
    Row("mnist1989", "ce", "configs/ablations.py:ce"),
    Row("mnist1989", "adamw", "configs/ablations.py:adamw"),
    Row("mnist1989", "augment", "configs/ablations.py:augment"),
    Row("mnist1989", "relu_dropout", "configs/ablations.py:relu_dropout"),
    Row("usps", "sgd", "configs/lecun1989.py:usps"),
    Row("usps", "sdlm", "configs/lecun1989.py:usps_sdlm"),
    Row("usps", "relu_dropout", "configs/ablations.py:relu_dropout", ("--config.data.name=usps",)),
)


def row_config(row: Row):
    path, _, arg = row.config.partition(":")
    c = config_lib.load_file(path, arg or None)
    for o in row.overrides:
        field, _, value = o.removeprefix("--config.").partition("=")
        config_lib.set_path(c, field, config_lib.literal(value))
    return c


def command(row: Row, seeds: int, workdir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The command of a row, as a user reruns it from any folder: the last pass alone evaluated
    (the numbers do not change)."""
    passes = row_config(row).train.passes
    return ["python", "-m", "lecun_jax.launch", f"--config={row.config}", *row.overrides, f"--config.num_seeds={seeds}",
            f"--config.train.eval_every={passes}", *extra, f"--workdir={workdir}"]


def _shown(path: Path) -> Path:
    """``path`` as the recorded command shows it: from the current folder where it is inside."""
    path, here = path.resolve(), Path.cwd().resolve()
    return path.relative_to(here) if path.is_relative_to(here) else path


def run_row(row: Row, seeds: int, runs: Path, results: Path, extra: tuple[str, ...] = (),
            manifest: dict | None = None) -> Path:
    """Trains (or resumes, or finds finished) one row, then writes its CSV and manifest
    (with ``manifest``'s entries added)."""
    workdir = runs.resolve() / row.key
    cmd = command(row, seeds, _shown(workdir), extra)
    print(f"== {row.key}: {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *cmd[1:]])  # the command as shown, from this folder
    if done.returncode != 0:
        raise SystemExit(f"error: {row.key} stopped (exit {done.returncode}); run the same command again to resume")
    return export(row, workdir, results, shlex.join(cmd), time.perf_counter() - start, manifest)


def export(row: Row, workdir: Path, results: Path, cmd: str, wall_s: float, manifest: dict | None = None) -> Path:
    """``<results>/<row>.csv`` (one line per seed) and its manifest, from a finished run."""
    summary = json.loads((workdir / reporting.SUMMARY).read_text())
    last = summary["passes"]
    final = {}
    for r in reporting.read_jsonl(workdir / reporting.METRICS):
        if r["pass"] == last:
            final.setdefault(r["replica"], {})[r["split"]] = r
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for replica, splits in sorted(final.items()):
        tr, te = splits["train"], splits["test"]
        w.writerow([row.name, row.dataset, te["seed"], replica, tr["misses"], f"{tr['error']:.4f}", te["misses"],
                    f"{te['error']:.4f}", tr["loss"], te["loss"]])
    path = results / f"{row.key}.csv"
    reporting.atomic_write_bytes(path, out.getvalue().encode())
    config = json.loads((workdir / reporting.CONFIG).read_text())
    ref = config["reference"]  # a published figure counts only on the digits it was measured on
    same = ref["dataset"] == config["data"]["name"] and config["data"].get("validation_size") is None
    published = {"label": ref["label"] if same else "", "test_error": ref["test_error"] if same else None,
                 **{k: ref.get(k) if same else None for k in PUBLISHED_COUNTS}}
    reporting.write_json(path.with_suffix(".json"), {
        **(manifest or {}),
        "row": row.name, "dataset": row.dataset, "command": cmd, "seeds": len(final), "passes": last,
        "published": published,
        "wall_s_this_process": wall_s, "resumed_after_pass": summary["resumed_after_pass"],
        "train_s": summary["time"]["train_s"], "compile_s": summary["time"]["compile_s"],
        "device": summary["device"], "versions": summary["versions"],
    })
    print(f"wrote {path} ({len(final)} seeds)", flush=True)
    return path
