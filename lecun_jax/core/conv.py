"""The 1989 convolution: 5x5 kernels, stride 2, padding 2 with a constant.

The kernel is dense, (F, C, 5, 5) (PyTorch's layout), as the product uses it; a layer whose
output maps see only some input maps (H2's connection table) selects its
entries with a fixed 0/1 mask (:func:`connection_mask`) before use, so the
unconnected entries never act and get no gradient. No gather per step
rebuilds a kernel.

Two formulations of the same function, chosen by batch size:

* :func:`conv_patches` — gather the 5x5 windows of each example into a
  (B * positions, 25 C) matrix with one fixed index table and multiply by the
  kernel viewed as (F, 25 C). Its custom VJP spells out the backward pass as
  two products plus one gather over the inverse table (the transpose of a
  gather is a scatter-add, which XLA runs slowly on a CPU). The faster
  on a CPU at the batch sizes it is used for: ``auto`` picks it up to
  :data:`PATCHES_MAX_BATCH`.
* :func:`conv_lax` — ``lax.conv_general_dilated`` (autodiff backward), for
  larger batches, where the patch matrices grow large.

Which is faster where is measured in benchmarks/README.md.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

KERNEL, STRIDE, PAD = 5, 2, 2
PATCHES_MAX_BATCH = 1024  # impl="auto": patches up to this batch size, lax.conv above (the patch matrices grow large)
IMPLS = ("auto", "patches", "lax")


def out_size(size: int) -> int:
    return (size + 2 * PAD - KERNEL) // STRIDE + 1


def connection_mask(channels: int, features: int, in_groups: Sequence[Sequence[int]]) -> np.ndarray:
    """(F, C, 5, 5) float32: 1 where output map f sees input map c.

    ``in_groups[g]`` lists the input maps seen by output maps of group g, the
    groups being ``features // len(in_groups)`` consecutive output maps.
    """
    mask = np.zeros((features, channels, KERNEL, KERNEL), np.float32)
    per_group = features // len(in_groups)
    for f in range(features):
        mask[f, list(in_groups[f // per_group])] = 1.0
    return mask


@functools.lru_cache(maxsize=None)
def _tables(size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(patch, inverse) index tables of one example flattened (S, S, C).

    ``patch[q, c * 25 + ky * 5 + kx]`` is the flat index of input element
    (2 qy + ky - 2, 2 qx + kx - 2, c), -1 in the padding: (O*O, 25 C), K
    ordered as the kernel (F, C, 5, 5) viewed as (F, 25 C).
    ``inverse[:, e]`` lists the flat places of ``patch`` that copy element e
    (up to 9, -1 padded): summing a patch gradient over them is the
    transpose of the gather.
    """
    o = out_size(size)
    q = np.arange(o * o)
    qy, qx = q // o, q % o
    c, ky, kx = np.meshgrid(np.arange(channels), np.arange(KERNEL), np.arange(KERNEL), indexing="ij")
    y = STRIDE * qy[:, None] + (ky.reshape(-1) - PAD)[None, :]
    x = STRIDE * qx[:, None] + (kx.reshape(-1) - PAD)[None, :]
    inside = (y >= 0) & (y < size) & (x >= 0) & (x < size)
    patch = np.where(inside, (y * size + x) * channels + c.reshape(-1)[None, :], -1)
    flat = patch.reshape(-1)
    n = size * size * channels
    width = np.bincount(flat[flat >= 0], minlength=n).max()
    inverse = np.full((width, n), -1)
    fill = np.zeros(n, dtype=np.int64)
    for place in np.flatnonzero(flat >= 0):
        inverse[fill[flat[place]], flat[place]] = place
        fill[flat[place]] += 1
    return patch, inverse


def _gather(v: jax.Array, table: np.ndarray, fill) -> jax.Array:
    """``v[:, table]`` of a (B, N) array, ``fill`` where the table holds -1: one fusion."""
    return jnp.where(table >= 0, v[:, np.maximum(table, 0)], jnp.asarray(fill, v.dtype))


def _nt(a, b):  # a @ b.T
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_patches(x: jax.Array, kernel: jax.Array, pad_value: float) -> jax.Array:
    """(B, S, S, C), kernel (F, C, 5, 5) -> (B, O, O, F), no bias."""
    return _conv_patches_fwd(x, kernel, pad_value)[0]


def _conv_patches_fwd(x, kernel, pad_value):
    b, s, _, c = x.shape
    o, f = out_size(s), kernel.shape[0]
    patch, _ = _tables(s, c)
    p = _gather(x.reshape(b, -1), patch, pad_value).reshape(b * o * o, -1)  # (B O O, 25 C)
    w = kernel.reshape(f, -1)  # (F, 25 C)
    return _nt(p, w).reshape(b, o, o, f), (p, w, x.shape)


def _conv_patches_bwd(pad_value, residuals, dy):
    # Each product's operands in the layout the CPU's fast (YNNPACK) kernels take, so neither
    # needs a transposed operand; the barrier keeps XLA from folding dy's transpose back into
    # a slow transposed-operand product.
    del pad_value
    p, w, x_shape = residuals
    b, s, _, c = x_shape
    dy = dy.reshape(-1, w.shape[0])  # (B O O, F)
    dw = jnp.dot(lax.optimization_barrier(dy.T), p, precision=lax.Precision.HIGHEST)  # (F, 25 C)
    dp = jnp.dot(dy, w, precision=lax.Precision.HIGHEST)  # (B O O, 25 C)
    _, inverse = _tables(s, c)
    dx = _gather(dp.reshape(b, -1), inverse, 0.0).sum(axis=1)  # a scatter-add, as a gather
    return dx.reshape(x_shape), dw.reshape(w.shape[0], c, KERNEL, KERNEL)


conv_patches.defvjp(_conv_patches_fwd, _conv_patches_bwd)


def conv_lax(x: jax.Array, kernel: jax.Array, pad_value: float) -> jax.Array:
    """The same layer with ``lax.conv_general_dilated`` (autodiff backward)."""
    x = jnp.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)), constant_values=pad_value)
    return lax.conv_general_dilated(
        x, kernel, (STRIDE, STRIDE), "VALID", dimension_numbers=("NHWC", "OIHW", "NHWC"), precision=lax.Precision.HIGHEST
    )


def conv(x: jax.Array, kernel: jax.Array, pad_value: float, impl: str = "auto") -> jax.Array:
    """(B, S, S, C), kernel (F, C, 5, 5) -> (B, O, O, F), no bias, with the formulation ``impl``
    (``auto``: by batch size)."""
    if impl == "auto":
        impl = "patches" if x.shape[0] <= PATCHES_MAX_BATCH else "lax"
    if impl == "patches":
        return conv_patches(x, kernel, pad_value)
    if impl == "lax":
        return conv_lax(x, kernel, pad_value)
    raise ValueError(f"conv={impl!r}: valid: {', '.join(IMPLS)}")
