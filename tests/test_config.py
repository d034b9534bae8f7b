"""Config files equal the recipes they name; validation names the field, the value and what is valid."""

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pytest

from lecun_jax import config as config_lib
from lecun_jax import data
from conftest import REPO


def load_config(spec: str):
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("cfg", REPO / path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def test_lecun1989_is_the_1989_recipe():
    # docs/spec.md, "The 1989 training recipe"
    for dataset in ("mnist1989", "usps"):
        c = load_config(f"configs/lecun1989.py:{dataset}")
        config_lib.validate(c)
        assert c.data.name == dataset
        assert c.loss == "mse"
        assert (c.optimizer.name, c.optimizer.learning_rate) == ("sgd", 0.03)
        assert (c.train.passes, c.train.batch_size, c.train.shuffle) == (23, 1, False)
        assert (c.model.activation, c.model.output_activation) == ("tanh", "tanh")
        assert (c.model.dropout, c.model.output_bias_init, c.model.hidden_pad_value) == (0.0, -1.0, -1.0)
    assert load_config("configs/lecun1989.py").data.name == "mnist1989"
    with pytest.raises(ValueError, match="unknown dataset; valid: mnist1989, usps"):
        load_config("configs/lecun1989.py:cifar")



def test_base_is_the_field_table():
    """base() holds every field of FIELDS, each at its default with its type (a placeholder:
    None, keeping the type it takes), so no field is in base() and not validated, or the reverse."""
    c = config_lib.base()
    assert sorted(config_lib.flatten(c)) == sorted(config_lib.FIELDS)
    for path, field in config_lib.FIELDS.items():
        section, _, leaf = path.rpartition(".")
        node = config_lib.get_path(c, section) if section else c
        assert node.get_type(leaf) is field.kind and node[leaf] == field.default, path
    # the 1989 recipe, written out here rather than read from the table
    assert (c.seed, c.num_seeds, c.loss, c.optimizer.name, c.optimizer.learning_rate) == (1337, 1, "mse", "sgd", 0.03)
    assert (c.train.passes, c.train.batch_size, c.train.shuffle, c.sweep.together) == (23, 1, False, False)
    assert c.data.train_size is None and c.data.source_dir is None
    with pytest.raises(TypeError):
        c.data.train_size = "300"  # a placeholder takes only its type
    config_lib.validate(c)


BAD = [
    ("optimizer.learning_rate", 0.0, "valid: in (0, inf)"),
    ("optimizer.learning_rate", -0.03, "valid: in (0, inf)"),
    ("optimizer.learning_rate", math.nan, "finite"),
    ("optimizer.learning_rate", "fast", "expected a number"),
    ("optimizer.name", "adam", "valid: sgd, adamw"),
    ("optimizer.schedule", "cosine", "valid: constant, linear, lenet5"),
    ("optimizer.final_learning_rate", -1.0, "valid: in (0, inf)"),
    ("optimizer.weight_decay", -0.01, "valid: in [0, inf)"),
    ("optimizer.b2", 1.0, "valid: in [0, 1)"),
    ("loss", "hinge", "valid: mse, cross_entropy"),
    ("model.activation", "sigmoid", "valid: tanh, relu, scaled_tanh"),
    ("model.output_activation", "softmax", "valid: tanh, linear, scaled_tanh"),
    ("model.dropout", 1.0, "valid: in [0, 1)"),
    ("model.dropout", -0.1, "valid: in [0, 1)"),
    ("model.conv", "fft", "valid: auto, patches, lax"),
    ("augment.name", "rotate", "valid: none, shift"),
    ("augment.mode", "wrap", "valid: roll, fill"),
    ("augment.max_shift", 0, "valid: integer in [1, 8]"),
    ("train.passes", 0, "valid: integer in [1, inf)"),
    ("train.passes", 2.5, "expected an integer"),
    ("train.batch_size", 0, "valid: integer in [1, inf)"),
    ("train.batch_size", 10_000, "larger than the 7,291 training digits; valid: 1 to 7291"),
    ("train.shuffle", "yes", "expected True or False"),
    ("data.name", "cifar10", "valid: mnist1989, usps, mnist"),
    ("data.source_dir", 3, "expected a path or None"),
    ("data.train_size", 0, "valid: integer in [1, inf)"),
    ("data.train_size", 8000, "mnist1989 has 7,291 training digits; valid: 1 to 7291"),
    ("data.train_subset", "tail", "valid: prefix, random"),
    ("data.mnist_url", "ftp://x", "expected an http(s):// or file:// URL"),
    ("seed", -1, "valid: integer in [0, 4294967295]"),
    ("num_seeds", 0, "valid: integer in [1, 1024]"),
    ("model.output_bias_init", math.inf, "finite"),
    ("optimizer.learning_rate", math.inf, "finite"),
    ("data.source_dir", "", "an empty path"),  # Path('') would be the current folder
    ("data.tfds_dir", " ", "an empty path"),
    ("model.init_rule", "xavier", "valid: sqrt, linear"),
    ("loss_target", 2.0, "valid: in (0, 1.7159]"),
    ("optimizer.sdlm_loss_scale", 0.0, "valid: in (0, inf)"),
    ("train.order", "random", "valid: file, seed"),
]


@pytest.mark.parametrize("field,value,valid", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_validation_names_field_value_and_what_is_valid(field, value, valid):
    c = config_lib.base()
    with c.ignore_type():  # let a field take a value of another type, as a hand-edited config file can
        node = c
        *parents, leaf = field.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(c)
    message = str(e.value)
    assert message.startswith(f"config.{field}={value!r}: ")
    assert valid in message
    assert "\n" not in message


def test_linear_schedule_needs_a_final_rate():
    c = config_lib.base()
    c.optimizer.schedule = "linear"
    with pytest.raises(config_lib.ConfigError, match=r"config.optimizer.final_learning_rate=None: schedule=linear needs"):
        config_lib.validate(c)
    c.optimizer.final_learning_rate = 1e-4
    config_lib.validate(c)


@pytest.mark.parametrize("fields,message", [
    ({"loss": "cross_entropy", "loss_target": 0.8}, r"^config\.loss_target=0\.8: loss=cross_entropy has no targets"),
    ({"train.order": "seed", "train.shuffle": True}, r"^config\.train\.order='seed' with train\.shuffle=True: "),
], ids=["loss_target-with-cross_entropy", "order-seed-with-shuffle"])
def test_fields_that_exclude_each_other(fields, message):
    c = config_lib.base()
    for path, value in fields.items():
        config_lib.set_path(c, path, value)
    with pytest.raises(config_lib.ConfigError, match=message) as e:
        config_lib.validate(c)
    assert "\n" not in str(e.value)


def test_batch_size_against_a_train_size():
    c = config_lib.base()
    c.data.train_size, c.train.batch_size = 100, 101
    with pytest.raises(config_lib.ConfigError, match=r"config.train.batch_size=101: larger than the 100 training digits"):
        config_lib.validate(c)


def _loads(monkeypatch, name: str, num_train: int) -> None:
    """data.load returns a ``name`` dataset of ``num_train`` blank training digits (nothing read from disk)."""
    def split(n):
        return data.Split(images=np.full((n, 16, 16, 1), -1.0, np.float32), labels=np.zeros(n, np.int32))

    monkeypatch.setattr(data, "load", lambda *a, **k: data.Dataset(name=name, train=split(num_train), test=split(10)))


SIZE_FAULTS = [  # (fields, the message before loading, and after loading a dataset of that many digits)
    ({"data.name": "usps", "data.train_size": 8000}, "config.data.train_size=8000: usps has 7,291 training digits; valid: 1 to 7291"),
    ({"data.name": "mnist1989", "data.validation_size": 7291},
     "config.data.validation_size=7291: must leave training digits of the 7,291; valid: 1 to 7290"),
    ({"data.name": "usps", "data.validation_size": 1291, "train.batch_size": 6001},
     "config.train.batch_size=6001: larger than the 6,000 training digits; valid: 1 to 6000"),
    ({"data.name": "usps", "optimizer.name": "sdlm", "optimizer.sdlm_samples": 7292},
     "config.optimizer.sdlm_samples=7292: larger than the 7,291 training digits; valid: 1 to 7291"),
]


@pytest.mark.parametrize("fields,message", SIZE_FAULTS, ids=[m.split(":")[0] for _, m in SIZE_FAULTS])
def test_split_sizes_are_one_rule_before_and_after_loading(monkeypatch, fields, message):
    """data.size_problem is the rule: validate (sizes known before loading) and data.for_config
    (the loaded size) report the same field, value and valid range."""
    c = config_lib.base()
    for path, value in fields.items():
        config_lib.set_path(c, path, value)
    with pytest.raises(config_lib.ConfigError) as before:
        config_lib.validate(c)
    _loads(monkeypatch, c.data.name, data.SPLIT_SIZES["train"])
    with pytest.raises(config_lib.ConfigError) as after:
        data.for_config(c)
    assert str(before.value) == str(after.value) == message


def test_split_sizes_of_a_dataset_known_only_after_loading(monkeypatch):
    """mnist's size depends on its source: validate lets train_size pass, for_config refuses what the
    loaded copy does not have, in the words the same rule uses for usps before loading."""
    c = config_lib.base()
    c.data.name, c.data.train_size = "mnist", 100
    config_lib.validate(c)
    _loads(monkeypatch, "mnist", 50)
    with pytest.raises(config_lib.ConfigError, match=r"^config.data.train_size=100: mnist has 50 training digits; valid: 1 to 50$"):
        data.for_config(c)
    c.data.train_size, c.data.validation_size = None, 50
    with pytest.raises(config_lib.ConfigError, match=r"^config.data.validation_size=50: must leave training digits of the 50; valid: 1 to 49$"):
        data.for_config(c)
    c.data.validation_size = 10
    held_out = data.for_config(c)
    assert (len(held_out.train), len(held_out.test)) == (40, 10)


def test_select_train_and_hold_out_use_the_same_rule():
    blank = data.Split(images=np.zeros((50, 16, 16, 1), np.float32), labels=np.zeros(50, np.int32))
    ds = data.Dataset(name="mnist", train=blank, test=blank)
    with pytest.raises(data.DataError, match=r"^data.train_size=51: mnist has 50 training digits; valid: 1 to 50$"):
        data.select_train(ds, 51)
    with pytest.raises(data.DataError, match=r"^data.validation_size=50: must leave training digits of the 50; valid: 1 to 49$"):
        data.hold_out(ds, 50)
    assert data.size_problem("mnist", 50, train_size=51) == "data.train_size=51: mnist has 50 training digits; valid: 1 to 50"
    assert data.size_problem("mnist", None, train_size=51, batch_size=52).startswith("train.batch_size=52: larger than the 51")
    assert data.size_problem("mnist", 50, train_size=1, validation_size=1).endswith("valid: none (holding out needs 2 training digits or more)")


def test_unknown_and_missing_fields():
    c = config_lib.base()
    c.optimizer.lr = 0.1  # a typo in a config file
    with pytest.raises(config_lib.ConfigError, match=r"config.optimizer.lr: unknown field; did you mean config.optimizer.learning_rate\? "
                       rf"All {len(config_lib.FIELDS)} fields, with their defaults: lecun_jax/config.py"):
        config_lib.validate(c)
    c = config_lib.base()
    del c.train["shuffle"]
    with pytest.raises(config_lib.ConfigError, match=r"config.train.shuffle: missing"):
        config_lib.validate(c)


def test_range_messages_are_true_of_their_ends():
    """A closed end ("]") is a value the rule takes; an open one (")", inf included) is refused."""
    tried = 0
    for path, field in config_lib.FIELDS.items():
        check = field.rule
        for probe in (-(10**300), 10**300, -1e300, 1e300):
            message = check(probe) if check else None
            m = re.search(r"in ([\[(])(\S+), (\S+?)([\])])", message or "")
            if not m:
                continue
            for end, closed in ((float(m[2]), m[1] == "["), (float(m[3]), m[4] == "]")):
                value = int(end) if "integer" in message and math.isfinite(end) else end
                assert (check(value) is None) == closed, (path, message, value)
                tried += 1
    assert tried >= 30


def _config_file(tmp_path, body):
    path = tmp_path / "c.py"
    path.write_text(body)
    return path


@pytest.mark.parametrize("returns", ["{'seed': 1}", "None", "3"])
def test_a_config_file_must_return_a_config_dict(tmp_path, returns):
    path = _config_file(tmp_path, f"def get_config():\n    return {returns}\n")
    with pytest.raises(config_lib.ConfigError, match=r"get_config\(\) returned (dict|NoneType|int), not an ml_collections.ConfigDict"):
        config_lib.load_file(path)


def test_a_config_file_must_be_python(tmp_path):
    with pytest.raises(config_lib.ConfigError, match=r"passwd: not a Python file"):
        config_lib.load_file("/etc/passwd")
    path = _config_file(tmp_path, "def get_config(:\n")
    with pytest.raises(config_lib.ConfigError, match=r"c.py: SyntaxError"):
        config_lib.load_file(path)


def test_unknown_field_messages_are_short():
    fields = list(config_lib.FIELDS)
    for path, start in [("optimizer.lr", "did you mean config.optimizer.learning_rate?"),
                        ("optimizer.qqqq", "config.optimizer has name, learning_rate, "),
                        ("qqqq", "sections: data, model, ")]:
        hint = config_lib.field_hint(path, fields)
        assert hint.startswith(start) and hint.endswith(f"All {len(fields)} fields, with their defaults: lecun_jax/config.py, FIELDS")
        assert len(hint) < 250 and "\n" not in hint


def test_a_config_path_is_the_file_of_the_current_folder_else_the_packaged_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    packaged = config_lib.config_file("configs/ablations.py")
    assert packaged.read_bytes() == (REPO / "configs" / "ablations.py").read_bytes()  # the checkout's file, or its wheel copy
    assert config_lib.load_file("configs/ablations.py", "augment").augment.name == "shift"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "ablations.py").write_text("from lecun_jax import config\n\ndef get_config(arg=None):\n    return config.base()\n")
    assert config_lib.config_file("configs/ablations.py") == Path("configs/ablations.py")  # the user's own comes first
    assert config_lib.load_file("configs/ablations.py", "augment").augment.name == "none"
    assert config_lib.config_file("other/x.py") == Path("other/x.py")  # only configs/ names the packaged ones
    with pytest.raises(config_lib.ConfigError, match=r"^config file configs/nope.py not found; configs/ has ablations.py, lecun1989.py, "):
        config_lib.load_file("configs/nope.py")
