"""Runs an experiment: ``python -m lecun_jax.launch [--config=configs/FILE.py[:ARG]] [--workdir=DIR]``
(in a checkout, ``python launch.py`` is the same command).

Without flags it runs the 1989 recipe on mnist1989 into runs/lecun1989_mnist1989.
``configs/FILE.py`` is the file of that name in the current folder where there is
one, else the config of that name that comes with the package, so the command
runs from any folder. Override any config field with ``--config.<field>=<value>``,
e.g. ``--config.optimizer.learning_rate=0.01 --config.train.passes=5``: each
field is a flag of its own (``--helpfull`` lists them with what they mean).
"""

from __future__ import annotations

import os

# One XLA device per CPU core, so that replicas (num_seeds > 1) can be sharded
# over the cores; it must be set before JAX starts, and changes nothing else.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={cores}".strip()

from absl import app, flags, logging  # noqa: E402  (after XLA_FLAGS)

from lecun_jax import cli  # noqa: E402
from lecun_jax import config as config_lib  # noqa: E402

flags.DEFINE_string(
    "config", config_lib.DEFAULT_CONFIG,
    "Config file, optionally with :ARG (its preset); configs/NAME.py is the packaged NAME.py "
    "where the current folder has no such file.",
)
# One flag per field (--config.train.passes=5): absl parses the command line alone,
# in any order, and refuses an unknown field before any config file runs.
_FIELD_FLAG = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}
for _path, _field in config_lib.FIELDS.items():
    _FIELD_FLAG[_field.kind](f"config.{_path}", None, f"{_field.help} (base(): {_field.default!r})")

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


def overrides() -> dict:
    """The config fields the command line sets, with their values as absl parsed them."""
    return {path: flags.FLAGS[f"config.{path}"].value for path in config_lib.FIELDS if flags.FLAGS[f"config.{path}"].present}


def main(argv):
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # --verbosity=0 shows info logs
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (flags look like --config.train.passes=5)")
    spec, changes = flags.FLAGS.config, overrides()
    loaded = cli.load_config_file(spec)  # the only time the config file runs (a sweep loads its presets too)
    config = cli.with_overrides(loaded, changes)
    if flags.FLAGS.compilation_cache:
        enable_compilation_cache(flags.FLAGS.compilation_cache)
    initialize_distributed()
    with cli.stopping_together():
        workdir = flags.FLAGS.workdir or cli.default_workdir(spec, config, loaded)
        if config.sweep.rows or config.sweep.grid:
            cli.run_sweep(spec, config, changes, workdir, overwrite=flags.FLAGS.overwrite)
        else:
            cli.run(config, workdir, overwrite=flags.FLAGS.overwrite, label=cli.config_label(spec))


def run() -> None:
    """The command: absl parses the flags (each problem one line, exit 2), then :func:`main`."""
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
