"""lecun_jax: LeCun et al. (1989) and Karpathy's 2022 ablations in JAX.

    import lecun_jax
    run = lecun_jax.load_run("runs/lecun1989_mnist1989")  # config, params, metrics of a run
    ds = lecun_jax.data.load("usps")                 # the 1989 digits, in memory
    net = lecun_jax.Net1989()                        # the 9,760-parameter network
    params = lecun_jax.model.init(net, jax.random.PRNGKey(0))

The package, in folders (tests/test_imports.py holds each to its rule)::

    core/      the network, a user's parts, losses, shifts, optimisers, training: pure JAX
    data/      the digits: file readers, downloads, TFDS builders, load()
    config     every config field, its default and its check
    run/       the host loop: processes, the run's store (its workdir), checkpoints, logs, plots, train_and_evaluate
    studies/   sweeps, rows trained together, scaling, many-seed distributions
    errors     which exceptions are a user's error, and each one's exit code
    cli        the command line: flags to a config, a user's error as one line
    launch     python -m lecun_jax.launch (launch.py at the checkout's top calls it)
    look/      python -m lecun_jax.look: draw a digit, watch every layer of a run

Submodules load on first use, under their short names too (``lecun_jax.model`` is
``lecun_jax.core.model``), so ``import lecun_jax`` itself imports neither JAX nor
TensorFlow Datasets, matplotlib or tensorboardX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Short name -> the module, for notebooks: lecun_jax.model, lecun_jax.sdlm, ...
_SUBMODULES = {
    **{m: f"core.{m}" for m in ("augment", "conv", "epoch", "losses", "model", "modules", "optimizers", "sdlm", "train")},
    **{m: f"data.{m}" for m in ("downloads", "sources", "tfds_datasets")},
    **{m: f"run.{m}" for m in ("checkpoints", "experiment", "logs", "processes", "reporting", "runs", "store", "workdir")},
    **{m: f"studies.{m}" for m in ("scaling", "sweep", "together")},
    # the commands python -m lecun_jax.distributions and lecun_jax.plots run
    **{m: m for m in ("cli", "config", "data", "errors", "files", "core", "run", "studies", "distributions", "plots")},
}
_ATTRIBUTES = {"load_run": "run.runs", "train_and_evaluate": "run.experiment", "Net1989": "core.model",
               "make_train": "core.epoch"}

__all__ = ["Net1989", "load_run", "make_train", "train_and_evaluate", *_SUBMODULES]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from lecun_jax import cli, config, data, distributions, files, plots  # noqa: F401
    from lecun_jax.core import augment, conv, losses, model, modules, optimizers, sdlm, train  # noqa: F401
    from lecun_jax.core.model import Net1989  # noqa: F401
    from lecun_jax.core.epoch import make_train  # noqa: F401
    from lecun_jax.data import downloads, sources, tfds_datasets  # noqa: F401
    from lecun_jax.run import checkpoints, experiment, logs, processes, reporting, runs, store, workdir  # noqa: F401
    from lecun_jax.run.experiment import train_and_evaluate  # noqa: F401
    from lecun_jax.run.runs import load_run  # noqa: F401
    from lecun_jax.studies import scaling, sweep, together  # noqa: F401


def __getattr__(name: str):
    if name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{_SUBMODULES[name]}")
    elif name in _ATTRIBUTES:
        value = getattr(importlib.import_module(f"{__name__}.{_ATTRIBUTES[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
