"""The host loop of a run: prepare or resume, compile, pass after pass, finish.

``train_and_evaluate(config, workdir)`` trains as the config says and keeps
the workdir complete and consistent after every pass, through its
:class:`lecun_jax.run.store.RunStore`; what the workdir holds, file by file, is
the README's table under "What the output means".

Every random stream is a pure function of (seed, replica, pass), and the
outputs after the last pass are derived from the last checkpoint, with
``summary.json`` written last: so a run killed at any moment (even
``kill -9``) resumes from its last committed pass when the same command runs
again, and ends with the numbers an uninterrupted run gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lecun_jax.run import checkpoints as checkpoints_lib
from lecun_jax import config as config_lib
from lecun_jax import data as data_lib
from lecun_jax.run import logs
from lecun_jax.core import model as model_lib
from lecun_jax.core import modules, optimizers
from lecun_jax.run import processes as processes_lib
from lecun_jax.run import reporting
from lecun_jax.run import plots as plots_lib
from lecun_jax.run import store as store_lib
from lecun_jax.core import epoch as epoch_lib
from lecun_jax.core import train as train_lib
from lecun_jax.run.runs import Run, load_run  # noqa: F401  (the package's load_run)
from lecun_jax.run.workdir import describe_parts

SPLITS = data_lib.SPLITS
InitStates = Callable[[ml_collections.ConfigDict, nn.Module, optax.GradientTransformation, int], train_lib.State]


class NumericalError(FloatingPointError):
    """Loss or parameters stopped being finite."""


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    model: nn.Module | None = None,
    optimizer: optax.GradientTransformation | None = None,
    loss: train_lib.Loss | None = None,
    init_states: InitStates | None = None,
    overwrite: bool = False,
    label: str | None = None,
    echo: Callable[[str], None] = print,
    plots: bool = True,
    processes: processes_lib.Processes | None = None,
) -> dict:
    """Trains as ``config`` says, in (or resuming) ``workdir``; returns the run summary.

    ``model`` (a Flax linen module called as ``apply({'params': p, ...}, images (B, 16, 16,
    1), train=bool, rngs={'dropout': key})`` -> (B, 10), without ``train`` where its
    ``__call__`` takes neither it nor ``**kwargs``; or an NNX module, or a function
    of ``nnx.Rngs`` that builds one: see :mod:`lecun_jax.core.modules`), ``optimizer`` (an Optax
    ``GradientTransformation``) and ``loss`` (``loss(outputs, labels) -> (B,)``
    per-example losses) replace the config's parts; ``init_states(config, model,
    optimizer, replicas)`` replaces :func:`lecun_jax.core.train.init_states`, the state of
    every replica before pass 1. ``config.json`` and ``summary.json`` record them
    under ``parts``. ``processes``: who runs it (default: every process of the job,
    :func:`lecun_jax.run.processes.job`); process 0 alone writes and prints.
    """
    start, startup_s = time.perf_counter(), logs.process_age()
    config_lib.validate(config)
    # before the workdir is touched; with the optimiser that trains (its state's layout needs no data size)
    modules.check_parts(model, optimizer if optimizer is not None else optimizers.make(
                            config.optimizer, steps_per_pass=1, passes=config.train.passes),
                        loss, num_seeds=config.num_seeds, sdlm_estimator=config.optimizer.sdlm_estimator)
    processes = processes or processes_lib.job()
    given = describe_parts(model, optimizer, loss, init_states)
    with store_lib.RunStore(workdir, processes, echo=echo) as store, processes_lib.interruptible():
        echo = echo if store.writes else _silent  # the process that writes is the one that prints
        status = store.open(config, given, overwrite)
        if status == "done":
            return _report_done(store, echo)
        run = _Run(config=config, store=store, processes=processes, given=given, label=label, plots=plots,
                   echo=echo, times={"start": start, "startup_s": startup_s})
        _prepare(run, dict(model=model, optimizer=optimizer, loss=loss), init_states or train_lib.init_states)
        if status == "resume":
            _resume(run)
        epochs = _compile(run)
        _passes(run, epochs)
        return _finish(run)


@dataclasses.dataclass
class _Run:
    """What the phases of one run share."""

    config: ml_collections.ConfigDict
    store: store_lib.RunStore
    processes: processes_lib.Processes
    given: dict  # what config.json records of the parts a user passed in
    label: str | None
    plots: bool
    echo: Callable[[str], None]
    times: dict[str, Any]  # start, phases' seconds
    parts: train_lib.Parts | None = None
    mesh: Mesh | None = None
    replicas: int = 1
    dataset: data_lib.Dataset | None = None
    identity: dict | None = None  # data_identity of the dataset
    arrays: dict | None = None  # the dataset on the device
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    state: Any = None
    records: list[dict] = dataclasses.field(default_factory=list)
    pass_times: list[float] = dataclasses.field(default_factory=list)

    @property
    def first(self) -> int:
        """The first pass to run (after a resume, the one after the checkpoint's)."""
        return int(np.asarray(processes_lib.to_numpy(self.state["pass"], self.processes)).reshape(-1)[0]) + 1

    def host_state(self):
        """Host copies of the real replicas' state, gathered: every process must call it."""
        return processes_lib.real_replicas(self.config.num_seeds, processes_lib.to_numpy(self.state, self.processes))


def _report_done(store: store_lib.RunStore, echo) -> dict:
    done = store.summary()
    echo(f"{store.workdir} already holds this run, finished; its results:")
    for split in SPLITS:
        f = done["final"][split]
        echo(reporting.eval_line(split, f["loss"], f["error"], f["misses"]))
    return done


def _prepare(run: _Run, given_parts: dict, init_states: InitStates) -> None:
    """The data on the device, the parts, and the state before pass 1."""
    config = run.config
    run.mesh, run.replicas = processes_lib.replica_layout(config.num_seeds, epoch_lib.replica_chunk_target(),
                                                          run.processes)
    run.dataset = data_lib.for_config(config)
    run.identity = checkpoints_lib.data_identity(config, run.dataset)
    run.arrays = processes_lib.device_data(run.dataset, run.mesh)
    run.sizes = {s: len(run.dataset.split(s)) for s in SPLITS}
    run.times["data_s"] = time.perf_counter() - run.times["start"]
    run.parts = train_lib.make_parts(config, run.sizes["train"], **given_parts)
    run.state = init_states(config, run.parts.model, run.parts.optimizer, run.replicas)


def _resume(run: _Run) -> None:
    """The state and records of the checkpoint process 0 chose (see RunStore.resume)."""
    restored = run.store.resume(run.host_state(), run.identity)
    if restored is None:
        return
    host_state, run.records, meta = restored
    run.state = processes_lib.pad_replicas(run.config.num_seeds, host_state, run.replicas)
    run.echo(f"resuming {run.store.workdir} after pass {meta['pass']} of {run.config.train.passes}")


def _compile(run: _Run) -> dict[bool, Any]:
    """The compiled pass (with and without evaluation when not every pass is evaluated)."""
    config = run.config
    if run.mesh is not None:
        run.state = jax.device_put(run.state, NamedSharding(run.mesh, PartitionSpec("seed")))
    t = time.perf_counter()
    # a compilation the cache does not hold takes seconds: say so
    told = threading.Timer(1.0, run.echo, ["compiling the training pass and evaluation (once per shape: "
                                           "later runs load it from the compilation cache)..."])
    told.start()
    epochs = {
        evaluated: epoch_lib.make_epoch(config, run.parts, run.sizes["train"], run.sizes["test"], mesh=run.mesh,
                                        evaluate_splits=evaluated, chunk_target=epoch_lib.replica_chunk_target())
        .lower(run.state, run.arrays).compile()
        for evaluated in ((True, False) if config.train.eval_every > 1 else (True,))
    }
    told.cancel()
    run.times["compile_s"] = time.perf_counter() - t
    n_params = model_lib.count_params(model_lib.abstract_params(run.parts.model), run.parts.model)
    run.echo(
        f"{run.dataset.name}: {run.sizes['train']:,} train / {run.sizes['test']:,} "
        f"{'held-out' if config.data.validation_size else 'test'} digits; "
        f"{modules.class_name(run.parts.model)}, {n_params['total']:,} parameters; "
        f"{config.num_seeds} seed(s) from {config.seed}; "
        f"{processes_lib.device_info(run.processes)['kind']} x{1 if run.mesh is None else run.mesh.size}; "
        f"compiled in {run.times['compile_s']:.1f} s"
    )
    return epochs


def _passes(run: _Run, epochs: dict[bool, Any]) -> None:
    """Pass after pass: metrics checked, recorded, checkpointed and shown after each."""
    config, first = run.config, run.first
    run.store.begin(config, run.given, run.records, optimizers.pass_learning_rates(config.optimizer, config.train.passes))
    prefetch = _prefetch_plots() if run.plots and first <= config.train.passes else None
    loop_start = time.perf_counter()
    try:
        for p in range(first, config.train.passes + 1):
            t = time.perf_counter()
            evaluated = p % config.train.eval_every == 0 or p == config.train.passes
            new_state, metrics = epochs[evaluated](run.state, run.arrays)
            metrics = processes_lib.real_replicas(config.num_seeds, processes_lib.to_numpy(metrics, run.processes))
            new = reporting.pass_records(p, metrics, run.sizes, config.seed) if evaluated else []
            _check_finite(run, p, new, metrics)
            run.state, run.records = new_state, run.records + new
            run.store.commit(p, run.host_state(), run.records, new, run.identity)
            if processes_lib.interrupted():
                raise KeyboardInterrupt  # a Ctrl-C that some library swallowed
            run.pass_times.append(time.perf_counter() - t)
            run.echo(logs.progress(p, config.train.passes, run.pass_times, time.perf_counter() - loop_start))
            for split in SPLITS if evaluated else ():
                m = metrics[split]
                run.echo(reporting.eval_line(split, m["loss"], 100.0 * m["misses"] / run.sizes[split], m["misses"]))
    finally:
        if prefetch is not None:  # never exit with a thread mid-import (a fatal error at shutdown)
            prefetch.join()


def _finish(run: _Run) -> dict:
    """Parameters, test outputs, plots and summary.json, all derived from the last
    checkpoint's state: a run killed here redoes them when run again, and
    summary.json, written last, marks it done."""
    t = time.perf_counter()
    final = jax.jit(jax.vmap(train_lib.final_variables))
    variables = processes_lib.real_replicas(run.config.num_seeds, processes_lib.to_numpy(final(run.state), run.processes))
    if not run.store.writes:  # what follows makes only files
        return {}
    params, model_state = variables.pop("params"), variables
    outputs = _test_outputs(run, params, model_state)
    run.store.write_outputs(params, model_state, outputs, run.dataset.test.labels)
    run.times["outputs_s"] = time.perf_counter() - t
    figures = lambda: plots_lib.run_figures(run.records, f"{run.store.workdir.name}: {run.config.data.name}", run.config.seed,
                                            outputs, run.dataset.test.labels, run.dataset.test.images)
    summary = run.store.finish(lambda: _summary(run), figures if run.plots else None)
    logging.info("%s", logs.timeline(summary["time"]))
    run.echo(logs.done_line(summary, run.store.workdir))
    return summary


def _summary(run: _Run) -> dict:
    config, times, passes = run.config, run.times, run.config.train.passes
    abstract = model_lib.abstract_params(run.parts.model)
    macs = model_lib.count_macs(abstract, run.parts.model)
    steps = train_lib.steps_per_pass(run.sizes["train"], config.train.batch_size)
    train_s = sum(run.pass_times)
    first = passes + 1 - len(run.pass_times)
    # a resumed run's passes are timed by their median; none timed: nothing for the ledger
    ledger_s = None if not run.pass_times else train_s if first == 1 else float(np.median(run.pass_times)) * passes
    return {
        "label": run.label,
        "dataset": config.data.name,
        "data": run.identity,
        "num_seeds": config.num_seeds,
        "passes": passes,
        "steps_per_pass": steps,
        "resumed_after_pass": first - 1 if first > 1 else None,
        "model": modules.class_name(run.parts.model),
        "parts": run.given,
        # where the networks were evaluated: None for their parameters, else the optimiser's point
        "evaluation_params": optimizers.evaluation_point(jax.eval_shape(run.parts.optimizer.init, abstract)),
        "params": model_lib.count_params(abstract, run.parts.model),
        "macs_per_digit": None if macs is None else macs["total"],
        "final": {s: reporting.summarize(run.records, s, passes) for s in SPLITS},
        "time": {
            "wall_s": time.perf_counter() - times["start"],
            "startup_s": times["startup_s"],
            "data_s": times["data_s"],
            "compile_s": times["compile_s"],
            "train_s": train_s,
            "checkpoint_s": run.store.seconds["checkpoint_s"],
            "outputs_s": times["outputs_s"],
            "plots_s": run.store.seconds["plots_s"],
            "pass_s": run.pass_times,
            "us_per_step": 1e6 * float(np.median(run.pass_times)) / steps if run.pass_times else None,
        },
        "ledger": logs.ledger(config, run.sizes, ledger_s, None if macs is None else macs["total"]),
        "device": processes_lib.device_info(run.processes, run.mesh),
        "versions": logs.versions(),
    }


def _silent(line: str) -> None:
    pass


def _check_finite(run: _Run, p: int, new: list[dict], metrics: dict) -> None:
    """Stops at the end of a pass whose loss or parameters are not finite; keeps what was good."""
    config = run.config
    bad = sorted({r["replica"] for r in new if r["loss"] is None})
    if not bad and np.all(metrics["finite"]):
        return
    run.store.diverged(run.records + new)  # the failing pass too, for the record
    last = run.store.checkpoints().latest()
    raise NumericalError(
        f"pass {p}: {'loss' if bad else 'parameters'} became NaN/Inf"
        f"{f' (replicas {bad})' if config.num_seeds > 1 and bad else ''}; "
        f"its learning rate, {optimizers.pass_learning_rates(config.optimizer, config.train.passes)[p - 1]:g} "
        f"(optimizer.learning_rate={config.optimizer.learning_rate:g}), is the likely cause: try a smaller one; "
        f"kept: metrics up to pass {p} in {run.store.workdir / store_lib.METRICS}, "
        + (f"the checkpoint of pass {last}" if last else "no checkpoint (pass 1 failed)")
    )


def _test_outputs(run: _Run, params, model_state: dict) -> np.ndarray:
    """The final networks' outputs on the test split (replicas, N, 10), for plots and notebooks."""
    test = run.dataset.test
    one = train_lib.make_predict(run.parts.model, len(test))
    # one replica after the other, as in evaluation: memory bounded by one
    predict = lambda p, x, s: jax.lax.map(lambda ps: one(ps[0], x, ps[1]), (p, s))
    return np.asarray(jax.jit(predict)(params, test.images, model_state))


def _prefetch_plots() -> threading.Thread:
    """Loads matplotlib on a thread while the passes run: the pass loop waits on XLA
    with the GIL released, so the plots after it start at once."""
    def load():
        with contextlib.suppress(ImportError):  # the store says so when it draws them
            plots_lib.prefetch()

    thread = threading.Thread(target=load, name="import-plots", daemon=True)
    thread.start()
    return thread
