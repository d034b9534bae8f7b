"""The store is the one owner of a run's workdir: what it writes is the README's table, a
process that does not write writes nothing, no other module writes or removes files but
the few that write elsewhere, and who a process is passes as an argument."""

import ast
import logging
import os
import re
import sys

import numpy as np
import pytest

from lecun_jax.run import plots, processes, store
from lecun_jax.run.workdir import WorkdirError
from conftest import REPO, small_config

PACKAGE = REPO / "lecun_jax"
ALONE = processes.Processes(index=0, count=1, devices=())  # devices: none of these verbs use them
PROCESS_1 = processes.Processes(index=1, count=2, devices=())


def readme_table_names() -> set[str]:
    """The names in the first column of the README's table under "What the output means"."""
    section = (REPO / "README.md").read_text().split("## What the output means", 1)[1].split("\n## ", 1)[0]
    cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for cell in cells for name in re.findall(r"`([^`]+)`", cell)}


def _records(p: int, loss=0.5) -> list[dict]:
    return [{"pass": p, "split": s, "replica": 0, "seed": 0, "loss": loss, "error": 1.0, "misses": 1} for s in ("train", "test")]


def _every_write(s: store.RunStore, config) -> dict:
    """Every verb that writes, in a run's order, for a module with batch statistics."""
    s.begin(config, None, [], [0.1, 0.1])
    s.commit(1, {"w": np.zeros(3, np.float32)}, _records(1), _records(1), {"train_sha256": "a", "test_sha256": "b"})
    s.diverged(_records(1) + _records(2, loss=None))
    s.write_outputs({"h": {"kernel": np.ones(2)}}, {"batch_stats": {"mean": np.zeros(2)}}, np.zeros((1, 4, 10)), np.arange(4))
    return s.finish(lambda: {"final": "f"}, figures=lambda: {"curves.png": plots.figure(1, 1)})


def test_the_store_writes_what_the_readme_table_lists_and_clears_the_same(tmp_path):
    names = readme_table_names()
    assert {"config.json", "summary.json", "plots/"} <= names  # the table was found and read
    config = small_config(train__passes=2)
    with store.RunStore(tmp_path / "w", ALONE) as s:
        assert s.open(config) == "new"
        assert _every_write(s, config) == {"final": "f"}
    written = {p.name + ("/" if p.is_dir() else "") for p in (tmp_path / "w").iterdir()}
    assert written == names
    assert {*store.RUN_FILES, *(f + "/" for f in store.RUN_FOLDERS), store.LOCK} == names  # what overwrite clears


@pytest.mark.parametrize("who", [PROCESS_1, None], ids=["process 1 of 2", "a reader"])
def test_a_store_of_a_process_that_does_not_write_writes_nothing(tmp_path, who):
    s = store.RunStore(tmp_path / "w", who)
    assert not s.writes
    assert _every_write(s, small_config(train__passes=2)) == {}
    assert s.write_plots({"curves.png": plots.figure(1, 1)}) == []
    s.close()
    assert not (tmp_path / "w").exists()  # not even the folder


def test_open_tells_new_resume_done_refuses_another_config_and_overwrite_clears_only_the_run(tmp_path):
    config, other, workdir = small_config(train__passes=2), small_config(train__passes=3), tmp_path / "w"
    with store.RunStore(workdir, ALONE) as s:
        assert s.open(config) == "new"
        s.begin(config, None, _records(1), [0.1, 0.1])
        with pytest.raises(WorkdirError, match=f"{workdir} is in use by process {os.getpid()} on "):
            store.RunStore(workdir, ALONE).open(config)  # one run at a time
    with store.RunStore(workdir, ALONE) as s:
        assert s.open(config) == "resume"
        s.finish(lambda: {"final": "f"})
    with store.RunStore(workdir, ALONE) as s:
        assert s.open(config) == "done" and s.summary() == {"final": "f"} and s.metrics() == _records(1)
    with pytest.raises(WorkdirError, match=r"different config \(fields train.passes\); pass --overwrite"):
        with store.RunStore(workdir, ALONE) as s:
            s.open(other)
    (workdir / "notes.txt").write_text("the user's")
    with store.RunStore(workdir, ALONE) as s:
        assert s.open(other, overwrite=True) == "new"
    assert sorted(p.name for p in workdir.iterdir()) == [store.LOCK, "notes.txt"]
    with pytest.raises(ValueError, match="only reads"):
        store.RunStore(workdir).open(config)


