"""The README's main command as a user waits for it: the whole process, this checkout against another.

    git worktree add /tmp/old <commit>                  # the code to compare with
    python benchmarks/process.py --old=/tmp/old         # warm and fresh runs
    python benchmarks/process.py --old=/tmp/old --torch_python=/path/to/venv-with-torch/bin/python

Sections:

  warm    ``python launch.py --workdir=<new folder>`` in each tree, one warm-up
          each, then --repeats alternating old/new: the process's wall time
          from start to exit, and the run's phases from its summary.json. Each
          tree has its own TFDS data_dir and cache folder, kept between its runs
          (what a second run on one machine finds).
  fresh   the same once per tree with an empty TFDS data_dir and cache folder:
          the first run on a new machine (datasets prepared, nothing compiled
          yet, matplotlib's font cache built).
  torch   the 1989 recipe as a per-step PyTorch loop (benchmarks/torch_reference.py,
          23 passes, both splits evaluated after each), whole process, once;
          needs a Python with torch (--torch_python).

Prints figures and ratios and writes JSON (--out). Every child runs on the
same machine in the same session; machines are noisy, so quote medians.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
flags.DEFINE_string("old", None, "Checkout of the code to compare with (a git worktree).", required=True)
flags.DEFINE_list("sections", ["warm", "fresh", "torch"], "Sections to run.")
flags.DEFINE_integer("repeats", 5, "Alternating old/new repeats of the warm section (medians).")
flags.DEFINE_string("torch_python", None, "A Python with torch installed, for the torch section.")
flags.DEFINE_string("out", str(REPO / "benchmarks" / "results" / "process.json"), "JSON output path.")
FLAGS = flags.FLAGS

TORCH_CHILD = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
import torch_reference
with np.load(sys.argv[1]) as z:
    arrays = {k: z[k] for k in z.files}
out = torch_reference.run(arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"], passes=23)
print(out["final"]["test"]["error"], out["us_per_step"])
"""


def launch(tree: Path, scratch: Path, tag: str) -> dict:
    """One ``python launch.py`` in ``tree``: wall seconds from start to exit, and what its summary says."""
    workdir = Path(tempfile.mkdtemp(dir=scratch, prefix=f"run_{tag}_"))
    env = dict(os.environ, TFDS_DATA_DIR=str(scratch / f"tfds_{tag}"), XDG_CACHE_HOME=str(scratch / f"cache_{tag}"),
               MPLCONFIGDIR=str(scratch / f"mpl_{tag}"))
    t = time.perf_counter()
    result = subprocess.run([sys.executable, "launch.py", f"--workdir={workdir}"], cwd=tree, env=env,
                            capture_output=True, text=True)
    wall = time.perf_counter() - t
    if result.returncode != 0:
        raise SystemExit(f"{tree}: launch.py failed:\n{result.stderr[-2000:]}")
    summary = json.loads((workdir / "summary.json").read_text())
    shutil.rmtree(workdir)
    times = summary["time"]
    return {
        "process_s": wall,
        "test_error": summary["final"]["test"]["error"],
        "phases": {k: (sum(v) if isinstance(v, list) else v) for k, v in times.items() if k.endswith("_s") and v is not None},
    }


def _median_phases(runs: list[dict]) -> dict:
    keys = sorted({k for r in runs for k in r["phases"]})
    return {k: statistics.median(r["phases"][k] for r in runs if k in r["phases"]) for k in keys}


def warm(old: Path, scratch: Path) -> dict:
    out = {"old": [], "new": []}
    for tag, tree in (("old", old), ("new", REPO)):
        launch(tree, scratch, tag)  # warm-up: prepared data, compilation cache, font cache
    for i in range(FLAGS.repeats):
        for tag, tree in (("old", old), ("new", REPO)):
            r = launch(tree, scratch, tag)
            out[tag].append(r)
            print(f"  warm {i + 1}/{FLAGS.repeats} {tag}: {r['process_s']:.2f} s (test {r['test_error']:.2f} %)", flush=True)
    med = {tag: statistics.median(r["process_s"] for r in out[tag]) for tag in out}
    return {
        "runs": out,
        "median_process_s": med,
        "old_over_new": med["old"] / med["new"],
        "median_phases": {tag: _median_phases(out[tag]) for tag in out},
    }


