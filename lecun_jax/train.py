"""Training: pure functions of (state, data); each pass is one compiled ``lax.scan``.

The train state is a plain dict::

    {'params': ..., 'opt_state': ..., 'rng': key, 'pass': int32}

``make_epoch(config, ...)`` returns ``epoch(state, data) -> (state, metrics)``:
one pass of SGD over the training set in the configured order (one example
per step in 1989), then loss and misses on the full train and test sets, all
in one compiled program. With ``num_seeds > 1`` the same function is vmapped
over a leading replica axis of the state: N independent networks, one program.

Randomness: replica r of seed s uses ``key_r = fold_in(PRNGKey(s), r)``; its
initial weights come from ``fold_in(key_r, 0)``, and pass p, step i from
``fold_in(fold_in(fold_in(key_r, 1), p), ...)``; so every stream is a pure
function of (seed, replica, pass, step).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lecun_jax import augment as augment_lib
from lecun_jax import config as config_lib
from lecun_jax import data as data_lib
from lecun_jax import fused as fused_lib
from lecun_jax import losses, optimizers
from lecun_jax import model as model_lib
from lecun_jax import sdlm as sdlm_lib

State = dict[str, Any]
SPLITS = ("train", "test")
EVAL_CHUNK = 256  # examples per evaluation chunk: bounds the memory of the patch gathers


def make_model(config: ml_collections.ConfigDict) -> model_lib.Net1989:
    m = config.model
    return model_lib.Net1989(
        activation=m.activation,
        output_activation=m.output_activation,
        dropout_rate=m.dropout,
        output_bias_init=m.output_bias_init,
        hidden_pad_value=m.hidden_pad_value,
        conv=m.conv,
        width=m.width,
    )


def steps_per_pass(num_train: int, batch_size: int) -> int:
    return math.ceil(num_train / batch_size)


def make_optimizer(config: ml_collections.ConfigDict, num_train: int) -> optax.GradientTransformation:
    return optimizers.make(
        config.optimizer, steps_per_pass=steps_per_pass(num_train, config.train.batch_size), passes=config.train.passes
    )


def replica_key(seed: int, replica) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), replica)


def init_state(model: model_lib.Net1989, tx: optax.GradientTransformation, key: jax.Array) -> State:
    """The state before the first pass, from one replica's key."""
    params = model_lib.init(model, jax.random.fold_in(key, 0))
    return {"params": params, "opt_state": tx.init(params), "rng": jax.random.fold_in(key, 1), "pass": jnp.int32(0)}


def init_states(config: ml_collections.ConfigDict, model, tx, replicas: int | None = None) -> State:
    """Initial state of every replica: a leading axis of ``replicas`` (default
    ``num_seeds``) when ``num_seeds`` is above 1. Replica r starts from
    ``fold_in(PRNGKey(seed), r)``, whatever the number of replicas."""
    replicas = config.num_seeds if replicas is None else replicas

    @jax.jit  # one compiled program; op by op, Flax's init takes seconds on a CPU
    def init(seed):
        if config.num_seeds == 1:
            return init_state(model, tx, replica_key(seed, 0))
        keys = jax.vmap(lambda r: replica_key(seed, r))(jnp.arange(replicas))
        return jax.vmap(lambda k: init_state(model, tx, k))(keys)

    return init(jnp.uint32(config.seed))


