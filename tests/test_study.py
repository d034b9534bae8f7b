"""The paper1989 study: its readings, its search on held-out digits, and its report in mistakes."""

import csv
import json
import math
import shutil

import numpy as np
import pytest

from lecun_jax import config as config_lib
from lecun_jax.studies import distributions, study
from conftest import REPO

SAMPLE = REPO / "tests" / "data" / "paper1989_sample"  # made by tests/data/study_tiny.py (see its docstring)
PAPER = "configs/paper1989.py"


def _column(path, name):
    with open(path, newline="") as f:
        return np.asarray([float(r[name]) for r in csv.DictReader(f)])


@pytest.mark.parametrize("regime", ["tanh_pm1", "tanh_t", "scaled"])
@pytest.mark.parametrize("init", ["sqrt", "linear"])
@pytest.mark.parametrize("optimizer", ["sdlm", "sgd"])
def test_each_reading_sets_what_its_name_says(regime, init, optimizer):
    c = config_lib.validate(config_lib.load_file(PAPER, f"{regime}_{init}_{optimizer}"))
    assert c.data.name == "usps" and c.train.passes == 23 and c.data.validation_size is None
    assert c.model.init_rule == init and c.optimizer.name == optimizer
    t = 1 / math.sqrt(3) if regime == "tanh_t" else 1.0  # tanh(a) at the peak of |tanh''|: 1/sqrt(3)
    assert c.loss_target == pytest.approx(t) and c.model.output_bias_init == pytest.approx(-t)
    act = "scaled_tanh" if regime == "scaled" else "tanh"
    assert c.model.activation == c.model.output_activation == act
    # the paper's own counts, which the report measures every row against
    assert (c.reference.train_misses, c.reference.test_misses) == (10, 102)


def test_an_unknown_reading_is_one_line_naming_the_valid_ones():
    with pytest.raises(config_lib.ConfigError, match=r"unknown reading; valid: study, tanh_pm1_sqrt_sdlm"):
        config_lib.load_file(PAPER, "tanh_sdlm")


def test_the_study_plan_is_read_from_its_config():
    p = study.plan("paper1989")
    assert len(p.rows) == 12 and p.seeds == 100 and p.validation_size > 0
    assert p.search["sdlm"][0] == p.search["sgd"][0] == "optimizer.learning_rate"
    assert all(o.startswith("--config.") for knobs in p.secondary.values() for o in knobs)


def test_the_report_counts_mistakes_against_the_paper(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(SAMPLE, results)
    assert distributions.main(["report", str(results)]) == 0
    assert (results / "usps_mistakes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stats = {s["key"]: s for s in json.loads((results / "stats.json").read_text())}
    for key, s in stats.items():
        test, train = (_column(results / f"{key}.csv", f"{split}_misses") for split in ("test", "train"))
        m = s["mistakes"]
        assert m["test"]["mean"] == pytest.approx(test.mean()) and m["train"]["std"] == pytest.approx(train.std(ddof=1))
        assert m["share_at_or_under_published"] == pytest.approx(np.mean(test <= 102))
        assert m["mse"]["test"] == pytest.approx(_column(results / f"{key}.csv", "test_loss").mean())
        # the percentile beside the paper is counted in mistakes: 102 of the 2,007 test digits
        assert s["published"] == pytest.approx(100 * 102 / 2007)
        assert s["published_percentile"] == pytest.approx(100 * (np.mean(test < 102) + 0.5 * np.mean(test == 102)))
    table = (results / "table.md").read_text()
    assert "| the paper (one run) | 1 | 10 | 102 | | | 2.5e-03 | 1.8e-02 |" in table
    assert table.count("| 4 | ") >= 2 * len(stats)  # every row in both tables, 4 seeds each


@pytest.mark.slow
def test_a_study_chooses_each_value_on_held_out_digits_and_resumes(tmp_path, monkeypatch, capsys):
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "tests" / "data" / "study_tiny.py", tmp_path / "configs" / "tiny.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert distributions.main(["study", "tiny"]) == 0
    results = tmp_path / "results" / "tiny"
    p = study.plan("tiny")
    best = json.loads((results / "study.json").read_text())["best_on_held_out_digits"]
    finals = [*p.rows, *(f"{best}+{k}" for k in p.secondary)]
    for row in finals:
        manifest = json.loads((results / f"usps_{row}.json").read_text())
        field, values = p.search[config_lib.load_file("configs/tiny.py", row.split("+")[0]).optimizer.name]
        held_out = {v: _column(results / "validation" / f"usps_{row}.{field.rsplit('.', 1)[1]}_{v}.csv", "test_misses").mean()
                    for v in values}
        assert manifest["search"]["mean_held_out_misses"] == pytest.approx(held_out)
        assert manifest["search"]["chosen"] == min(values, key=held_out.get)  # the fewest held-out mistakes
        assert f"--config.{field}={manifest['search']['chosen']} " in manifest["command"]
        assert "validation_size" not in manifest["command"] and manifest["seeds"] == p.seeds
    for path in (results / "validation").glob("*.json"):  # every search run held out the last digits
        assert "--config.data.validation_size=100 " in json.loads(path.read_text())["command"]
    sdlm = [r for r in p.rows if r.endswith("_sdlm")]
    scores = {r: min(json.loads((results / f"usps_{r}.json").read_text())["search"]["mean_held_out_misses"].values())
              for r in sdlm}
    assert best == min(sdlm, key=scores.get)  # the knobs' row is chosen on held-out digits, never on the test split
    capsys.readouterr()
    assert distributions.main(["study", "tiny"]) == 0  # finished: nothing is trained again
    assert "python -m lecun_jax.launch" not in capsys.readouterr().out
