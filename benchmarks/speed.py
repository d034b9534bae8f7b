"""Speed and memory of lecun_jax, side by side in one run; prints figures and writes JSON.

    python benchmarks/speed.py                         # every section but torch's 23 passes
    python benchmarks/speed.py --sections=step,pyloop  # some of them
    python benchmarks/speed.py --torch_passes=23       # the whole PyTorch reference run too

Sections (medians of --repeats timings; compile reported apart):
  step    the 1989 recipe (batch 1, SGD): one compiled pass (lax.scan over 7,291
          steps) of jax.grad of Net1989.apply and optax.sgd, time per SGD step
          (to compare with earlier code side by side: benchmarks/versus.py)
  pyloop  the same recipe as a Python loop over a jitted single-step function,
          time per step and ratio to `step`: our step (the dispatch floor), and
          the public Flax port's loop re-created (see bench_pyloop)
  run     the whole default run as a user runs it (python launch.py, 23 passes):
          process wall time, compile time, peak resident memory
  seeds   1, 2, 8 and 32 replicas (vmapped, sharded over the local devices): wall
          time per pass, evaluation of both splits included, and, interleaved,
          of the training alone; ratios to 1 replica (2 replicas run one per
          core: how much two busy cores slow each other)
  batch   the modern recipe (relu_dropout) at batch 256 and 1024: images/s
  torch   the 1989 recipe as a per-step PyTorch loop, if torch is installed
"""

from __future__ import annotations

import os
import sys

from _setup import REPO  # noqa: F401  (first: XLA devices before JAX starts)

import json
import platform
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from lecun_jax import config as config_lib  # noqa: E402
from lecun_jax import data  # noqa: E402
from lecun_jax.core import epoch as epoch_lib  # noqa: E402
from lecun_jax.core import losses, train  # noqa: E402
from lecun_jax.run import processes  # noqa: E402

flags.DEFINE_list("sections", ["step", "pyloop", "run", "seeds", "batch", "torch"], "Sections to run.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per figure (the median is reported).")
flags.DEFINE_integer("pyloop_steps", 3000, "Steps of the Python-loop baseline.")
flags.DEFINE_list("seed_counts", ["1", "2", "8", "32"], "Replica counts of the seeds section (2: one per core).")
flags.DEFINE_list("batch_sizes", ["256", "1024"], "Batch sizes of the batch section.")
flags.DEFINE_integer("torch_passes", 1, "Passes of the PyTorch reference loop (23: the whole run).")
flags.DEFINE_string("out", str(REPO / "benchmarks" / "results" / "speed.json"), "JSON output path.")
FLAGS = flags.FLAGS


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times)), times


def preset(row: str):
    return config_lib.load_file(REPO / "configs" / "ablations.py", row)


_DATA = {}


def mnist1989():
    if "d" not in _DATA:
        _DATA["d"] = data.load("mnist1989")
    return _DATA["d"]


def bench_step() -> dict:
    """The compiled pass of the 1989 recipe, per SGD step: ``jax.grad`` of ``Net1989.apply``
    and ``optax.sgd``, one ``lax.scan`` over the 7,291 digits (what launch.py trains with)."""
    c = config_lib.base()
    ds = mnist1989()
    n = len(ds.train)
    parts = train.make_parts(c, n)
    state = train.init_state(parts.model, parts.optimizer, train.replica_key(c.seed, 0))  # one network
    x, y = jax.device_put(ds.train.images), jax.device_put(ds.train.labels)
    train_pass = train.make_train_pass(parts.model, parts.optimizer, parts.loss, num_train=n, batch_size=1, shuffle=False)
    t = time.perf_counter()
    compiled = jax.jit(train_pass, compiler_options=epoch_lib.compiler_options()).lower(state, x, y).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(state, x, y))
    med, times = median_time(lambda: compiled(state, x, y), FLAGS.repeats)
    out = {"us_per_step": 1e6 * med / n, "pass_s": times, "compile_s": compile_s, "steps": n}
    print(f"[step]   compiled pass, 1989 recipe: {out['us_per_step']:.1f} µs/step (median of {FLAGS.repeats} passes), "
          f"compile {compile_s:.2f} s")
    return out


