"""The network of LeCun et al. (1989) as a Flax linen module.

    input 16x16x1, background -1
    H1   pad 2 with -1; 12 maps of 5x5, stride 2 -> 8x8x12; one bias per unit   1,068 params
    H2   pad 2 with -1; 12 maps of 5x5, stride 2 -> 4x4x12, each map sees 8 of
         the 12 H1 maps (maps 0-3 <- H1 0-7, 4-7 <- H1 4-11, 8-11 <- H1 0-3 and
         8-11); one bias per unit                                              2,592 params
    H3   fully connected 192 -> 30                                             5,790 params
    out  fully connected 30 -> 10                                                310 params

9,760 parameters and 63,660 multiply-accumulates per digit; tanh on every
layer; weights U(-2.4/sqrt(F), 2.4/sqrt(F)) with F the fan-in; biases 0 but
the output's, -1 (nine of ten targets are -1).

The two convolutions are computed as a patch gather followed by one einsum
(``conv='patches'``, the default): at batch size 1 XLA runs that much faster
than a convolution op, and it keeps H2's 8-of-12 connectivity a grouped
contraction with exactly the paper's weights. ``conv='lax'`` computes the same
layers with ``lax.conv_general_dilated`` and is the reference in the tests.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}
OUTPUT_ACTIVATIONS = {"tanh": jnp.tanh, "linear": lambda x: x}
CONV_IMPLS = ("patches", "lax")
KERNEL, STRIDE, PAD = 5, 2, 2

# H2's connection table: the H1 maps seen by each group of four H2 maps.
H2_INPUTS = ((0, 1, 2, 3, 4, 5, 6, 7), (4, 5, 6, 7, 8, 9, 10, 11), (0, 1, 2, 3, 8, 9, 10, 11))


def uniform_fan_in(fan_in: int, scale: float = 2.4):
    """Initialiser U(-scale/sqrt(fan_in), +scale/sqrt(fan_in)), the paper's rule."""
    bound = scale / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def _patch_index(size: int) -> np.ndarray:
    """(out*out, 25) flat indices of the 5x5 stride-2 windows of a padded size x size map."""
    out = (size - KERNEL) // STRIDE + 1
    start = np.arange(out) * STRIDE
    rows = start[:, None] + np.arange(KERNEL)[None, :]  # (out, 5)
    idx = rows[:, None, :, None] * size + rows[None, :, None, :]  # (out, out, 5, 5)
    return idx.reshape(out * out, KERNEL * KERNEL)