# --- no other module writes a run's files -------------------------------------------------

# Calls that write or remove files, by the name called (a function, or a method of anything).
WRITING_CALLS = {"write_json", "write_jsonl", "write_npz", "save_params", "save_figure", "atomic_write_bytes",
                 "SummaryWriter", "TensorBoard", "WorkdirLock", "write_text", "write_bytes", "unlink", "rmdir", "mkdir",
                 "makedirs", "touch", "rename", "rmtree", "savefig", "mkstemp", "mkdtemp", "TemporaryFile",
                 "NamedTemporaryFile", "copyfile", "copytree"}
MODULE_CALLS = {"os": {"replace", "remove", "open"}, "shutil": {"move", "copy", "copy2"},
                "np": {"save", "savez", "savez_compressed"}, "numpy": {"save", "savez", "savez_compressed"}}

# Where the package may write besides the store, and why: none of these is a run's workdir.
# A key is a file, a folder (ending in /) or a file's function (file::function).
WRITES_ELSEWHERE = {
    "lecun_jax/run/store.py": "the store itself: every file of a run's workdir",
    "lecun_jax/files.py": "the atomic writers everything writes through",
    "lecun_jax/data/": "downloads and prepared copies of the digits, in the data caches",
    "lecun_jax/studies/distributions.py": "the many-seed report (table, statistics, figures)",
    "lecun_jax/studies/rows.py": "a many-seed row's per-seed CSV file and manifest",
    "lecun_jax/studies/study.py": "a study's record of the row its knobs were tried on",
    "lecun_jax/studies/scaling.py": "a scaling sweep's CSV and figures, beside the sweep's table",
    # table.md, table.csv, sweep.json beside the rows; in a row's folder its table record and an
    # unexpected failure's traceback (sweep_row.json, error.txt), files of the sweep that no run writes or clears
    "lecun_jax/studies/sweep.py": "a sweep's own files",
    "lecun_jax/run/plots.py::write_sweep": "ablations.png, beside a sweep's table",
    # a temporary file with no name, before any data is loaded, to stop a bad --workdir with one line
    "lecun_jax/cli.py::prepare_workdir": "checks that --workdir can be created and written",
}


def _writes(call: ast.Call) -> bool:
    f = call.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    receiver = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
    if name in WRITING_CALLS or name in MODULE_CALLS.get(receiver, ()):
        return True
    if name in ("open", "fdopen") and receiver in (None, "os", "io", "builtins"):
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        return mode is not None and not (isinstance(mode, ast.Constant) and not set(str(mode.value)) & set("wax+"))
    # Path.replace(target) moves a file; str.replace takes two arguments, dataclasses.replace keywords
    return name == "replace" and len(call.args) == 1 and not call.keywords and receiver != "dataclasses"


def writing_calls(source: str, where: str) -> list[str]:
    """'where::function:line name' of every call in ``source`` that writes or removes files."""
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{function}.{child.name}" if function else child.name
            if isinstance(child, ast.Call) and _writes(child):
                found.append(f"{where}::{function}:{child.lineno} {ast.unparse(child.func)}")
            visit(child, inner)

    visit(ast.parse(source), "")
    return found


def _matches(hit: str, key: str) -> bool:
    where, rest = hit.split("::", 1)
    function = rest.split(":", 1)[0].split(".")[0]
    return where == key or (key.endswith("/") and where.startswith(key)) or key == f"{where}::{function}"


def _allowed(hit: str) -> bool:
    return any(_matches(hit, key) for key in WRITES_ELSEWHERE)


def test_no_module_but_the_store_writes_or_removes_files_except_where_listed():
    hits = [hit for path in sorted(PACKAGE.rglob("*.py"))
            for hit in writing_calls(path.read_text(), str(path.relative_to(REPO)))]
    assert [h for h in hits if not _allowed(h)] == []
    stale = [key for key in WRITES_ELSEWHERE if not any(_matches(h, key) for h in hits)]
    assert stale == []  # each entry still writes, and the walk sees it (the store's writes among them)


