"""Modules a researcher writes today, as the tests train them: Flax NNX, batch normalisation,
linen modules with no train argument or with **kwargs."""

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx

from lecun_jax.core.model import Net1989


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


class FlaxExamplesCNN(nn.Module):
    """The CNN of google/flax examples/mnist, written as there: its __call__ takes no train."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(features=32, kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = nn.Conv(features=64, kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))  # flatten
        x = nn.Dense(features=256)(x)
        x = nn.relu(x)
        x = nn.Dense(features=10)(x)
        return x


class TanhMLP(nn.Module):
    """256 -> 30 -> 10, tanh, no train argument and no layers(): what becker_lecun cannot walk."""

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(30)(x.reshape(x.shape[0], -1)))
        return jnp.tanh(nn.Dense(10)(x))


class KeywordNet1989(Net1989):
    """The 1989 network, its keywords (train) passed on through **kw."""

    @nn.compact
    def __call__(self, x, **kw):
        return super().__call__(x, **kw)


class ZeroedKeywordNet1989(Net1989):
    """The same, its outputs multiplied by 0: every digit gets the same scores."""

    @nn.compact
    def __call__(self, x, **kw):
        return super().__call__(x, **kw) * 0.0
