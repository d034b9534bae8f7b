"""Hand-derived fast paths: the plain-SGD step, and a patch-product + Toeplitz evaluation.

**The step.** The general training pass (``train.make_train_pass``) runs
Flax's forward pass, ``jax.grad`` and an Optax update. At one digit per step
its cost on a CPU is not arithmetic (~0.4 MFLOP) but the small kernels
around it: it rebuilds the dense H2 kernel from the 2,400 weights by a
gather at every step, gathers each layer's patches in two layouts, and its
operands reach some products in orientations the CPU kernels run slowly.
:func:`make_train_pass` writes the same step out by hand for plain SGD
(constant rate, batch size 1), every array kept in the layout its products
want:

* one network (:func:`_single_step`): plain 2-D products; the dense H2
  kernel is kept between steps (its structural zeros held at zero by a
  masked update); each layer's patches are one gather with a fixed table,
  and H2's input gradient one gather-and-sum over the same table's inverse.
  1.8-1.9x faster than the general step on a CPU (benchmarks/speed.py).
* R replicas (:func:`_replica_step`, the same digit order for all): H1 of all
  replicas is **one** product, (R * maps) x 25 kernels times the digit's
  shared 25 x 64 patches; H2's patches come from slices of the padded maps
  viewed as (6, 2, 6, 2) (:func:`_im2col`), its input gradient from sums of
  shifted blocks (:func:`_col2im`); H2, H3 and the output are
  replica-batched products.
* Every derivative is a function of the layer's output (tanh, ReLU, scaled
  tanh, linear), so only the activations are kept for the backward pass.

:func:`unsupported` says why a config cannot use it (the general pass runs
instead); ``train.make_epoch`` uses it wherever the recipe allows.

**The evaluation.** :func:`make_apply_dense` runs H1 as one product of the
digits' patches with the kernels of several replicas side by side, and H2
as one product with its Toeplitz matrix, built once per evaluation.

``tests/test_fused.py`` checks both against the general formulations and
against hand-written SGD on Karpathy's forward pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from lecun_jax import conv as conv_lib
from lecun_jax import model as model_lib

HIGHEST = lax.Precision.HIGHEST
SINGLE_STEPS_UP_TO = 4  # replicas per device trained as separate single steps; more: the batched step
EVAL_GROUP = 4  # replicas evaluated together by make_apply_dense
_SCALE = 1.7159


def unsupported(config: ml_collections.ConfigDict) -> str | None:
    """Why ``config`` cannot train with the fused step, or None if it can."""
    c = config
    reasons = [
        (c.train.batch_size != 1, "train.batch_size is not 1"),
        (c.optimizer.name != "sgd", "optimizer.name is not sgd"),
        (c.optimizer.schedule != "constant", "optimizer.schedule is not constant"),
        (c.augment.name != "none", "augment.name is not none"),
        (c.model.dropout != 0.0, "model.dropout is not 0"),
        (c.train.shuffle and c.num_seeds > 1, "train.shuffle with several replicas (their orders differ)"),
        (c.loss == "cross_entropy" and c.model.output_activation != "linear", "cross_entropy needs a linear output"),
    ]
    for bad, why in reasons:
        if bad:
            return why
    return None


def _derivative(name: str):
    """f'(a) as a function of f(a), for each activation."""
    return {
        "tanh": lambda h: 1.0 - h * h,
        "relu": lambda h: (h > 0).astype(h.dtype),
        "scaled_tanh": lambda h: (2.0 / 3.0) * _SCALE * (1.0 - (h / _SCALE) ** 2),
        "linear": lambda h: jnp.ones_like(h),
    }[name]


