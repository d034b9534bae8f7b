"""The network of LeCun et al. (1989) as a Flax linen module: the one place its math lives.

    input 16x16x1, background -1
    H1   pad 2 with -1; 12 maps of 5x5, stride 2 -> 8x8x12; one bias per unit   1,068 params
    H2   pad 2 with -1; 12 maps of 5x5, stride 2 -> 4x4x12, each map sees 8 of
         the 12 H1 maps (maps 0-3 <- H1 0-7, 4-7 <- H1 4-11, 8-11 <- H1 0-3 and
         8-11); one bias per unit                                              2,592 params
    H3   fully connected 192 -> 30                                             5,790 params
    out  fully connected 30 -> 10                                                310 params

9,760 parameters and 63,660 multiply-accumulates per digit; tanh on every
layer; weights U(-2.4/sqrt(F), 2.4/sqrt(F)) with F the fan-in (``init_rule``
``linear``: U(-2.4/F, 2.4/F)); biases 0 but the output's, -1 (nine of ten
targets are -1).

Kernels are stored (out, in, ...), PyTorch's layout, which the products at
batch size 1 run fastest with. H2's kernel is dense, (12, 12, 5, 5), and
masked by the fixed connection table (``lecun_jax.core.conv.connection_mask``) where it is used: its
1,200 unconnected entries are structural zeros that never act and get no
gradient, so the paper's 2,400 weights are what trains (:func:`count_params`
counts through the mask). Training differentiates :meth:`Net1989.__call__`
with ``jax.grad``; SDLM's Becker-LeCun estimator walks the same
:meth:`Net1989.layers` that ``__call__`` applies.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lecun_jax.core import conv as conv_lib

HIGHEST = jax.lax.Precision.HIGHEST


def scaled_tanh(a):
    """1.7159 tanh(2a/3): f(+-1) = +-1, so +-1 targets sit in the quasi-linear range
    ("Efficient BackProp", LeCun et al. 1998; the 1989 paper speaks of a scaled hyperbolic
    tangent and of targets chosen inside the quasi-linear range of the sigmoid)."""
    return 1.7159 * jnp.tanh(2.0 * a / 3.0)


ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "scaled_tanh": scaled_tanh}
OUTPUT_ACTIVATIONS = {"tanh": jnp.tanh, "linear": lambda x: x, "scaled_tanh": scaled_tanh}
CONV_IMPLS = conv_lib.IMPLS
# The initial weights' bound is 2.4 / divisor(F), F the fan-in. The paper prints 2.4/F (so does
# LeNet-5, 1998); Karpathy's reproduction reads it as 2.4/sqrt(F), the default here.
INIT_RULES = {"sqrt": math.sqrt, "linear": float}

# H2's connection table: the H1 maps seen by each group of four H2 maps.
H2_INPUTS = ((0, 1, 2, 3, 4, 5, 6, 7), (4, 5, 6, 7, 8, 9, 10, 11), (0, 1, 2, 3, 8, 9, 10, 11))


def h2_inputs(block: int) -> tuple[tuple[int, ...], ...]:
    """The 8-of-12 table at any width: H1's maps form three blocks A, B, C of ``block`` maps;
    H2's three groups of ``block`` maps see A+B, B+C and A+C (two thirds of H1).
    ``block = 4`` is the paper's table, H2_INPUTS."""
    a, b, c = (tuple(range(i * block, (i + 1) * block)) for i in range(3))
    return (a + b, b + c, a + c)


