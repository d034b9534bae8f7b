"""A user's parts as the one interface training uses, checked before anything runs.

Training calls a module as Flax linen does: ``variables = module.init({'params':
key}, x, train=False)`` and ``module.apply(variables, x, train=..., rngs=...,
mutable=...)`` on pure pytrees of arrays. A linen module is that already when
its ``__call__`` takes ``train`` (by name or through ``**kwargs``); one that
does not is called without it (:class:`LinenModule`). An
NNX module (``flax.nnx``), given as an instance or as a function of
``nnx.Rngs`` that builds one, is split into its graph and pure state
(:class:`NNXModule`): its ``nnx.Param`` variables are the ``params``
collection, its other variables (``nnx.BatchStat``, ...) the ``state``
collection, and its random streams are drawn afresh from the step's key.

:func:`check_parts` refuses, in one line and before any pass, a module whose
output is not ``(batch, 10)`` scores of ``(batch, 16, 16, 1)`` digits, a loss
that does not give one value per example, an optimiser that is not an
Optax ``GradientTransformation``, and, where the optimiser holds an SDLM state
(whoever built the chain), a module its curvature estimate cannot serve.
"""

from __future__ import annotations

import inspect
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lecun_jax.core import sdlm

DIGITS = (16, 16, 1)  # one digit as every module takes it
CLASSES = 10


class PartError(ValueError):
    """A part passed in (model, optimizer, loss) that training cannot use."""


class NNXModule:
    """An NNX module presented with linen's ``init`` and ``apply`` over pure pytrees.

    ``module``: an ``nnx.Module`` (every seed starts from its weights) or a function
    ``rngs -> nnx.Module`` (each seed builds its own from its own key).
    """

    def __init__(self, module: nnx.Module | Callable[[nnx.Rngs], nnx.Module]):
        self.instance = module if isinstance(module, nnx.Module) else None
        self.factory = None if self.instance is not None else module
        example = self.instance if self.instance is not None else nnx.eval_shape(lambda: module(nnx.Rngs(0)))
        self.user_class = type(example)
        self.graphdef, params, rngs, rest = nnx.split(example, nnx.Param, nnx.RngState, ...)
        self._abstract = {"params": _abstract(params), "rngs": _abstract(rngs), "state": _abstract(rest)}
        self._takes_train = takes_train(self.user_class.__call__)

    def init(self, rngs, x, train: bool = False) -> dict:
        key = rngs["params"] if isinstance(rngs, dict) else rngs
        module = self.instance if self.factory is None else self.factory(nnx.Rngs(key))
        _, params, _, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
        out = {"params": nnx.to_pure_dict(params)}
        return out | ({"state": nnx.to_pure_dict(rest)} if self._abstract["state"] else {})

    def module(self, variables: dict, key=None) -> nnx.Module:
        """The user's module holding ``variables``; its random streams drawn from ``key``."""
        states = [_filled(self._abstract["params"], variables["params"]),
                  _filled(self._abstract["rngs"], _fresh_streams(self._abstract["rngs"], key))]
        if self._abstract["state"]:
            states.append(_filled(self._abstract["state"], variables["state"]))
        return nnx.merge(self.graphdef, *states)

    def apply(self, variables: dict, x, *, train: bool = False, rngs: dict | None = None, mutable=False):
        module = self.module(variables, (rngs or {}).get("dropout"))
        module.train() if train else module.eval()
        outputs = module(x, train=train) if self._takes_train else module(x)
        if not mutable:
            return outputs
        _, _, _, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
        return outputs, {"state": nnx.to_pure_dict(rest)}


class LinenModule:
    """A linen module whose ``__call__`` takes no ``train``, with ``init``/``apply`` that drop it.

    The parameters are the module's own (no extra nesting); its attributes
    (``layers()``, fields) read through to it.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.user_class = type(module)

    def init(self, rngs, x, train: bool = False, **kwargs) -> dict:
        del train
        return self.module.init(rngs, x, **kwargs)

    def apply(self, variables: dict, x, *, train: bool = False, **kwargs):
        del train
        return self.module.apply(variables, x, **kwargs)

    def __getattr__(self, name):
        if name == "module":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.module, name)


def takes_train(call: Callable) -> bool:
    """Whether ``call`` takes a ``train`` keyword: by name, or through ``**kwargs``."""
    params = inspect.signature(call).parameters.values()
    return any(p.kind == p.VAR_KEYWORD or (p.name == "train" and p.kind != p.POSITIONAL_ONLY) for p in params)


def _abstract(state: nnx.State) -> dict:
    """Shapes and dtypes of a state's arrays, as a pure dict (no arrays kept)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), nnx.to_pure_dict(state))


def _filled(abstract: dict, values: dict) -> nnx.State:
    state = nnx.State(jax.tree.map(lambda a: a, abstract))
    nnx.replace_by_pure_dict(state, values)
    return state


def _fresh_streams(abstract: dict, key) -> dict:
    """Every random stream's key folded from ``key`` (count 0): masks are a pure function of the step."""
    key = jax.random.PRNGKey(0) if key is None else key
    leaves, treedef = jax.tree.flatten(abstract)
    fresh = [jax.random.wrap_key_data(jax.random.fold_in(key, i)) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
             else jnp.zeros(a.shape, a.dtype) for i, a in enumerate(leaves)]
    return jax.tree.unflatten(treedef, fresh)


def is_nnx(model) -> bool:
    """An NNX module, or a function that builds one (anything callable that is not linen)."""
    linen = isinstance(model, nn.Module) or (isinstance(model, type) and issubclass(model, nn.Module))
    return isinstance(model, nnx.Module) or (callable(model) and not linen)


