"""Finished (or interrupted) runs, loaded from their workdirs: for notebooks."""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import ml_collections

from lecun_jax import config as config_lib
from lecun_jax import data as data_lib
from lecun_jax.core import modules
from lecun_jax.run import reporting
from lecun_jax.run.store import RunStore
from lecun_jax.core import train as train_lib


class Run:
    """A finished (or interrupted) run, loaded from its workdir for notebooks.

    Attributes: ``workdir``, ``config`` (ConfigDict), ``metrics`` (records),
    ``summary`` (dict, None while unfinished), ``params`` (the final
    parameters, those the optimiser defines for evaluation where it does;
    leading replica axis when num_seeds > 1), ``model_state`` (the module's
    other collections, e.g. ``{'batch_stats': ...}``; empty for most modules),
    ``test_outputs`` ((replicas, N, 10) outputs on the test split) and
    ``test_labels``.
    """

    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        files = RunStore(self.workdir)  # a reader
        if not files.exists():
            raise FileNotFoundError(f"{self.workdir}: no config.json; not a lecun_jax run")
        config = files.config_json()
        self.parts = config.pop("parts", {})  # the parts a user passed in, as recorded
        self.config = ml_collections.ConfigDict(_with_defaults(config_lib.base().to_dict(), config))
        self.metrics = files.metrics()
        self.summary = files.summary()
        self.params = files.params()
        self.model_state = files.model_state()
        self.test_outputs, self.test_labels = files.test_outputs() or (None, None)

    @property
    def model(self) -> nn.Module:
        """The network the run trained (evaluate it with ``model.apply(run.variables(), x,
        train=False)``); a run of a user's module cannot rebuild it: see :meth:`nnx_module`,
        or apply that module to :meth:`variables`."""
        if "model" in self.parts:
            raise ValueError(f"{self.workdir} trained a user's module, {self.parts['model']['class']}: "
                             "apply that module to run.variables()")
        return train_lib.make_model(self.config)

    def _replica(self, tree, replica: int):
        return tree if self.config.num_seeds == 1 else jax.tree.map(lambda a: a[replica], tree)

    def replica_params(self, replica: int = 0) -> dict:
        """One network's parameters."""
        return self._replica(self.params, replica)

    def variables(self, replica: int = 0) -> dict:
        """One network's variables as ``apply`` takes them: ``{'params': ..., **model_state}``."""
        return {"params": self.replica_params(replica), **self._replica(self.model_state, replica)}

    def nnx_module(self, model, replica: int = 0):
        """The trained NNX module of one replica, in evaluation mode, rebuilt from ``model``
        (the instance or the ``rngs -> module`` factory the run was given) and the saved state."""
        module = modules.NNXModule(model).module(jax.tree.map(jax.numpy.asarray, self.variables(replica)))
        module.eval()  # ready to evaluate: running averages, no dropout
        return module

    def dataset(self) -> data_lib.Dataset:
        """The run's data, as it trained on it."""
        return data_lib.for_config(self.config)

    def final(self, split: str = "test") -> dict:
        """Final metrics of a split across replicas (see reporting.summarize)."""
        return reporting.summarize(self.metrics, split, max(r["pass"] for r in self.metrics))

    def __repr__(self) -> str:
        done = "finished" if self.summary else "unfinished"
        return f"Run({str(self.workdir)!r}, {self.config.data.name}, {self.config.num_seeds} seed(s), {done})"


def _with_defaults(defaults: dict, recorded: dict) -> dict:
    """The recorded config over today's defaults: a field added since the run was made
    takes its default, which keeps the behaviour the run had."""
    out = dict(defaults)
    for key, value in recorded.items():
        both = isinstance(value, dict) and isinstance(defaults.get(key), dict)
        out[key] = _with_defaults(defaults[key], value) if both else value
    return out


def load_run(workdir: str | Path) -> Run:
    """The config, trained parameters and metrics of the run in ``workdir``."""
    return Run(workdir)
