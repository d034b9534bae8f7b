"""What a workdir's ``config.json`` records of a run, and the error of a workdir that holds another.

``config.json`` records the config and the parts a user passed in (their classes,
fields and fingerprints); :class:`lecun_jax.run.store.RunStore` refuses a run of
another config unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import re

import optax

from lecun_jax.core import modules


class WorkdirError(ValueError):
    """The workdir holds a different run."""


def _name(f) -> str:
    return f"{getattr(f, '__module__', None) or '?'}.{getattr(f, '__qualname__', None) or repr(f)}"


def _fingerprint(fn, depth: int = 8) -> str:
    """A hash of a function and what its closures hold, recursively (an Optax
    transformation's hyperparameters live there: ``sgd(0.01)`` and ``sgd(0.1)``
    differ only in a closed-over ``-0.01``)."""
    parts, seen = [], set()

    def walk(v, d):
        if d > depth or id(v) in seen:
            return
        seen.add(id(v))
        if hasattr(v, "__code__"):
            if hasattr(v, "__self__"):  # a bound method: what its object holds counts too
                walk(v.__self__, d + 1)
            parts.append(v.__qualname__)
            parts.append(hashlib.sha256(v.__code__.co_code).hexdigest()[:16])
            for cell in v.__closure__ or ():
                walk(cell.cell_contents, d + 1)
        elif isinstance(v, (tuple, list)):
            for x in v:
                walk(x, d)
        elif isinstance(v, optax.GradientTransformation):
            walk(v.update, d)
        else:
            parts.append(re.sub(r" at 0x[0-9a-f]+", "", repr(v)))

    walk(fn, 0)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def describe_parts(model=None, optimizer=None, loss=None, init_states=None) -> dict:
    """What ``config.json`` and ``summary.json`` record of the parts a user passed in:
    the module's class and fields, the functions' names and fingerprints (so a
    workdir trained with other hyperparameters is refused)."""
    out = {}
    if model is not None:
        out["model"] = json.loads(json.dumps(modules.describe(model), default=repr))
    if optimizer is not None:
        out["optimizer"] = {"init": _name(optimizer.init), "update": _name(optimizer.update),
                            "fingerprint": _fingerprint(optimizer)}
    if loss is not None:
        out["loss"] = {"function": _name(loss), "fingerprint": _fingerprint(loss)}
    if init_states is not None:
        out["init_states"] = {"function": _name(init_states), "fingerprint": _fingerprint(init_states)}
    return out


def config_json(config, parts: dict | None = None) -> dict:
    """config.json: the config, and ``parts`` (what a user passed in) when there are any."""
    out = json.loads(config.to_json())
    return out | {"parts": parts} if parts else out
