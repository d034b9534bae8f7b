"""Per-example losses: ``loss(outputs (B, 10), labels (B,) int) -> (B,)``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax


def pm1_targets(labels, num_classes: int = 10, target: float = 1.0):
    """The 1989 targets: +target for the true class, -target for the others (1989: +-1;
    LeCun et al. 1998 aim inside the output's range, e.g. +-1 of a 1.7159 tanh)."""
    return target * (2.0 * jax.nn.one_hot(labels, num_classes) - 1.0)


def mse(outputs, labels, target: float = 1.0):
    """1989: mean over the 10 outputs of the squared error to +-target targets (no factor 1/2)."""
    return jnp.mean((outputs - pm1_targets(labels, outputs.shape[-1], target)) ** 2, axis=-1)


def cross_entropy(outputs, labels):
    """Softmax cross-entropy of logits against integer labels (Karpathy's step 1)."""
    return optax.softmax_cross_entropy_with_integer_labels(outputs, labels)


LOSSES = {"mse": mse, "cross_entropy": cross_entropy}


def get(name: str, target: float = 1.0):
    """The loss ``name``; ``target`` is mse's (config ``loss_target``): cross-entropy has no
    targets, so it refuses any other value rather than ignore it."""
    if name not in LOSSES:
        raise ValueError(f"loss={name!r}: valid: {', '.join(LOSSES)}")
    if name == "mse":
        return functools.partial(mse, target=target)
    if target != 1.0:
        raise ValueError(f"loss_target={target!r}: loss={name} has no targets; valid: 1, or loss=mse")
    return LOSSES[name]
