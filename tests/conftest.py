"""Shared fixtures. Real digits come from ../shared/data where it exists (CI has
it); tests that need it are skipped, with the reason, where it does not."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LECUN_JAX_SHARED_DATA", REPO.parent / "shared" / "data"))

# Prepared TFDS datasets go to a private directory, never the user's ~/tensorflow_datasets,
# removed when the session ends (unless TFDS_DATA_DIR was given).
if "TFDS_DATA_DIR" not in os.environ:
    os.environ["TFDS_DATA_DIR"] = tempfile.mkdtemp(prefix="lecun_jax_tfds_")
    atexit.register(shutil.rmtree, os.environ["TFDS_DATA_DIR"], ignore_errors=True)


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", default=False,
                     help="run the whole suite; without it, tests marked slow are left out (the fast tier)")


def pytest_collection_modifyitems(config, items):
    """The fast tier: without --all, tests marked ``slow`` are deselected (not skipped),
    unless chosen by name (``file.py::test``) or by a ``-m`` expression."""
    if config.getoption("--all") or config.getoption("markexpr"):
        return
    here = config.invocation_params.dir
    named = [((here / path).resolve(), rest) for path, _, rest in (a.partition("::") for a in config.args) if rest]

    def chosen(item) -> bool:
        name = item.nodeid.split("::", 1)[1]
        return any(item.path == path and (name == rest or name.startswith((rest + "[", rest + "::"))) for path, rest in named)

    slow = [item for item in items if item.get_closest_marker("slow") and not chosen(item)]
    if slow:
        drop = set(map(id, slow))
        items[:] = [item for item in items if id(item) not in drop]
        config.hook.pytest_deselected(items=slow)
        config._lecun_jax_slow = len(slow)


def pytest_report_header(config):
    return "whole suite (--all)" if config.getoption("--all") else "fast tier: tests marked slow are left out; --all runs them too"


def pytest_terminal_summary(terminalreporter, config):
    if getattr(config, "_lecun_jax_slow", 0):
        n = config._lecun_jax_slow
        terminalreporter.write_line(f"fast tier: {n} slow test{'s' * (n != 1)} left to `python -m pytest --all`")


def small_config(**fields):
    """The 1989 recipe on 300 training digits for 3 passes, with ``fields`` set (``a__b=v`` sets a.b)."""
    from lecun_jax import config as config_lib

    c = config_lib.base()
    c.data.train_size, c.train.passes = 300, 3
    for path, value in fields.items():
        config_lib.set_path(c, path.replace("__", "."), value)
    return c


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist").is_dir() or not (SHARED_DATA / "usps").is_dir():
        pytest.skip(f"real digit files not found at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tfds_dir() -> str:
    return os.environ["TFDS_DATA_DIR"]


@pytest.fixture(scope="session")
def mnist1989(tfds_dir):
    from lecun_jax import data

    return data.load("mnist1989", data_dir=tfds_dir)


@pytest.fixture(scope="session")
def usps(tfds_dir):
    from lecun_jax import data

    return data.load("usps", data_dir=tfds_dir)