def fresh(old: Path, scratch: Path) -> dict:
    out = {}
    for tag, tree in (("old", old), ("new", REPO)):
        for d in (f"tfds_{tag}_fresh", f"cache_{tag}_fresh", f"mpl_{tag}_fresh"):
            shutil.rmtree(scratch / d, ignore_errors=True)
        out[tag] = launch(tree, scratch, f"{tag}_fresh")
        print(f"  fresh {tag}: {out[tag]['process_s']:.2f} s", flush=True)
    return out


def torch_loop(scratch: Path) -> dict:
    from lecun_jax import data

    ds = data.load("mnist1989")
    arrays = scratch / "mnist1989_arrays.npz"
    import numpy as np

    np.savez(arrays, train_images=ds.train.images, train_labels=ds.train.labels,
             test_images=ds.test.images, test_labels=ds.test.labels)
    env = dict(os.environ, PYTHONPATH=str(REPO / "benchmarks"))
    t = time.perf_counter()
    result = subprocess.run([FLAGS.torch_python, "-c", TORCH_CHILD, str(arrays)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if result.returncode != 0:
        raise SystemExit(f"torch child failed:\n{result.stderr[-2000:]}")
    error, us = map(float, result.stdout.split()[-2:])
    print(f"  torch: {wall:.1f} s (test {error:.2f} %, {us:.0f} µs per step)", flush=True)
    return {"process_s": wall, "test_error": error, "us_per_step": us}


def main(argv):
    del argv
    old = Path(FLAGS.old).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="lecun_jax_process_"))
    results = {"old": str(old), "sections": {}}
    try:
        if "warm" in FLAGS.sections:
            print("warm: the README's main command, after one warm-up of each tree", flush=True)
            results["sections"]["warm"] = warm(old, scratch)
        if "fresh" in FLAGS.sections:
            print("fresh: the first run on a machine (empty data_dir and caches)", flush=True)
            results["sections"]["fresh"] = fresh(old, scratch)
        if "torch" in FLAGS.sections and FLAGS.torch_python:
            print("torch: a per-step PyTorch loop of the same recipe", flush=True)
            results["sections"]["torch"] = torch_loop(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    s = results["sections"]
    print("\nresults (process wall time, start to exit)")
    if "warm" in s:
        w = s["warm"]
        print(f"  warm, median of {FLAGS.repeats}: old {w['median_process_s']['old']:.2f} s, new {w['median_process_s']['new']:.2f} s: "
              f"{w['old_over_new']:.2f}x")
        for tag in ("old", "new"):
            print(f"    phases {tag}: " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in w["median_phases"][tag].items()))
    if "fresh" in s:
        f = s["fresh"]
        print(f"  fresh: old {f['old']['process_s']:.2f} s, new {f['new']['process_s']:.2f} s: "
              f"{f['old']['process_s'] / f['new']['process_s']:.2f}x")
    if "torch" in s:
        new = s["warm"]["median_process_s"]["new"] if "warm" in s else None
        line = f"  torch per-step loop: {s['torch']['process_s']:.1f} s"
        if new:
            results["torch_over_new"] = s["torch"]["process_s"] / new
            line += f"; new (warm) is {results['torch_over_new']:.1f}x faster"
            if "fresh" in s:
                results["torch_over_new_fresh"] = s["torch"]["process_s"] / s["fresh"]["new"]["process_s"]
                line += f", {results['torch_over_new_fresh']:.1f}x on its first run"
        print(line)
    Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(FLAGS.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