class _PortNet:
    """The 1989 network built the way the public Flax port builds it (re-created here, not
    copied): ``jnp.pad`` with -1 before each convolution, H1 one ``nn.Conv`` without bias,
    H2 three ``nn.Conv`` of 4 maps on channel slices 0-7, 4-11 and 0-3 + 8-11,
    concatenated, biases as separate parameters added after each layer."""

    @staticmethod
    def module():
        import flax.linen as nn

        from lecun_jax.core import model as model_lib

        class PortNet(nn.Module):
            @nn.compact
            def __call__(self, x):
                uniform = lambda fan_in: model_lib.uniform_fan_in(fan_in)
                b1 = self.param("b1", nn.initializers.zeros, (8, 8, 12))
                b2 = self.param("b2", nn.initializers.zeros, (4, 4, 12))
                b3 = self.param("b3", nn.initializers.zeros, (30,))
                b4 = self.param("b4", nn.initializers.constant(-1.0), (10,))
                pad = lambda v: jnp.pad(v, [(0, 0), (2, 2), (2, 2), (0, 0)], constant_values=-1.0)
                conv = lambda n, fan_in: nn.Conv(n, (5, 5), strides=2, padding="VALID", use_bias=False,
                                                 kernel_init=uniform(fan_in))
                h = jnp.tanh(conv(12, 25)(pad(x)) + b1)
                h = pad(h)
                parts = (h[..., 0:8], h[..., 4:12], jnp.concatenate([h[..., 0:4], h[..., 8:12]], axis=-1))
                h = jnp.tanh(jnp.concatenate([conv(4, 200)(p) for p in parts], axis=-1) + b2)
                h = h.reshape(h.shape[0], -1)
                h = jnp.tanh(nn.Dense(30, use_bias=False, kernel_init=uniform(192))(h) + b3)
                return jnp.tanh(nn.Dense(10, use_bias=False, kernel_init=uniform(30))(h) + b4)

        return PortNet()


