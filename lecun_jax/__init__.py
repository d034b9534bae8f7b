"""lecun_jax: LeCun et al. (1989) and Karpathy's 2022 ablations in JAX.

    import lecun_jax
    run = lecun_jax.load_run("runs/lecun1989_mnist1989")  # config, params, metrics of a run
    ds = lecun_jax.data.load("usps")                 # the 1989 digits, in memory
    net = lecun_jax.Net1989()                        # the 9,760-parameter network
    params = lecun_jax.model.init(net, jax.random.PRNGKey(0))

Submodules load on first use (``lecun_jax.data`` imports ``lecun_jax.data``),
so ``import lecun_jax`` itself imports neither JAX nor TensorFlow Datasets,
matplotlib or tensorboardX. :func:`lecun_jax.data.load` registers the
TFDS builders ``mnist1989``, ``usps`` and ``mnist16`` (``lecun_jax.tfds_datasets``)
before it asks TFDS for them.

The modules, bottom to top; imports only go downwards, lazy ones included
(tests/test_imports.py)::

    reporting, sources, conv, losses, augment, sdlm, processes   import nothing of the package
    downloads, tfds_datasets, data       the digits: data -> tfds_datasets -> downloads -> sources
    model, modules, optimizers, train    the network, a user's parts (linen or NNX), the training step
    config                               the run's fields, checked against the choices above
    workdir, checkpoints, logs, plots, runs   what the host loop keeps, tells and reloads
    experiment                           the host loop: train_and_evaluate
    together, scaling, sweep, distributions   sweeps, and rows over many seeds
    cli (and launch.py)                  the command line
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_SUBMODULES = (
    "augment", "checkpoints", "cli", "config", "conv", "data", "distributions", "downloads", "experiment", "logs",
    "losses", "model", "modules", "optimizers", "plots", "processes", "reporting", "runs", "scaling", "sdlm",
    "sources", "sweep", "tfds_datasets", "together", "train", "workdir",
)
_ATTRIBUTES = {"load_run": "runs", "train_and_evaluate": "experiment", "Net1989": "model", "make_train": "train"}

__all__ = ["Net1989", "load_run", "make_train", "train_and_evaluate", *_SUBMODULES]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from lecun_jax import augment, checkpoints, cli, config, conv, data, downloads, experiment, logs, losses  # noqa: F401
    from lecun_jax import model, modules, optimizers, plots, processes, reporting, runs, scaling, sdlm, sources  # noqa: F401
    from lecun_jax import distributions, sweep, tfds_datasets, together, train, workdir  # noqa: F401
    from lecun_jax.experiment import train_and_evaluate  # noqa: F401
    from lecun_jax.runs import load_run  # noqa: F401
    from lecun_jax.model import Net1989  # noqa: F401
    from lecun_jax.train import make_train  # noqa: F401


def __getattr__(name: str):
    if name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _ATTRIBUTES:
        value = getattr(importlib.import_module(f"{__name__}.{_ATTRIBUTES[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
