"""Training: pure functions of (state, data). One network, one gradient.

Every recipe trains with ``jax.grad`` of the module's ``apply`` and an Optax
``GradientTransformation``, and is evaluated with ``apply``: the 1989 SGD,
SDLM, AdamW, shifts, dropout, any width, batch size or number of seeds, and
any module, optimiser or per-example loss a user passes in (:class:`Parts`).

The train state is a plain dict::

    {'params': ..., 'model_state': ..., 'opt_state': ..., 'rng': key, 'pass': int32}

``model_state`` holds the module's collections beside ``params`` (batch
statistics: linen's ``batch_stats``, an NNX module's ``state``), updated by
every step (``mutable=``) and used as the module defines at evaluation; it is
empty for the 1989 network. Evaluation uses the parameters the optimiser
defines for it (:func:`lecun_jax.core.optimizers.evaluation_params`: the
schedule-free family's), the raw ones otherwise.

* :func:`make_train_pass` — one pass over the training set as one
  ``lax.scan`` (no Python per step);
* :func:`make_evaluate` — loss and misses on a whole split, ``apply`` in chunks;
* :func:`make_step_fns` — both, as the config says, for one network;
  :mod:`lecun_jax.core.epoch` runs them over a replica axis (``make_epoch``)
  and as one pure ``train(key)`` (``make_train``).

Randomness: replica r of seed s uses ``key_r = fold_in(PRNGKey(s), r)``; its
initial weights come from ``fold_in(key_r, 0)``, and pass p from
``k = fold_in(fold_in(key_r, 1), p)``: the order from ``fold_in(k, 0)``, the
dropout keys of every step from ``fold_in(k, 2)`` and the shifts from
``fold_in(k, 3)``, each drawn once per pass; so every stream is a pure
function of (seed, replica, pass, step). ``train.order=seed``'s one order of
the replica comes from ``fold_in(rng, SEED_ORDER_STREAM)``, the same every pass.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from lecun_jax.core import augment as augment_lib
from lecun_jax.core import losses, optimizers
from lecun_jax.core import model as model_lib
from lecun_jax.core import modules
from lecun_jax.core import sdlm as sdlm_lib

State = dict[str, Any]
Loss = Callable[[jax.Array, jax.Array], jax.Array]  # (outputs (B, 10), labels (B,)) -> (B,)
EVAL_CHUNK = 256  # examples per evaluation chunk: bounds the patch gathers' memory (chosen by benchmarks/speed.py)
# The order of a pass without shuffle: the file's (the same for every seed), or one permutation
# per replica ("constant order", 1989, but a seed's own).
ORDERS = ("file", "seed")
# Pass keys are fold_in(rng, pass) with pass an int32 >= 0: this tag, above every int32, is no
# pass's, so the seed's order is a stream of its own and leaves every other stream as it was.
SEED_ORDER_STREAM = 2**32 - 1


@dataclasses.dataclass(frozen=True)
class Parts:
    """What trains: a Flax module (linen, or NNX behind :class:`lecun_jax.core.modules.NNXModule`),
    an Optax transformation and a per-example loss.

    ``given`` names the parts the user passed in (the others come from the config).
    """

    model: nn.Module
    optimizer: optax.GradientTransformation
    loss: Loss
    given: tuple[str, ...] = ()


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
        init_rule=m.init_rule,
    )


def steps_per_pass(num_train: int, batch_size: int) -> int:
    return math.ceil(num_train / batch_size)


def make_optimizer(config: ml_collections.ConfigDict, num_train: int) -> optax.GradientTransformation:
    return optimizers.make(
        config.optimizer, steps_per_pass=steps_per_pass(num_train, config.train.batch_size), passes=config.train.passes
    )


def make_parts(config, num_train: int, *, model=None, optimizer=None, loss=None) -> Parts:
    """The config's parts, with any given one in its place."""
    given = tuple(n for n, v in (("model", model), ("optimizer", optimizer), ("loss", loss)) if v is not None)
    return Parts(
        model=make_model(config) if model is None else modules.as_module(model),
        optimizer=make_optimizer(config, num_train) if optimizer is None else optimizer,
        loss=losses.get(config.loss, target=config.loss_target) if loss is None else loss,
        given=given,
    )


def replica_key(seed, replica) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), replica)


def init_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array) -> State:
    """The state before the first pass, from one replica's key."""
    variables = model_lib.init_variables(model, jax.random.fold_in(key, 0))
    params = variables.pop("params")
    return {"params": params, "model_state": variables, "opt_state": tx.init(params),
            "rng": jax.random.fold_in(key, 1), "pass": jnp.int32(0)}


def init_states(config: ml_collections.ConfigDict, model, tx, replicas: int | None = None) -> State:
    """Initial state of every replica, on a leading replica axis of ``replicas``
    (default ``num_seeds``), one seed included. Replica r starts from
    ``fold_in(PRNGKey(seed), r)``, whatever the number of replicas."""
    replicas = config.num_seeds if replicas is None else replicas

    @jax.jit  # one compiled program; op by op, Flax's init is slow on a CPU
    def init(seed):
        keys = jax.vmap(lambda r: replica_key(seed, r))(jnp.arange(replicas))
        return jax.vmap(lambda k: init_state(model, tx, k))(keys)

    return init(jnp.uint32(config.seed))


