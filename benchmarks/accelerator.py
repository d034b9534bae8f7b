"""The README's runs on whatever accelerator JAX finds (GPU, TPU), as a user starts them.

    pip install 'jax[cuda12]'                     # or 'jax[tpu]'; the code needs no change
    python benchmarks/accelerator.py              # every section (the table: 100 seeds per row)
    python benchmarks/accelerator.py --table_seeds=5 --sections=default,table
    python benchmarks/accelerator.py --passes=1 --table_seeds=2   # a smoke test: does it run?
    python benchmarks/accelerator.py --sections=distributions       # every distribution row, 1,000 seeds

First prints JAX's backend and devices (from a child ``python -c``), with a
warning when the backend is the CPU. Then each section runs ``python launch.py
...`` as a child process with a fresh temporary --workdir:

  default  ``python launch.py``: the 1989 recipe, one seed
  seeds    ``python launch.py --config.num_seeds=10``
  table    the ablation table, ``--config=configs/ablations.py:all
           --config.num_seeds=100`` (--table_seeds): five rows, one sweep
  distributions  (not by default) ``python -m lecun_jax.studies.distributions run
           --seeds=1000`` (--distribution_seeds): the eight rows of
           results/, each written in the same CSV format into
           --distribution_results, so ``python -m lecun_jax.studies.distributions
           report`` redraws the table and figures from them unchanged

For each: the process's wall time (start to exit), the run's phases (data,
compile, passes) from its summary.json, the test error (mean ± std over the
seeds; the table: every row's, from sweep.json) and the devices the run used
(summary.json's ``device``). --passes=N adds ``--config.train.passes=N`` to
every child. Children use the user's JAX compilation cache, as launch.py
does: a second run of this script compiles less. Writes JSON (--out).
Never part of CI: it takes minutes on an accelerator and hours on a CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("default", "seeds", "table", "distributions")
flags.DEFINE_list("sections", ["default", "seeds", "table"], f"Sections to run, of {', '.join(SECTIONS)}.")
flags.DEFINE_integer("distribution_seeds", 1000, "Seeds per row of the distributions section.")
flags.DEFINE_string("distribution_results", str(REPO / "benchmarks" / "results" / "distributions"),
                    "Where the distributions section writes its CSV files, table and figures.")
flags.DEFINE_integer("table_seeds", 100, "Seeds per row of the ablation table.")
flags.DEFINE_integer("passes", None, "If set, --config.train.passes=N for every child (a smoke test).")
flags.DEFINE_string("out", str(REPO / "benchmarks" / "results" / "accelerator.json"), "JSON output path.")
FLAGS = flags.FLAGS

PROBE = "import jax; print(jax.default_backend()); print(jax.devices())"


def child_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def probe() -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=child_env(), capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"python -c '{PROBE}' failed:\n{r.stderr[-2000:]}")
    backend, devices = r.stdout.strip().splitlines()[-2:]
    return {"backend": backend, "devices": devices}


def error(final: dict) -> tuple[float, float | None]:
    """Test error, mean and std over the seeds (std None for one seed)."""
    t = final["test"]
    return (t["error_mean"], t["error_std"]) if "error_mean" in t else (t["error"], None)


def launch(args: list[str]) -> dict:
    """``python launch.py ARGS --workdir=<fresh>``: wall time and what the run (or sweep) wrote."""
    with tempfile.TemporaryDirectory(prefix="lecun_jax_accelerator_") as tmp:
        workdir = Path(tmp) / "run"
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "launch.py", *args, f"--workdir={workdir}"], cwd=REPO, env=child_env(),
                           capture_output=True, text=True)
        wall = time.perf_counter() - t
        if r.returncode:
            raise SystemExit(f"launch.py {' '.join(args)} failed (exit {r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
        out: dict = {"wall_s": wall}
        if (workdir / "summary.json").exists():  # one run
            s = json.loads((workdir / "summary.json").read_text())
            mean, std = error(s["final"])
            out |= {"test_error_mean": mean, "test_error_std": std, "seeds": s["num_seeds"], "device": s["device"],
                    "versions": s["versions"], "time": {k: s["time"][k] for k in ("data_s", "compile_s", "train_s")}}
        if (workdir / "sweep.json").exists():  # a sweep: one summary.json per row
            sweep = json.loads((workdir / "sweep.json").read_text())
            out["rows"] = {}
            for row in sweep["rows"]:
                s = json.loads((Path(row["workdir"]) / "summary.json").read_text()) if row["status"] == "ok" else {}
                out["rows"][row["row"]] = {
                    "status": row["status"], "seeds": row["seeds"], "passes": row["passes"], "wall_s": row.get("wall_s"),
                    "test_error_mean": row.get("test_error_mean"), "test_error_std": row.get("test_error_std"),
                    "reference_test_error": row.get("reference_test_error"), "device": s.get("device"),
                    "time": {k: s["time"][k] for k in ("data_s", "compile_s", "train_s")} if s else None,
                }
            out["device"] = next((r["device"] for r in out["rows"].values() if r["device"]), None)
        return out


def device_text(d: dict | None) -> str:
    if d is None:
        return "?"
    name = d["kind"] if d["kind"].lower().startswith(d["platform"]) else f"{d['platform']} {d['kind']}"
    return f"{name} (used {d['used']} of {d['count']} devices, {d['processes']} process(es))"


def pm(mean, std) -> str:
    return "—" if mean is None else f"{mean:.2f}%" if std is None else f"{mean:.2f} ± {std:.2f}%"


def distributions(extra: list[str]) -> dict:
    """Every distribution row with --distribution_seeds seeds, then the report drawn from them."""
    runs = Path(tempfile.mkdtemp(prefix="lecun_jax_distributions_"))
    command = [sys.executable, "-m", "lecun_jax.studies.distributions", "run", f"--seeds={FLAGS.distribution_seeds}",
               f"--runs={runs}", f"--results={FLAGS.distribution_results}", *(f"--override={e}" for e in extra)]
    print(f"[distributions] {' '.join(command[1:])} ...", flush=True)
    t = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=child_env(), check=True)
    wall = time.perf_counter() - t
    subprocess.run([sys.executable, "-m", "lecun_jax.studies.distributions", "report", FLAGS.distribution_results],
                   cwd=REPO, env=child_env(), check=True)
    print(f"[distributions] wall {wall:.1f} s; runs kept in {runs}", flush=True)
    return {"command": " ".join(command[1:]), "wall_s": wall, "results": FLAGS.distribution_results}


def main(argv):
    del argv
    unknown = set(FLAGS.sections) - set(SECTIONS)
    if unknown:
        raise app.UsageError(f"--sections: unknown {', '.join(sorted(unknown))} (valid: {', '.join(SECTIONS)})")
    results: dict = {"machine": os.uname().nodename, "cores": os.cpu_count(), "passes_override": FLAGS.passes}
    results |= probe()
    print(f"JAX backend: {results['backend']}; devices: {results['devices']}", flush=True)
    if results["backend"] == "cpu":
        print("WARNING: no accelerator found; these are CPU figures", flush=True)

    extra = [] if FLAGS.passes is None else [f"--config.train.passes={FLAGS.passes}"]
    jobs = {
        "default": [],
        "seeds": ["--config.num_seeds=10"],
        "table": ["--config=configs/ablations.py:all", f"--config.num_seeds={FLAGS.table_seeds}"],
    }
    for section, args in jobs.items():
        if section not in FLAGS.sections:
            continue
        command = "python launch.py " + " ".join(args + extra)
        print(f"[{section}] {command} ...", flush=True)
        r = launch(args + extra)
        results[section] = {"command": command, **r}
        line = f"[{section}] wall {r['wall_s']:.1f} s on {device_text(r.get('device'))}"
        if "time" in r:
            t = r["time"]
            line += (f"; test error {pm(r['test_error_mean'], r['test_error_std'])} over {r['seeds']} seed(s)"
                     f"; data {t['data_s']:.1f} s, compile {t['compile_s']:.1f} s, passes {t['train_s']:.1f} s")
        print(line, flush=True)
        for name, row in r.get("rows", {}).items():
            ref = "" if row["reference_test_error"] is None else f" (Karpathy {row['reference_test_error']:.2f}%)"
            status = "" if row["status"] == "ok" else f" {row['status']}"
            wall = "" if row["wall_s"] is None else f", wall {row['wall_s']:.1f} s"
            print(f"    {name:13s} {row['passes']:3d} passes x {row['seeds']} seeds: test "
                  f"{pm(row['test_error_mean'], row['test_error_std'])}{ref}{wall}{status}", flush=True)

    if "distributions" in FLAGS.sections:
        results["distributions"] = distributions(extra)

    out = Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