def make_train_pass(
    model: model_lib.Net1989,
    tx: optax.GradientTransformation,
    loss_fn: Callable,
    *,
    num_train: int,
    batch_size: int,
    shuffle: bool,
    augment: ml_collections.ConfigDict | None = None,
    curvature: Callable | None = None,
    curvature_samples: int = 500,
    unroll: int = 1,
) -> Callable[[State, jax.Array, jax.Array], State]:
    """One pass over the training set: ``train_pass(state, images, labels) -> state``.

    Batches are ``batch_size`` consecutive examples of the pass's order (fixed,
    or a fresh permutation per pass with ``shuffle``); a last, short batch is
    padded and its padding masked out of the loss, so every example counts once.
    ``augment`` (``config.augment``) shifts each batch inside the step.
    ``curvature(params, images, labels)``, for SDLM, re-estimates the diagonal
    Hessian on ``curvature_samples`` digits drawn from ``fold_in(k, 4)`` before the pass.

    Randomness of pass p, from ``k = fold_in(rng, p)``: the order from
    ``fold_in(k, 0)``, the whole pass's dropout masks from ``fold_in(k, 2)``
    and shifts from ``fold_in(k, 3)``, each drawn in one call before the scan
    (per-step draws would run a threefry loop inside every step).
    """
    steps = steps_per_pass(num_train, batch_size)
    padding = steps * batch_size - num_train

    shifting = augment is not None and augment.name == "shift"

    def loss_of(params, images, labels, mask, keep):
        outputs = model.apply({"params": params}, images, train=True, dropout_keep=keep)
        per_example = loss_fn(outputs, labels)
        if mask is None:
            return jnp.mean(per_example)
        return jnp.sum(per_example * mask) / jnp.sum(mask)

    grad_fn = jax.grad(loss_of)

    def train_pass(state: State, images: jax.Array, labels: jax.Array) -> State:
        pass_key = jax.random.fold_in(state["rng"], state["pass"])
        key = lambda i: jax.random.fold_in(pass_key, i)
        order = jax.random.permutation(key(0), num_train) if shuffle else jnp.arange(num_train)
        xs = {"step": jnp.arange(steps), "index": jnp.pad(order, (0, padding)).reshape(steps, batch_size)}
        if padding:
            xs["mask"] = (jnp.arange(steps * batch_size) < num_train).astype(jnp.float32).reshape(steps, batch_size)
        if model.dropout_rate > 0:
            keep = jax.random.bernoulli(key(2), 1.0 - model.dropout_rate, (steps, batch_size, model.dropout_size))
            xs["keep"] = keep.astype(jnp.float32)
        if shifting:
            xs["shift"] = augment_lib.sample_shifts(key(3), (steps, batch_size), augment.max_shift)

        opt_state = state["opt_state"]
        if curvature is not None:
            pick = jax.random.choice(key(4), num_train, (curvature_samples,), replace=False)
            opt_state = sdlm_lib.with_hessian(opt_state, curvature(state["params"], images[pick], labels[pick]))

        def step(carry, x):
            params, opt_state = carry
            batch = images[x["index"]]
            if shifting:
                batch = augment_lib.shift_batch(batch, x["shift"], max_shift=augment.max_shift, mode=augment.mode)
            grads = grad_fn(params, batch, labels[x["index"]], x.get("mask"), x.get("keep"))
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = lax.scan(step, (state["params"], opt_state), xs, unroll=unroll)
        return {**state, "params": params, "opt_state": opt_state, "pass": state["pass"] + 1}

    return train_pass


def replicas_in_one_evaluation(model: model_lib.Net1989) -> bool:
    """Whether :func:`make_predict` takes parameters with a leading replica axis (the Toeplitz evaluation)."""
    return model.width <= 1 and model.conv != "lax"


def make_predict(model: model_lib.Net1989, num_examples: int, chunk: int = EVAL_CHUNK):
    """``predict(params, images) -> outputs (N, 10)``, evaluation mode, in chunks of ``chunk``.

    Networks up to the 1989 width (unless ``conv='lax'``) run
    :func:`lecun_jax.fused.make_apply_dense`, the same function as the Flax
    module, faster on a CPU (H1 a patch product, H2 a Toeplitz product); it
    also takes R replicas' parameters (a leading axis) and gives outputs
    (R, N, 10)."""
    chunks = math.ceil(num_examples / chunk)
    padding = chunks * chunk - num_examples

    dense = replicas_in_one_evaluation(model)
    matrices, apply_dense = fused_lib.make_apply_dense(model) if dense else (None, None)

    def predict(params, images):
        if dense:  # the 1989 network: H2's Toeplitz matrices built once for all chunks
            mats = matrices(params)
            apply = lambda x: apply_dense(params, mats, x)
        else:
            apply = lambda x: model.apply({"params": params}, x, train=False)
        if chunks == 1:
            return apply(images)
        padded = jnp.pad(images, [(0, padding)] + [(0, 0)] * (images.ndim - 1))
        outputs = lax.map(apply, padded.reshape(chunks, chunk, *images.shape[1:]))  # (chunks, [R,] chunk, 10)
        if outputs.ndim == 4:
            return outputs.transpose(1, 0, 2, 3).reshape(outputs.shape[1], chunks * chunk, -1)[:, :num_examples]
        return outputs.reshape(chunks * chunk, -1)[:num_examples]

    return predict


