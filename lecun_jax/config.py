"""The run configuration: every field, its default (the 1989 recipe), and its check.

Config files under ``configs/`` start from :func:`base` and change fields;
:func:`validate` checks a finished config before anything is loaded or
compiled, and names the field, the value and what would be valid.

Each valid choice is the name its home module defines (``model.ACTIVATIONS``,
``losses.LOSSES``, ...), used here as it is, and the split-size rules are
``data.size_problem``'s: no copies to keep in step. None of those modules
imports this one (tests/test_imports.py checks the graph has no cycle).
"""

from __future__ import annotations

import difflib
import importlib.util
import math
from pathlib import Path
from typing import Any, Callable

import ml_collections
from ml_collections import config_dict

from lecun_jax.core import augment, losses, model, optimizers, sdlm
from lecun_jax import data
from lecun_jax.data import ConfigError  # noqa: F401  (defined beside the size rules, which raise it after loading too)


def base() -> ml_collections.ConfigDict:
    """The 1989 recipe (LeCun et al. 1989, as Karpathy 2022 reads it) on mnist1989."""
    c = ml_collections.ConfigDict()
    c.seed = 1337  # one seed; every random stream is split from it with fold_in
    c.num_seeds = 1  # independent replicas trained at once (vmapped): seeds fold_in(seed, i)

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist1989"  # mnist1989 (Karpathy's proxy) | usps (the paper's digits) | mnist (every MNIST digit)
    c.data.source_dir = config_dict.placeholder(str)  # directory of the official files; None: shipped copy / download
    c.data.tfds_dir = config_dict.placeholder(str)  # where TFDS keeps prepared data; None: TFDS's default
    c.data.mnist_url = data.MNIST_URL  # where data.name=mnist downloads the official files from
    c.data.train_size = config_dict.placeholder(int)  # train on this many digits; None: all
    c.data.train_subset = "prefix"  # prefix (the first train_size) | random (a subset drawn by subset_seed)
    c.data.subset_seed = 0  # the draw of train_subset=random; the same for every replica
    c.data.validation_size = config_dict.placeholder(int)  # hold out the last N training digits as the test split (tuning)

    c.model = ml_collections.ConfigDict()
    c.model.activation = "tanh"  # tanh | relu | scaled_tanh (1.7159 tanh(2a/3)) (hidden layers)
    c.model.output_activation = "tanh"  # tanh | linear | scaled_tanh
    c.model.dropout = 0.0  # dropout rate on the input of H3, in [0, 1)
    c.model.output_bias_init = -1.0  # nine of ten targets are -1
    c.model.hidden_pad_value = -1.0  # H1 padding before H2 (Karpathy: -1 even with relu)
    c.model.conv = "auto"  # auto (by batch size: conv.PATCHES_MAX_BATCH) | patches | lax: same function, speed only
    c.model.width = 1.0  # feature maps x width (12 -> 12 w), H3 units x width; 1 = the 1989 network

    c.loss = "mse"  # mse (mean over outputs, +-1 targets) | cross_entropy (softmax of the outputs)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"  # sgd | adamw | sdlm (the paper's diagonal Levenberg-Marquardt)
    c.optimizer.learning_rate = 0.03
    c.optimizer.schedule = "constant"  # constant | linear (learning_rate -> final_learning_rate, set each pass)
    c.optimizer.final_learning_rate = config_dict.placeholder(float)  # the last pass's rate under schedule=linear
    c.optimizer.weight_decay = 0.01  # adamw: decoupled weight decay (torch's default 0.01, not optax's 1e-4)
    c.optimizer.b1 = 0.9  # adamw
    c.optimizer.b2 = 0.999  # adamw
    c.optimizer.eps = 1e-8  # adamw
    c.optimizer.sdlm_mu = 0.02  # sdlm: the step is learning_rate / (sdlm_mu + h) per parameter
    c.optimizer.sdlm_estimator = "becker_lecun"  # sdlm: becker_lecun (the paper's) | exact_ggn
    c.optimizer.sdlm_samples = 500  # sdlm: digits the diagonal h is re-estimated on before each pass

    c.augment = ml_collections.ConfigDict()
    c.augment.name = "none"  # none | shift (a random shift of each training digit, every step)
    c.augment.max_shift = 1  # shift: at most this many pixels in x and in y
    c.augment.mode = "roll"  # shift: roll (pixels wrap round, as Karpathy) | fill (background -1 comes in)

    c.train = ml_collections.ConfigDict()
    c.train.passes = 23  # passes over the training set
    c.train.batch_size = 1  # 1989: one digit per update
    c.train.shuffle = False  # 1989: the same fixed order every pass
    c.train.eval_every = 1  # evaluate both splits every this many passes (and after the last)

    c.sweep = ml_collections.ConfigDict()
    c.sweep.rows = ""  # comma-separated presets of the config file to run as one sweep ('' = a single run)
    c.sweep.grid = ""  # overrides to cross with the rows: "optimizer.learning_rate=0.01,0.03;train.passes=10,20"
    # rows that differ only in optimiser hyperparameters (learning_rate; AdamW's weight_decay)
    # train side by side in one compiled program, the values as data (equal to float rounding)
    c.sweep.together = True

    c.reference = ml_collections.ConfigDict()  # the published figures a table shows beside ours
    c.reference.label = ""
    c.reference.dataset = ""  # the dataset they were measured on (shown only beside runs on it)
    c.reference.train_error = config_dict.placeholder(float)
    c.reference.test_error = config_dict.placeholder(float)
    return c


