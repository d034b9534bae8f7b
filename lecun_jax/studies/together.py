"""Sweep rows that differ only in optimiser hyperparameters, trained side by side.

The rows' networks are the replicas of one compiled program, their learning
rates (and AdamW's weight decay) held as data in the optimiser state by
``optax.inject_hyperparams``; each row is then written into its own folder as
an ordinary finished run, through the verbs of :class:`lecun_jax.run.store.RunStore`
that a run writes with. The run path knows nothing of this: a group is an
optimiser and an ``init_states`` passed to ``train_and_evaluate``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lecun_jax import data as data_lib
from lecun_jax.run import experiment, logs, plots, reporting
from lecun_jax.run import processes as processes_lib
from lecun_jax.core import optimizers
from lecun_jax.core import train as train_lib
from lecun_jax.run.store import RunStore


@dataclasses.dataclass(frozen=True)
class Group:
    """Rows trained as the replicas of one program: replica j is seed-replica
    ``j % seeds`` of row ``j // seeds``, with that row's ``values`` (field -> one
    value per row, e.g. ``{"learning_rate": (0.01, 0.03)}``) in its optimiser state."""

    seeds: int
    values: dict[str, tuple[float, ...]]

    @property
    def rows(self) -> int:
        return len(next(iter(self.values.values())))

    def replica_ids(self, replicas: int) -> np.ndarray:
        """The replica index each replica's keys come from (spares past the rows: 0)."""
        real = self.rows * self.seeds
        return np.asarray([j % self.seeds if j < real else 0 for j in range(replicas)], np.uint32)

    def replica_values(self, replicas: int) -> dict[str, np.ndarray]:
        real = self.rows * self.seeds
        return {k: np.asarray([v[j // self.seeds] if j < real else v[0] for j in range(replicas)], np.float32)
                for k, v in self.values.items()}

    def optimizer(self, config):
        """The config's optimiser with the group's fields as data (each replica sets its own)."""
        return optimizers.make(config.optimizer, steps_per_pass=1, passes=1,
                               injected={k: getattr(config.optimizer, k) for k in self.values})

    def init_states(self, config, model, tx, replicas: int) -> train_lib.State:
        """Each replica as its row's seed-replica would start alone, with its row's values."""

        @jax.jit
        def init(seed):
            keys = jax.vmap(lambda r: train_lib.replica_key(seed, r))(jnp.asarray(self.replica_ids(replicas)))
            make = lambda v: optimizers.make(config.optimizer, steps_per_pass=1, passes=1, injected=v)
            return jax.vmap(lambda k, v: train_lib.init_state(model, make(v), k))(keys, self.replica_values(replicas))

        return init(jnp.uint32(config.seed))


def train(group: Group, config, workdir: Path, **kwargs) -> dict:
    """Trains the group's rows x seeds networks in ``workdir`` (``config.num_seeds`` must be their number)."""
    if config.num_seeds != group.rows * group.seeds:
        raise ValueError(f"a group of {group.rows} rows x {group.seeds} seeds needs num_seeds={group.rows * group.seeds}")
    return experiment.train_and_evaluate(config, workdir, optimizer=group.optimizer(config),
                                         init_states=group.init_states, plots=False, **kwargs)


def write_row(group_dir: Path, group: Group, row: int, config, workdir: Path, label: str | None = None,
              processes: processes_lib.Processes | None = None) -> dict:
    """Row ``row`` of the finished group run in ``group_dir``, written into ``workdir`` as an
    ordinary finished run of ``config`` (its replicas renumbered from 0) by the store's verbs;
    ``processes``: who writes (default: every process of the job; its process 0 writes).

    The row has no checkpoints: its state is the group's, whose optimiser holds the
    hyperparameters as data, a state a run of the row alone could not resume from; a
    finished run needs none."""
    lo, hi = row * group.seeds, (row + 1) * group.seeds
    group_run = RunStore(group_dir)  # a reader
    records = [dict(r, replica=r["replica"] - lo) for r in group_run.metrics() if lo <= r["replica"] < hi]
    take = lambda a: a[lo:hi]
    outputs, labels = group_run.test_outputs()
    with RunStore(workdir, processes or processes_lib.job()) as store:
        # what a run of the row alone left here, unfinished, is replaced (a finished one was not trained again)
        store.open(config, overwrite=True)
        store.begin(config, None, records, optimizers.pass_learning_rates(config.optimizer, config.train.passes))
        store.write_outputs(jax.tree.map(take, group_run.params()), jax.tree.map(take, group_run.model_state()),
                            outputs[lo:hi], labels)
        figures = lambda: plots.run_figures(records, f"{Path(workdir).name}: {config.data.name}", config.seed,
                                            outputs[lo:hi], labels, data_lib.for_config(config).test.images)
        return store.finish(lambda: _row_summary(group_run.summary(), group, row, config, records, group_dir, label), figures)


def _row_summary(together: dict, group: Group, row: int, config, records: list[dict], group_dir: Path, label) -> dict:
    """The group's summary, with the row's own label, seeds, final metrics and per-network ledger."""
    sizes = {s: together["data"][f"{s}_digits"] for s in data_lib.SPLITS}
    train_s = together["ledger"]["wall_s"]
    return together | {
        "label": label,
        "num_seeds": group.seeds,
        "parts": {},
        "final": {s: reporting.summarize(records, s, config.train.passes) for s in data_lib.SPLITS},
        "together": {"workdir": str(group_dir), "row": row, "rows": group.rows,
                     "values": {k: v[row] for k, v in group.values.items()},
                     "note": "trained side by side with the other rows in one program; time is the group's"},
        "ledger": logs.ledger(config, sizes, None if train_s is None else train_s / group.rows, together["macs_per_digit"]),
    }