def as_module(model):
    """``model`` with linen's ``init``/``apply`` taking ``train``: a linen module that takes it
    as it is, one that does not or an NNX one wrapped."""
    if is_nnx(model):
        return NNXModule(model)
    return model if takes_train(model.__call__) else LinenModule(model)


def describe(model) -> dict:
    """What a run records of a user's module: its class and its constructor's fields."""
    model = model.module if isinstance(model, LinenModule) else model
    if isinstance(model, nn.Module):
        fields = {f: getattr(model, f) for f in model.__dataclass_fields__ if f not in ("parent", "name")}
        return {"class": f"{type(model).__module__}.{type(model).__qualname__}", "fields": fields}
    wrapped = model if isinstance(model, NNXModule) else NNXModule(model)
    example = wrapped.instance if wrapped.instance is not None else nnx.eval_shape(lambda: wrapped.factory(nnx.Rngs(0)))
    fields = {k: v for k, v in vars(example).items()
              if not k.startswith("_") and isinstance(v, (bool, int, float, str, tuple, type(None)))}
    cls, kind = wrapped.user_class, "nnx " + ("instance" if wrapped.instance is not None else "factory")
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "api": kind, "fields": fields}


def class_name(model) -> str:
    """The user's class of a module (an NNX module's own, not its wrapper's)."""
    return model.user_class.__name__ if isinstance(model, (NNXModule, LinenModule)) else type(model).__name__


def check_parts(model=None, optimizer=None, loss=None, *, num_seeds: int = 1,
                sdlm_estimator: str = sdlm.ESTIMATORS[0]) -> None:
    """Raises :class:`PartError` with one line for a part that training cannot use.

    ``optimizer``: the one that trains (the config's where the user passed none). Where
    its state holds an SDLM diagonal, training re-estimates it with ``sdlm_estimator``:
    the module must keep nothing beside its parameters and the estimator must serve it.
    """
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise PartError(f"optimizer is {type(optimizer).__name__}; an optimizer must be an optax.GradientTransformation "
                        "(e.g. optax.sgd(0.01))")
    if model is not None:
        variables = _check_model(model, num_seeds)
        if optimizer is not None and sdlm.uses_hessian(_abstract_opt_state(optimizer, variables["params"])):
            _check_sdlm(model, variables, loss, sdlm_estimator)
    if loss is not None:
        _check_loss(loss)


def _check_model(model, num_seeds: int) -> dict:
    """The module's abstract variables, once it is known to take the digits."""
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise PartError(f"model is the class {model.__name__}; pass an instance, model={model.__name__}(...)")
    if not (isinstance(model, (nn.Module, nnx.Module)) or callable(model)):
        raise PartError(f"model is {type(model).__name__}; a model is a flax.linen or flax.nnx Module, "
                        "or a function of nnx.Rngs that builds an nnx.Module")
    if isinstance(model, nnx.Module) and num_seeds > 1:
        raise PartError(f"model: an nnx.Module instance holds one network's weights, not {num_seeds} seeds'; "
                        f"pass a factory, model=lambda rngs: {type(model).__name__}(..., rngs=rngs)")
    module = as_module(model)
    x = jax.ShapeDtypeStruct((2, *DIGITS), jnp.float32)
    try:
        variables = jax.eval_shape(lambda k: module.init({"params": k}, jnp.zeros(x.shape), train=False),
                                   jax.random.PRNGKey(0))
        outputs = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, x)
    except Exception as e:  # noqa: BLE001 - whatever the module raised, it cannot take the digits
        raise PartError(f"model cannot take (batch, 16, 16, 1) digits: {type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}") from None
    if getattr(outputs, "shape", None) != (2, CLASSES):
        got = getattr(outputs, "shape", type(outputs).__name__)
        raise PartError(f"model returned {got} for (2, 16, 16, 1) digits; a model must return (batch, 10) scores")
    return variables


def _abstract_opt_state(optimizer: optax.GradientTransformation, params):
    try:
        return jax.eval_shape(optimizer.init, params)
    except Exception as e:  # noqa: BLE001 - whatever init raised, it cannot hold these parameters
        raise PartError(f"optimizer.init cannot take the model's params: {type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}") from None


def _check_sdlm(model, variables: dict, loss, estimator: str) -> None:
    """The SDLM optimiser's curvature estimate needs a module without state, that ``estimator`` serves."""
    if set(variables) != {"params"}:
        raise PartError(f"model keeps {', '.join(sorted(set(variables) - {'params'}))} beside its params; the sdlm "
                        "optimiser's curvature needs a module without: use another optimiser (e.g. optimizer.name=sgd)")
    try:
        sdlm.estimator(estimator, as_module(model), loss)
    except ValueError as e:
        raise PartError(str(e)) from None


def _check_loss(loss) -> None:
    outputs, labels = jax.ShapeDtypeStruct((2, CLASSES), jnp.float32), jax.ShapeDtypeStruct((2,), jnp.int32)
    try:
        got = jax.eval_shape(loss, outputs, labels)
    except Exception as e:  # noqa: BLE001
        raise PartError(f"loss cannot take (outputs (batch, 10), labels (batch,)): {type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}") from None
    if getattr(got, "shape", None) != (2,):
        raise PartError(f"loss returned {getattr(got, 'shape', type(got).__name__)} for a batch of 2; "
                        "a loss must return one value per example, (batch,)")
