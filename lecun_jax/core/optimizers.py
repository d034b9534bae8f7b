"""Optax chains built from ``config.optimizer``.

* ``sgd`` — plain stochastic gradient descent, w <- w - lr * g (1989).
* ``sdlm`` — the 1989 paper's own: stochastic diagonal Levenberg-Marquardt,
  w <- w - lr / (mu + h) * g with h a diagonal Gauss-Newton estimate
  (``lecun_jax.core.sdlm``; the training loop re-estimates h before each pass).
* ``adamw`` — Adam with decoupled weight decay, as ``torch.optim.AdamW``:
  betas (0.9, 0.999), eps 1e-8 outside the square root, weight decay 0.01 on
  every parameter (optax's own default, 1e-4, is not torch's; a public port
  copied it).

Schedules, the rate set once per pass: ``constant``; ``linear`` from
``learning_rate`` on the first pass to ``final_learning_rate`` on the last —
Karpathy's ``lr = (1 - a) * lr0 + a * lr_final``, ``a = pass / (passes - 1)``;
``lenet5``, LeNet-5's steps down (LeCun et al. 1998, 0.0005 for 2 passes, 0.0002
for 3, 0.0001 for 3, 0.00005 for 4, then 0.00001) scaled so that the first
pass's rate is ``learning_rate``: :data:`LENET5_MULTIPLIERS`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("sgd", "adamw", "sdlm")
SCHEDULES = ("constant", "linear", "lenet5")
# LeNet-5's rate of each pass over its first (0.0005), from pass 1 on; the last holds after.
LENET5_MULTIPLIERS = (1.0, 1.0, 0.4, 0.4, 0.4, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.02)


def learning_rate(config: ml_collections.ConfigDict, *, steps_per_pass: int, passes: int) -> Callable | float:
    """The learning rate as optax wants it: a number, or a function of the step count."""
    if config.schedule == "constant":
        return config.learning_rate
    if config.schedule == "linear":
        lr0, lr1 = config.learning_rate, config.final_learning_rate
        span = max(passes - 1, 1)

        def schedule(count):
            a = jnp.minimum(count // steps_per_pass, passes - 1) / span
            return (1.0 - a) * lr0 + a * lr1

        return schedule
    if config.schedule == "lenet5":
        table = jnp.asarray(LENET5_MULTIPLIERS) * config.learning_rate

        def steps_down(count):
            return table[jnp.minimum(count // steps_per_pass, len(LENET5_MULTIPLIERS) - 1)]

        return steps_down
    raise ValueError(f"optimizer.schedule={config.schedule!r}: valid: {', '.join(SCHEDULES)}")


def pass_learning_rates(config: ml_collections.ConfigDict, passes: int) -> list[float]:
    """The rate of each pass (for logs and plots)."""
    lr = learning_rate(config, steps_per_pass=1, passes=passes)
    return [float(lr(p)) if callable(lr) else float(lr) for p in range(passes)]


# Hyperparameters that can enter the compiled pass as data (optax.inject_hyperparams):
# rows of a sweep that differ only in these train side by side in one program.
INJECTABLE = {"sgd": ("learning_rate",), "adamw": ("learning_rate", "weight_decay")}


def injectable(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The fields of ``config`` (an optimizer config) that :func:`make` can take as data."""
    return INJECTABLE.get(config.name, ()) if config.schedule == "constant" else ()


def make(config: ml_collections.ConfigDict, *, steps_per_pass: int, passes: int,
         injected: dict | None = None) -> optax.GradientTransformation:
    """The optimiser of ``config.optimizer`` for ``passes`` passes of ``steps_per_pass`` updates.

    ``injected``: values (arrays, traced or not) of some :func:`injectable` fields,
    kept in the optimiser state by ``optax.inject_hyperparams`` rather than in the
    update's code: under ``vmap`` each replica then trains with its own values.
    """
    if injected is not None:
        return _injected(config, injected)
    lr = learning_rate(config, steps_per_pass=steps_per_pass, passes=passes)
    if config.name == "sgd":
        return optax.sgd(lr)  # per leaf: for plain SGD, flattening costs more than it saves (benchmarks/README.md)
    if config.name == "adamw":
        # flattened: a few vector ops per update instead of a dozen per parameter array
        return optax.flatten(optax.adamw(lr, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay))
    if config.name == "sdlm":
        from lecun_jax.core import sdlm

        return sdlm.sdlm(lr, mu=config.sdlm_mu)
    raise ValueError(f"optimizer.name={config.name!r}: valid: {', '.join(OPTIMIZERS)}")


def _injected(config: ml_collections.ConfigDict, values: dict) -> optax.GradientTransformation:
    bad = sorted(set(values) - set(injectable(config)))
    if bad:
        raise ValueError(f"optimizer {config.name} ({config.schedule} schedule) cannot take {', '.join(bad)} as data; "
                         f"it can: {', '.join(injectable(config)) or 'nothing'}")
    if config.name == "sgd":
        return optax.inject_hyperparams(optax.sgd)(learning_rate=values.get("learning_rate", config.learning_rate))
    hyper = {"learning_rate": config.learning_rate, "b1": config.b1, "b2": config.b2, "eps": config.eps,
             "weight_decay": config.weight_decay} | values
    static = tuple(k for k in hyper if k not in values)  # the others stay constants in the code
    return optax.flatten(optax.inject_hyperparams(optax.adamw, static_args=static)(**hyper))


def _evaluation_node(opt_state):
    """The node of an optimiser state that defines where to evaluate, or None.

    The schedule-free family (``optax.contrib``) evaluates at
    ``schedule_free_eval_params``; a user's transformation declares its own point
    by giving its state (a NamedTuple, say) a method ``evaluation_params(self,
    params) -> params``.
    """
    from optax import contrib

    def defines(node):
        return isinstance(node, contrib.ScheduleFreeState) or callable(getattr(node, "evaluation_params", None))

    for node in jax.tree.leaves(opt_state, is_leaf=defines):
        if defines(node):
            return node
    return None


def defines_evaluation_params(opt_state) -> bool:
    return _evaluation_node(opt_state) is not None


def evaluation_params(opt_state, params):
    """The parameters the optimiser defines for evaluation; ``params`` where it defines none."""
    from optax import contrib

    node = None if opt_state is None else _evaluation_node(opt_state)
    if node is None:
        return params
    if isinstance(node, contrib.ScheduleFreeState):
        return contrib.schedule_free_eval_params(node, params)
    return node.evaluation_params(params)


def evaluation_point(opt_state) -> str | None:
    """What a run records of where it evaluates: None for the raw parameters."""
    node = _evaluation_node(opt_state)
    if node is None:
        return None
    from optax import contrib

    if isinstance(node, contrib.ScheduleFreeState):
        return "optax.contrib.schedule_free_eval_params"
    return f"{type(node).__qualname__}.evaluation_params"
