"""Many networks at once: a pass of every replica as one compiled program.

* :func:`make_epoch` — a training pass and the evaluation of every replica,
  jitted, vmapped over the replica axis in chunks and ``shard_map``-ped over
  devices: what the host loop (``lecun_jax.run.experiment``) calls per pass;
* :func:`make_train` — the whole run of one network as one pure ``train(key)``,
  purejaxrl-style: ``jax.jit(jax.vmap(train))(keys)`` trains many seeds at once;
* :func:`compiler_options` — the XLA options these programs compile with.

One network's math is :mod:`lecun_jax.core.train`'s; this module only lays
replicas side by side.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax
from jax.sharding import Mesh, PartitionSpec

from lecun_jax.core import optimizers
from lecun_jax.core.train import Parts, State, init_state, make_step_fns

# Replicas trained side by side (vmapped) at a time on one device, by backend: on a CPU
# a few networks' working set stays in cache, and more run one chunk after the other
# (lax.map); elsewhere all at once. benchmarks/seeds.py measures it.
REPLICA_CHUNK = {"cpu": 4}


def _evaluated_part(state: State) -> State:
    """What evaluation reads of a state: the optimiser state only where it defines the evaluation point."""
    keep = ("params", "model_state") + (("opt_state",) if optimizers.defines_evaluation_params(state["opt_state"]) else ())
    return {k: state[k] for k in keep}


def _pass_then_evaluate(train_pass, evaluate, splits: bool = True):
    """``one(state, data) -> (state, metrics)``: a training pass, then the evaluation."""

    def one(state, data):
        state = train_pass(state, data["train_images"], data["train_labels"])
        return state, evaluate(state, data, splits)

    return one


def _on_one_replica(one):
    """``one`` (state, data) -> (state, metrics) of a single network, on states and metrics
    that carry a replica axis of size one."""

    def epoch(state, data):
        state, metrics = one(jax.tree.map(lambda a: a[0], state), data)
        return jax.tree.map(lambda a: a[None], (state, metrics))

    return epoch


def compiler_options() -> dict[str, Any]:
    """XLA options of the training programs, by backend (``jax.jit(..., compiler_options=)``).

    On a CPU, copy insertion with region analysis: without it XLA copies the
    loop-carried dense kernels at every step of a pass's ``scan`` (read by the
    backward pass while their update is written in place). Buffers only, so the
    same numbers to the bit (benchmarks/versus.py measures it). Elsewhere none.
    """
    return {"xla_cpu_copy_insertion_use_region_analysis": True} if jax.default_backend() == "cpu" else {}


def make_epoch(
    config: ml_collections.ConfigDict,
    parts: Parts,
    num_train: int,
    num_test: int,
    *,
    mesh: Mesh | None = None,
    unroll: int = 1,
    evaluate_splits: bool = True,
    chunk_target: int | None = None,
):
    """``epoch(state, data) -> (state, metrics)``, jitted with :func:`compiler_options`, the state donated.

    ``data`` holds ``{train,test}_{images,labels}``; ``metrics[split]`` holds
    ``loss`` and ``misses`` (unless ``evaluate_splits`` is False: a pass that
    is not evaluated), and ``metrics['finite']`` whether every parameter is
    still finite. The state and the metrics carry a leading replica axis, one
    seed included (which trains as one plain network, no ``vmap``); several
    replicas are ``vmap``-ped (their evaluation mapped, see below),
    in chunks of :func:`chunk_size` (``chunk_target``: see
    :func:`replica_chunk_target`) one after the other, and the replica axis is
    split over ``mesh``'s devices by ``shard_map`` when given (data replicated).
    """
    train_pass, evaluate = make_step_fns(config, parts, num_train, num_test, unroll=unroll)
    one = _pass_then_evaluate(train_pass, evaluate, evaluate_splits)

    def replicas(state, data):
        # The one replica strategy: vmap (inside shard_map). The one exception: evaluation
        # runs one replica after the other (lax.map), each a plain batched computation,
        # since vmapped its replica-batched products are slower (benchmarks/README.md).
        train = lambda s: jax.vmap(train_pass, in_axes=(0, None, None))(s, data["train_images"], data["train_labels"])
        state = _in_chunks(train, state, chunk_target)
        return state, lax.map(lambda s: evaluate(s, data, evaluate_splits), _evaluated_part(state))

    # one seed: the unbatched program (a vmap of width one would round differently)
    epoch = _on_one_replica(one) if config.num_seeds == 1 else replicas
    if mesh is not None:
        sharded, replicated = PartitionSpec("seed"), PartitionSpec()
        epoch = jax.shard_map(epoch, mesh=mesh, in_specs=(sharded, replicated), out_specs=sharded, check_vma=False)
    return jax.jit(epoch, donate_argnums=0, compiler_options=compiler_options())


def chunk_size(per_device: int, target: int | None) -> int:
    """How many of a device's ``per_device`` replicas train side by side (vmapped) at a time:
    all when ``target`` is None or when they are at most twice it (a vmap that wide costs
    about the same per replica: better than spare replicas), else even chunks of at most
    ``target``."""
    if target is None or per_device <= 2 * target:
        return per_device
    return math.ceil(per_device / math.ceil(per_device / target))


def replica_chunk_target() -> int | None:
    """The most replicas to vmap together on this backend's devices (None: all)."""
    return REPLICA_CHUNK.get(jax.default_backend())


def _in_chunks(fn, state: State, target: int | None) -> State:
    """``fn`` (replicas -> replicas) over the leading axis in chunks, one after the other."""
    replicas = jax.tree.leaves(state)[0].shape[0]
    chunk = chunk_size(replicas, target)
    if chunk == replicas:
        return fn(state)
    if replicas % chunk:
        raise ValueError(f"{replicas} replicas on a device do not split into chunks of {chunk}: see lecun_jax.run.processes.replica_layout")
    split = jax.tree.map(lambda a: a.reshape(replicas // chunk, chunk, *a.shape[1:]), state)
    return jax.tree.map(lambda a: a.reshape(replicas, *a.shape[2:]), lax.map(fn, split))


def make_train(config: ml_collections.ConfigDict, parts: Parts, data: dict[str, jax.Array], *, unroll: int = 1):
    """The whole run as one pure function, purejaxrl-style: ``train(key) -> (state, metrics)``.

    ``data`` holds ``{train,test}_{images,labels}`` (e.g. ``lecun_jax.run.processes.device_data``);
    ``key`` is a replica's key (:func:`lecun_jax.core.train.replica_key`); ``metrics`` stacks every
    pass's (leading axis ``config.train.passes``). ``jax.jit(train)(key)`` runs
    one network, ``jax.jit(jax.vmap(train))(keys)`` many at once (add
    ``compiler_options=compiler_options()`` to ``jax.jit`` for the host loop's speed).
    """
    data = jax.tree.map(jnp.asarray, data)
    num_train, num_test = len(data["train_labels"]), len(data["test_labels"])
    one = _pass_then_evaluate(*make_step_fns(config, parts, num_train, num_test, unroll=unroll))

    def train(key):
        state = init_state(parts.model, parts.optimizer, key)
        return lax.scan(lambda state, _: one(state, data), state, None, length=config.train.passes)

    return train
