"""The 1989 convolution, two ways: 5x5 kernels, stride 2, padding 2 with a constant.

Both formulations multiply by a *dense* kernel of shape (25 * C, F) whose
entries for unconnected (input map, output map) pairs are structural zeros,
built from the layer's real kernel (5, 5, n_in, F) by a fixed gather. So H2
keeps exactly the paper's 2,400 weights while the arithmetic is one plain
matrix product (50% more multiply-adds than a grouped product, far fewer ops).

* :func:`conv_patches` — gather the 5x5 windows into a (B * positions, 25 * C)
  matrix and multiply; a custom VJP spells out the backward pass as two
  matrix products plus gathers (the transpose of a gather is a scatter-add,
  which XLA runs slowly on CPU, so the backward gathers with the inverse
  index tables instead). At batch size 1 this is ~1.7x faster per SGD step
  than autodiff through the same gathers, and much faster than ``lax.conv``.
* :func:`conv_lax` — ``lax.conv_general_dilated`` with the dense kernel:
  the better choice for large batches (evaluation, large-batch training).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

KERNEL, STRIDE, PAD = 5, 2, 2


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """Static geometry: input side and maps, output maps, and the connection table.

    ``in_groups[g]`` lists the input maps seen by output maps of group g, the
    groups being ``features // len(in_groups)`` consecutive output maps.
    """

    size: int
    channels: int
    features: int
    in_groups: tuple[tuple[int, ...], ...]

    @property
    def padded(self) -> int:
        return self.size + 2 * PAD

    @property
    def out(self) -> int:
        return (self.padded - KERNEL) // STRIDE + 1

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        return (KERNEL, KERNEL, len(self.in_groups[0]), self.features)

    @property
    def is_dense(self) -> bool:
        """True when every output map sees every input map, in order (H1)."""
        return len(self.in_groups) == 1 and tuple(self.in_groups[0]) == tuple(range(self.channels))


@functools.lru_cache(maxsize=None)
def _tables(spec: ConvSpec):
    """Index tables of a spec (numpy, computed once)."""
    s, c, f, o = spec.size, spec.channels, spec.features, spec.out
    k2 = KERNEL * KERNEL
    # Padded position -> flat index into [x (s*s*c) ..., pad slot], per channel.
    pos = np.full((spec.padded, spec.padded), -1)
    pos[PAD : PAD + s, PAD : PAD + s] = np.arange(s * s).reshape(s, s)
    start = np.arange(o) * STRIDE
    rows = start[:, None] + np.arange(KERNEL)[None, :]  # (o, 5)
    window = pos[rows[:, None, :, None], rows[None, :, None, :]].reshape(o * o, k2)  # (o*o, 25), -1 = padding
    patch = np.where(window[:, :, None] < 0, s * s * c, window[:, :, None] * c + np.arange(c))  # (o*o, 25, c)
    patch = patch.reshape(o * o, k2 * c)
    # Dense kernel (25*c, f) <- flat [kernel (25 * n_in * f) ..., zero slot].
    n_in, groups = len(spec.in_groups[0]), len(spec.in_groups)
    per_group = f // groups
    dense = np.full((k2, c, f), k2 * n_in * f)
    for out_map in range(f):
        for slot, in_map in enumerate(spec.in_groups[out_map // per_group]):
            dense[:, in_map, out_map] = (np.arange(k2) * n_in + slot) * f + out_map
    dense = dense.reshape(k2 * c, f)
    # Kernel entry -> its place in the flat dense kernel (each appears once).
    kernel_from_dense = np.empty(k2 * n_in * f, dtype=np.int64)
    valid = dense < k2 * n_in * f
    kernel_from_dense[dense[valid]] = np.flatnonzero(valid)
    # Input element -> the places in the flat patch matrix that copy it.
    flat = patch.reshape(-1)
    counts = np.bincount(flat[flat < s * s * c], minlength=s * s * c)
    inverse = np.full((s * s * c, counts.max()), flat.size)  # flat.size: a zero slot
    fill = np.zeros(s * s * c, dtype=np.int64)
    for j, src in enumerate(flat):
        if src < s * s * c:
            inverse[src, fill[src]] = j
            fill[src] += 1
    return patch, dense, kernel_from_dense, inverse


@functools.lru_cache(maxsize=None)
def _batch_tables(spec: ConvSpec, batch: int):
    """Tables that address a whole batch at once: transposed patches and the inverse."""
    patch, _, _, inverse = _tables(spec)
    n_x = spec.size * spec.size * spec.channels + 1  # one padded example, pad slot included
    n_p = patch.size  # one example's patch matrix
    b = np.arange(batch)
    patch_t = (patch.T[:, None, :] + b[None, :, None] * n_x).reshape(patch.shape[1], batch * patch.shape[0])
    inv = np.where(inverse[None] == n_p, batch * n_p, inverse[None] + b[:, None, None] * n_p)
    return patch_t, inv.reshape(batch * inverse.shape[0], inverse.shape[1])


def dense_kernel(kernel: jax.Array, spec: ConvSpec) -> jax.Array:
    """The (25 * C, F) kernel with structural zeros for unconnected maps."""
    if spec.is_dense:
        return kernel.reshape(-1, spec.features)
    _, dense, _, _ = _tables(spec)
    return jnp.concatenate([kernel.reshape(-1), jnp.zeros(1, kernel.dtype)])[dense]


def _extended(x: jax.Array, spec: ConvSpec, pad_value: float) -> jax.Array:
    """(B, S*S*C + 1): each example flattened, then the padding value."""
    batch = x.shape[0]
    return jnp.concatenate([x.reshape(batch, -1), jnp.full((batch, 1), pad_value, x.dtype)], axis=1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_patches(x, kernel, spec: ConvSpec, pad_value: float, precision=None):
    """(B, S, S, C), kernel (5, 5, n_in, F) -> (B, O, O, F), no bias."""
    y, _ = _conv_patches_fwd(x, kernel, spec, pad_value, precision)
    return y


def _conv_patches_fwd(x, kernel, spec, pad_value, precision):
    patch, dense, _, _ = _tables(spec)
    batch = x.shape[0]
    xe = _extended(x, spec, pad_value)
    patches = xe[:, patch].reshape(batch * patch.shape[0], patch.shape[1])
    w = dense_kernel(kernel, spec)
    y = jnp.dot(patches, w, precision=precision).reshape(batch, spec.out, spec.out, spec.features)
    # Residuals in the layouts the backward products want (no transposes there).
    patch_t, _ = _batch_tables(spec, batch)
    w_t = w.T if spec.is_dense else jnp.concatenate([kernel.reshape(-1), jnp.zeros(1, kernel.dtype)])[dense.T]
    return y, (xe.reshape(-1)[patch_t], w_t)


def _conv_patches_bwd(spec, pad_value, precision, residuals, dy):
    del pad_value
    patches_t, w_t = residuals
    batch = dy.shape[0]
    _, _, kernel_from_dense, _ = _tables(spec)
    _, inverse = _batch_tables(spec, batch)
    dy = dy.reshape(-1, spec.features)
    dw = jnp.dot(patches_t, dy, precision=precision)  # (25*C, F)
    dkernel = dw.reshape(spec.kernel_shape) if spec.is_dense else dw.reshape(-1)[kernel_from_dense].reshape(spec.kernel_shape)
    dpatches = jnp.dot(dy, w_t, precision=precision)  # (B*O*O, 25*C)
    dx = jnp.concatenate([dpatches.reshape(-1), jnp.zeros(1, dy.dtype)])[inverse.T].sum(axis=0)
    return dx.reshape(batch, spec.size, spec.size, spec.channels), dkernel


conv_patches.defvjp(_conv_patches_fwd, _conv_patches_bwd)


def conv_lax(x, kernel, spec: ConvSpec, pad_value: float, precision=None):
    """The same layer with ``lax.conv_general_dilated`` (autodiff backward)."""
    x = jnp.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)), constant_values=pad_value)
    w = dense_kernel(kernel, spec).reshape(KERNEL, KERNEL, spec.channels, spec.features)
    return lax.conv_general_dilated(
        x, w, (STRIDE, STRIDE), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision
    )
