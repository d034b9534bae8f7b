"""The run configuration: every field, its default (the 1989 recipe), and its check.

:data:`FIELDS` is the one table of them (default, rule, meaning); :func:`base`
is built from it. Config files under ``configs/`` start from :func:`base` and change fields;
:func:`validate` checks a finished config before anything is loaded or
compiled, and names the field, the value and what would be valid.

Each valid choice is the name its home module defines (``model.ACTIVATIONS``,
``losses.LOSSES``, ...), used here as it is, and the split-size rules are
``data.size_problem``'s: no copies to keep in step. None of those modules
imports this one (tests/test_imports.py checks the graph has no cycle).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import math
from pathlib import Path
from typing import Any, Callable

import ml_collections
from ml_collections import config_dict

from lecun_jax.core import augment, losses, model, optimizers, sdlm, train
from lecun_jax import data
from lecun_jax.data import ConfigError  # noqa: F401  (defined beside the size rules, which raise it after loading too)


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


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field: its default (the 1989 recipe), its rule beyond its type
    (a function that returns what is wrong with a value, or None; ``rule=None``:
    any value of its type), what it means, and, for a field whose default is None
    (a placeholder), the type it takes once set."""

    default: Any
    rule: Callable[[Any], str | None] | None
    help: str = ""
    type: type | None = None

    @property
    def kind(self) -> type:
        """The type the field holds (bool, int, float or str)."""
        return self.type or type(self.default)


def _placeholder(kind: type, rule, help: str) -> Field:
    return Field(None, rule, help, kind)


