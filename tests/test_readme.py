"""The README and docs/ work as written: their ```python blocks run, in order, in
a fresh folder, and say what they print; every command line they show (README.md,
docs/*.md, benchmarks/README.md) names files, presets, modules, flags and config
fields that exist, with values the config accepts — checked, not run, so the
long sweeps cost nothing here. They state current facts a user can reproduce
from the repository alone: no dates, no commit hashes (those live in
CHANGELOG.md) and no paths outside the checkout."""

import ast
import importlib.util
import re
import shlex
from pathlib import Path

import jax
import numpy as np
import pytest

from lecun_jax import config as config_lib
from lecun_jax.studies import sweep
from conftest import REPO, SHARED_DATA

README = (REPO / "README.md").read_text()
DOCS = sorted((REPO / "docs").glob("*.md"))
# every text whose commands are checked and which must hold only current facts
TEXTS = {p.relative_to(REPO).as_posix(): p.read_text() for p in [REPO / "README.md", *DOCS, REPO / "benchmarks" / "README.md"]}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
DEFAULT_CONFIG = "configs/lecun1989.py"
README_MAX_LINES = 300
ABSL_FLAGS = {"verbosity", "v", "logtostderr", "alsologtostderr", "helpfull", "help", "helpshort"}
DATE = re.compile(r"\b20\d{2}-[01]\d-[0-3]\d\b")
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")  # hex with a letter and a digit


def fenced(language: str, text: str = README) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block in ``language``."""
    return [(text[: m.start()].count("\n") + 2, m.group(2)) for m in FENCE.finditer(text) if m.group(1) == language]


def command_lines(text: str = README) -> list[str]:
    """Every ``python …`` command a text shows: lines of its bash blocks and
    inline code spans (which may wrap), split at ``&&``, comments dropped."""
    texts = [line for _, code in fenced("bash", text) for line in code.splitlines()]
    texts += [" ".join(span.split()) for span in re.findall(r"`([^`\n]+(?:\n[^`\n]+)?)`", FENCE.sub("", text))]
    commands = []
    for line in texts:
        for part in line.split("&&"):
            part = part.split(" #")[0].strip().removesuffix("&").strip()  # a trailing & starts it in the background
            if re.match(r"python3? ", part):  # an elided word ("…") is left out
                commands.append(" ".join(w for w in part.split() if "…" not in w))
    return list(dict.fromkeys(commands))


def all_commands() -> list[tuple[str, str]]:
    """(file, command) for every command line of every checked text."""
    return [(name, command) for name, text in TEXTS.items() for command in command_lines(text)]


def defined_flags(script: Path) -> set[str]:
    return set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", script.read_text()))


def launch_flags() -> set[str]:
    return defined_flags(REPO / "lecun_jax" / "launch.py")  # launch.py runs it


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
            assert name in launch_flags() | ABSL_FLAGS, f"--{name}: launch.py has no such flag"
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


def check_script(script: Path, args: list[str]) -> None:
    """A script with absl flags (the benchmarks) is given only flags it defines."""
    names = defined_flags(script)
    if not names:
        return
    for arg in args:
        if arg.startswith("--"):
            name = arg.removeprefix("--").partition("=")[0]
            assert name in names | ABSL_FLAGS, f"--{name}: {script.relative_to(REPO)} has no such flag"


def test_the_readme_shows_the_commands_this_test_checks():
    commands = command_lines()
    assert "python launch.py" in commands and "python -m pytest" in commands
    assert any("--config.sweep" in c or ":all" in c for c in commands)
    assert any(c.startswith("python -m lecun_jax.") for c in commands)


def test_the_readme_gives_exactly_two_commands_to_start_with():
    """One installs and runs the main job, one installs and runs the tests (as .ci/run does)."""
    section = README.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    blocks = [code.strip() for _, code in fenced("bash", section)]
    assert blocks == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install . && python launch.py",
        "python3 -m venv .venv && . .venv/bin/activate && pip install '.[test]' && python -m pytest",
    ]


@pytest.mark.parametrize("where,command", all_commands(), ids=lambda x: str(x))
def test_every_command_line_names_what_exists(where, command):
    assert "../shared" not in command, f"{where}: a user has only the repository: {command}"
    words = shlex.split(command)[1:]
    if words[:2] == ["-m", "lecun_jax.launch"]:  # the command launch.py runs, checked as launch.py
        words = ["launch.py", *words[2:]]
    if words[0] == "launch.py":
        check_launch(words[1:])
    elif words[0] == "-m":
        module = words[1]
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"python -m {module}: no such module"
        if module.startswith("lecun_jax."):
            main = Path(spec.origin).with_name("__main__.py")  # a package runs its __main__.py
            main = main if spec.submodule_search_locations and main.is_file() else Path(spec.origin)
            assert 'if __name__ == "__main__":' in main.read_text(), f"{module} is not runnable"
    else:
        assert (REPO / words[0]).is_file(), f"{where}: {words[0]} not found"
        check_script(REPO / words[0], words[1:])


def test_the_docs_show_commands_this_test_checks():
    """Every figure in docs/ comes with its command: the results and speed pages show many."""
    names = {p.name for p in DOCS}
    assert {"results.md", "speed.md", "spec.md"} <= names
    for page in ("docs/results.md", "docs/speed.md"):
        assert len(command_lines(TEXTS[page])) >= 5, f"{page}: too few commands"


@pytest.mark.parametrize("where", sorted(TEXTS))
def test_every_config_field_named_exists(where):
    named = set(re.findall(r"--config\.([\w.]+)=", TEXTS[where]))
    assert not named - set(config_lib.FIELDS), f"{where}: not config fields: {sorted(named - set(config_lib.FIELDS))}"
    if where == "README.md":
        assert named


def test_the_readme_is_a_short_guide():
    assert README.count("\n") <= README_MAX_LINES, f"README.md has {README.count(chr(10))} lines; at most {README_MAX_LINES}"


@pytest.mark.parametrize("where", sorted(TEXTS))
def test_current_facts_only(where):
    """Dates and commit hashes belong to CHANGELOG.md; ../shared is not in a user's checkout."""
    text = TEXTS[where]
    assert not DATE.findall(text), f"{where}: dates {DATE.findall(text)} (history goes to CHANGELOG.md)"
    assert not COMMIT.findall(text), f"{where}: commit hashes {COMMIT.findall(text)} (history goes to CHANGELOG.md)"
    assert "../shared" not in text and "design.md" not in text, f"{where}: names a file outside the repository"