class Conv1989(nn.Module):
    """5x5 stride-2 convolution padded with ``pad_value``, one bias per output unit.

    ``in_groups[g]`` lists the input maps that output maps of group g see
    (groups of ``features // len(in_groups)`` consecutive maps), so the kernel
    is (5, 5, len(in_groups[0]), features) and the fan-in 25 * len(in_groups[0]).
    """

    features: int
    in_groups: Sequence[Sequence[int]]
    pad_value: float = -1.0
    conv: str = "patches"
    precision: str = "highest"

    @nn.compact
    def __call__(self, x):
        batch, size, _, _ = x.shape
        groups, n_in = len(self.in_groups), len(self.in_groups[0])
        padded = size + 2 * PAD
        out = (padded - KERNEL) // STRIDE + 1
        kernel = self.param("kernel", uniform_fan_in(KERNEL * KERNEL * n_in), (KERNEL, KERNEL, n_in, self.features))
        bias = self.param("bias", nn.initializers.zeros, (out, out, self.features))
        x = jnp.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)), constant_values=self.pad_value)
        channels = np.asarray(self.in_groups).reshape(-1)
        if self.conv == "lax":
            if groups > 1 or not np.array_equal(channels, np.arange(x.shape[-1])):
                x = x[..., channels]  # lay the groups side by side for feature_group_count
            y = lax.conv_general_dilated(
                x, kernel, (STRIDE, STRIDE), "VALID",
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups, precision=self.precision,
            )
        elif self.conv == "patches":
            patches = x.reshape(batch, padded * padded, -1)[:, _patch_index(padded)]  # (B, out*out, 25, C)
            if groups > 1 or not np.array_equal(channels, np.arange(x.shape[-1])):
                patches = patches[..., channels]
            patches = patches.reshape(batch, out * out, KERNEL * KERNEL, groups, n_in)
            w = kernel.reshape(KERNEL * KERNEL, n_in, groups, self.features // groups)
            y = jnp.einsum("bpkgi,kigf->bpgf", patches, w, precision=self.precision)
            y = y.reshape(batch, out, out, self.features)
        else:
            raise ValueError(f"conv={self.conv!r}: valid: {', '.join(CONV_IMPLS)}")
        return y + bias


class Net1989(nn.Module):
    """The 1989 network; the attributes are the switches of the later ablations.

    Attributes:
      activation: hidden-layer nonlinearity, ``tanh`` (1989) or ``relu``.
      output_activation: ``tanh`` (1989, for MSE on +-1 targets) or ``linear``
        (logits, for cross-entropy).
      dropout_rate: dropout on the input of H3 (the flattened H2), train only.
      output_bias_init: initial output bias (-1 in 1989).
      hidden_pad_value: what H1 is padded with before H2. Karpathy pads with -1
        whatever the activation; 0 is the cleaner choice for ReLU.
      conv: ``patches`` (gather + einsum) or ``lax`` (reference).
    """

    activation: str = "tanh"
    output_activation: str = "tanh"
    dropout_rate: float = 0.0
    output_bias_init: float = -1.0
    hidden_pad_value: float = -1.0
    conv: str = "patches"
    precision: str = "highest"

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        """x: (batch, 16, 16, 1) grey values, background -1 -> (batch, 10)."""
        if x.ndim != 4 or x.shape[1:] != (16, 16, 1):
            raise ValueError(f"Net1989 expects images of shape (batch, 16, 16, 1), got {x.shape}")
        act = ACTIVATIONS[self.activation]
        h1 = act(Conv1989(12, ((0,),), -1.0, self.conv, self.precision, name="h1")(x))
        h2 = act(Conv1989(12, H2_INPUTS, self.hidden_pad_value, self.conv, self.precision, name="h2")(h1))
        h2 = h2.reshape(h2.shape[0], -1)
        h2 = nn.Dropout(self.dropout_rate, deterministic=not train)(h2)
        dense = lambda n, fan_in, name, **kw: nn.Dense(
            n, kernel_init=uniform_fan_in(fan_in), precision=self.precision, name=name, **kw
        )
        h3 = act(dense(30, 192, "h3")(h2))
        out = dense(10, 30, "out", bias_init=nn.initializers.constant(self.output_bias_init))(h3)
        return OUTPUT_ACTIVATIONS[self.output_activation](out)


def init(model: Net1989, key) -> dict:
    """Fresh parameters of ``model`` (the ``params`` collection).

    Drawn with the non-partitionable threefry (the same numbers inside or
    outside jit): on a CPU its programs compile about 3x faster.
    """
    with jax.threefry_partitionable(False):
        return model.init(key, jnp.zeros((1, 16, 16, 1)))["params"]


def abstract_params(model: Net1989 | None = None) -> dict:
    """Parameter shapes of ``model`` without computing anything."""
    model = Net1989() if model is None else model
    return jax.eval_shape(lambda k: init(model, k), jax.random.PRNGKey(0))


def layer_table(params=None) -> list[dict]:
    """Per layer, from a parameter tree: units, fan-in, parameters, multiply-accumulates per digit.

    A convolution's MACs are its kernel size times its output positions; a
    dense layer's, its kernel size. Units are the layer's biases (untied in
    the convolutions, so one per unit).
    """
    params = abstract_params() if params is None else params
    rows = []
    for name, layer in params.items():
        kernel, bias = layer["kernel"], layer["bias"]
        units, features = int(np.prod(bias.shape)), kernel.shape[-1]
        n_kernel = int(np.prod(kernel.shape))
        rows.append(dict(
            layer=name, units=units, fan_in=n_kernel // features,
            params=n_kernel + units, macs=n_kernel * (units // features),
        ))
    return rows


def count_params(params=None) -> dict[str, int]:
    """Parameters per layer, plus ``total`` (9,760 for the 1989 network)."""
    rows = layer_table(params)
    return {r["layer"]: r["params"] for r in rows} | {"total": sum(r["params"] for r in rows)}


def count_macs(params=None) -> dict[str, int]:
    """Multiply-accumulates per digit per layer, plus ``total`` (63,660)."""
    rows = layer_table(params)
    return {r["layer"]: r["macs"] for r in rows} | {"total": sum(r["macs"] for r in rows)}
