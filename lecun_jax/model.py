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

The convolutions multiply by a dense kernel with structural zeros (see
``lecun_jax.conv``): ``conv='patches'`` gathers windows and uses a hand-written
backward (fastest for per-digit SGD), ``conv='lax'`` uses
``lax.conv_general_dilated`` (fastest for large batches); ``conv='auto'`` (the
default) picks patches up to batch size 64 and lax above. All three compute
the same function; the tests check them against Karpathy's formulation.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lecun_jax import conv as conv_lib

def scaled_tanh(a):
    """1.7159 tanh(2a/3): f(+-1) = +-1, so +-1 targets sit in the quasi-linear range
    ("Efficient BackProp", LeCun et al. 1998; the 1989 paper speaks of a scaled hyperbolic
    tangent and of targets chosen inside the quasi-linear range of the sigmoid)."""
    return 1.7159 * jnp.tanh(2.0 * a / 3.0)


ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "scaled_tanh": scaled_tanh}
OUTPUT_ACTIVATIONS = {"tanh": jnp.tanh, "linear": lambda x: x, "scaled_tanh": scaled_tanh}
CONV_IMPLS = ("auto", "patches", "lax")
PATCHES_MAX_BATCH = 64  # conv="auto": patches up to this batch size, lax.conv above

# H2's connection table: the H1 maps seen by each group of four H2 maps.
H2_INPUTS = ((0, 1, 2, 3, 4, 5, 6, 7), (4, 5, 6, 7, 8, 9, 10, 11), (0, 1, 2, 3, 8, 9, 10, 11))


def h2_inputs(block: int) -> tuple[tuple[int, ...], ...]:
    """The 8-of-12 table at any width: H1's maps form three blocks A, B, C of ``block`` maps;
    H2's three groups of ``block`` maps see A+B, B+C and A+C (two thirds of H1).
    ``block = 4`` is the paper's table, H2_INPUTS."""
    a, b, c = (tuple(range(i * block, (i + 1) * block)) for i in range(3))
    return (a + b, b + c, a + c)


def uniform_fan_in(fan_in: int, scale: float = 2.4):
    """Initialiser U(-scale/sqrt(fan_in), +scale/sqrt(fan_in)), the paper's rule."""
    bound = scale / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


class Conv1989(nn.Module):
    """5x5 stride-2 convolution padded with ``pad_value``, one bias per output unit.

    ``in_groups[g]`` lists the input maps that output maps of group g see
    (groups of ``features // len(in_groups)`` consecutive maps), so the kernel
    is (5, 5, len(in_groups[0]), features) and the fan-in 25 * len(in_groups[0]).
    """

    features: int
    in_groups: Sequence[Sequence[int]]
    pad_value: float = -1.0
    conv: str = "auto"
    precision: str = "highest"

    @nn.compact
    def __call__(self, x):
        batch, size, _, channels = x.shape
        spec = conv_lib.ConvSpec(size, channels, self.features, tuple(tuple(g) for g in self.in_groups))
        kernel = self.param("kernel", uniform_fan_in(conv_lib.KERNEL**2 * len(self.in_groups[0])), spec.kernel_shape)
        bias = self.param("bias", nn.initializers.zeros, (spec.out, spec.out, self.features))
        impl = self.conv
        if impl == "auto":
            impl = "patches" if batch <= PATCHES_MAX_BATCH else "lax"
        if impl == "patches":
            y = conv_lib.conv_patches(x, kernel, spec, self.pad_value, self.precision)
        elif impl == "lax":
            y = conv_lib.conv_lax(x, kernel, spec, self.pad_value, self.precision)
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
      conv: ``auto`` | ``patches`` | ``lax``: how the convolutions are computed.
      width: scales the feature maps of H1 and H2 (12 -> 12 w, in three blocks
        of 4 w) and the H3 units (30 -> round(30 w)); the topology, the
        initialisation rule and the 8-of-12 proportions stay (:func:`h2_inputs`).
        1 is the 1989 network exactly; 4 w must be a whole number.
    """

    activation: str = "tanh"
    output_activation: str = "tanh"
    dropout_rate: float = 0.0
    output_bias_init: float = -1.0
    hidden_pad_value: float = -1.0
    conv: str = "auto"
    precision: str = "highest"
    width: float = 1.0

    @property
    def block(self) -> int:
        """H1 maps per block of the connection table (4 in 1989)."""
        block = round(4 * self.width)
        if block < 1 or abs(block - 4 * self.width) > 1e-9:
            raise ValueError(f"width={self.width}: 4 * width must be a whole number >= 1")
        return block

    @property
    def maps(self) -> int:
        """Feature maps of H1 and of H2 (12 in 1989)."""
        return 3 * self.block

    @property
    def h3_units(self) -> int:
        return max(1, round(30 * self.width))

    @property
    def dropout_size(self) -> int:
        """Units that dropout acts on: the flattened H2 (4 x 4 x 12 in 1989)."""
        return 4 * 4 * self.maps

    @nn.compact
    def __call__(self, x, *, train: bool = False, dropout_keep=None):
        """x: (batch, 16, 16, 1) grey values, background -1 -> (batch, 10).

        In training, dropout draws from the ``dropout`` rng, unless
        ``dropout_keep`` (batch, dropout_size) gives the mask (1 keeps, 0 drops) —
        the training loop draws a whole pass's masks at once, which is faster.
        """
        if x.ndim != 4 or x.shape[1:] != (16, 16, 1):
            raise ValueError(f"Net1989 expects images of shape (batch, 16, 16, 1), got {x.shape}")
        act = ACTIVATIONS[self.activation]
        h1 = act(Conv1989(self.maps, ((0,),), -1.0, self.conv, self.precision, name="h1")(x))
        h2 = act(Conv1989(self.maps, h2_inputs(self.block), self.hidden_pad_value, self.conv, self.precision, name="h2")(h1))
        h2 = h2.reshape(h2.shape[0], -1)
        if train and self.dropout_rate > 0 and dropout_keep is not None:
            h2 = h2 * dropout_keep / (1.0 - self.dropout_rate)
        else:
            h2 = nn.Dropout(self.dropout_rate, deterministic=not train)(h2)
        dense = lambda n, fan_in, name, **kw: nn.Dense(
            n, kernel_init=uniform_fan_in(fan_in), precision=self.precision, name=name, **kw
        )
        h3 = act(dense(self.h3_units, self.dropout_size, "h3")(h2))
        out = dense(10, self.h3_units, "out", bias_init=nn.initializers.constant(self.output_bias_init))(h3)
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