def test_the_changelog_keeps_the_history():
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog") and "## Unreleased" in changelog
    assert re.search(r"^## \d+\.\d+\.\d+", changelog, re.M) and DATE.search(changelog)


def test_relative_links_resolve():
    for where, text in TEXTS.items():
        base = (REPO / where).parent
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (base / target).exists(), f"{where}: link to {target} not found"


def _with_mnist(code: str) -> str:
    mnist = SHARED_DATA / "mnist"
    if not mnist.is_dir():
        pytest.skip(f"a block reads the official MNIST files; not found at {mnist} (../shared/data beside the checkout)")
    return code.replace('"/path/to/mnist"', repr(str(mnist)))


@pytest.mark.slow
def test_the_python_blocks_run_in_order(tmp_path, monkeypatch):
    """The blocks share one namespace (the second uses the first's config), as in
    a notebook; the official MNIST files stand where the README writes /path/to/mnist."""
    blocks = fenced("python")
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__readme__"}
    for line, code in blocks:
        exec(compile(_with_mnist(code), f"README.md, block at line {line}", "exec"), ns)
    # what the blocks' comments say they give
    assert (tmp_path / "runs" / "mlp" / "summary.json").is_file()
    assert set(ns["run"].params) == {"Dense_0", "Dense_1"}
    assert sum(x.size for x in jax.tree.leaves(ns["run"].params)) == 8020
    assert (tmp_path / "runs" / "cnn" / "model_state.npz").is_file()  # the NNX CNN's batch statistics
    assert type(ns["cnn"]).__name__ == "CNN" and ns["cnn"].bn.use_running_average  # trained, in evaluation mode
    assert ns["usps"].train.images.shape == (7291, 16, 16, 1)
    assert len(ns["usps"].train) == 7291 and len(ns["mnist"].train) == 7291
    assert ns["scores"].shape == (5, 10)


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in DOCS if fenced("python", p.read_text())], ids=lambda p: p.name)
def test_the_docs_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__docs__"}
    for line, code in fenced("python", page.read_text()):
        exec(compile(_with_mnist(code), f"docs/{page.name}, block at line {line}", "exec"), ns)
    if page.name == "data.md":
        example = ns["ds"]["train"][0]
        assert example["image"].shape == (16, 16, 1) and example["image"].dtype == np.float32
        assert (int(example["label"]), int(example["index"])) == (6, 0)
        assert len(ns["usps"].train) == 7291 and len(ns["mnist"].train) == 7291
