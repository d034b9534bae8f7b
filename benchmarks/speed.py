"""Speed of the 1989 recipe, side by side in one run; prints figures and writes JSON.

    python benchmarks/speed.py                       # all sections
    python benchmarks/speed.py --sections=run,torch --torch_passes=23

Sections:
  run    the whole default run (python launch.py: 23 passes on mnist1989), as a
         user runs it: wall time of the process, compile time, per-step time.
  torch  the same recipe as a per-step PyTorch loop (benchmarks/torch_reference.py),
         if torch is installed; --torch_passes passes (23 = the whole run).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

flags.DEFINE_list("sections", ["run", "torch"], "Which sections to run.")
flags.DEFINE_integer("torch_passes", 23, "Passes of the PyTorch reference loop.")
flags.DEFINE_integer("repeats", 1, "Repeats of the whole-run section (the median is reported).")
flags.DEFINE_string("out", str(REPO / "benchmarks" / "results" / "speed.json"), "JSON output path.")
FLAGS = flags.FLAGS


def bench_run() -> dict:
    """python launch.py, timed from outside, plus the run's own summary."""
    walls, summaries = [], []
    for _ in range(FLAGS.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run([sys.executable, str(REPO / "launch.py"), f"--workdir={tmp}/w"], check=True,
                           capture_output=True, text=True)
            walls.append(time.perf_counter() - t)
            summaries.append(json.loads(Path(tmp, "w", "summary.json").read_text()))
    s = summaries[len(summaries) // 2]
    out = {
        "process_wall_s": sorted(walls)[len(walls) // 2],
        "run_wall_s": s["time"]["wall_s"],
        "compile_s": s["time"]["compile_s"],
        "train_s": s["time"]["train_s"],
        "us_per_step": s["time"]["us_per_step"],
        "final": s["final"],
    }
    print(f"[run]   python launch.py (23 passes, mnist1989): {out['process_wall_s']:.1f} s process wall, "
          f"{out['run_wall_s']:.1f} s run wall, {out['compile_s']:.1f} s compile, "
          f"{out['us_per_step']:.1f} µs/step; test error {s['final']['test']['error']:.2f}%")
    return out


def bench_torch() -> dict | None:
    try:
        import torch_reference
    except ImportError:
        print("[torch] skipped: torch is not installed (pip install torch)")
        return None
    from lecun_jax import data

    ds = data.load("mnist1989")
    r = torch_reference.run(ds.train.images, ds.train.labels, ds.test.images, ds.test.labels, FLAGS.torch_passes)
    r["passes"] = FLAGS.torch_passes
    r["run_s_for_23_passes"] = float(sum(r["pass_s"]) / FLAGS.torch_passes * 23)
    print(f"[torch] per-step PyTorch loop ({r['torch']}, {r['threads']} threads): {r['us_per_step']:.0f} µs/step; "
          f"{FLAGS.torch_passes} passes took {sum(r['pass_s']):.0f} s "
          f"({r['run_s_for_23_passes']:.0f} s for 23); test error {r['final']['test']['error']:.2f}%")
    return r


def main(argv):
    del argv
    sys.path.insert(0, str(REPO / "benchmarks"))
    import jax

    results = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "jax": jax.__version__, "device": str(jax.devices()[0].device_kind)},
    }
    sections = {"run": bench_run, "torch": bench_torch}
    for name in FLAGS.sections:
        results[name] = sections[name]()
    if results.get("run") and results.get("torch"):
        ratio = results["torch"]["us_per_step"] / results["run"]["us_per_step"]
        results["torch_over_jax_per_step"] = ratio
        print(f"[ratio] per step, PyTorch loop / compiled JAX pass: {ratio:.1f}x")
    Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(FLAGS.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
