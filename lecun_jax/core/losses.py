"""Per-example losses: ``loss(outputs (B, 10), labels (B,) int) -> (B,)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def pm1_targets(labels, num_classes: int = 10):
    """The 1989 targets: +1 for the true class, -1 for the others."""
    return 2.0 * jax.nn.one_hot(labels, num_classes) - 1.0


def mse(outputs, labels):
    """1989: mean over the 10 outputs of the squared error to +-1 targets (no factor 1/2)."""
    return jnp.mean((outputs - pm1_targets(labels, outputs.shape[-1])) ** 2, axis=-1)


def cross_entropy(outputs, labels):
    """Softmax cross-entropy of logits against integer labels (Karpathy's step 1)."""
    return optax.softmax_cross_entropy_with_integer_labels(outputs, labels)


LOSSES = {"mse": mse, "cross_entropy": cross_entropy}


def get(name: str):
    if name not in LOSSES:
        raise ValueError(f"loss={name!r}: valid: {', '.join(LOSSES)}")
    return LOSSES[name]
