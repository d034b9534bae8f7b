"""Sweeps as a user waits for them: rows together or alone, one process or two.

    python benchmarks/sweeps.py                       # both sections
    python benchmarks/sweeps.py --sections=grid --passes=5

Sections (each a child ``python launch.py`` per variant, alternating, same machine):

  grid       a learning-rate grid of 4 values x 3 seeds of the 1989 recipe
             (``--config.sweep.grid=optimizer.learning_rate=0.01,0.02,0.03,0.05``):
             the rows together in one program (``--config.sweep.together=true``)
             against every row alone (``sweep.together``'s default); wall time
             of the whole process, and how far apart the two give each row's numbers
  processes  a small scaling sweep (``configs/scaling.py:usps``, sizes 500 and 1,000
             x widths 0.5 and 1, one seed, 80 passes each): one process against two
             processes on this machine (loopback coordinator), each process with one
             device

Prints figures and ratios and writes JSON (--out).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
flags.DEFINE_list("sections", ["grid", "processes"], "Sections to run.")
flags.DEFINE_integer("repeats", 1, "Alternating repeats of each variant (medians).")
flags.DEFINE_integer("passes", None, "Shorter runs for a quick check (--config.train.passes).")
flags.DEFINE_string("out", str(REPO / "benchmarks" / "results" / "sweeps.json"), "JSON output path.")
FLAGS = flags.FLAGS

GRID = [
    "--compilation_cache=",  # every variant compiles what it needs: one program together, one per row alone
    "--config.num_seeds=3", "--config.sweep.grid=optimizer.learning_rate=0.01,0.02,0.03,0.05"]
SCALING = ["--compilation_cache=", "--config=configs/scaling.py:usps", "--config.num_seeds=1", "--config.sweep.grid=data.train_size=500,1000;model.width=0.5,1"]


def _launch(args: list[str], workdir: Path, devices: int | None = None, extra: list[list[str]] | None = None) -> float:
    """Wall seconds of ``python launch.py ARGS`` (several processes at once when ``extra``
    gives each one's own flags)."""
    env = dict(os.environ)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    passes = [f"--config.train.passes={FLAGS.passes}"] if FLAGS.passes else []
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "launch.py", *args, *passes, f"--workdir={workdir}", *e], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for e in (extra or [[]])]
    outputs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t
    if any(p.returncode for p in procs):
        raise SystemExit(f"launch.py {' '.join(args)} failed:\n" + "\n".join(o[-2000:] for o in outputs))
    return wall


def _rows(workdir: Path) -> dict[str, dict]:
    return {r["row"]: r for r in csv.DictReader((workdir / "table.csv").open())}


def grid(scratch: Path) -> dict:
    walls: dict[str, list[float]] = {"together": [], "alone": []}
    for i in range(FLAGS.repeats):
        for variant in ("alone", "together"):
            w = scratch / f"grid_{variant}_{i}"
            walls[variant].append(_launch([*GRID, f"--config.sweep.together={'true' if variant == 'together' else 'false'}"], w))
            print(f"  grid {variant} {i + 1}/{FLAGS.repeats}: {walls[variant][-1]:.1f} s", flush=True)
    together, alone = _rows(scratch / "grid_together_0"), _rows(scratch / "grid_alone_0")
    diffs = {}
    for row in together:
        t = json.loads((Path(together[row]["workdir"]) / "summary.json").read_text())["final"]["test"]
        a = json.loads((Path(alone[row]["workdir"]) / "summary.json").read_text())["final"]["test"]
        diffs[row] = {"test_error_together": t["error_mean"], "test_error_alone": a["error_mean"],
                      "max_abs_misses_difference": max(abs(x - y) for x, y in zip(t["misses"], a["misses"])),
                      "max_rel_loss_difference": max(abs(x - y) / abs(y) for x, y in zip(t["loss"], a["loss"]))}
    med = {k: statistics.median(v) for k, v in walls.items()}
    return {"walls": walls, "median_s": med, "alone_over_together": med["alone"] / med["together"], "rows": diffs}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes(scratch: Path) -> dict:
    walls: dict[str, list[float]] = {"1 process": [], "2 processes": []}
    for i in range(FLAGS.repeats):
        walls["1 process"].append(_launch(SCALING, scratch / f"scaling_1_{i}", devices=1))
        port = _free_port()
        two = [[f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={k}"] for k in range(2)]
        walls["2 processes"].append(_launch(SCALING, scratch / f"scaling_2_{i}", devices=1, extra=two))
        print(f"  scaling {i + 1}/{FLAGS.repeats}: 1 process {walls['1 process'][-1]:.1f} s, "
              f"2 processes {walls['2 processes'][-1]:.1f} s", flush=True)
    one, two = _rows(scratch / "scaling_1_0"), _rows(scratch / "scaling_2_0")
    same = all(one[r]["test_error_mean"] == two[r]["test_error_mean"] for r in one)
    med = {k: statistics.median(v) for k, v in walls.items()}
    return {"walls": walls, "median_s": med, "one_over_two": med["1 process"] / med["2 processes"], "same_table": same}


def main(argv):
    del argv
    scratch = Path(tempfile.mkdtemp(prefix="lecun_jax_sweeps_"))
    results = {"passes": FLAGS.passes, "sections": {}}
    try:
        if "grid" in FLAGS.sections:
            print("grid: 4 learning rates x 3 seeds, rows together against rows alone", flush=True)
            results["sections"]["grid"] = g = grid(scratch)
            print(f"  median: alone {g['median_s']['alone']:.1f} s, together {g['median_s']['together']:.1f} s: "
                  f"{g['alone_over_together']:.2f}x")
            for row, d in g["rows"].items():
                print(f"    {row}: test {d['test_error_alone']:.2f} % alone, {d['test_error_together']:.2f} % together; "
                      f"misses differ by at most {d['max_abs_misses_difference']}, losses by {d['max_rel_loss_difference']:.1e} (relative)")
        if "processes" in FLAGS.sections:
            print("processes: scaling sweep (500, 1,000 x 0.5, 1; one seed) in 1 process and in 2", flush=True)
            results["sections"]["processes"] = p = processes(scratch)
            print(f"  median: 1 process {p['median_s']['1 process']:.1f} s, 2 processes {p['median_s']['2 processes']:.1f} s: "
                  f"{p['one_over_two']:.2f}x; same table: {p['same_table']}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(FLAGS.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
