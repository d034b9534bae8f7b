"""Modules a researcher writes today, as the tests train them: Flax NNX, and batch normalisation."""

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx


class NNXMLP(nnx.Module):
    """256 -> 30 -> 10, tanh: 8,020 parameters under the names l1 and l2."""

    def __init__(self, rngs: nnx.Rngs, hidden: int = 30):
        self.hidden = hidden
        self.l1 = nnx.Linear(256, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x):
        return jnp.tanh(self.l2(jnp.tanh(self.l1(x.reshape(x.shape[0], -1)))))


class ZeroedNNXMLP(NNXMLP):
    """The same, its outputs multiplied by 0: every digit gets the same scores."""

    def __call__(self, x):
        return super().__call__(x) * 0.0


class BatchNormCNN(nn.Module):
    """A linen CNN with batch normalisation (batch_stats beside params)."""

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = nn.Conv(8, (5, 5), strides=2)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


class NNXBatchNormCNN(nnx.Module):
    """The same in NNX, with dropout: BatchStat variables and a random stream."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 8, (5, 5), strides=2, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)
        self.out = nnx.Linear(8 * 8 * 8, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv(x))).reshape(x.shape[0], -1)
        return self.out(self.dropout(x))
