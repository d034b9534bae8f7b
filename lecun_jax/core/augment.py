"""Augmentation inside the compiled training step (Karpathy's step 3).

``shift`` moves each training digit by its own random (dy, dx), each drawn
uniformly from {-max_shift, ..., max_shift}, fresh at every step:

* ``roll`` — pixels leaving one edge come back at the other (``torch.roll``,
  Karpathy's behaviour);
* ``fill`` — the background (-1) comes in at the edge (the cleaner choice).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

AUGMENTATIONS = ("none", "shift")
SHIFT_MODES = ("roll", "fill")
BACKGROUND = -1.0


def shift_image(image: jax.Array, dy, dx, *, max_shift: int, mode: str) -> jax.Array:
    """One (H, W, C) image moved down by dy and right by dx: out[y, x] = in[y - dy, x - dx].

    The reference formulation (``jnp.roll`` / pad and slice); training uses
    :func:`shift_batch`, which computes the same with one gather.
    """
    if mode == "roll":
        return jnp.roll(image, (dy, dx), axis=(0, 1))
    if mode == "fill":
        p = max_shift
        padded = jnp.pad(image, ((p, p), (p, p), (0, 0)), constant_values=BACKGROUND)
        return lax.dynamic_slice(padded, (p - dy, p - dx, 0), image.shape)
    raise ValueError(f"augment.mode={mode!r}: valid: {', '.join(SHIFT_MODES)}")


@functools.lru_cache(maxsize=None)
def _shift_tables(size: int, max_shift: int, mode: str) -> np.ndarray:
    """(n_shifts, size*size) source pixel of every output pixel; size*size is the background."""
    span = np.arange(-max_shift, max_shift + 1)
    y, x = np.mgrid[0:size, 0:size]
    tables = []
    for dy in span:
        for dx in span:
            sy, sx = y - dy, x - dx
            if mode == "roll":
                tables.append((sy % size) * size + sx % size)
            else:
                inside = (sy >= 0) & (sy < size) & (sx >= 0) & (sx < size)
                tables.append(np.where(inside, sy * size + sx, size * size))
    return np.stack(tables).reshape(len(tables), size * size).astype(np.int32)


def shift_batch(images: jax.Array, shifts: jax.Array, *, max_shift: int, mode: str) -> jax.Array:
    """(B, H, W, 1) images, each moved by its (dy, dx) in ``shifts`` (B, 2), with one gather."""
    b, h, w, c = images.shape
    if c != 1 or h != w:
        raise ValueError(f"shift_batch expects square single-channel images, got {images.shape}")
    table = jnp.asarray(_shift_tables(h, max_shift, mode))
    which = (shifts[:, 0] + max_shift) * (2 * max_shift + 1) + (shifts[:, 1] + max_shift)
    flat = jnp.concatenate([images.reshape(b, h * w), jnp.full((b, 1), BACKGROUND, images.dtype)], axis=1)
    return jnp.take_along_axis(flat, table[which], axis=1).reshape(b, h, w, 1)


def sample_shifts(key: jax.Array, shape: tuple[int, ...], max_shift: int) -> jax.Array:
    """Random (dy, dx) for every example of ``shape``: int32 ``shape + (2,)``."""
    return jax.random.randint(key, (*shape, 2), -max_shift, max_shift + 1)


def random_shift(images: jax.Array, key: jax.Array, *, max_shift: int, mode: str) -> jax.Array:
    """A batch (B, H, W, C), each image shifted by its own random (dy, dx)."""
    return shift_batch(images, sample_shifts(key, images.shape[:1], max_shift), max_shift=max_shift, mode=mode)
