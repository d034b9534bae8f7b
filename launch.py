"""Runs an experiment: ``python launch.py [--config=configs/FILE.py[:ARG]] [--workdir=DIR]``.

Without flags it runs the 1989 recipe on mnist1989 into runs/lecun1989_mnist1989.
Override any config field with ``--config.<field>=<value>``, e.g.
``--config.optimizer.learning_rate=0.01 --config.train.passes=5``.
"""

from __future__ import annotations

import os
import sys

# One XLA device per CPU core, so that replicas (num_seeds > 1) can be sharded
# over the cores; it must be set before JAX starts, and changes nothing else.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={cores}".strip()

from absl import app, flags, logging
from ml_collections import config_flags

from lecun_jax import cli

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "lecun1989.py")

cli.default_config_argv(DEFAULT_CONFIG)  # so that config parsing errors reach cli.parse_flags
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally with :ARG.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where the run writes its files (default: runs/<config>_<arg>).")
flags.DEFINE_bool("overwrite", False, "Replace a workdir that holds a run of a different config.")
flags.DEFINE_string(
    "compilation_cache", os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lecun_jax", "xla"),
    "JAX's persistent compilation cache: a second run, and every sweep row of a shape already seen, "
    "skips compiling. An empty value (--compilation_cache=) turns it off.",
)

flags.DEFINE_string("coordinator_address", None, "Multi-process job: host:port of process 0's coordinator.")
flags.DEFINE_integer("num_processes", None, "Multi-process job: how many processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "Multi-process job: this process's index, 0 to num_processes - 1.")


def initialize_distributed() -> None:
    """Joins a multi-process job: from the three flags when given, else from what JAX
    detects (its JAX_* variables, SLURM, Open MPI, Cloud TPU); a lone process skips it.
    CPU processes exchange collectives over gloo, so a CPU-only cluster works too."""
    given = {n: flags.FLAGS[n].value for n in ("coordinator_address", "num_processes", "process_id")}
    if not any(v is not None for v in given.values()):
        _cpu_collectives()  # used only if a cluster environment makes this a multi-process job
        return cli.maybe_initialize_distributed()
    missing = [f"--{n}" for n, v in given.items() if v is None]
    if missing:
        cli.fail(f"a multi-process job needs --coordinator_address, --num_processes and --process_id; missing {', '.join(missing)}")
    if not given["num_processes"] >= 1 or not 0 <= given["process_id"] < given["num_processes"]:
        cli.fail(f"--process_id={given['process_id']} --num_processes={given['num_processes']}: "
                 "valid: num_processes >= 1 and 0 <= process_id < num_processes")
    import jax

    _cpu_collectives()
    jax.distributed.initialize(**given)


def _cpu_collectives() -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def enable_compilation_cache(directory: str) -> None:
    """Compiled programs kept on disk (all of them: the default keeps only those over 1 s to compile)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv):
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # --verbosity=0 shows info logs
    if flags.FLAGS.compilation_cache:
        enable_compilation_cache(flags.FLAGS.compilation_cache)
    initialize_distributed()
    with cli.stopping_together():
        if len(argv) > 1:
            cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (flags look like --config.train.passes=5)")
        config, spec = _CONFIG.value, cli.config_spec(sys.argv)
        workdir = flags.FLAGS.workdir or cli.default_workdir(spec, config)
        if config.sweep.rows or config.sweep.grid:
            cli.run_sweep(spec, config, workdir, overwrite=flags.FLAGS.overwrite)
        else:
            cli.run(config, workdir, overwrite=flags.FLAGS.overwrite, label=cli.config_label(spec))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
