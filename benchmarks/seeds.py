"""Many seeds: what a user waits for, and the chunk size behind it.

    python benchmarks/seeds.py                                  # chunk and costs sections, this tree
    git worktree add /tmp/old <commit>                          # the code to compare with
    python benchmarks/seeds.py --old=/tmp/old --sections=process,costs

Sections:

  chunk    one device, --chunk_seeds replicas of each --chunk_configs recipe: seconds per
           network-pass of the compiled training pass with the replicas
           vmapped in chunks of each --chunk_targets size, one chunk after the
           other (what epoch_lib.REPLICA_CHUNK chooses from); medians of --repeats
  costs    ``python launch.py --config.num_seeds=S`` for each --seed_counts S
           (--passes passes; 1 pass from 1,000 seeds up): the median pass per
           network, the process wall time and its peak RSS, in this tree and
           (with --old) the other one
  process  the whole process of ``python launch.py --config.num_seeds=100
           --config.train.passes=3``, old and new alternating, --repeats times,
           and new with only the last pass evaluated (what evaluation costs)

Prints figures and ratios (old / new: above 1 means the new code is faster)
and writes JSON (--out).
"""

from __future__ import annotations

from _setup import REPO  # noqa: F401  (first: XLA devices before JAX starts)

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

flags.DEFINE_list("sections", ["chunk", "costs"], "chunk, costs, process")
flags.DEFINE_string("old", None, "Checkout of the code to compare with (a git worktree); needed by process.")
flags.DEFINE_integer("repeats", 3, "Timed repeats per figure.")
flags.DEFINE_integer("chunk_seeds", 48, "chunk: replicas on the one device (a multiple of every chunk size).")
flags.DEFINE_list("chunk_targets", ["2", "4", "6", "8", "12", "16", "48"], "chunk: chunk sizes to time.")
flags.DEFINE_list("chunk_configs", ["configs/lecun1989.py", "configs/ablations.py:relu_dropout"], "chunk: recipes to time.")
flags.DEFINE_list("seed_counts", ["1", "8", "100", "1000"], "costs: numbers of seeds.")
flags.DEFINE_integer("passes", 3, "costs: passes per run (runs of 1,000 seeds or more: 1).")
flags.DEFINE_string("out", "benchmarks/results/seeds.json", "Where the JSON goes.")
FLAGS = flags.FLAGS


def bench_chunk() -> dict:
    return {spec: _chunk(spec) for spec in FLAGS.chunk_configs}


def _chunk(spec: str) -> dict:
    import jax

    from lecun_jax import config as config_lib
    from lecun_jax import data
    from lecun_jax.run import processes
    from lecun_jax.core import epoch as epoch_lib
    from lecun_jax.core import train

    path, _, arg = spec.partition(":")
    c = config_lib.load_file(REPO / path, arg or None)
    c.num_seeds = FLAGS.chunk_seeds
    dataset = data.for_config(c)
    parts = train.make_parts(c, len(dataset.train))
    arrays = processes.device_data(dataset)
    runs = {}
    for target in map(int, FLAGS.chunk_targets):
        if FLAGS.chunk_seeds % target:
            raise app.UsageError(f"--chunk_targets={target}: not a divisor of --chunk_seeds={FLAGS.chunk_seeds}")
        epoch = epoch_lib.make_epoch(c, parts, len(dataset.train), len(dataset.test), evaluate_splits=False,
                                 chunk_target=target)
        state = train.init_states(c, parts.model, parts.optimizer)
        runs[target] = {"epoch": epoch.lower(state, arrays).compile(), "state": state, "times": []}
    for run in runs.values():
        run["state"], m = run["epoch"](run["state"], arrays)  # warm-up
        jax.block_until_ready(m)
    for _ in range(FLAGS.repeats):
        for run in runs.values():  # interleaved: every size sees the same machine
            t = time.perf_counter()
            run["state"], m = run["epoch"](run["state"], arrays)
            jax.block_until_ready(m)
            run["times"].append(time.perf_counter() - t)
    out = {"seeds": FLAGS.chunk_seeds, "backend": jax.default_backend(), "per_network_pass_s": {}}
    for target, run in runs.items():
        per = float(np.median(run["times"])) / FLAGS.chunk_seeds
        out["per_network_pass_s"][str(target)] = per
        print(f"[chunk]  {spec}: {FLAGS.chunk_seeds} seeds in chunks of {target:3d}: {per:.3f} s per network-pass")
    return out


