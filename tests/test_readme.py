"""The README's code works as written: its ```python blocks run, in order, in a
fresh folder, and say what they print; every command line it shows names files,
presets, modules, flags and config fields that exist, with values the config
accepts."""

import ast
import importlib.util
import re
import shlex
from pathlib import Path

import jax
import numpy as np
import pytest

from lecun_jax import config as config_lib
from lecun_jax import sweep
from conftest import REPO, SHARED_DATA

README = (REPO / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
DEFAULT_CONFIG = "configs/lecun1989.py"


def fenced(language: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block in ``language``."""
    return [(README[: m.start()].count("\n") + 2, m.group(2)) for m in FENCE.finditer(README) if m.group(1) == language]


def command_lines() -> list[str]:
    """Every ``python …`` command the README shows: lines of its bash blocks and
    inline code spans (which may wrap), split at ``&&``, comments dropped."""
    texts = [line for _, code in fenced("bash") for line in code.splitlines()]
    texts += [" ".join(span.split()) for span in re.findall(r"`([^`\n]+(?:\n[^`\n]+)?)`", FENCE.sub("", README))]
    commands = []
    for text in texts:
        for part in text.split("&&"):
            part = part.split(" #")[0].strip().removesuffix("&").strip()  # a trailing & starts it in the background
            if re.match(r"python3? ", part):  # an elided word ("…") is left out
                commands.append(" ".join(w for w in part.split() if "…" not in w))
    return list(dict.fromkeys(commands))


def launch_flags() -> set[str]:
    return set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", (REPO / "launch.py").read_text()))


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_launch(args: list[str]) -> None:
    """What launch.py would do before training: the config file and preset load,
    every override names a field and sets a valid value, every row of a sweep validates."""
    spec, overrides = DEFAULT_CONFIG, {}
    for arg in args:
        name, _, value = arg.removeprefix("--").partition("=")
        if name == "config":
            spec = value
        elif name.startswith("config."):
            overrides[name.removeprefix("config.")] = _value(value)
        else:
            assert name in launch_flags(), f"--{name}: launch.py has no such flag"
    path, _, preset = spec.partition(":")
    c = config_lib.load_file(REPO / path, preset or None)
    fields = config_lib.flatten(c)
    for field, value in overrides.items():
        assert field in fields, f"--config.{field}: no such config field"
        config_lib.set_path(c, field, value)  # ConfigDict refuses a value of another type
    if c.sweep.rows or c.sweep.grid:
        assert sweep.expand(REPO / path, c, overrides)  # validates every row
    else:
        config_lib.validate(c)


def test_the_readme_shows_the_commands_this_test_checks():
    commands = command_lines()
    assert "python launch.py" in commands and "python -m pytest" in commands
    assert any("--config.sweep" in c or ":all" in c for c in commands)
    assert any(c.startswith("python -m lecun_jax.") for c in commands)


@pytest.mark.parametrize("command", command_lines(), ids=str)
def test_every_command_line_names_what_exists(command):
    words = shlex.split(command)[1:]
    if words[0] == "launch.py":
        check_launch(words[1:])
    elif words[0] == "-m":
        module = words[1]
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"python -m {module}: no such module"
        if module.startswith("lecun_jax."):
            assert 'if __name__ == "__main__":' in Path(spec.origin).read_text(), f"{module} is not runnable"
    else:
        assert (REPO / words[0]).is_file(), f"{words[0]} not found"


def test_every_config_field_the_readme_names_exists():
    named = set(re.findall(r"--config\.([\w.]+)=", README))
    assert named and not named - set(config_lib.SCHEMA), f"not config fields: {sorted(named - set(config_lib.SCHEMA))}"


def test_the_python_blocks_run_in_order(tmp_path, monkeypatch):
    """The blocks share one namespace (the second uses the first's config), as in
    a notebook; the official MNIST files stand where the README writes /path/to/mnist."""
    mnist = SHARED_DATA / "mnist"
    if not mnist.is_dir():
        pytest.skip(f"a block reads the official MNIST files; not found at {mnist} (../shared/data beside the checkout)")
    blocks = fenced("python")
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__readme__"}
    for line, code in blocks:
        code = code.replace('"/path/to/mnist"', repr(str(mnist)))
        exec(compile(code, f"README.md, block at line {line}", "exec"), ns)
    # what the blocks' comments say they give
    assert (tmp_path / "runs" / "mlp" / "summary.json").is_file()
    assert set(ns["run"].params) == {"Dense_0", "Dense_1"}
    assert sum(x.size for x in jax.tree.leaves(ns["run"].params)) == 8020
    assert np.shape(ns["metrics"]["test"]["misses"]) == (8, ns["c"].train.passes)
    example = ns["ds"]["train"][0]
    assert example["image"].shape == (16, 16, 1) and example["image"].dtype == np.float32
    assert (int(example["label"]), int(example["index"])) == (6, 0)
    assert len(ns["usps"].train) == 7291 and len(ns["mnist"].train) == 7291
