"""The package's layout: imports flow one way (down the layers), `import lecun_jax` is light, config copies no choice list."""

import ast
import subprocess
import sys

from conftest import REPO

PACKAGE = REPO / "lecun_jax"
HEAVY = ("tensorflow_datasets", "orbax", "matplotlib", "tensorboardX")


def module_name(path) -> str:
    """lecun_jax/core/train.py -> lecun_jax.core.train; a folder's __init__.py -> the folder."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file (functions included).

    A folder's ``__init__.py`` is the node of the folder (``lecun_jax.data``).
    """
    paths = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}

    def node(qualified: str) -> str | None:
        while qualified not in paths and "." in qualified:  # lecun_jax.run.plots.figure -> lecun_jax.run.plots
            qualified = qualified.rsplit(".", 1)[0]
        return qualified if qualified in paths else None

    graph = {}
    for me, path in paths.items():
        package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
        edges = set()
        for n in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                base = package
                for _ in range(max(n.level - 1, 0)):
                    base = base.rsplit(".", 1)[0]
                module = (f"{base}.{n.module}" if n.module else base) if n.level else (n.module or "")
                # each name: a submodule, or a name defined in module
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in paths else module for a in n.names]
            else:
                continue
            for t in targets:
                target = node(t)
                if target is not None and target != me:
                    edges.add(target)
        graph[me] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "lecun_jax.data" in graph and graph["lecun_jax.data.tfds_datasets"]  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# What each part of the package may import of the package (lazy imports included). The
# core is pure JAX: it may import nothing of the host, so a notebook or another
# codebase can take it alone.
ALLOWED = {
    "core": {"core"},
    "files": set(),
    "data": {"data", "files"},
    "config": {"core", "data"},
    "run": {"core", "data", "config", "files", "run"},
    "errors": {"core", "data", "run"},  # the table of a user's errors, which cli and studies both read
    "studies": {"core", "data", "config", "files", "run", "errors", "studies"},
    "cli": {"core", "data", "config", "files", "run", "errors", "studies"},
    "launch": {"cli", "config"},  # the command (python -m lecun_jax.launch; launch.py in a checkout)
    "distributions": {"studies"},  # the commands python -m lecun_jax.distributions and lecun_jax.plots
    "plots": {"run"},
    "look": {"core", "data", "run", "errors", "look"},  # the page: python -m lecun_jax.look
}


def part(module: str) -> str:
    """lecun_jax.core.train -> core; lecun_jax.config -> config."""
    return module.split(".")[1]


def violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {t}" for m, ts in graph.items() for t in ts if part(t) not in ALLOWED[part(m)])


def test_each_part_imports_only_what_its_rule_allows():
    graph = {m: ts for m, ts in import_graph().items() if m != "lecun_jax"}  # the package's lazy attributes: the top
    assert {part(m) for m in graph} == set(ALLOWED), "a part of the package is missing from ALLOWED, or is gone"
    assert {"lecun_jax.core.train", "lecun_jax.run.experiment", "lecun_jax.data"} <= set(graph)  # the walk found them
    assert "lecun_jax.core.model" in graph["lecun_jax.core.train"]  # and their imports
    assert violations(graph) == []


def test_the_rule_catches_the_core_importing_the_host():
    assert violations({"lecun_jax.core.train": {"lecun_jax.run.processes", "lecun_jax.core.sdlm"},
                       "lecun_jax.run.experiment": {"lecun_jax.core.train"}}) == [
        "lecun_jax.core.train imports lecun_jax.run.processes"]


def test_find_cycle_finds_lazy_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_importing_the_package_imports_nothing_heavy():
    code = f"import lecun_jax, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_package_attributes_load_on_use():
    code = (
        "import lecun_jax, sys; assert 'lecun_jax.data' not in sys.modules; "
        "from lecun_jax import reporting; "
        "assert lecun_jax.data.load and lecun_jax.Net1989 is lecun_jax.core.model.Net1989 and lecun_jax.load_run; "
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "ok", out.stdout + out.stderr


def test_config_choices_are_their_home_modules_objects():
    """Each choice list is defined once: config's rules hold the home module's object itself,
    and config.py spells out no choice list, no dataset size and no URL of its own."""
    from lecun_jax.core import augment, losses, model, optimizers, sdlm, train
    from lecun_jax import config, data

    homes = {
        "data.name": data.DATASETS, "data.train_subset": data.SUBSETS,
        "model.activation": model.ACTIVATIONS, "model.output_activation": model.OUTPUT_ACTIVATIONS,
        "model.conv": model.CONV_IMPLS, "model.init_rule": model.INIT_RULES, "loss": losses.LOSSES,
        "optimizer.name": optimizers.OPTIMIZERS, "optimizer.schedule": optimizers.SCHEDULES,
        "optimizer.sdlm_estimator": sdlm.ESTIMATORS,
        "augment.name": augment.AUGMENTATIONS, "augment.mode": augment.SHIFT_MODES, "train.order": train.ORDERS,
    }
    for field, options in homes.items():
        assert config.FIELDS[field].rule.options is options, field
    assert config.base().data.mnist_url == data.MNIST_URL
    assert config.ConfigError is data.ConfigError  # cli maps it to exit 2, from validate or from data.for_config

    choices = {str(name) for options in homes.values() for name in options}
    tree = ast.parse((PACKAGE / "config.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            names = {n.value for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            assert len(names & choices) < 2, f"config.py line {node.lineno}: a copy of a choice list {sorted(names)}"
        if isinstance(node, ast.Constant):
            assert node.value not in (data.SPLIT_SIZES["train"], data.SPLIT_SIZES["test"], data.MNIST_URL), (
                f"config.py line {node.lineno}: {node.value!r} is data's; use data's name for it")