def test_the_walk_flags_every_kind_of_write_and_no_read():
    source = '''
import os, shutil, dataclasses, numpy as np
from lecun_jax import files
from pathlib import Path
def run(path, fig, x):
    files.write_jsonl(path, [])
    open(path, "a")
    with open(path, mode="wb") as f: pass
    path.write_text("x")
    (path / "y").unlink()
    shutil.rmtree(path)
    os.replace(path, path)
    Path(path).replace(path)
    fig.savefig(path)
    SummaryWriter(str(path))
    np.savez(path, x=x)
def read(path, d, items):
    open(path)
    open(path, "rb")
    "a".replace("a", "b")
    dataclasses.replace(d, a=1)
    items.remove(1)
    d.copy()
    np.load(path)
'''
    hits = writing_calls(source, "lecun_jax/run/experiment.py")
    assert [h.split(" ", 1)[1] for h in hits] == [
        "files.write_jsonl", "open", "open", "path.write_text", "(path / 'y').unlink", "shutil.rmtree", "os.replace",
        "Path(path).replace", "fig.savefig", "SummaryWriter", "np.savez"]
    assert all(h.startswith("lecun_jax/run/experiment.py::run:") for h in hits)
    assert not any(map(_allowed, hits))  # experiment.py is not listed: each would fail the test above
    assert _allowed("lecun_jax/cli.py::prepare_workdir:3 path.mkdir") and not _allowed("lecun_jax/cli.py::run:3 path.mkdir")


# --- who a process is ---------------------------------------------------------------------


def test_no_thread_local_state_in_the_package():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.Attribute) and node.attr == "local" and isinstance(node.value, ast.Name)
                        and node.value.id == "threading"), f"{path}:{node.lineno}: threading.local"
            assert not (isinstance(node, ast.ImportFrom) and node.module == "threading"
                        and "local" in {a.name for a in node.names}), f"{path}:{node.lineno}: threading.local"


def test_a_process_alone_uses_its_own_devices_and_gathers_nothing():
    import jax

    alone = processes.local()
    assert (alone.index, alone.count) == (0, 1) and alone.devices == tuple(jax.local_devices())
    assert processes.from_process_0(7, alone) == 7
    assert processes.device_info(alone)["processes"] == 1
    _, replicas = processes.replica_layout(3, None, alone)
    assert replicas >= 3


def test_a_jax_that_moved_its_runtime_state_still_runs_the_job_and_says_so_once(monkeypatch, caplog):
    import jax
    import jax._src

    monkeypatch.delattr(jax._src, "distributed", raising=False)
    monkeypatch.setitem(sys.modules, "jax._src.distributed", None)  # `from jax._src import distributed` fails
    processes._cannot_stop_together.cache_clear()
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert processes.announce_stop("x", 1) is False  # a lone process: nothing to say
    assert not caplog.records
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)  # a process of a job
    with caplog.at_level(logging.WARNING):
        assert processes.announce_stop("x", 1) is False
        assert processes.watch_for_stop(lambda line, code: None) is None
        assert processes.announce_stop("x", 1) is False
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "cannot stop the others" in said[0] and "\n" not in said[0]
    processes._cannot_stop_together.cache_clear()


def test_a_run_recorded_before_a_field_existed_loads_with_its_default(tmp_path):
    # a config.json written before model.init_rule and loss_target were fields: load_run gives
    # them today's defaults, which keep the behaviour the run had, and its model rebuilds
    import json

    import lecun_jax
    from lecun_jax import config as config_lib

    recorded = config_lib.base().to_dict()
    del recorded["model"]["init_rule"], recorded["loss_target"]
    recorded["model"]["width"] = 2.0  # what the run recorded wins over the default
    (tmp_path / store.CONFIG).write_text(json.dumps(recorded))
    run = lecun_jax.load_run(tmp_path)
    assert run.config.model.init_rule == config_lib.base().model.init_rule and run.config.loss_target == 1.0
    assert run.config.model.width == 2.0 and run.model.width == 2.0
