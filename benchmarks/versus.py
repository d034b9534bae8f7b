"""This checkout against another one (e.g. the last commit with the hand-derived step), side by side.

    git worktree add /tmp/old <commit>          # the code to compare with
    python benchmarks/versus.py --old=/tmp/old  # every section
    python benchmarks/versus.py --old=/tmp/old --sections=step,run

Every figure runs in a child process started in each tree (``old`` and this
``new`` one), alternating old/new, so both see the same machine. Sections:

  step    per SGD step of the compiled training pass (lax.scan over 7,291
          steps, median of --repeats passes, compile apart) for the 1989
          recipe and configs/ablations.py:relu_dropout
  run     the default run as a user starts it, ``python launch.py``: process
          wall time, and the summary's test error
  seeds   ``python launch.py --config.num_seeds=10``: wall time, test error
          mean +- std over the 10 seeds
  table   the ablation table, ``--config=configs/ablations.py:all
          --config.num_seeds=5``: wall time, every row's test error
  levers  (not by default) the step section's figures of this tree under
          levers that need no code change: each --xla_flags value, this
          tree without lecun_jax.core.epoch.compiler_options(), JAX's
          unrolled threefry lowering instead of the rolled loop it uses on
          a CPU, and relu_dropout without dropout (its ceiling)

Prints figures and ratios (old / new: above 1 means the new code is faster)
and writes JSON (--out).
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
flags.DEFINE_string("old", None, "Checkout of the code to compare with (a git worktree).", required=True)
flags.DEFINE_list("sections", ["step", "run", "seeds", "table"], "Sections to run.")
flags.DEFINE_multi_string(
    "xla_flags",
    ["--xla_cpu_multi_thread_eigen=false", "--xla_cpu_use_thunk_runtime=false", "--xla_cpu_use_xnnpack=true",
     "--xla_cpu_experimental_ynn_fusion_type=", "--xla_cpu_enable_concurrency_optimized_scheduler=false",
     "--xla_cpu_prefer_vector_width=512", "--xla_cpu_parallel_codegen_split_count=1",
     "--xla_cpu_experimental_ynn_fusion_type=individual_dot"],
    "XLA flag settings the levers section tries, one per value.")
flags.DEFINE_integer("repeats", 3, "Alternating old/new repeats of the step and run sections (medians).")
flags.DEFINE_string("out", str(REPO / "benchmarks" / "results" / "versus.json"), "JSON output path.")
FLAGS = flags.FLAGS

# The child of the step section: works with both APIs (the old one had lecun_jax/fused.py).
STEP_CHILD = r"""
import hashlib, json, os, sys, time
sys.path.insert(0, os.getcwd())
import jax, numpy as np
if os.environ.get("BENCH_THREEFRY") == "unrolled":  # the lowering JAX uses off the CPU, not its rolled loop
    from functools import partial
    from jax._src.interpreters import mlir
    from jax._src.random import threefry2x32 as tf
    mlir.register_lowering(tf.threefry2x32_p, mlir.lower_fun(
        partial(tf._threefry2x32_lowering, use_rolled_loops=False), multiple_results=True), platform="cpu")
from lecun_jax import config as C, data
from lecun_jax.core import losses, train
old = os.path.exists("lecun_jax/fused.py")
ds = data.load("mnist1989")
x, y = jax.device_put(ds.train.images), jax.device_put(ds.train.labels)
n = len(y)
out = {}
for recipe in ("repro", "relu_dropout"):
    c = C.load_file("configs/ablations.py", recipe)
    if os.environ.get("BENCH_DROPOUT"):
        c.model.dropout = float(os.environ["BENCH_DROPOUT"])
    if old:
        model, tx = train.make_model(c), train.make_optimizer(c, n)
        state = train.init_states(c, model, tx)
        if recipe == "repro":  # what launch.py trained the 1989 recipe with
            from lecun_jax import fused
            train_pass = fused.make_train_pass(model, loss=c.loss, learning_rate=c.optimizer.learning_rate, num_train=n)
        else:
            train_pass = train.make_train_pass(model, tx, losses.get(c.loss), num_train=n, batch_size=c.train.batch_size,
                                               shuffle=c.train.shuffle, augment=c.augment)
    else:
        parts = train.make_parts(c, n)
        state = train.init_state(parts.model, parts.optimizer, train.replica_key(c.seed, 0))
        train_pass = train.make_train_pass(parts.model, parts.optimizer, parts.loss, num_train=n,
                                           batch_size=c.train.batch_size, shuffle=c.train.shuffle, augment=c.augment)
    t = time.perf_counter()  # the options the host loop compiles with, where the tree has them
    try:  # where the tree keeps the options, if it has them
        from lecun_jax.core.epoch import compiler_options
    except ImportError:
        compiler_options = getattr(train, "compiler_options", dict)
    options = {} if os.environ.get("BENCH_OPTIONS") == "none" else compiler_options()
    compiled = jax.jit(train_pass, compiler_options=options).lower(state, x, y).compile()
    compile_s = time.perf_counter() - t
    after = jax.block_until_ready(compiled(state, x, y))
    digest = hashlib.sha256(b"".join(np.asarray(l).tobytes() for l in jax.tree.leaves(after["params"]))).hexdigest()[:16]
    times = []
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(compiled(state, x, y))
        times.append(time.perf_counter() - t)
    out[recipe] = {"us_per_step": 1e6 * float(np.median(times)) / n, "compile_s": compile_s, "params_after_one_pass": digest}