def uniform_fan_in(fan_in: int, scale: float = 2.4, rule: str = "sqrt"):
    """Initialiser U(-bound, +bound), bound = scale / sqrt(fan_in) (``rule='sqrt'``) or
    scale / fan_in (``rule='linear'``): :data:`INIT_RULES`."""
    bound = scale / INIT_RULES[rule](fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


@dataclasses.dataclass(frozen=True, eq=False)
class Layer:
    """One layer: ``a = linear(p, x)``, then ``activation(a)``; ``p`` holds ``kernel`` and ``bias``.

    ``linear`` is linear in each of p and x (a bias is a weight on a constant
    input 1); ``linear(p, x, squared=True)`` is the same map on squared values
    (the constant padding squared too), which SDLM's Becker-LeCun estimator needs.
    ``mask`` (or None) marks the kernel's real connections.
    """

    name: str
    kernel_shape: tuple[int, ...]
    bias_shape: tuple[int, ...]
    fan_in: int
    linear: Callable[..., jax.Array]
    activation: Callable[[jax.Array], jax.Array]
    bias_init: float = 0.0
    mask: np.ndarray | None = None
    positions: int = 1  # output positions sharing the kernel (multiply-accumulates per digit)
    init_rule: str = "sqrt"  # the bound of the initial weights: INIT_RULES

    def init(self, key) -> dict:
        kernel = uniform_fan_in(self.fan_in, rule=self.init_rule)(key, self.kernel_shape)
        if self.mask is not None:
            kernel = kernel * self.mask
        return {"kernel": kernel, "bias": jnp.full(self.bias_shape, self.bias_init, jnp.float32)}


class Net1989(nn.Module):
    """The 1989 network; the attributes are the switches of the later ablations.

    Called as ``apply({'params': p}, images (B, 16, 16, 1), train=bool, rngs={'dropout': key})``
    -> (B, 10) scores; dropout needs the ``dropout`` rng when ``train``.

    Attributes:
      activation: hidden-layer nonlinearity, ``tanh`` (1989), ``relu`` or ``scaled_tanh``.
      output_activation: ``tanh`` (1989, for MSE on +-1 targets), ``linear``
        (logits, for cross-entropy) or ``scaled_tanh``.
      dropout_rate: dropout on the input of H3 (the flattened H2), train only.
      output_bias_init: initial output bias (-1 in 1989).
      hidden_pad_value: what H1 is padded with before H2. Karpathy pads with -1
        whatever the activation; 0 is the cleaner choice for ReLU.
      conv: ``auto`` | ``patches`` | ``lax``: how the convolutions are computed
        (the same function; ``auto`` picks by batch size).
      width: scales the feature maps of H1 and H2 (12 -> 12 w, in three blocks
        of 4 w) and the H3 units (30 -> round(30 w)); the topology, the
        initialisation rule and the 8-of-12 proportions stay (:func:`h2_inputs`).
        1 is the 1989 network exactly; 4 w must be a whole number.
      init_rule: the initial weights' bound, 2.4/sqrt(F) (``sqrt``, Karpathy's reading)
        or 2.4/F (``linear``, as the paper prints it), F each layer's fan-in.
    """

    activation: str = "tanh"
    output_activation: str = "tanh"
    dropout_rate: float = 0.0
    output_bias_init: float = -1.0
    hidden_pad_value: float = -1.0
    conv: str = "auto"
    width: float = 1.0
    init_rule: str = "sqrt"

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

    def layers(self) -> tuple[Layer, ...]:
        """H1, H2, H3 and the output, in order: what ``__call__`` applies."""
        act, maps = ACTIVATIONS[self.activation], self.maps
        mask2 = conv_lib.connection_mask(maps, maps, h2_inputs(self.block))
        s1 = conv_lib.out_size(16)
        s2 = conv_lib.out_size(s1)

        def conv_linear(pad_value, mask=None):
            def linear(p, x, squared=False):
                # a select, not a product with the mask: the faster of the two on XLA CPU (benchmarks/README.md)
                kernel = p["kernel"] if mask is None else jnp.where(mask > 0, p["kernel"], 0.0)
                return conv_lib.conv(x, kernel, pad_value**2 if squared else pad_value, self.conv) + p["bias"]

            return linear

        h2_conv = conv_linear(self.hidden_pad_value, mask2)

        def h2_linear(p, x, squared=False):  # flattened for the dense layers
            a = h2_conv(p, x, squared)
            return a.reshape(a.shape[0], -1)

        def dense_linear(p, x, squared=False):
            del squared  # no constant input but the bias's
            return lax.dot_general(x, p["kernel"], (((1,), (1,)), ((), ())), precision=HIGHEST) + p["bias"]

        flat2, rule = s2 * s2 * maps, self.init_rule
        return (
            Layer("h1", (maps, 1, 5, 5), (s1, s1, maps), 25, conv_linear(-1.0), act, positions=s1 * s1, init_rule=rule),
            Layer("h2", (maps, maps, 5, 5), (s2, s2, maps), 25 * 2 * self.block, h2_linear, act, mask=mask2,
                  positions=s2 * s2, init_rule=rule),
            Layer("h3", (self.h3_units, flat2), (self.h3_units,), flat2, dense_linear, act, init_rule=rule),
            Layer("out", (10, self.h3_units), (10,), self.h3_units, dense_linear, OUTPUT_ACTIVATIONS[self.output_activation],
                  bias_init=self.output_bias_init, init_rule=rule),
        )

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        """x: (batch, 16, 16, 1) grey values, background -1 -> (batch, 10)."""
        if x.ndim != 4 or x.shape[1:] != (16, 16, 1):
            raise ValueError(f"Net1989 expects images of shape (batch, 16, 16, 1), got {x.shape}")
        for layer in self.layers():
            if layer.name == "h3":  # dropout on the input of H3
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = layer.activation(layer.linear(self.param(layer.name, layer.init), x))
        return x


def init_variables(model: nn.Module, key) -> dict:
    """Fresh variables of ``model``: ``params`` and any other collection (batch statistics).

    Drawn with the non-partitionable threefry (the same numbers inside or
    outside jit): its programs compile faster on a CPU.
    """
    with jax.threefry_partitionable(False):
        return dict(model.init({"params": key}, jnp.zeros((1, 16, 16, 1)), train=False))


def init(model: nn.Module, key) -> dict:
    """Fresh parameters of ``model`` (the ``params`` collection)."""
    return init_variables(model, key)["params"]


def abstract_params(model: nn.Module | None = None) -> dict:
    """Parameter shapes of ``model`` (default: the 1989 network) without computing anything."""
    model = Net1989() if model is None else model
    return jax.eval_shape(lambda k: init(model, k), jax.random.PRNGKey(0))


def _size(tree) -> int:
    return sum(int(np.prod(np.shape(a))) for a in jax.tree.leaves(tree))


def layer_table(params: Any = None, model: nn.Module | None = None) -> list[dict]:
    """Per top-level entry of a parameter tree: its parameters, and for :class:`Net1989`
    layers also units, fan-in and multiply-accumulates per digit.

    Without ``params``, the 1989 network's. For a :class:`Net1989` (``model``,
    or the default when ``params`` is None) a kernel's structural zeros (H2's
    unconnected maps) are not parameters and do no multiply-adds; for any
    other module every array entry counts.
    """
    if params is None:
        model = Net1989() if model is None else model
        params = abstract_params(model)
    layers = {l.name: l for l in model.layers()} if isinstance(model, Net1989) else {}
    rows = []
    for name, tree in params.items():
        layer = layers.get(name)
        if layer is None:
            rows.append(dict(layer=name, params=_size(tree)))
            continue
        kernel = int(layer.mask.sum()) if layer.mask is not None else int(np.prod(layer.kernel_shape))
        units = int(np.prod(layer.bias_shape))
        rows.append(dict(layer=name, units=units, fan_in=layer.fan_in, params=kernel + units, macs=kernel * layer.positions))
    return rows


def count_params(params: Any = None, model: nn.Module | None = None) -> dict[str, int]:
    """Parameters per top-level entry, plus ``total`` (9,760 for the 1989 network)."""
    rows = layer_table(params, model)
    return {r["layer"]: r["params"] for r in rows} | {"total": sum(r["params"] for r in rows)}


def count_macs(params: Any = None, model: nn.Module | None = None) -> dict[str, int] | None:
    """Multiply-accumulates per digit per layer, plus ``total`` (63,660); None for other modules."""
    rows = layer_table(params, model)
    if not all("macs" in r for r in rows):
        return None
    return {r["layer"]: r["macs"] for r in rows} | {"total": sum(r["macs"] for r in rows)}
