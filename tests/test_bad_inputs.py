"""Bad command lines, config files, workdirs and data locations: one line on stderr, the
documented exit code (2 usage/config, 1 data/I/O), no traceback, and nothing trained."""

import os
import re

import pytest

from lecun_jax import cli, errors
from lecun_jax import config as config_lib
from lecun_jax.run import experiment
from lecun_jax.studies import sweep
from conftest import REPO
from test_faults import launch, one_error_line


def _config_file(returns):
    def make(tmp):
        (tmp / "c.py").write_text(f"def get_config():\n    return {returns}\n")
        return [f"--config={tmp / 'c.py'}"]
    return make


def _file(tmp):
    (tmp / "a_file").write_text("not a folder\n")
    return tmp / "a_file"


def _symlink_loop(tmp):
    os.symlink(tmp / "loop_b", tmp / "loop_a")
    os.symlink(tmp / "loop_a", tmp / "loop_b")
    return tmp / "loop_a"


def _folder_for_a_file(tmp):
    """A USPS source whose zip.train.gz is a directory: unreadable as a file (EACCES cannot be made as root)."""
    (tmp / "usps" / "zip.train.gz").mkdir(parents=True)
    (tmp / "usps" / "zip.test.gz").write_bytes(b"")
    return tmp / "usps"


BAD = [
    ("config returns a dict", _config_file("{'seed': 1}"), 2, r"c\.py: get_config\(\) returned dict, not an ml_collections\.ConfigDict"),
    ("config returns None", _config_file("None"), 2, r"get_config\(\) returned NoneType"),
    ("config returns an int", _config_file("3"), 2, r"get_config\(\) returned int"),
    ("config is not Python", lambda t: ["--config=/etc/passwd"], 2, r"--config=/etc/passwd: not a Python file"),
    ("workdir is a file", lambda t: [f"--workdir={_file(t)}"], 2, r"a_file: exists and is not a directory"),
    ("workdir under a file", lambda t: [f"--workdir={_file(t) / 'w'}"], 2, r"a part of the path is a file, not a directory"),
    ("workdir name too long", lambda t: [f"--workdir={t / ('w' * 300)}"], 2, r"a name in the path is too long"),
    # chmod does not stop root; /proc refuses new folders to everyone
    ("workdir unwritable", lambda t: ["--workdir=/proc/lecun_jax_test/w"], 2, r"/proc/lecun_jax_test/w: cannot be created or written"),
    ("tfds_dir is a file", lambda t: [f"--config.data.tfds_dir={_file(t)}"], 1, r"a_file: not a directory; data.tfds_dir"),
    ("tfds_dir under a file", lambda t: [f"--config.data.tfds_dir={_file(t) / 'x'}"], 1, r"x: not a directory \(.*a_file is a file\)"),
    ("source_dir symlink loop", lambda t: [f"--config.data.source_dir={_symlink_loop(t)}"], 1, r"loop_a: a symlink loop"),
    ("source_dir empty", lambda t: ["--config.data.source_dir="], 2, r"config.data.source_dir='': an empty path"),
    ("a folder for a data file", lambda t: ["--config=configs/lecun1989.py:usps", f"--config.data.source_dir={_folder_for_a_file(t)}"],
     1, r"zip.train.gz: a directory where a data file was expected"),
    ("infinite learning rate", lambda t: ["--config.optimizer.learning_rate=inf"], 2, r"learning_rate=inf: expected a finite number"),
    ("unknown init rule", lambda t: ["--config.model.init_rule=xavier"], 2, r"config.model.init_rule='xavier': valid: sqrt, linear"),
    ("loss target with cross-entropy", lambda t: ["--config.loss=cross_entropy", "--config.loss_target=0.8"], 2,
     r"config.loss_target=0.8: loss=cross_entropy has no targets"),
    ("unknown schedule", lambda t: ["--config.optimizer.schedule=lenet"], 2, r"schedule='lenet': valid: constant, linear, lenet5"),
    ("sdlm loss scale 0", lambda t: ["--config.optimizer.sdlm_loss_scale=0"], 2, r"sdlm_loss_scale=0.0: valid: in \(0, inf\)"),
    ("seed order with shuffle", lambda t: ["--config.train.order=seed", "--config.train.shuffle=True"], 2,
     r"config.train.order='seed' with train.shuffle=True"),
    ("unknown field", lambda t: ["--config.optimizer.momentum=0.9"], 2,
     r"--config.optimizer.momentum: no such config field; config.optimizer has .*learning_rate.*\. All \d+ fields, with their defaults"),
]


@pytest.mark.slow
@pytest.mark.parametrize("what,args,code,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_with_its_exit_code_and_trains_nothing(tmp_path, what, args, code, message):
    argv = args(tmp_path)
    if not any(a.startswith("--workdir") for a in argv):
        argv.append(f"--workdir={tmp_path / 'w'}")
    result = launch(*argv, "--config.train.passes=1")
    assert result.returncode == code, result.stderr
    line = one_error_line(result)
    assert re.search(message, line), line
    assert len(line) < 400 or "too long" in line
    assert not list(tmp_path.rglob("metrics.jsonl")) and not list(tmp_path.rglob("config.json"))
    assert "eval:" not in result.stdout


# The exit codes the README and cli's docstring promise: 2 for a bad input, 1 for a fault.
DOCUMENTED_CODES = {"ConfigError": 2, "WorkdirError": 2, "PartError": 2, "DataError": 1, "NumericalError": 1}


def test_every_users_error_ends_the_command_in_its_line_with_its_code(capsys):
    assert {kind.__name__: code for kind, code in errors.EXIT_CODES.items()} == DOCUMENTED_CODES
    for kind, code in errors.EXIT_CODES.items():
        with pytest.raises(SystemExit) as e, cli.one_line_errors():
            raise kind(f"what went wrong ({kind.__name__})")
        assert e.value.code == code, kind
        assert capsys.readouterr().err == f"error: what went wrong ({kind.__name__})\n"
    with pytest.raises(KeyError), cli.one_line_errors():  # not a user's error: a bug, with its traceback
        raise KeyError("a bug")


def test_a_sweep_row_with_a_users_error_fails_in_that_line_and_the_others_run_on(tmp_path, monkeypatch):
    """The rows of a sweep meet the same errors as the command, each reported whole
    (no traceback file), whatever the row; a PartError is one of them."""
    kinds = list(errors.EXIT_CODES)
    rates = [0.01 * (i + 1) for i in range(len(kinds))]

    def failing(config, workdir, **kwargs):
        kind = kinds[rates.index(config.optimizer.learning_rate)]
        raise kind(f"{kind.__name__} of this row")

    monkeypatch.setattr(experiment, "train_and_evaluate", failing)
    c = config_lib.base()
    c.sweep.grid = "optimizer.learning_rate=" + ",".join(map(str, rates))
    records = sweep.run(REPO / "configs" / "lecun1989.py", c, {}, tmp_path, echo=lambda s: None)
    assert [r["status"] for r in records] == [f"failed: {kind.__name__} of this row" for kind in kinds]
    assert sweep.failed(records) == [r["row"] for r in records]
    assert not list(tmp_path.rglob(sweep.ERROR_TXT))