# Every field, once: base() is built from this table and validate() checks by it,
# so no field can be in one and not the other. ConfigDict fixes a field's type once
# it holds a value (a str assigned to a float field raises TypeError), so types are
# checked by the rules only for the placeholders (None until set); the number rules
# still refuse a non-number, which they could not compare.
FIELDS: dict[str, Field] = {
    "seed": Field(1337, _number(0, 2**32 - 1, integer=True), "one seed; every random stream is split from it with fold_in"),
    "num_seeds": Field(1, _number(1, 1024, integer=True), "independent replicas trained at once (vmapped): seeds fold_in(seed, i)"),

    "data.name": Field("mnist1989", _choice(data.DATASETS),
                       "mnist1989 (Karpathy's proxy) | usps (the paper's digits) | mnist (every MNIST digit)"),
    "data.source_dir": _placeholder(str, _optional_path, "directory of the official files; None: shipped copy / download"),
    "data.tfds_dir": _placeholder(str, _optional_path, "where TFDS keeps prepared data; None: TFDS's default"),
    "data.mnist_url": Field(data.MNIST_URL, _url, "where data.name=mnist downloads the official files from"),
    "data.train_size": _placeholder(int, _optional_int(1), "train on this many digits; None: all"),
    "data.train_subset": Field("prefix", _choice(data.SUBSETS),
                               "prefix (the first train_size) | random (a subset drawn by subset_seed)"),
    "data.subset_seed": Field(0, _number(0, 2**32 - 1, integer=True), "the draw of train_subset=random; the same for every replica"),
    "data.validation_size": _placeholder(int, _optional_int(1), "hold out the last N training digits as the test split (tuning)"),

    "model.activation": Field("tanh", _choice(model.ACTIVATIONS), "tanh | relu | scaled_tanh (1.7159 tanh(2a/3)) (hidden layers)"),
    "model.output_activation": Field("tanh", _choice(model.OUTPUT_ACTIVATIONS), "tanh | linear | scaled_tanh"),
    "model.dropout": Field(0.0, _number(0.0, 1.0, hi_open=True), "dropout rate on the input of H3, in [0, 1)"),
    "model.output_bias_init": Field(-1.0, _number(), "nine of ten targets are -1"),
    "model.hidden_pad_value": Field(-1.0, _number(), "H1 padding before H2 (Karpathy: -1 even with relu)"),
    "model.conv": Field("auto", _choice(model.CONV_IMPLS),
                        "auto (by batch size: conv.PATCHES_MAX_BATCH) | patches | lax: same function, speed only"),
    "model.width": Field(1.0, _width, "feature maps x width (12 -> 12 w), H3 units x width; 1 = the 1989 network"),
    "model.init_rule": Field("sqrt", _choice(model.INIT_RULES),
                             "initial weights U(+-2.4/sqrt(F)), F the fan-in (sqrt, Karpathy's reading) | U(+-2.4/F) "
                             "(linear, as the 1989 paper and LeNet-5 print it)"),

    "loss": Field("mse", _choice(losses.LOSSES), "mse (mean over outputs, +-1 targets) | cross_entropy (softmax of the outputs)"),
    "loss_target": Field(1.0, _number(0.0, 1.7159, lo_open=True),
                         "mse's targets: +t for the true class, -t for the others (1989: 1); cross_entropy has none"),

    "optimizer.name": Field("sgd", _choice(optimizers.OPTIMIZERS), "sgd | adamw | sdlm (the paper's diagonal Levenberg-Marquardt)"),
    "optimizer.learning_rate": Field(0.03, _number(0.0, lo_open=True)),
    "optimizer.schedule": Field("constant", _choice(optimizers.SCHEDULES),
                                "constant | linear (learning_rate -> final_learning_rate, set each pass) | lenet5 "
                                "(LeNet-5's steps down, x1 x1 x.4 x.4 x.4 x.2 x.2 x.2 x.1 x4, then x.02, per pass)"),
    "optimizer.final_learning_rate": _placeholder(float, _optional_number(0.0, lo_open=True), "the last pass's rate under schedule=linear"),
    "optimizer.weight_decay": Field(0.01, _number(0.0), "adamw: decoupled weight decay (torch's default 0.01, not optax's 1e-4)"),
    "optimizer.b1": Field(0.9, _number(0.0, 1.0, hi_open=True), "adamw"),
    "optimizer.b2": Field(0.999, _number(0.0, 1.0, hi_open=True), "adamw"),
    "optimizer.eps": Field(1e-8, _number(0.0, lo_open=True), "adamw"),
    "optimizer.sdlm_mu": Field(0.02, _number(0.0, lo_open=True), "sdlm: the step is learning_rate / (sdlm_mu + h) per parameter"),
    "optimizer.sdlm_estimator": Field("becker_lecun", _choice(sdlm.ESTIMATORS), "sdlm: becker_lecun (the paper's) | exact_ggn"),
    "optimizer.sdlm_samples": Field(500, _number(1, integer=True), "sdlm: digits the diagonal h is re-estimated on before each pass"),
    "optimizer.sdlm_loss_scale": Field(1.0, _number(0.0, lo_open=True),
                                       "sdlm: h is the curvature of the loss times this (1: the mean over the 10 outputs; "
                                       "10: the summed squared error, LeNet-5's, for which sdlm_mu=0.02 was set)"),

    "augment.name": Field("none", _choice(augment.AUGMENTATIONS), "none | shift (a random shift of each training digit, every step)"),
    "augment.max_shift": Field(1, _number(1, 8, integer=True), "shift: at most this many pixels in x and in y"),
    "augment.mode": Field("roll", _choice(augment.SHIFT_MODES), "shift: roll (pixels wrap round, as Karpathy) | fill (background -1 comes in)"),

    "train.passes": Field(23, _number(1, integer=True), "passes over the training set"),
    "train.batch_size": Field(1, _number(1, integer=True), "1989: one digit per update"),
    # ConfigDict checks a bool's type too; the rule is kept for configs edited under ignore_type()
    "train.shuffle": Field(False, _bool, "1989: the same fixed order every pass"),
    "train.order": Field("file", _choice(train.ORDERS),
                         "without shuffle: file (the file's order, for every seed) | seed (one permutation per "
                         "replica, from its own key, the same every pass)"),
    "train.eval_every": Field(1, _number(1, integer=True), "evaluate both splits every this many passes (and after the last)"),

    "sweep.rows": Field("", None, "comma-separated presets of the config file to run as one sweep ('' = a single run)"),
    "sweep.grid": Field("", None, "overrides to cross with the rows: \"optimizer.learning_rate=0.01,0.03;train.passes=10,20\""),
    "sweep.together": Field(False, _bool,
                            "rows that differ only in optimiser hyperparameters (learning_rate; AdamW's weight_decay) train side "
                            "by side in one compiled program, the values as data: faster, and equal to float rounding only"),

    "reference.label": Field("", None, "the published figure a table shows beside ours: whose it is"),
    "reference.dataset": Field("", None, "the dataset it was measured on (shown only beside runs on it)"),
    "reference.train_error": _placeholder(float, _optional_number(0.0), "its train error %"),
    "reference.test_error": _placeholder(float, _optional_number(0.0), "its test error %"),
    "reference.train_misses": _placeholder(int, _optional_int(0), "its train mistakes, where the paper counts them"),
    "reference.test_misses": _placeholder(int, _optional_int(0), "its test mistakes, where the paper counts them"),
    "reference.train_mse": _placeholder(float, _optional_number(0.0), "its train MSE (mean over digits and outputs)"),
    "reference.test_mse": _placeholder(float, _optional_number(0.0), "its test MSE"),
}


