"""Optax chains built from ``config.optimizer``."""

from __future__ import annotations

import ml_collections
import optax

OPTIMIZERS = ("sgd",)


def make(config: ml_collections.ConfigDict, *, total_steps: int) -> optax.GradientTransformation:
    """The optimiser of ``config.optimizer`` for a run of ``total_steps`` updates.

    ``sgd``: plain stochastic gradient descent, w <- w - lr * g (1989).
    """
    del total_steps  # used by the learning-rate schedules
    name = config.name
    if name == "sgd":
        return optax.sgd(config.learning_rate)
    raise ValueError(f"optimizer.name={name!r}: valid: {', '.join(OPTIMIZERS)}")
