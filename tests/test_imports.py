"""The package's layout: imports flow one way (down the layers), `import lecun_jax` is light, config copies no choice list."""

import ast
import subprocess
import sys

from conftest import REPO

PACKAGE = REPO / "lecun_jax"
HEAVY = ("tensorflow_datasets", "orbax", "matplotlib", "tensorboardX")


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file (functions included).

    The package itself (``__init__.py``) is the node ``lecun_jax``.
    """
    modules = {p.stem: p for p in sorted(PACKAGE.glob("*.py"))}
    names = {("lecun_jax" if m == "__init__" else f"lecun_jax.{m}") for m in modules}

    def node(qualified: str) -> str | None:
        while qualified not in names and "." in qualified:  # lecun_jax.plots.save_figure -> lecun_jax.plots
            qualified = qualified.rsplit(".", 1)[0]
        return qualified if qualified in names else None

    graph = {}
    for stem, path in modules.items():
        me = "lecun_jax" if stem == "__init__" else f"lecun_jax.{stem}"
        edges = set()
        for n in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                if n.level:  # relative: from . import x / from .x import y
                    base = me if stem == "__init__" else me.rsplit(".", 1)[0]
                    for _ in range(n.level - 1):
                        base = base.rsplit(".", 1)[0]
                    module = f"{base}.{n.module}" if n.module else base
                else:
                    module = n.module or ""
                targets = [f"{module}.{a.name}" for a in n.names]  # a submodule, or a name in module
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
    assert "lecun_jax.data" in graph and graph["lecun_jax.tfds_datasets"]  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The modules bottom to top (lecun_jax/__init__.py's layers): a module imports only
# modules before it, lazy imports included. A new module takes its place here.
ORDER = (
    "reporting", "sources", "conv", "losses", "augment", "sdlm", "processes",  # import nothing of the package
    "downloads", "tfds_datasets", "data",  # the digits
    "model", "modules", "optimizers", "train",  # the network, a user's parts, and the training step
    "config",  # the run's fields, checked against the choices the modules below define
    "workdir", "checkpoints", "logs", "plots", "runs",  # what the host loop keeps, tells and reloads
    "experiment",  # the host loop
    "together", "scaling", "sweep", "distributions",  # sweeps, and rows over many seeds
    "cli",  # the command line
)


def test_imports_go_down_the_layers_only():
    graph = {m.removeprefix("lecun_jax."): {t.removeprefix("lecun_jax.") for t in ts}
             for m, ts in import_graph().items() if m != "lecun_jax"}  # the package's lazy attributes: the top
    assert sorted(graph) == sorted(ORDER), "a module is missing from ORDER, or ORDER names one that is gone"
    upward = sorted(f"{m} imports {t}" for m, ts in graph.items() for t in ts if ORDER.index(t) > ORDER.index(m))
    assert upward == []


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
        "assert lecun_jax.data.load and lecun_jax.Net1989 is lecun_jax.model.Net1989 and lecun_jax.load_run; "
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "ok", out.stdout + out.stderr


def test_config_choices_are_their_home_modules_objects():
    """Each choice list is defined once: config's rules hold the home module's object itself,
    and config.py spells out no choice list, no dataset size and no URL of its own."""
    from lecun_jax import augment, config, data, losses, model, optimizers, sdlm

    homes = {
        "data.name": data.DATASETS, "data.train_subset": data.SUBSETS,
        "model.activation": model.ACTIVATIONS, "model.output_activation": model.OUTPUT_ACTIVATIONS,
        "model.conv": model.CONV_IMPLS, "loss": losses.LOSSES,
        "optimizer.name": optimizers.OPTIMIZERS, "optimizer.schedule": optimizers.SCHEDULES,
        "optimizer.sdlm_estimator": sdlm.ESTIMATORS,
        "augment.name": augment.AUGMENTATIONS, "augment.mode": augment.SHIFT_MODES,
    }
    for field, options in homes.items():
        assert config.SCHEMA[field].options is options, field
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