def make_evaluate(model: model_lib.Net1989, loss_fn: Callable, num_examples: int, chunk: int = EVAL_CHUNK):
    """``evaluate(params, images, labels) -> {'loss': mean loss, 'misses': int32 count}`` on a whole split."""
    predict = make_predict(model, num_examples, chunk)

    def evaluate(params, images, labels):
        outputs = predict(params, images)  # (N, 10), or (R, N, 10) for R replicas
        labels = jnp.broadcast_to(labels, outputs.shape[:-1])
        misses = jnp.sum(jnp.argmax(outputs, axis=-1) != labels, axis=-1, dtype=jnp.int32)
        return {"loss": jnp.mean(loss_fn(outputs, labels), axis=-1), "misses": misses}

    return evaluate


def replica_layout(num_seeds: int) -> tuple[Mesh | None, int]:
    """(mesh, replicas): how ``num_seeds`` replicas are spread over the devices.

    With several devices the replica axis is sharded over a 1-D mesh of up to
    ``num_seeds`` of them, and padded with spare replicas to a multiple of the
    mesh (5 seeds on 2 devices run as 3 + 3; the spare is dropped from every
    result). On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
    makes N devices of N cores; ``launch.py`` sets it to the core count.
    """
    n = min(len(jax.devices()), num_seeds)
    if num_seeds == 1 or n == 1:
        return None, num_seeds
    return Mesh(np.asarray(jax.devices()[:n]), ("seed",)), math.ceil(num_seeds / n) * n