def base() -> ml_collections.ConfigDict:
    """The 1989 recipe (LeCun et al. 1989, as Karpathy 2022 reads it) on mnist1989: every field of :data:`FIELDS`."""
    c = ml_collections.ConfigDict()
    for path, f in FIELDS.items():
        *sections, leaf = path.split(".")
        node = c
        for s in sections:
            if s not in node:
                node[s] = ml_collections.ConfigDict()
            node = node[s]
        node[leaf] = config_dict.placeholder(f.type) if f.default is None else f.default
    return c


def _cross_checks(c) -> None:
    """Checks that involve several fields, the split sizes among them (``data.check_config_sizes``:
    before loading, with the sizes known of mnist1989 and usps; ``data.for_config`` checks again after)."""
    o = c.optimizer
    if o.schedule == "linear" and o.final_learning_rate is None:
        raise ConfigError("config.optimizer.final_learning_rate=None: schedule=linear needs the last pass's rate (> 0)")
    try:  # rules the core owns: it refuses the same arguments given by hand
        losses.get(c.loss, target=c.loss_target)
        train.check_order(c.train.order, c.train.shuffle)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None
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
        if path not in FIELDS:
            raise ConfigError(f"config.{path}: unknown field; {field_hint(path, list(FIELDS))}")
    for path, field in FIELDS.items():
        if path not in fields:
            raise ConfigError(f"config.{path}: missing (start config files from lecun_jax.config.base())")
        problem = field.rule and field.rule(fields[path])
        if problem:
            raise ConfigError(f"config.{path}={fields[path]!r}: {problem}")
    _cross_checks(c)
    return c


DEFAULT_CONFIG = "configs/lecun1989.py"  # the config of a command given no --config


def packaged_configs() -> Path:
    """The folder of the config files that come with the package: ``lecun_jax/configs`` of an
    installed wheel (pyproject.toml packages the checkout's ``configs/`` under that name), or
    the checkout's ``configs/`` itself when the package runs from its source tree."""
    spec = importlib.util.find_spec("lecun_jax.configs")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[1] / "configs"


def config_file(path: str | Path) -> Path:
    """The file a config path names: the path itself where it is a file (relative to the
    current folder, as a user types it), else ``configs/NAME`` is the packaged ``NAME``; so
    ``--config=configs/ablations.py:augment`` works from any folder, with a checkout or an
    installed wheel. Every config file this package loads is found here."""
    path = Path(path)
    if path.is_file() or path.is_absolute() or path.parts[:1] != ("configs",):
        return path
    packaged = packaged_configs().joinpath(*path.parts[1:])
    return packaged if packaged.is_file() else path


def load_file(path: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """The ConfigDict that config file ``path`` (found by :func:`config_file`) returns from ``get_config(arg)``."""
    given, path = Path(path), config_file(path)
    if not path.is_file():
        packaged = sorted(p.name for p in packaged_configs().glob("[!_]*.py")) if given.parts[:1] == ("configs",) else []
        raise ConfigError(f"config file {given} not found" + (f"; configs/ has {', '.join(packaged)}" if packaged else ""))
    label = f"{given}{':' + arg if arg else ''}"
    spec = importlib.util.spec_from_file_location(f"_lecun_jax_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{given}: not a Python file; a config file is a .py file whose get_config() returns a ConfigDict")
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
    return f"{hint} All {len(fields)} fields, with their defaults: lecun_jax/config.py, FIELDS"


def get_path(c, path: str):
    for key in path.split("."):
        c = c[key]
    return c


def literal(text: str):
    """A value written in an override's text (a grid's, a row's): a Python literal, else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def set_path(c, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        c = c[key]
    c[leaf] = value