def _output_gradient(loss: str):
    """d loss / d outputs for one digit, (R, 10) outputs and a label."""
    if loss == "mse":
        return lambda o, label: (o - (2.0 * jax.nn.one_hot(label, o.shape[-1]) - 1.0)) * (2.0 / o.shape[-1])
    if loss == "cross_entropy":
        return lambda o, label: jax.nn.softmax(o, axis=-1) - jax.nn.one_hot(label, o.shape[-1])
    raise ValueError(f"loss={loss!r}: valid: mse, cross_entropy")


def _im2col(h, pad_value):
    """(R, C, 8, 8) maps -> (R, C * 25, 16) patches of H2 (5x5, stride 2, padding 2), K ordered (c, ky, kx).

    Padded to 12 x 12 and viewed as (6, 2, 6, 2), row 2 qy + ky is
    [qy + ky // 2, ky % 2]: every window offset is a plain slice, no index table.
    """
    r, c, s, _ = h.shape
    p = jnp.pad(h, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=pad_value).reshape(r, c, (s + 4) // 2, 2, (s + 4) // 2, 2)
    o = s // 2
    cols = [p[:, :, ky // 2 : ky // 2 + o, ky % 2, kx // 2 : kx // 2 + o, kx % 2] for ky in range(5) for kx in range(5)]
    return jnp.stack(cols, axis=2).reshape(r, c * 25, o * o)


def _col2im(dx, channels, size):
    """The transpose of :func:`_im2col`, from the patch gradient laid out (R, 16, C * 25):
    -> (R, C, 8, 8), overlapping windows summed (each parity class of the padded
    grid is a sum of shifted 4 x 4 blocks)."""
    r = dx.shape[0]
    o, half = size // 2, (size + 4) // 2
    dx = dx.reshape(r, o, o, channels, 5, 5)
    grids = []
    for py in range(2):
        row = []
        for px in range(2):
            row.append(sum(
                jnp.pad(dx[..., ky, kx], ((0, 0), (ky // 2, half - o - ky // 2), (kx // 2, half - o - kx // 2), (0, 0)))
                for ky in range(py, 5, 2) for kx in range(px, 5, 2)
            ))  # (R, 6, 6, C)
        grids.append(jnp.stack(row, axis=3))  # (R, 6, 6, 2, C)
    full = jnp.stack(grids, axis=2).reshape(r, size + 4, size + 4, channels)  # (R, 6, 2, 6, 2, C) -> 12 x 12
    return full[:, 2 : 2 + size, 2 : 2 + size].transpose(0, 3, 1, 2)


def _h1_table() -> np.ndarray:
    """(25, 64): for each H1 kernel entry (ky, kx) and output position, the pixel it reads, -1 for padding."""
    patch, _, _, _ = conv_lib._tables(conv_lib.ConvSpec(16, 1, 1, ((0,),)))  # (64, 25) into [image (256) ..., pad]
    return np.where(patch.T < 256, patch.T, -1)


@functools.lru_cache(maxsize=None)
def _h2_tables(maps: int) -> tuple[np.ndarray, np.ndarray]:
    """H2's patch table and its inverse, for H1 maps laid out (C, 8 * 8).

    ``patches[q, c * 25 + ky * 5 + kx]`` is ``h1[c, (2 qy + ky - 2) * 8 + 2 qx + kx - 2]``,
    -1 (the padding) outside the map: (16, C * 25), K ordered (c, ky, kx).
    ``inverse[c * 64 + p]`` lists the flat places of ``patches`` that copy H1
    unit p of map c (up to 9, -1 padded): summing a patch gradient over them
    is the transpose of the gather.
    """
    q = np.arange(16)
    qy, qx = q // 4, q % 4
    c, ky, kx = np.meshgrid(np.arange(maps), np.arange(5), np.arange(5), indexing="ij")
    y = 2 * qy[:, None] + (ky.reshape(-1) - 2)[None, :]
    x = 2 * qx[:, None] + (kx.reshape(-1) - 2)[None, :]
    inside = (y >= 0) & (y < 8) & (x >= 0) & (x < 8)
    patches = np.where(inside, c.reshape(-1)[None, :] * 64 + y * 8 + x, -1)
    flat = patches.reshape(-1)
    sources = flat[flat >= 0]
    width = np.bincount(sources, minlength=maps * 64).max()
    inverse = np.full((maps * 64, width), -1)
    fill = np.zeros(maps * 64, dtype=np.int64)
    for place in np.flatnonzero(flat >= 0):
        inverse[flat[place], fill[flat[place]]] = place
        fill[flat[place]] += 1
    return patches, inverse


def _gather(v: jax.Array, table: np.ndarray, pad_value) -> jax.Array:
    """``v[..., table]`` with ``pad_value`` where the table holds -1: one fusion."""
    return jnp.where(table >= 0, v[..., np.maximum(table, 0)], jnp.asarray(pad_value, v.dtype))


def _scatter_sum(g: jax.Array, inverse: np.ndarray) -> jax.Array:
    """The transpose of :func:`_gather` (padding dropped): (..., flat) -> (..., len(inverse)), one fusion."""
    flat = g.reshape(*g.shape[:-2], -1)
    return sum(
        jnp.where(inverse[:, j] >= 0, flat[..., np.maximum(inverse[:, j], 0)], jnp.zeros((), g.dtype))
        for j in range(inverse.shape[1])
    )


def make_train_pass(
    model: model_lib.Net1989, *, loss: str, learning_rate: float, num_train: int, shuffle: bool = False,
    batched: bool | None = None,
):
    """``train_pass(state, images, labels) -> state``, as ``train.make_train_pass`` for plain SGD.

    ``state['params']`` has a leading replica axis (any number R of replicas,
    the replicas of one device under ``shard_map``) or none (one network).
    Up to ``SINGLE_STEPS_UP_TO`` replicas run :func:`_single_step` side by
    side, plain matrix products; more, the replica-batched step. ``batched``
    True or False forces one or the other at any R. On one CPU core
    (benchmarks/speed.py, ``replicas``) a replica costs 0.9-1.0x one
    network's single step either way at 4 replicas, and 0.82-0.88x in the
    batched step from 16 on. The optimiser state of ``optax.sgd`` at
    a constant rate is empty and is passed through. With ``shuffle`` (one
    replica only) each pass draws its order from
    ``fold_in(fold_in(rng, pass), 0)``, as the general pass does.
    """
    layers = _Layers(model, loss)
    single_step, to_single, from_single = _single_step(layers, learning_rate)
    replica_step, to_replicas, from_replicas = _replica_step(layers, learning_rate)

    def train_pass(state, images, labels):
        params = state["params"]
        stacked = params["h1"]["kernel"].ndim == 5
        r = params["h1"]["kernel"].shape[0] if stacked else 1
        order = jnp.arange(num_train)
        if shuffle:
            order = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(state["rng"], state["pass"]), 0), num_train)
        flat = images.reshape(images.shape[0], -1)
        if (r <= SINGLE_STEPS_UP_TO) if batched is None else not batched:  # each replica its own chain of 2-D products, in one scan
            ones = [jax.tree.map(lambda a, k=k: a[k], params) for k in range(r)] if stacked else [params]
            step = lambda fs, i: ([single_step(f, flat[i], labels[i])[0] for f in fs], None)
            fs, _ = lax.scan(step, [to_single(p) for p in ones], order)
            params = [from_single(f) for f in fs]
            params = jax.tree.map(lambda *a: jnp.stack(a), *params) if stacked else params[0]
        else:
            p = params if stacked else jax.tree.map(lambda a: a[None], params)
            f, _ = lax.scan(lambda f, i: replica_step(f, flat[i], labels[i]), to_replicas(p, r), order)
            params = from_replicas(f, r) if stacked else jax.tree.map(lambda a: a[0], from_replicas(f, r))
        return {**state, "params": params, "pass": state["pass"] + 1}

    return train_pass


def make_step(model: model_lib.Net1989, *, loss: str, learning_rate: float):
    """One network's step, the body of :func:`make_train_pass`'s scan, for per-step loops:
    ``(step(f, image (16, 16, 1), label) -> f, to_fast(params) -> f, from_fast(f) -> params)``."""
    step, to_fast, from_fast = _single_step(_Layers(model, loss), learning_rate)
    return (lambda f, image, label: step(f, image.reshape(-1), label)[0]), to_fast, from_fast


class _Layers:
    """What both steps share: activations and their derivatives, the loss gradient, geometry and tables."""

    def __init__(self, model: model_lib.Net1989, loss: str):
        self.act, self.act_d = model_lib.ACTIVATIONS[model.activation], _derivative(model.activation)
        self.out_act = model_lib.OUTPUT_ACTIVATIONS[model.output_activation]
        self.out_d = _derivative(model.output_activation)
        self.output_gradient = _output_gradient(loss)
        self.pad2 = model.hidden_pad_value
        self.maps = maps = model.maps
        spec2 = conv_lib.ConvSpec(8, maps, maps, model_lib.h2_inputs(model.block))
        _, dense2, kernel_from_dense2, _ = conv_lib._tables(spec2)  # dense (25 * maps, maps), rows (ky, kx, c)
        n_kernel2 = kernel_from_dense2.size
        # The dense H2 kernel transposed, (F, K) with K ordered (c, ky, kx) as the patches.
        self.order2 = dense2.reshape(25, maps, maps).transpose(2, 1, 0).reshape(maps, maps * 25)
        self.mask2 = (self.order2 < n_kernel2).astype(np.float32)
        self.from_order2 = np.empty(n_kernel2, dtype=np.int64)
        self.from_order2[self.order2[self.order2 < n_kernel2]] = np.flatnonzero(self.order2 < n_kernel2)
        self.table1 = _h1_table()
        self.table2, self.inverse2 = _h2_tables(maps)

    def dense2(self, kernel, r=None):
        """The (F, K) dense H2 kernel (R, F, K with ``r``) from the model's (5, 5, n_in, F)."""
        flat = kernel.reshape(-1) if r is None else kernel.reshape(r, -1)
        flat = jnp.concatenate([flat, jnp.zeros(flat.shape[:-1] + (1,), flat.dtype)], axis=-1)
        return flat[..., self.order2]

    def kernel2(self, dense, r=None):
        flat = dense.reshape(-1) if r is None else dense.reshape(r, -1)
        return flat[..., self.from_order2].reshape(((r,) if r is not None else ()) + (5, 5, -1, self.maps))


def _single_step(layers: _Layers, lr: float):
    """One network, one digit: ``(step(f, image (256,), label) -> (f, None), to_fast, from_fast)``.

    Every product is a plain 2-D matrix product in the orientation XLA's CPU
    kernels run fastest at these shapes; the patches are single gathers with
    fixed tables (no per-pass precomputation: a pass-sized patch array costs
    more in memory traffic than gathering each digit's 1,600 values).
    Layouts: w1 (C, 25), b1 (C, 64); w2 (F, K), b2 (16, F); w3 (30, 192) and
    w4 (10, 30) transposed, so H2's (16, F) output flattens in the model's order.
    """
    L, maps = layers, layers.maps
    nt = lambda a, b: lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=HIGHEST)  # a @ b.T
    tn = lambda a, b: lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=HIGHEST)  # a.T @ b

    def to_fast(p):
        return {
            "w1": p["h1"]["kernel"].reshape(25, maps).T, "b1": p["h1"]["bias"].reshape(64, maps).T,
            "w2": L.dense2(p["h2"]["kernel"]), "b2": p["h2"]["bias"].reshape(16, maps),
            "w3": p["h3"]["kernel"].T, "b3": p["h3"]["bias"], "w4": p["out"]["kernel"].T, "b4": p["out"]["bias"],
        }

    def from_fast(f):
        return {
            "h1": {"kernel": f["w1"].T.reshape(5, 5, 1, maps), "bias": f["b1"].T.reshape(8, 8, maps)},
            "h2": {"kernel": L.kernel2(f["w2"]), "bias": f["b2"].reshape(4, 4, maps)},
            "h3": {"kernel": f["w3"].T, "bias": f["b3"]},
            "out": {"kernel": f["w4"].T, "bias": f["b4"]},
        }

    def step(f, image, label):
        x1 = _gather(image, L.table1, -1.0)  # (25, 64)
        h1 = L.act(jnp.dot(f["w1"], x1, precision=HIGHEST) + f["b1"])  # (C, 64)
        x2 = _gather(h1.reshape(-1), L.table2, L.pad2)  # (16, K)
        h2 = L.act(nt(x2, f["w2"]) + f["b2"])  # (16, F)
        v2 = h2.reshape(-1)
        h3 = L.act(jnp.dot(f["w3"], v2, precision=HIGHEST) + f["b3"])
        o = L.out_act(jnp.dot(f["w4"], h3, precision=HIGHEST) + f["b4"])
        d4 = L.output_gradient(o, label) * L.out_d(o)
        d3 = jnp.dot(d4, f["w4"], precision=HIGHEST) * L.act_d(h3)
        d2 = (jnp.dot(d3, f["w3"], precision=HIGHEST) * L.act_d(v2)).reshape(16, maps)
        dx2 = jnp.dot(d2, f["w2"], precision=HIGHEST)  # (16, K)
        d1 = _scatter_sum(dx2, L.inverse2).reshape(maps, 64) * L.act_d(h1)
        grads = {
            "w1": nt(d1, x1), "b1": d1, "w2": tn(d2, x2) * L.mask2, "b2": d2,
            "w3": jnp.outer(d3, v2), "b3": d3, "w4": jnp.outer(d4, h3), "b4": d4,
        }
        return jax.tree.map(lambda w, g: w - lr * g, f, grads), None

    return step, to_fast, from_fast


def _replica_step(layers: _Layers, lr: float):
    """R replicas, one digit: ``(step(f, image, label), to_fast(params, r), from_fast(f, r))``.

    H1 of all replicas is one product, the replicas' kernels stacked (R C, 25)
    times the digit's (25, 64) patches; H2's patches come from slices
    (:func:`_im2col`), its input gradient from shifted blocks (:func:`_col2im`);
    H2, H3 and the output are replica-batched products.
    """
    L, maps = layers, layers.maps
    s1, s2 = 8, 4
    rows3 = np.arange(s2 * s2 * maps).reshape(s2 * s2, maps).T.reshape(-1)  # H3 rows (q, f) -> (f, q)

    def to_fast(params, r):
        h1, h2, h3, out = params["h1"], params["h2"], params["h3"], params["out"]
        return {
            "w1": h1["kernel"].reshape(r, 25, maps).transpose(0, 2, 1).reshape(r * maps, 25),  # (R C, 25)
            "b1": h1["bias"].reshape(r, s1 * s1, maps).transpose(0, 2, 1).reshape(r * maps, s1 * s1),  # (R C, 64)
            "w2": L.dense2(h2["kernel"], r),  # (R, F, K)
            "b2": h2["bias"].reshape(r, s2 * s2, maps).transpose(0, 2, 1),  # (R, F, 16)
            "w3": h3["kernel"][:, rows3], "b3": h3["bias"], "w4": out["kernel"], "b4": out["bias"],
        }

    def from_fast(f, r):
        return {
            "h1": {"kernel": f["w1"].reshape(r, maps, 25).transpose(0, 2, 1).reshape(r, 5, 5, 1, maps),
                   "bias": f["b1"].reshape(r, maps, s1 * s1).transpose(0, 2, 1).reshape(r, s1, s1, maps)},
            "h2": {"kernel": L.kernel2(f["w2"], r), "bias": f["b2"].transpose(0, 2, 1).reshape(r, s2, s2, maps)},
            "h3": {"kernel": f["w3"][:, np.argsort(rows3)], "bias": f["b3"]},
            "out": {"kernel": f["w4"], "bias": f["b4"]},
        }

    def step(f, image, label):
        r = f["w2"].shape[0]
        x1 = _gather(image, L.table1, -1.0)  # (25, 64), shared by the replicas
        h1 = L.act(jnp.dot(f["w1"], x1, precision=HIGHEST) + f["b1"])  # (R C, 64)
        x2 = _im2col(h1.reshape(r, maps, s1, s1), L.pad2)  # (R, K, 16)
        h2 = L.act(jnp.einsum("rfk,rkq->rfq", f["w2"], x2, precision=HIGHEST) + f["b2"])  # (R, F, 16)
        v2 = h2.reshape(r, -1)
        h3 = L.act(jnp.einsum("rk,rkj->rj", v2, f["w3"], precision=HIGHEST) + f["b3"])
        o = L.out_act(jnp.einsum("rj,rjo->ro", h3, f["w4"], precision=HIGHEST) + f["b4"])
        d4 = L.output_gradient(o, label) * L.out_d(o)
        d3 = jnp.einsum("ro,rjo->rj", d4, f["w4"], precision=HIGHEST) * L.act_d(h3)
        d2 = (jnp.einsum("rj,rkj->rk", d3, f["w3"], precision=HIGHEST) * L.act_d(v2)).reshape(r, maps, s2 * s2)
        dw2 = jnp.einsum("rfq,rkq->rfk", d2, x2, precision=HIGHEST)
        dx2 = jnp.einsum("rqf,rfk->rqk", d2.transpose(0, 2, 1), f["w2"], precision=HIGHEST)
        d1 = _col2im(dx2, maps, s1).reshape(r * maps, s1 * s1) * L.act_d(h1)
        dw1 = lax.dot_general(d1, x1, (((1,), (1,)), ((), ())), precision=HIGHEST)  # (R C, 25)
        grads = {
            "w1": dw1, "b1": d1, "w2": dw2 * L.mask2, "b2": d2,
            "w3": v2[:, :, None] * d3[:, None, :], "b3": d3,
            "w4": h3[:, :, None] * d4[:, None, :], "b4": d4,
        }
        return jax.tree.map(lambda w, g: w - lr * g, f, grads), None

    return step, to_fast, from_fast


def _toeplitz_tables(spec: conv_lib.ConvSpec):
    """Where each dense-kernel entry of a layer lands in its (inputs + pad, positions * maps) matrix."""
    patch, _, _, _ = conv_lib._tables(spec)  # (P, K) into [input (S*S*C) ..., pad]
    positions, k = patch.shape
    f = spec.features
    rows = np.broadcast_to(patch[:, :, None], (positions, k, f)).reshape(-1)
    cols = np.broadcast_to((np.arange(positions)[:, None] * f + np.arange(f))[:, None, :], (positions, k, f)).reshape(-1)
    return rows, cols, spec.size * spec.size * spec.channels + 1, positions * f


def toeplitz(kernel: jax.Array, spec: conv_lib.ConvSpec) -> jax.Array:
    """The layer as one matrix: [input flattened, pad value] (S*S*C + 1) -> output (P * F), no bias."""
    rows, cols, n_rows, n_cols = _toeplitz_tables(spec)
    positions = spec.out**2
    values = jnp.broadcast_to(conv_lib.dense_kernel(kernel, spec)[None], (positions,) + (rows.size // positions // spec.features, spec.features))
    return jnp.zeros((n_rows, n_cols), kernel.dtype).at[rows, cols].add(values.reshape(-1))


def make_apply_dense(model: model_lib.Net1989, group: int = EVAL_GROUP):
    """``(matrices(params), apply(params, matrices, images (B, 16, 16, 1)) -> outputs (B, 10))``:
    evaluation mode for any number of ``apply`` calls, what can be built once
    built by ``matrices``. Parameters with a leading axis of R replicas give
    outputs (R, B, 10).

    * H1: the digits' 5 x 5 patches (one gather, shared by the replicas)
      times the kernels of ``group`` replicas side by side, (B * 64, 25) x
      (25, group * C): one product.
    * H2: one product with its Toeplitz matrix per replica (the structural
      zeros included: on a CPU a larger plain product beats gathering
      patches of every replica).
    * Replicas run ``group`` at a time (a loop over the groups), which keeps
      each group's activations in cache.

    On a CPU this is the fastest evaluation of the 1989 network we measured
    (one core, 9,298 digits: ~60 ms per network at 1 replica, ~48 ms per
    network at 16; H1 as a Toeplitz product too: ~71 and ~80 ms); wider
    networks keep ``lax.conv`` (H2's matrix grows with the square of the
    maps)."""
    act, out_act = model_lib.ACTIVATIONS[model.activation], model_lib.OUTPUT_ACTIVATIONS[model.output_activation]
    maps = model.maps
    spec1 = conv_lib.ConvSpec(16, 1, maps, ((0,),))
    spec2 = conv_lib.ConvSpec(spec1.out, maps, maps, model_lib.h2_inputs(model.block))
    table1 = _h1_table().T  # (64, 25)

    def matrices(params):
        """H2's Toeplitz matrix, (769, 192), or (R, 769, 192) for R replicas."""
        if params["h1"]["kernel"].ndim == 5:
            return jax.vmap(matrices)(params)
        return toeplitz(params["h2"]["kernel"], spec2)

    def apply_group(params, m2, patches):
        """``g`` replicas ((g, ...) parameters and matrices) on (B * 64, 25) patches -> (g, B, 10)."""
        g, b = m2.shape[0], patches.shape[0] // 64
        w1 = params["h1"]["kernel"].reshape(g, 25, maps).transpose(1, 0, 2).reshape(25, g * maps)
        h1 = jnp.dot(patches, w1, precision=HIGHEST).reshape(b, 64, g, maps)
        h1 = act(h1 + params["h1"]["bias"].reshape(g, 64, maps).transpose(1, 0, 2))
        h1 = h1.transpose(2, 0, 1, 3).reshape(g, b, 64 * maps)  # each replica's maps in the model's order
        h1 = jnp.concatenate([h1, jnp.full((g, b, 1), model.hidden_pad_value, h1.dtype)], axis=-1)
        h2 = act(jnp.einsum("rbk,rkj->rbj", h1, m2, precision=HIGHEST) + params["h2"]["bias"].reshape(g, 1, -1))
        h3 = act(jnp.einsum("rbk,rkj->rbj", h2, params["h3"]["kernel"], precision=HIGHEST) + params["h3"]["bias"][:, None])
        return out_act(jnp.einsum("rbk,rkj->rbj", h3, params["out"]["kernel"], precision=HIGHEST) + params["out"]["bias"][:, None])

    def apply(params, m2, images):
        if m2.ndim == 2:  # one network
            return apply(jax.tree.map(lambda a: a[None], params), m2[None], images)[0]
        r, b = m2.shape[0], images.shape[0]
        patches = _gather(images.reshape(b, -1), table1, -1.0).reshape(b * 64, 25)
        g = max(d for d in range(1, min(group, r) + 1) if r % d == 0)
        if g == r:
            return apply_group(params, m2, patches)
        split = lambda a: a.reshape(r // g, g, *a.shape[1:])
        out = lax.map(lambda pm: apply_group(pm[0], pm[1], patches), (jax.tree.map(split, params), split(m2)))
        return out.reshape(r, b, -1)

    return matrices, apply