def _launch(tree: Path, args: list[str]) -> dict:
    """One ``launch.py`` process in ``tree``: wall time, peak RSS, and its summary."""
    with tempfile.TemporaryDirectory() as workdir:
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "launch.py", f"--workdir={workdir}/run", "--compilation_cache=", *args],
                                cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=str(tree)))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        if status != 0:
            raise RuntimeError(f"{tree}: launch.py {' '.join(args)} failed: {proc.stderr.read()[-2000:]}")
        summary = json.loads(Path(workdir, "run", "summary.json").read_text())
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "summary": summary}


def _trees() -> dict[str, Path]:
    return {"new": REPO} | ({"old": Path(FLAGS.old)} if FLAGS.old else {})


def bench_costs() -> dict:
    out = {}
    for s in map(int, FLAGS.seed_counts):
        passes = 1 if s >= 1000 else FLAGS.passes
        args = [f"--config.num_seeds={s}", f"--config.train.passes={passes}"]
        row = {}
        for name, tree in _trees().items():
            r = _launch(tree, args)
            t = r["summary"]["time"]
            row[name] = {"per_network_pass_s": float(np.median(t["pass_s"])) / s, "wall_s": r["wall_s"],
                         "compile_s": t["compile_s"], "peak_rss_mb": r["peak_rss_mb"], "passes": passes,
                         "test_error_mean": r["summary"]["final"]["test"].get("error_mean",
                                                                                r["summary"]["final"]["test"]["error"])}
            print(f"[costs]  {name}: {s:4d} seeds, {passes} pass(es): {row[name]['per_network_pass_s']:.3f} s per "
                  f"network-pass, process {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
        if "old" in row:
            row["ratio_old_over_new"] = row["old"]["per_network_pass_s"] / row["new"]["per_network_pass_s"]
            print(f"[costs]  {s:4d} seeds: old / new per network-pass {row['ratio_old_over_new']:.2f}x")
        out[str(s)] = row
    return out


def bench_process() -> dict:
    if not FLAGS.old:
        raise app.UsageError("--sections=process needs --old")
    passes = 3
    args = ["--config.num_seeds=100", f"--config.train.passes={passes}"]
    # The third run evaluates only after the last pass: how much of the whole process the
    # evaluation of the passes before it costs (the default evaluates after every pass).
    runs = {"old": ("old", args), "new": ("new", args),
            "new_last_eval": ("new", args + [f"--config.train.eval_every={passes}"])}
    walls = {name: [] for name in runs}
    for _ in range(FLAGS.repeats):
        for name, (tree, run_args) in runs.items():
            r = _launch(_trees()[tree], run_args)
            walls[name].append(r["wall_s"])
            print(f"[process] {name}: python launch.py {' '.join(run_args)}: {r['wall_s']:.1f} s, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB, test {r['summary']['final']['test']['error_mean']:.2f}%")
    out = {k: {"wall_s": v, "median_s": float(np.median(v))} for k, v in walls.items()}
    for name in ("new", "new_last_eval"):
        out[f"ratio_old_over_{name}"] = out["old"]["median_s"] / out[name]["median_s"]
    print(f"[process] 100 seeds, 3 passes: old {out['old']['median_s']:.1f} s, new {out['new']['median_s']:.1f} s: "
          f"{out['ratio_old_over_new']:.2f}x; new evaluating the last pass only {out['new_last_eval']['median_s']:.1f} s: "
          f"{out['ratio_old_over_new_last_eval']:.2f}x")
    return out


def main(argv):
    del argv
    sections = {"chunk": bench_chunk, "costs": bench_costs, "process": bench_process}
    results = {}
    for name in FLAGS.sections:
        if name not in sections:
            raise app.UsageError(f"--sections: {name}? valid: {', '.join(sections)}")
        results[name] = sections[name]()
    Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(FLAGS.out).write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