def bench_pyloop() -> dict:
    """Python loops over a jitted single SGD step, the way the public JAX ports train.

    ``same_step``: the compiled pass's own step (jax.grad of ``Net1989.apply``,
    optax), ``x[i:i+1]`` per step: the floor of any per-step loop (one
    dispatch of a jitted call per step).
    ``port_style``: a Flax ``TrainState`` and ``apply_gradients``,
    ``jnp.expand_dims(X[i], 0)`` per step, our model with ``lax.conv``.
    ``port``: the public Flax port's loop re-created: its module structure
    (:class:`_PortNet`), ``value_and_grad`` with the error as aux, one-hot
    +-1 targets, ``TrainState.apply_gradients``, and each digit fetched with
    ``np.expand_dims(X[i], 0)`` from the device-resident training set (a
    device-to-host copy per step, then back into the jitted call).
    """
    from flax.training import train_state as ts

    ds = mnist1989()
    x, y = jax.device_put(ds.train.images), jax.device_put(ds.train.labels)
    y_pm1 = jax.device_put(2.0 * np.eye(10, dtype=np.float32)[ds.train.labels] - 1.0)
    n = FLAGS.pyloop_steps
    out = {"steps": n}
    for name in PYLOOPS:
        c = config_lib.base()
        c.model.conv = "lax" if name == "port_style" else "auto"
        model, tx = train.make_model(c), train.make_optimizer(c, len(ds.train))
        params = train.init_state(model, tx, train.replica_key(c.seed, 0))["params"]
        if name == "same_step":

            @jax.jit
            def step(carry, xi, yi):
                params, opt_state = carry
                grads = jax.grad(lambda p: losses.mse(model.apply({"params": p}, xi), yi).mean())(params)
                updates, opt_state = tx.update(grads, opt_state, params)
                return jax.tree.map(lambda p, u: p + u, params, updates), opt_state

            carry0 = (params, tx.init(params))
            fetch = lambda i: (x[i : i + 1], y[i : i + 1])
        elif name == "port_style":

            @jax.jit
            def step(state, xi, yi):
                grads = jax.grad(lambda p: losses.mse(state.apply_fn({"params": p}, xi), yi).mean())(state.params)
                return state.apply_gradients(grads=grads)

            carry0 = ts.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
            fetch = lambda i: (jnp.expand_dims(x[i], 0), jnp.expand_dims(y[i], 0))
        else:
            net = _PortNet.module()
            with jax.threefry_partitionable(False):
                port_params = net.init(jax.random.PRNGKey(c.seed), jnp.zeros((1, 16, 16, 1)))["params"]

            @jax.jit
            def step(state, xi, yi):
                def loss_fn(p):
                    out = net.apply({"params": p}, xi)
                    return jnp.mean((out - yi) ** 2), jnp.mean(jnp.argmax(yi, -1) != jnp.argmax(out, -1))

                (_, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
                return state.apply_gradients(grads=grads)

            carry0 = ts.TrainState.create(apply_fn=net.apply, params=port_params, tx=tx)
            fetch = lambda i: (np.expand_dims(x[i], 0), np.expand_dims(y_pm1[i], 0))

        jax.block_until_ready(step(carry0, *fetch(0)))  # compile

        def loop():
            carry = carry0
            for i in range(n):
                carry = step(carry, *fetch(i))
            return carry

        med, times = median_time(loop, max(1, FLAGS.repeats // 2))
        out[name] = {"us_per_step": 1e6 * med / n, "loop_s": times}
        print(f"[pyloop] Python loop over a jitted step ({name}): {out[name]['us_per_step']:.1f} µs/step ({n} steps)")
    return out


def bench_run() -> dict:
    """python launch.py, timed from outside; peak RSS of the child."""
    with tempfile.TemporaryDirectory() as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "launch.py"), f"--workdir={tmp}/w"], check=True,
                       capture_output=True, text=True)
        wall = time.perf_counter() - t
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        s = json.loads(Path(tmp, "w", "summary.json").read_text())
    out = {
        "process_wall_s": wall, "run_wall_s": s["time"]["wall_s"], "compile_s": s["time"]["compile_s"],
        "train_s": s["time"]["train_s"], "us_per_step_with_eval": s["time"]["us_per_step"],
        "peak_rss_mb": peak_kib / 1024, "peak_rss_note": "max RSS of any child so far" if before else "",
        "final": s["final"],
    }
    print(f"[run]    python launch.py (23 passes): {wall:.1f} s process wall ({s['time']['train_s']:.1f} s training "
          f"+ {s['time']['compile_s']:.1f} s compile), peak RSS {out['peak_rss_mb']:.0f} MB, "
          f"test error {s['final']['test']['error']:.2f}%")
    return out


def bench_seeds() -> dict:
    """Wall time per pass for several replica counts: the pass as launch.py runs it (training,
    then evaluation of both splits) and, interleaved with it, the training alone."""
    ds = mnist1989()
    out = {"devices": jax.device_count()}
    for s in map(int, FLAGS.seed_counts):
        c = config_lib.base()
        c.num_seeds = s
        mesh, replicas = processes.replica_layout(s)
        parts = train.make_parts(c, len(ds.train))
        arrays = processes.device_data(ds, mesh)
        runs = {}
        for kind, evaluate in (("pass", True), ("train", False)):
            state = train.init_states(c, parts.model, parts.optimizer, replicas)
            if mesh is not None:
                state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seed")))
            t = time.perf_counter()
            epoch = epoch_lib.make_epoch(c, parts, len(ds.train), len(ds.test), mesh=mesh, evaluate_splits=evaluate)
            epoch = epoch.lower(state, arrays).compile()
            runs[kind] = {"epoch": epoch, "state": state, "times": [], "compile_s": time.perf_counter() - t}

        def one_pass(run):
            run["state"], m = run["epoch"](run["state"], arrays)
            return m

        for run in runs.values():
            jax.block_until_ready(one_pass(run))  # warm-up
        for _ in range(FLAGS.repeats):
            for run in runs.values():
                t = time.perf_counter()
                jax.block_until_ready(one_pass(run))
                run["times"].append(time.perf_counter() - t)
        row = {"devices_used": 1 if mesh is None else mesh.size, "replicas": replicas}
        for kind, run in runs.items():
            row[f"{kind}_s"] = float(np.median(run["times"]))
            row[f"{kind}_times"] = run["times"]
            row[f"{kind}_compile_s"] = run["compile_s"]
            one = row if s == 1 else out.get("1")
            row[f"{kind}_ratio_to_1"] = row[f"{kind}_s"] / one[f"{kind}_s"] if one else float("nan")
        out[str(s)] = row
        print(f"[seeds]  {s:3d} replicas on {row['devices_used']} device(s): {row['pass_s']:.3f} s per pass "
              f"(train + eval of both splits), {row['pass_ratio_to_1']:.2f}x one replica; training alone "
              f"{row['train_s']:.3f} s, {row['train_ratio_to_1']:.2f}x; compile {row['pass_compile_s']:.1f} s")
    return out