def dropout_keys(key: jax.Array, steps: int) -> jax.Array:
    """One ``dropout`` key per step, split once per pass from ``key``.

    Threefry keys: each replica's masks are exactly its own under ``vmap``
    (``rbg`` keys are not, google/jax#19085). The keys are split once per pass
    rather than hashed inside the step, where XLA would recompute the hash in
    every fusion that reads the mask.
    """
    return jax.random.split(key, steps)


def check_order(order: str, shuffle: bool) -> None:
    """``order`` (``train.order``) names one fixed order; ``shuffle`` draws a new one every
    pass: refuse both at once rather than let one silently win."""
    if order not in ORDERS:
        raise ValueError(f"train.order={order!r}: valid: {', '.join(ORDERS)}")
    if order != "file" and shuffle:
        raise ValueError(f"train.order={order!r} with train.shuffle=True: a fixed order per seed, or a new "
                         "one every pass; choose one")


def _pass_order(state: State, pass_key: jax.Array, num_train: int, shuffle: bool, order: str) -> jax.Array:
    """The indices of the training digits in the order pass ``state['pass']`` visits them."""
    if shuffle:  # a fresh permutation every pass, from the pass's key
        return jax.random.permutation(jax.random.fold_in(pass_key, 0), num_train)
    if order == "seed":  # from the replica's rng alone: the same every pass
        return jax.random.permutation(jax.random.fold_in(state["rng"], SEED_ORDER_STREAM), num_train)
    return jnp.arange(num_train)


def _batch_loss(model: nn.Module, loss_fn: Loss):
    """``loss(params, model_state, images, labels, mask, key) -> (mean loss, new model_state)``
    of one training batch (``mask``: which examples count; None: all)."""

    def loss(params, model_state, images, labels, mask, key):
        variables, rngs = {"params": params, **model_state}, {"dropout": key}
        if model_state:  # batch statistics and the like: the step updates them
            outputs, model_state = model.apply(variables, images, train=True, rngs=rngs, mutable=list(model_state))
        else:
            outputs = model.apply(variables, images, train=True, rngs=rngs)
        per_example = loss_fn(outputs, labels)
        if mask is None:
            return jnp.mean(per_example), model_state
        return jnp.sum(per_example * mask) / jnp.sum(mask), model_state

    return loss


def make_train_pass(
    model: nn.Module,
    tx: optax.GradientTransformation,
    loss_fn: Loss,
    *,
    num_train: int,
    batch_size: int,
    shuffle: bool,
    order: str = "file",
    augment: ml_collections.ConfigDict | None = None,
    curvature: Callable | None = None,
    curvature_samples: int = 500,
    unroll: int = 1,
) -> Callable[[State, jax.Array, jax.Array], State]:
    """One pass over the training set: ``train_pass(state, images, labels) -> state``.

    Each step: ``jax.grad`` of the mean loss of ``model.apply`` on a batch,
    then ``tx.update`` and ``optax.apply_updates``. Batches are ``batch_size``
    consecutive examples of the pass's order (:func:`_pass_order`: the file's;
    with ``order='seed'`` one permutation per replica, the same every pass; with
    ``shuffle`` a fresh permutation every pass); a last, short batch is padded
    and its padding masked out of the loss, so every example counts once. ``augment``
    (``config.augment``) shifts each batch inside the step. ``curvature(params,
    images, labels)``, for SDLM, re-estimates the diagonal Hessian of every SDLM
    state in the optimiser's on ``curvature_samples`` digits drawn from
    ``fold_in(k, 4)`` before the pass.
    Dropout gets Flax's ``dropout`` rng, a key per step.
    """
    check_order(order, shuffle)
    steps = steps_per_pass(num_train, batch_size)
    padding = steps * batch_size - num_train
    shifting = augment is not None and augment.name == "shift"

    grad_fn = jax.grad(_batch_loss(model, loss_fn), has_aux=True)

    def train_pass(state: State, images: jax.Array, labels: jax.Array) -> State:
        pass_key = jax.random.fold_in(state["rng"], state["pass"])
        key = lambda i: jax.random.fold_in(pass_key, i)
        indices = _pass_order(state, pass_key, num_train, shuffle, order)
        xs = {"index": jnp.pad(indices, (0, padding)).reshape(steps, batch_size), "key": dropout_keys(key(2), steps)}
        if padding:
            xs["mask"] = (jnp.arange(steps * batch_size) < num_train).astype(jnp.float32).reshape(steps, batch_size)
        if shifting:
            xs["shift"] = augment_lib.sample_shifts(key(3), (steps, batch_size), augment.max_shift)

        opt_state = state["opt_state"]
        if curvature is not None:
            pick = jax.random.choice(key(4), num_train, (curvature_samples,), replace=False)
            opt_state = sdlm_lib.with_hessian(opt_state, curvature(state["params"], images[pick], labels[pick]))

        def step(carry, x):
            params, opt_state, model_state = carry
            batch = images[x["index"]]
            if shifting:
                batch = augment_lib.shift_batch(batch, x["shift"], max_shift=augment.max_shift, mode=augment.mode)
            grads, model_state = grad_fn(params, model_state, batch, labels[x["index"]], x.get("mask"), x["key"])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, model_state), None

        carry = (state["params"], opt_state, state["model_state"])
        (params, opt_state, model_state), _ = lax.scan(step, carry, xs, unroll=unroll)
        return {**state, "params": params, "model_state": model_state, "opt_state": opt_state, "pass": state["pass"] + 1}

    return train_pass


