"""What ``launch.py`` needs beyond absl: one-line errors and default workdirs.

Every failure a user can cause (a bad flag, a config field that does not exist
or holds an invalid value, a workdir of another run, a bad data file) ends the
process with one line on stderr and a non-zero exit: 2 for usage and config,
1 for data and numerical faults. No tracebacks from deep inside XLA.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from absl import flags

from lecun_jax import config as config_lib
from lecun_jax import data as data_lib
from lecun_jax import experiment

USAGE, FAULT = 2, 1
_CONFIG_FLAG = re.compile(r"^--?config(=|$)")
_OVERRIDE = re.compile(r"^--?config\.([^=]+)(=.*)?$")


def fail(message: str, code: int = USAGE):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def config_spec(argv: list[str]) -> str | None:
    for i, a in enumerate(argv[1:], 1):
        if _CONFIG_FLAG.match(a):
            return a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else None)
    return None


def default_config_argv(default: str) -> None:
    """Puts ``--config=...`` first in sys.argv, ``default`` when absent.

    ml_collections parses a default config, with its overrides, while the flag
    is being defined, where a bad override can only raise a traceback; with the
    flag on the command line, parsing happens in :func:`parse_flags`. And it
    wants the file before any ``--config.field=`` override: so it goes first.
    """
    spec = config_spec(sys.argv)
    if spec is None:
        sys.argv.insert(1, f"--config={default}")
        return
    i = next(i for i, a in enumerate(sys.argv[1:], 1) if _CONFIG_FLAG.match(a))
    taken = sys.argv[i : i + (1 if "=" in sys.argv[i] else 2)]
    del sys.argv[i : i + len(taken)]
    sys.argv.insert(1, f"--config={spec}")


def load_config_file(spec: str):
    """``path[:arg]`` -> the ConfigDict its ``get_config(arg)`` returns (exit 2 on failure)."""
    path, _, arg = spec.partition(":")
    try:
        return config_lib.load_file(path, arg or None)
    except config_lib.ConfigError as e:
        fail(f"--config={spec}: {e}")


def override_paths(argv: list[str]) -> list[str]:
    """The config fields set on the command line (--config.a.b=...)."""
    return [m.group(1) for a in argv[1:] if (m := _OVERRIDE.match(a))]


def _diagnose_overrides(argv: list[str], spec: str) -> str | None:
    fields = config_lib.flatten(load_config_file(spec))
    prefixes = {".".join(k.split(".")[:i]) for k in fields for i in range(1, k.count(".") + 1)}
    for path in override_paths(argv):
        if path not in fields and path not in prefixes:
            near = _did_you_mean(path, list(fields))
            hint = f"did you mean config.{near[0]}? " if near else ""
            return f"--config.{path}: no such config field; {hint}valid fields: {', '.join(fields)}"
    return None


def _did_you_mean(path: str, fields: list[str]) -> list[str]:
    """Close field names; an abbreviation by initials (lr: learning_rate) counts as close."""
    section, _, leaf = path.rpartition(".")
    for f in fields:
        f_section, _, f_leaf = f.rpartition(".")
        if f_section == section and "".join(w[0] for w in f_leaf.split("_")) == leaf:
            return [f]
    return difflib.get_close_matches(path, fields, n=1)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags parser that turns every parsing problem into one line and exit code 2."""
    spec = config_spec(argv)
    if spec is not None:
        path = spec.partition(":")[0]
        if not Path(path).is_file():
            fail(f"--config={spec}: config file {path} not found")
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        lines = [l for l in str(e).splitlines() if l.strip()]
        # a config file that raised: keep the flag and the exception, drop the traceback between
        fail(f"{lines[0]} {lines[-1]}" if "Traceback" in str(e) else lines[0])
    except Exception as e:  # ml_collections raises AttributeError/KeyError for unknown fields
        problem = _diagnose_overrides(argv, spec) if spec else None
        fail(problem or f"--config={spec}: {type(e).__name__}: {e}")


def config_label(spec: str) -> str:
    path, _, arg = spec.partition(":")
    return Path(path).stem + (f":{arg}" if arg else "")


def default_workdir(spec: str, config, root: str = "runs") -> str:
    """runs/<config>_<arg>, plus a hash of the config when overrides changed it."""
    path, _, arg = spec.partition(":")
    name = f"{Path(path).stem}_{arg or config.data.name}"
    as_json = json.loads(config.to_json())
    if as_json != json.loads(load_config_file(spec).to_json()):
        name += "_" + hashlib.sha256(json.dumps(as_json, sort_keys=True).encode()).hexdigest()[:8]
    return os.path.join(root, name)


_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")


def maybe_initialize_distributed() -> None:
    """``jax.distributed.initialize()`` when a multi-process cluster environment is present.

    JAX reads the coordinator, process count and index from the environment
    (its own JAX_* variables, SLURM, Open MPI, Cloud TPU); a lone process skips it.
    """
    present = [v for v in _CLUSTER_ENV if os.environ.get(v)]
    if present and not (present == ["SLURM_STEP_NUM_TASKS"] and os.environ["SLURM_STEP_NUM_TASKS"] == "1"):
        import jax

        jax.distributed.initialize()


def run(config, workdir: str, **kwargs) -> dict:
    """train_and_evaluate with every expected failure as one line and an exit code."""
    try:
        config_lib.validate(config)
        return experiment.train_and_evaluate(config, workdir, **kwargs)
    except (config_lib.ConfigError, experiment.WorkdirError) as e:
        fail(str(e), USAGE)
    except (data_lib.DataError, experiment.NumericalError) as e:
        fail(str(e), FAULT)


def run_sweep(spec: str, config, workdir: str, **kwargs) -> list[dict]:
    """sweep.run with the command line's overrides; exit 1 if any row failed."""
    from lecun_jax import sweep

    overrides = {p: config_lib.get_path(config, p) for p in override_paths(sys.argv)}
    try:
        records = sweep.run(spec.partition(":")[0], config, overrides, workdir, **kwargs)
    except config_lib.ConfigError as e:
        fail(str(e), USAGE)
    if sweep.failed(records):
        fail(f"{len(sweep.failed(records))} of {len(records)} runs failed: {', '.join(sweep.failed(records))}", FAULT)
    return records