def make_epoch(
    config: ml_collections.ConfigDict,
    num_train: int,
    num_test: int,
    *,
    mesh: Mesh | None = None,
    unroll: int = 1,
    evaluate_splits: bool = True,
    vmap_replicas: bool | None = None,
    fused: bool | None = None,
):
    """``epoch(state, data) -> (state, metrics)``, jitted, the state donated.

    ``data`` holds ``{train,test}_{images,labels}``; ``metrics[split]`` holds
    ``loss`` and ``misses`` (unless ``evaluate_splits`` is False: a pass that
    is not evaluated), and ``metrics['finite']`` whether every parameter is
    still finite. With ``num_seeds > 1`` everything has a leading replica
    axis, sharded over ``mesh`` when given (data replicated).
    ``unroll`` (steps per scan iteration), ``vmap_replicas`` (None: vmap
    the replicas' training at batch size 1, map over them otherwise) and
    ``fused`` (None: the hand-derived step of :mod:`lecun_jax.fused` where
    the recipe allows it, plain SGD at batch size 1; False: always the
    general Flax + Optax step) only change speed.
    """
    model = make_model(config)
    tx = make_optimizer(config, num_train)
    loss_fn = losses.get(config.loss)
    o = config.optimizer
    train_pass = make_train_pass(
        model, tx, loss_fn,
        num_train=num_train, batch_size=config.train.batch_size, shuffle=config.train.shuffle,
        augment=config.augment, unroll=unroll,
        curvature=sdlm_lib.estimator(o.sdlm_estimator, model, loss_fn) if o.name == "sdlm" else None,
        curvature_samples=min(o.sdlm_samples, num_train),
    )
    if fused is None:
        fused = fused_lib.unsupported(config) is None
    use_fused = fused
    if use_fused:
        why = fused_lib.unsupported(config)
        if why is not None:
            raise ValueError(f"fused=True: this config cannot use the fused step: {why}")
        train_pass = fused_lib.make_train_pass(
            model, loss=config.loss, learning_rate=o.learning_rate, num_train=num_train, shuffle=config.train.shuffle
        )
    evaluators = {"train": make_evaluate(model, loss_fn, num_train), "test": make_evaluate(model, loss_fn, num_test)}
    vmap_replicas = config.train.batch_size == 1 if vmap_replicas is None else vmap_replicas

    def evaluate(params, data, replicas=False):
        metrics = {}
        if evaluate_splits:
            metrics = {s: evaluators[s](params, data[f"{s}_images"], data[f"{s}_labels"]) for s in SPLITS}
        axes = lambda p: tuple(range(1 if replicas else 0, p.ndim))
        metrics["finite"] = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p), axis=axes(p)) for p in jax.tree.leaves(params)]), axis=0)
        return metrics

    def epoch(state: State, data: dict) -> tuple[State, dict]:
        if config.num_seeds == 1:
            state = train_pass(state, data["train_images"], data["train_labels"])
            return state, evaluate(state["params"], data)
        # One digit per step: the fused step, or training vmapped over the
        # replicas (a little faster than one after the other). Larger
        # batches: one replica after the other, each a batched computation,
        # where a vmapped convolution would become a slow grouped one.
        # Evaluation: the Toeplitz products of all replicas at once, or one
        # replica after the other.
        if use_fused:  # one program for all the replicas of this device
            state = train_pass(state, data["train_images"], data["train_labels"])
        elif vmap_replicas:
            state = jax.vmap(train_pass, in_axes=(0, None, None))(state, data["train_images"], data["train_labels"])
        else:
            state = lax.map(lambda s: train_pass(s, data["train_images"], data["train_labels"]), state)
        if replicas_in_one_evaluation(model):  # the replicas' evaluation is one batched computation
            return state, evaluate(state["params"], data, replicas=True)
        return state, lax.map(lambda p: evaluate(p, data), state["params"])

    if mesh is None:
        return jax.jit(epoch, donate_argnums=0)
    # Each device runs the epoch on its own replicas; the data is on every device.
    sharded, replicated = PartitionSpec("seed"), PartitionSpec()
    epoch = jax.shard_map(epoch, mesh=mesh, in_specs=(sharded, replicated), out_specs=sharded, check_vma=False)
    return jax.jit(epoch, donate_argnums=0)


def load_data(config: ml_collections.ConfigDict) -> data_lib.Dataset:
    """The dataset of ``config.data``, its training split cut to ``train_size``."""
    d = config.data
    dataset = data_lib.load(d.name, source_dir=d.source_dir, data_dir=d.tfds_dir, mnist_url=d.mnist_url)
    config_lib.check_dataset_size(config, len(dataset.train))
    dataset = data_lib.select_train(dataset, d.train_size, d.train_subset, d.subset_seed)
    return dataset if d.validation_size is None else data_lib.hold_out(dataset, d.validation_size)


def device_data(dataset, mesh: Mesh | None = None) -> dict[str, jax.Array]:
    """The dataset's arrays on the device (on every device of ``mesh``) for the whole run."""
    arrays = {}
    for s in SPLITS:
        split = dataset.split(s)
        arrays[f"{s}_images"], arrays[f"{s}_labels"] = split.images, split.labels
    return jax.device_put(arrays, None if mesh is None else NamedSharding(mesh, PartitionSpec()))


def real_replicas(config, tree):
    """Drops the spare replicas that only pad the replica axis to the mesh."""
    if config.num_seeds == 1:
        return tree
    return jax.tree.map(lambda a: a[: config.num_seeds], tree)


def to_numpy(tree):
    """Host copies; with several processes, gathered from all of them."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))
