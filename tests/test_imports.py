"""The package's layout: imports flow one way, `import lecun_jax` is light, config's copies agree."""

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


def test_config_choices_equal_their_home_modules():
    from lecun_jax import augment, config, data, losses, model, optimizers, sdlm

    assert config.ACTIVATIONS == tuple(model.ACTIVATIONS)
    assert config.OUTPUT_ACTIVATIONS == tuple(model.OUTPUT_ACTIVATIONS)
    assert config.CONV_IMPLS == tuple(model.CONV_IMPLS)
    assert config.LOSSES == tuple(losses.LOSSES)
    assert config.OPTIMIZERS == tuple(optimizers.OPTIMIZERS)
    assert config.SCHEDULES == tuple(optimizers.SCHEDULES)
    assert config.SDLM_ESTIMATORS == tuple(sdlm.ESTIMATORS)
    assert config.AUGMENTATIONS == tuple(augment.AUGMENTATIONS)
    assert config.SHIFT_MODES == tuple(augment.SHIFT_MODES)
    assert config.DATASETS == tuple(data.DATASETS)
    assert config.SUBSETS == tuple(data.SUBSETS)
    assert config.SPLIT_SIZES == data.SPLIT_SIZES
    assert config.MNIST_URL == data.MNIST_URL