print("RESULT " + json.dumps(out))
"""


def child_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def run_step(tree: Path, env: dict | None = None) -> dict:
    r = subprocess.run([sys.executable, "-c", STEP_CHILD], cwd=tree, env=child_env() | (env or {}), capture_output=True,
                       text=True)
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    if r.returncode or not line:
        raise RuntimeError(f"step child in {tree} failed: {r.stderr[-2000:]}")
    return json.loads(line[0][len("RESULT "):])


def run_launch(tree: Path, args: list[str]) -> dict:
    """``python launch.py ARGS --workdir=<fresh>`` in ``tree``: wall time and what the run wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "run"
        env = child_env() | {"HOME": os.environ.get("HOME", tmp)}
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "launch.py", *args, f"--workdir={workdir}"], cwd=tree, env=env,
                           capture_output=True, text=True)
        wall = time.perf_counter() - t
        if r.returncode:
            raise RuntimeError(f"launch.py {' '.join(args)} in {tree} failed: {r.stderr[-2000:]}")
        out = {"wall_s": wall}
        if (workdir / "summary.json").exists():
            s = json.loads((workdir / "summary.json").read_text())
            out |= {"final": s["final"], "time": {k: s["time"][k] for k in ("data_s", "compile_s", "train_s")}}
        if (workdir / "sweep.json").exists():
            rows = json.loads((workdir / "sweep.json").read_text())["rows"]
            out["rows"] = {r["row"]: {k: r.get(k) for k in ("test_error_mean", "test_error_std", "train_error_mean", "wall_s", "status")}
                           for r in rows}
        return out


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else 0.5 * (values[len(values) // 2 - 1] + values[len(values) // 2])


def main(argv):
    del argv
    trees = {"old": Path(FLAGS.old).resolve(), "new": REPO}
    results: dict = {"trees": {k: str(v) for k, v in trees.items()}, "machine": os.uname().nodename, "cores": os.cpu_count()}
    for name, tree in trees.items():
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=tree, capture_output=True, text=True).stdout.strip())
        results["trees"][name] = f"{tree} @ {rev}{' + uncommitted changes' if dirty else ''}"
    print(f"old: {results['trees']['old']}\nnew: {results['trees']['new']}")

    if "step" in FLAGS.sections:
        runs = {"old": [], "new": []}
        for _ in range(FLAGS.repeats):
            for name in ("old", "new"):
                runs[name].append(run_step(trees[name]))
        step = {}
        for recipe in ("repro", "relu_dropout"):
            us = {n: median([r[recipe]["us_per_step"] for r in runs[n]]) for n in runs}
            step[recipe] = {"old_us": us["old"], "new_us": us["new"], "new_over_old": us["new"] / us["old"],
                            "compile_s": {n: median([r[recipe]["compile_s"] for r in runs[n]]) for n in runs}}
            print(f"[step] {recipe:13s} old {us['old']:6.1f} µs/step, new {us['new']:6.1f} µs/step: "
                  f"new/old {us['new'] / us['old']:.2f}x, speed-up {us['old'] / us['new']:.2f}x")
        results["step"] = step

    if "levers" in FLAGS.sections:
        base = os.environ.get("XLA_FLAGS", "")
        variants = {"as is": {}} | {f: {"XLA_FLAGS": f"{base} {f}".strip()} for f in FLAGS.xla_flags}
        variants |= {"without compiler_options()": {"BENCH_OPTIONS": "none"},
                     "threefry unrolled": {"BENCH_THREEFRY": "unrolled"}, "no dropout": {"BENCH_DROPOUT": "0"}}
        runs = {v: [] for v in variants}
        for _ in range(FLAGS.repeats):
            for v, env in variants.items():
                runs[v].append(run_step(REPO, env))
        levers = {}
        for v in variants:
            levers[v] = {recipe: median([r[recipe]["us_per_step"] for r in runs[v]]) for recipe in ("repro", "relu_dropout")}
            # the same numbers as this tree as is, after one pass (no dropout: another recipe)
            levers[v]["same_numbers"] = all(runs[v][0][r]["params_after_one_pass"] == runs["as is"][0][r]["params_after_one_pass"]
                                            for r in ("repro", "relu_dropout"))
            print(f"[levers] {v:60s} repro {levers[v]['repro']:6.1f} µs/step, relu_dropout "
                  f"{levers[v]['relu_dropout']:6.1f} µs/step, same numbers: {'yes' if levers[v]['same_numbers'] else 'no'}")
        results["levers"] = levers

    jobs = {
        "run": ([], FLAGS.repeats),
        "seeds": (["--config.num_seeds=10"], 1),
        "table": (["--config=configs/ablations.py:all", "--config.num_seeds=5"], 1),
    }
    for section, (args, repeats) in jobs.items():
        if section not in FLAGS.sections:
            continue
        runs = {"old": [], "new": []}
        for _ in range(repeats):
            for name in ("old", "new"):
                runs[name].append(run_launch(trees[name], args))
        wall = {n: median([r["wall_s"] for r in runs[n]]) for n in runs}
        results[section] = {"command": "python launch.py " + " ".join(args), "wall_s": wall,
                            "old_over_new": wall["old"] / wall["new"], "runs": runs}
        print(f"[{section}] python launch.py {' '.join(args)}: old {wall['old']:.1f} s, new {wall['new']:.1f} s "
              f"(old/new {wall['old'] / wall['new']:.2f}x)")
        for name in ("old", "new"):
            last = runs[name][-1]
            if "final" in last:
                t = last["final"]["test"]
                err = f"{t['error_mean']:.2f} ± {t['error_std']:.2f}%" if "error_mean" in t else f"{t['error']:.2f}%"
                print(f"    {name}: test error {err}"
                      + f", compile {last['time']['compile_s']:.1f} s, passes {last['time']['train_s']:.1f} s")
            for row, r in last.get("rows", {}).items():
                print(f"    {name} {row:13s} test {r['test_error_mean']:.2f} ± {r['test_error_std']:.2f}%  wall {r['wall_s']:.0f} s")

    out = Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