def make_predict(model: nn.Module, num_examples: int, chunk: int = EVAL_CHUNK):
    """``predict(params, images, model_state=None) -> outputs (N, 10)``: ``model.apply`` in
    evaluation mode, in chunks."""
    chunks = math.ceil(num_examples / chunk)
    padding = chunks * chunk - num_examples

    def predict(params, images, model_state=None):
        apply = lambda x: model.apply({"params": params, **(model_state or {})}, x, train=False)
        if chunks == 1:
            return apply(images)
        padded = jnp.pad(images, [(0, padding)] + [(0, 0)] * (images.ndim - 1))
        outputs = lax.map(apply, padded.reshape(chunks, chunk, *images.shape[1:]))
        return outputs.reshape(chunks * chunk, -1)[:num_examples]

    return predict


def make_evaluate(model: nn.Module, loss_fn: Loss, num_examples: int, chunk: int = EVAL_CHUNK):
    """``evaluate(params, images, labels, model_state=None) -> {'loss': mean loss, 'misses': int32
    count}`` on a whole split."""
    predict = make_predict(model, num_examples, chunk)

    def evaluate(params, images, labels, model_state=None):
        outputs = predict(params, images, model_state)
        misses = jnp.sum(jnp.argmax(outputs, axis=-1) != labels, dtype=jnp.int32)
        return {"loss": jnp.mean(loss_fn(outputs, labels)), "misses": misses}

    return evaluate


def data_splits(data: dict) -> tuple[str, ...]:
    """The splits a data dict holds (``<split>_images`` and ``<split>_labels``), in its order."""
    return tuple(k.removesuffix("_images") for k in data if k.endswith("_images"))


def _curvature(config, parts: Parts):
    """The diagonal Hessian estimator (``config.optimizer.sdlm_estimator``) where the optimiser's
    state holds an SDLM diagonal, whoever built the chain; None where it holds none.

    The estimate is of the loss times ``optimizer.sdlm_loss_scale``: the loss is a mean over
    the 10 outputs, and 10 makes h the summed squared error's, on which LeNet-5's mu = 0.02 was set.
    """
    opt_state = jax.eval_shape(parts.optimizer.init, model_lib.abstract_params(parts.model))
    if not sdlm_lib.uses_hessian(opt_state):
        return None
    estimate = sdlm_lib.estimator(config.optimizer.sdlm_estimator, parts.model, parts.loss)
    scale = config.optimizer.sdlm_loss_scale
    if scale == 1.0:
        return estimate
    # the barrier keeps XLA from folding the scale into the estimate's own constants (its mean's
    # division): h is then exactly the scale times the estimate of the loss itself
    return lambda params, images, labels: jax.tree.map(lambda h: scale * h,
                                                       lax.optimization_barrier(estimate(params, images, labels)))


def make_step_fns(config, parts: Parts, num_train: int, num_test: int, *, unroll: int = 1):
    """(train_pass, evaluate(state, data) -> metrics) of one replica."""
    o = config.optimizer
    train_pass = make_train_pass(
        parts.model, parts.optimizer, parts.loss,
        num_train=num_train, batch_size=config.train.batch_size, shuffle=config.train.shuffle,
        order=config.train.order, augment=config.augment, unroll=unroll,
        curvature=_curvature(config, parts), curvature_samples=min(o.sdlm_samples, num_train),
    )
    evaluators = {"train": make_evaluate(parts.model, parts.loss, num_train), "test": make_evaluate(parts.model, parts.loss, num_test)}

    def evaluate(state, data, splits=True):
        params = optimizers.evaluation_params(state.get("opt_state"), state["params"])
        metrics = {s: evaluators[s](params, data[f"{s}_images"], data[f"{s}_labels"], state["model_state"])
                   for s in data_splits(data)} if splits else {}
        metrics["finite"] = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(state["params"])]))
        return metrics

    return train_pass, evaluate


def final_variables(state: State) -> dict:
    """What a finished replica is evaluated with: ``{'params': the optimiser's evaluation
    parameters, **model_state}`` (jit it; vmap it over replicas)."""
    return {"params": optimizers.evaluation_params(state["opt_state"], state["params"]), **state["model_state"]}