def _choice(options) -> Callable[[Any], str | None]:
    """The rule of a field that takes one of ``options`` (a home module's tuple or dict, used as it is)."""

    def check(v):
        return None if v in options else f"valid: {', '.join(options)}"

    check.options = options  # tests/test_imports.py: the home module's object itself, not a copy
    return check


def _number(lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False, integer=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
            return f"expected {'an integer' if integer else 'a number'}"
        if not math.isfinite(v):
            return "expected a finite number"
        if v < lo or (lo_open and v == lo) or v > hi or (hi_open and v == hi):
            left = "(" if lo_open or lo == -math.inf else "["  # infinities are refused above: open ends
            right = ")" if hi_open or hi == math.inf else "]"
            return f"valid: {'integer ' if integer else ''}in {left}{_bound(lo)}, {_bound(hi)}{right}"
        return None

    return check


def _bound(x) -> str:
    return f"{x:g}" if not math.isfinite(x) or x != int(x) else str(int(x))


def _optional_path(v):
    if v is None:
        return None
    if not isinstance(v, str):
        return "expected a path or None"
    # Path('') is the current folder; an empty --config.data.source_dir= must not mean it
    return None if v.strip() else "an empty path; give a directory, or leave the field unset (None)"


def _bool(v):
    return None if isinstance(v, bool) else "expected True or False"


def _optional_int(lo):
    check = _number(lo, integer=True)
    return lambda v: None if v is None else check(v)


def _optional_number(lo, lo_open=False):
    check = _number(lo, lo_open=lo_open)
    return lambda v: None if v is None else check(v)


def _url(v):
    return None if isinstance(v, str) and v.split("://")[0] in ("http", "https", "file") else "expected an http(s):// or file:// URL"


def _width(v):
    problem = _number(0.25, 16.0)(v)
    if problem:
        return problem + " with 4 * width a whole number"
    return None if abs(round(4 * v) - 4 * v) < 1e-9 else "valid: 4 * width a whole number (0.25, 0.5, 0.75, 1, ...)"


# Every field, with its rule beyond its type (None: no rule). ConfigDict fixes a
# field's type once it holds a value (a str assigned to a float field raises
# TypeError), so types are checked here only for the placeholder fields (None
# until set); the number rules still refuse a non-number, which they could not
# compare.
SCHEMA: dict[str, Callable[[Any], str | None] | None] = {
    "seed": _number(0, 2**32 - 1, integer=True),
    "num_seeds": _number(1, 1024, integer=True),
    "data.name": _choice(data.DATASETS),
    "data.source_dir": _optional_path,
    "data.tfds_dir": _optional_path,
    "data.mnist_url": _url,
    "data.train_size": _optional_int(1),
    "data.train_subset": _choice(data.SUBSETS),
    "data.subset_seed": _number(0, 2**32 - 1, integer=True),
    "data.validation_size": _optional_int(1),
    "model.activation": _choice(model.ACTIVATIONS),
    "model.output_activation": _choice(model.OUTPUT_ACTIVATIONS),
    "model.dropout": _number(0.0, 1.0, hi_open=True),
    "model.output_bias_init": _number(),
    "model.hidden_pad_value": _number(),
    "model.conv": _choice(model.CONV_IMPLS),
    "model.width": _width,
    "loss": _choice(losses.LOSSES),
    "optimizer.name": _choice(optimizers.OPTIMIZERS),
    "optimizer.learning_rate": _number(0.0, lo_open=True),
    "optimizer.schedule": _choice(optimizers.SCHEDULES),
    "optimizer.final_learning_rate": _optional_number(0.0, lo_open=True),
    "optimizer.weight_decay": _number(0.0),
    "optimizer.b1": _number(0.0, 1.0, hi_open=True),
    "optimizer.b2": _number(0.0, 1.0, hi_open=True),
    "optimizer.eps": _number(0.0, lo_open=True),
    "optimizer.sdlm_mu": _number(0.0, lo_open=True),
    "optimizer.sdlm_estimator": _choice(sdlm.ESTIMATORS),
    "optimizer.sdlm_samples": _number(1, integer=True),
    "augment.name": _choice(augment.AUGMENTATIONS),
    "augment.max_shift": _number(1, 8, integer=True),
    "augment.mode": _choice(augment.SHIFT_MODES),
    "train.passes": _number(1, integer=True),
    "train.batch_size": _number(1, integer=True),
    "train.shuffle": _bool,  # ConfigDict checks this too; kept for configs edited under ignore_type()
    "train.eval_every": _number(1, integer=True),
    "sweep.rows": None,
    "sweep.grid": None,
    "sweep.together": _bool,
    "reference.label": None,
    "reference.dataset": None,
    "reference.train_error": _optional_number(0.0),
    "reference.test_error": _optional_number(0.0),
}


def _cross_checks(c) -> None:
    """Checks that involve several fields, the split sizes among them (``data.check_config_sizes``:
    before loading, with the sizes known of mnist1989 and usps; ``data.for_config`` checks again after)."""
    o = c.optimizer
    if o.schedule == "linear" and o.final_learning_rate is None:
        raise ConfigError("config.optimizer.final_learning_rate=None: schedule=linear needs the last pass's rate (> 0)")
    data.check_config_sizes(c)


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
            raise ConfigError(f"config.{path}: unknown field; {field_hint(path, list(SCHEMA))}")
    for path, check in SCHEMA.items():
        if path not in fields:
            raise ConfigError(f"config.{path}: missing (start config files from lecun_jax.config.base())")
        problem = check and check(fields[path])
        if problem:
            raise ConfigError(f"config.{path}={fields[path]!r}: {problem}")
    _cross_checks(c)
    return c


def load_file(path: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """The ConfigDict that config file ``path`` returns from ``get_config(arg)``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    label = f"{path}{':' + arg if arg else ''}"
    spec = importlib.util.spec_from_file_location(f"_lecun_jax_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a Python file; a config file is a .py file whose get_config() returns a ConfigDict")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        config = module.get_config(arg) if arg else module.get_config()
    except Exception as e:  # a config file is user code: report it in one line
        raise ConfigError(f"{label}: {type(e).__name__}: {' '.join(str(e).split())}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"{label}: get_config() returned {type(config).__name__}, not an ml_collections.ConfigDict "
            "(start from lecun_jax.config.base())"
        )
    return config


def did_you_mean(path: str, fields: list[str]) -> str | None:
    """The field closest to ``path``; an abbreviation by initials (lr: learning_rate) counts as close."""
    section, _, leaf = path.rpartition(".")
    for f in fields:
        f_section, _, f_leaf = f.rpartition(".")
        if f_section == section and "".join(w[0] for w in f_leaf.split("_")) == leaf:
            return f
    leaves = [f.rpartition(".")[2] for f in fields if f.rpartition(".")[0] == section]
    if leaves:  # a known section: the closest of its own fields (a shared "optimizer." says nothing)
        near = difflib.get_close_matches(leaf, leaves, n=1)
        return f"{section + '.' if section else ''}{near[0]}" if near else None
    near = difflib.get_close_matches(path, fields, n=1)
    return near[0] if near else None


def field_hint(path: str, fields: list[str]) -> str:
    """What to say of an unknown field, briefly: the closest field, or the fields of its section,
    and where they all are (one short line, not a list of every field)."""
    near = did_you_mean(path, fields)
    section = path.rpartition(".")[0]
    siblings = [f.rpartition(".")[2] for f in fields if f.rpartition(".")[0] == section and section]
    if near:
        hint = f"did you mean config.{near}?"
    elif siblings:
        hint = f"config.{section} has {', '.join(siblings)}."
    else:
        hint = f"sections: {', '.join(dict.fromkeys(f.split('.')[0] for f in fields if '.' in f))}."
    return f"{hint} All {len(fields)} fields, with their defaults: lecun_jax/config.py, base()"


def get_path(c, path: str):
    for key in path.split("."):
        c = c[key]
    return c


def set_path(c, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        c = c[key]
    c[leaf] = value