def bench_batch() -> dict:
    """Training throughput of the modern recipe at large batch sizes."""
    ds = mnist1989()
    n = len(ds.train)
    out = {}
    for b in map(int, FLAGS.batch_sizes):
        c = preset("relu_dropout")
        c.train.batch_size = b
        parts = train.make_parts(c, n)
        state = train.init_state(parts.model, parts.optimizer, train.replica_key(c.seed, 0))
        x, y = jax.device_put(ds.train.images), jax.device_put(ds.train.labels)
        train_pass = jax.jit(train.make_train_pass(parts.model, parts.optimizer, parts.loss, num_train=n, batch_size=b,
                                                   shuffle=False, augment=c.augment),
                             compiler_options=epoch_lib.compiler_options())
        compiled = train_pass.lower(state, x, y).compile()
        jax.block_until_ready(compiled(state, x, y))
        med, times = median_time(lambda: compiled(state, x, y), FLAGS.repeats)
        out[str(b)] = {"images_per_s": n / med, "pass_s": med}
        print(f"[batch]  modern recipe, batch {b}: {n / med:,.0f} images/s ({med * 1e3:.0f} ms per pass)")
    return out


def bench_torch() -> dict | None:
    try:
        import torch_reference
    except ImportError:
        print("[torch]  skipped: torch is not installed (pip install torch)")
        return None
    ds = mnist1989()
    r = torch_reference.run(ds.train.images, ds.train.labels, ds.test.images, ds.test.labels, FLAGS.torch_passes)
    r["passes"] = FLAGS.torch_passes
    r["run_s_for_23_passes"] = float(np.mean(r["pass_s"]) * 23)
    print(f"[torch]  per-step PyTorch loop ({r['torch']}, {r['threads']} threads): {r['us_per_step']:.0f} µs/step; "
          f"{FLAGS.torch_passes} pass(es) took {sum(r['pass_s']):.0f} s ({r['run_s_for_23_passes']:.0f} s for 23)")
    return r


PYLOOPS = ("same_step", "port_style", "port")
SECTIONS = {"step": bench_step, "pyloop": bench_pyloop, "run": bench_run, "seeds": bench_seeds,
            "batch": bench_batch, "torch": bench_torch}


def main(argv):
    del argv
    results = {
        "machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)),
                    "python": platform.python_version(), "jax": jax.__version__,
                    "device": str(jax.devices()[0].device_kind), "devices": jax.device_count()},
    }
    for name in FLAGS.sections:
        results[name] = SECTIONS[name]()
    ratios = {}
    if results.get("step") and results.get("pyloop"):
        for name in PYLOOPS:
            ratios[f"pyloop_{name}_over_step"] = results["pyloop"][name]["us_per_step"] / results["step"]["us_per_step"]
    if results.get("step") and results.get("torch"):
        ratios["torch_over_step"] = results["torch"]["us_per_step"] / results["step"]["us_per_step"]
    for k, v in ratios.items():
        print(f"[ratio]  {k}: {v:.1f}x")
    results["ratios"] = ratios
    Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(FLAGS.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
