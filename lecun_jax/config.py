"""The run configuration: every field, its default (the 1989 recipe), and its check.

Config files under ``configs/`` start from :func:`base` and change fields;
:func:`validate` checks a finished config before anything is loaded or
compiled, and names the field, the value and what would be valid.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import ml_collections
from ml_collections import config_dict

from lecun_jax import data, losses, model, optimizers


class ConfigError(ValueError):
    """A config field has a value the run cannot use."""


def base() -> ml_collections.ConfigDict:
    """The 1989 recipe (LeCun et al. 1989, as Karpathy 2022 reads it) on mnist1989."""
    c = ml_collections.ConfigDict()
    c.seed = 1337  # one seed; every random stream is split from it with fold_in
    c.num_seeds = 1  # independent replicas trained at once (vmapped): seeds fold_in(seed, i)

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist1989"  # mnist1989 (Karpathy's MNIST proxy) | usps (the 1989 paper's digits)
    c.data.source_dir = config_dict.placeholder(str)  # directory of the official files; None: the shipped copy
    c.data.tfds_dir = config_dict.placeholder(str)  # where TFDS keeps prepared data; None: TFDS's default

    c.model = ml_collections.ConfigDict()
    c.model.activation = "tanh"  # tanh | relu (hidden layers)
    c.model.output_activation = "tanh"  # tanh | linear
    c.model.dropout = 0.0  # dropout rate on the input of H3, in [0, 1)
    c.model.output_bias_init = -1.0  # nine of ten targets are -1
    c.model.hidden_pad_value = -1.0  # H1 padding before H2 (Karpathy: -1 even with relu)
    c.model.conv = "auto"  # auto (patches up to batch 16, else lax) | patches | lax: same function, speed only

    c.loss = "mse"  # mse (mean over outputs, +-1 targets) | cross_entropy

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.03

    c.train = ml_collections.ConfigDict()
    c.train.passes = 23  # passes over the training set
    c.train.batch_size = 1  # 1989: one digit per update
    c.train.shuffle = False  # 1989: the same fixed order every pass
    return c


def _choice(options) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"valid: {', '.join(options)}"


def _number(lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False, integer=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
            return f"expected {'an integer' if integer else 'a number'}"
        if not math.isfinite(v):
            return "expected a finite number"
        if v < lo or (lo_open and v == lo) or v > hi or (hi_open and v == hi):
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            return f"valid: {'integer ' if integer else ''}in {left}{lo:g}, {hi:g}{right}"
        return None

    return check


def _optional_str(v):
    return None if v is None or isinstance(v, str) else "expected a path or None"


def _bool(v):
    return None if isinstance(v, bool) else "expected True or False"


SCHEMA: dict[str, Callable[[Any], str | None]] = {
    "seed": _number(0, 2**32 - 1, integer=True),
    "num_seeds": _number(1, integer=True),
    "data.name": _choice(data.DATASETS),
    "data.source_dir": _optional_str,
    "data.tfds_dir": _optional_str,
    "model.activation": _choice(tuple(model.ACTIVATIONS)),
    "model.output_activation": _choice(tuple(model.OUTPUT_ACTIVATIONS)),
    "model.dropout": _number(0.0, 1.0, hi_open=True),
    "model.output_bias_init": _number(),
    "model.hidden_pad_value": _number(),
    "model.conv": _choice(model.CONV_IMPLS),
    "loss": _choice(tuple(losses.LOSSES)),
    "optimizer.name": _choice(optimizers.OPTIMIZERS),
    "optimizer.learning_rate": _number(0.0, lo_open=True),
    "train.passes": _number(1, integer=True),
    "train.batch_size": _number(1, data.SPLIT_SIZES["train"], integer=True),
    "train.shuffle": _bool,
}


def flatten(c, prefix: str = "") -> dict[str, Any]:
    """{'optimizer.learning_rate': 0.03, ...} of a ConfigDict or nested dict."""
    out = {}
    for k, v in c.items():
        if isinstance(v, (ml_collections.ConfigDict, dict)):
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Raises ConfigError on the first field that is unknown, missing or invalid."""
    fields = flatten(c)
    for path in fields:
        if path not in SCHEMA:
            raise ConfigError(f"config.{path}: unknown field; valid fields: {', '.join(SCHEMA)}")
    for path, check in SCHEMA.items():
        if path not in fields:
            raise ConfigError(f"config.{path}: missing (start config files from lecun_jax.config.base())")
        problem = check(fields[path])
        if problem:
            raise ConfigError(f"config.{path}={fields[path]!r}: {problem}")
    return c
