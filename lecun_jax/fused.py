"""Hand-derived fast paths: a multi-replica SGD step, and a Toeplitz evaluation.

**The step.** The general training pass (``train.make_train_pass``) runs
Flax's forward pass, ``jax.grad`` and an Optax update; vmapped over R
replicas at one digit per step it becomes small batched products whose
operands XLA transposes and copies at every step, so R replicas cost about R
single steps. :func:`make_train_pass` writes the same step out by hand for
plain SGD (constant rate, batch size 1, the same digit order for every
replica), every array in the layout its products want:

* H1 of all replicas is **one** product: the replicas' kernels stacked,
  (R * maps) x 25, times the digit's 25 x 64 patch matrix (shared by the
  replicas, gathered for the whole training set before the pass); its
  weight gradient is one product too.
* H2's patches come from slices of the padded maps viewed as (6, 2, 6, 2)
  (:func:`_im2col`; no index tables), its input gradient from sums of
  shifted blocks (:func:`_col2im`); H2, H3 and the output are
  replica-batched products; the dense H2 kernel is kept between steps, its
  structural zeros held at zero by a masked update.
* Every derivative is a function of the layer's output (tanh, ReLU, scaled
  tanh, linear), so only the activations are kept for the backward pass.

:func:`unsupported` says why a config cannot use it (the general pass runs
instead). At one replica per device the general step is faster, so
``train.make_epoch`` uses this one from two replicas per device.

**The evaluation.** :func:`make_apply_dense` runs each convolution as one
product with its Toeplitz matrix, built once per evaluation.

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


def make_train_pass(model: model_lib.Net1989, *, loss: str, learning_rate: float, num_train: int, shuffle: bool = False):
    """``train_pass(state, images, labels) -> state``, as ``train.make_train_pass`` for plain SGD.

    ``state['params']`` has a leading replica axis (any number R of replicas,
    the replicas of one device under ``shard_map``) or none (one network).
    The optimiser state of ``optax.sgd`` at a constant rate is empty and is
    passed through. With ``shuffle`` (one replica only) each pass draws its
    order from ``fold_in(fold_in(rng, pass), 0)``, as the general pass does.
    """
    act, act_d = model_lib.ACTIVATIONS[model.activation], _derivative(model.activation)
    out_act, out_d = model_lib.OUTPUT_ACTIVATIONS[model.output_activation], _derivative(model.output_activation)
    output_gradient = _output_gradient(loss)
    maps = model.maps
    spec1 = conv_lib.ConvSpec(16, 1, maps, ((0,),))
    spec2 = conv_lib.ConvSpec(spec1.out, maps, maps, model_lib.h2_inputs(model.block))
    patch1, _, _, _ = conv_lib._tables(spec1)  # (64, 25) into [image (256) ..., pad]
    _, dense2, kernel_from_dense2, _ = conv_lib._tables(spec2)  # dense (25 * maps, maps), rows (ky, kx, c)
    s1, s2 = spec1.out, spec2.out  # H1 8 x 8, H2 4 x 4
    n_kernel2 = kernel_from_dense2.size
    # The dense H2 kernel transposed, (F, K) with K ordered (c, ky, kx) as _im2col's patches.
    order2 = dense2.reshape(25, maps, maps).transpose(2, 1, 0).reshape(maps, maps * 25)
    mask2 = (order2 < n_kernel2).astype(np.float32)
    from_order2 = np.empty(n_kernel2, dtype=np.int64)
    from_order2[order2[order2 < n_kernel2]] = np.flatnonzero(order2 < n_kernel2)
    # H3's rows from the model's (qy, qx, f) flattening to the fused (f, qy, qx).
    rows3 = np.arange(s2 * s2 * maps).reshape(s2 * s2, maps).T.reshape(-1)
    lr = learning_rate

    def to_fast(params, r):
        h1, h2, h3, out = params["h1"], params["h2"], params["h3"], params["out"]
        flat2 = jnp.concatenate([h2["kernel"].reshape(r, -1), jnp.zeros((r, 1), h2["kernel"].dtype)], axis=1)
        return {
            "w1": h1["kernel"].reshape(r, 25, maps).transpose(0, 2, 1).reshape(r * maps, 25),  # (R C, 25)
            "b1": h1["bias"].reshape(r, s1 * s1, maps).transpose(0, 2, 1).reshape(r * maps, s1 * s1),  # (R C, 64)
            "w2": flat2[:, order2],  # (R, F, K)
            "b2": h2["bias"].reshape(r, s2 * s2, maps).transpose(0, 2, 1),  # (R, F, 16)
            "w3": h3["kernel"][:, rows3], "b3": h3["bias"], "w4": out["kernel"], "b4": out["bias"],
        }

    def from_fast(f, r):
        return {
            "h1": {"kernel": f["w1"].reshape(r, maps, 25).transpose(0, 2, 1).reshape(r, 5, 5, 1, maps),
                   "bias": f["b1"].reshape(r, maps, s1 * s1).transpose(0, 2, 1).reshape(r, s1, s1, maps)},
            "h2": {"kernel": f["w2"].reshape(r, -1)[:, from_order2].reshape(r, 5, 5, -1, maps),
                   "bias": f["b2"].transpose(0, 2, 1).reshape(r, s2, s2, maps)},
            "h3": {"kernel": f["w3"][:, np.argsort(rows3)], "bias": f["b3"]},
            "out": {"kernel": f["w4"], "bias": f["b4"]},
        }

    def train_pass(state, images, labels):
        params = state["params"]
        single = params["h1"]["kernel"].ndim == 4
        if single:
            params = jax.tree.map(lambda a: a[None], params)
        r = params["h1"]["kernel"].shape[0]
        order = jnp.arange(num_train)
        if shuffle:
            order = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(state["rng"], state["pass"]), 0), num_train)
        n = images.shape[0]
        xe = jnp.concatenate([images.reshape(n, -1), jnp.full((n, 1), -1.0, images.dtype)], axis=1)
        patches_t = xe[:, patch1.T]  # (N, 25, 64): every digit's H1 patches, shared by the replicas
        patches = xe[:, patch1]  # (N, 64, 25)

        def step(f, index):
            x1t, x1, label = patches_t[index], patches[index], labels[index]
            h1 = act(jnp.dot(f["w1"], x1t, precision=HIGHEST) + f["b1"])  # (R C, 64)
            x2 = _im2col(h1.reshape(r, maps, s1, s1), model.hidden_pad_value)  # (R, K, 16)
            h2 = act(jnp.einsum("rfk,rkq->rfq", f["w2"], x2, precision=HIGHEST) + f["b2"])  # (R, F, 16)
            v2 = h2.reshape(r, -1)
            h3 = act(jnp.einsum("rk,rkj->rj", v2, f["w3"], precision=HIGHEST) + f["b3"])
            o = out_act(jnp.einsum("rj,rjo->ro", h3, f["w4"], precision=HIGHEST) + f["b4"])
            d4 = output_gradient(o, label) * out_d(o)
            d3 = jnp.einsum("ro,rjo->rj", d4, f["w4"], precision=HIGHEST) * act_d(h3)
            d2 = (jnp.einsum("rj,rkj->rk", d3, f["w3"], precision=HIGHEST) * act_d(v2)).reshape(r, maps, s2 * s2)
            dw2 = jnp.einsum("rfq,rkq->rfk", d2, x2, precision=HIGHEST)
            dx2 = jnp.einsum("rqf,rfk->rqk", d2.transpose(0, 2, 1), f["w2"], precision=HIGHEST)
            d1 = _col2im(dx2, maps, s1).reshape(r * maps, s1 * s1) * act_d(h1)
            dw1 = jnp.dot(d1, x1, precision=HIGHEST)  # (R C, 25)
            grads = {
                "w1": dw1, "b1": d1, "w2": dw2 * mask2, "b2": d2,
                "w3": v2[:, :, None] * d3[:, None, :], "b3": d3,
                "w4": h3[:, :, None] * d4[:, None, :], "b4": d4,
            }
            return jax.tree.map(lambda w, g: w - lr * g, f, grads), None

        f, _ = lax.scan(step, to_fast(params, r), order)
        params = from_fast(f, r)
        if single:
            params = jax.tree.map(lambda a: a[0], params)
        return {**state, "params": params, "pass": state["pass"] + 1}

    return train_pass


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


def make_apply_dense(model: model_lib.Net1989):
    """``(matrices(params), apply(params, matrices, images (B, 16, 16, 1)) -> outputs (B, 10))``:
    evaluation mode, each convolution one product with its Toeplitz matrix,
    built once by ``matrices`` for any number of ``apply`` calls.

    For evaluating the 1989 network on a CPU this is about twice as fast as
    ``lax.conv`` (9,291 digits: ~8 vs ~16 µs per digit on one core), though
    the matrices hold every structural zero; wider networks keep ``lax.conv``
    (H1's matrix grows with the square of the maps)."""
    act, out_act = model_lib.ACTIVATIONS[model.activation], model_lib.OUTPUT_ACTIVATIONS[model.output_activation]
    maps = model.maps
    spec1 = conv_lib.ConvSpec(16, 1, maps, ((0,),))
    spec2 = conv_lib.ConvSpec(spec1.out, maps, maps, model_lib.h2_inputs(model.block))

    def matrices(params):
        return toeplitz(params["h1"]["kernel"], spec1), toeplitz(params["h2"]["kernel"], spec2)

    def apply(params, mats, images):
        m1, m2 = mats
        b = images.shape[0]
        pad = lambda v, value: jnp.concatenate([v, jnp.full((b, 1), value, v.dtype)], axis=1)
        h1 = act(jnp.dot(pad(images.reshape(b, -1), -1.0), m1, precision=HIGHEST) + params["h1"]["bias"].reshape(-1))
        h2 = act(jnp.dot(pad(h1, model.hidden_pad_value), m2, precision=HIGHEST) + params["h2"]["bias"].reshape(-1))
        h3 = act(jnp.dot(h2, params["h3"]["kernel"], precision=HIGHEST) + params["h3"]["bias"])
        return out_act(jnp.dot(h3, params["out"]["kernel"], precision=HIGHEST) + params["out"]["bias"])

    return matrices, apply
