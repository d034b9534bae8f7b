"""Width, evaluation cadence, and the scaling sweep's outputs."""


import jax
import numpy as np
import pytest

from lecun_jax import config as config_lib
from lecun_jax.run import experiment, reporting
from lecun_jax.studies import sweep
from lecun_jax.core import train
from lecun_jax.core import model as M
from conftest import REPO


def by_formula(width):
    maps, h3 = round(12 * width), round(30 * width)
    sees = 2 * maps // 3  # two of the three blocks
    return {
        "h1": 25 * maps + 8 * 8 * maps,
        "h2": 25 * sees * maps + 4 * 4 * maps,
        "h3": 16 * maps * h3 + h3,
        "out": 10 * h3 + 10,
    }


@pytest.mark.parametrize("width", [0.5, 1, pytest.param(2, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)])
def test_width_scales_maps_and_units_and_keeps_the_rule(width):
    model = M.Net1989(width=width)
    params = M.init(model, jax.random.PRNGKey(0))
    want = by_formula(width)
    assert M.count_params(params, model) == want | {"total": sum(want.values())}
    maps = round(12 * width)
    assert M.count_macs(params, model)["h2"] == 4 * 4 * maps * 25 * (2 * maps // 3)
    # H2's kernel is stored dense: a third of it (the unconnected maps) is structural zeros
    k2 = np.asarray(params["h2"]["kernel"])
    assert k2.shape == (maps, maps, 5, 5) and np.sum(k2 != 0) == 25 * maps * (2 * maps // 3)
    # the initialisation rule: U(+-2.4/sqrt(fan-in)) with the scaled fan-ins
    for layer, fan_in in {"h1": 25, "h2": 25 * (2 * maps // 3), "h3": 16 * maps, "out": round(30 * width)}.items():
        w = np.asarray(params[layer]["kernel"])
        w = w[w != 0] if layer == "h2" else w
        assert np.abs(w).max() <= 2.4 / np.sqrt(fan_in) and np.abs(w).max() > 0.8 * 2.4 / np.sqrt(fan_in)
    assert model.apply({"params": params}, np.zeros((2, 16, 16, 1), np.float32)).shape == (2, 10)


def test_width_1_is_the_1989_network():
    assert M.h2_inputs(M.Net1989().block) == M.H2_INPUTS
    net = M.Net1989(width=1.0)
    assert M.count_params(M.abstract_params(net), net)["total"] == 9760


def test_width_2_connection_table_by_gradients():
    model = M.Net1989(width=2)
    params = M.init(model, jax.random.PRNGKey(0))
    h2 = M.Net1989(width=2, conv="patches").layers()[1]
    dense = {"kernel": jax.numpy.ones_like(params["h2"]["kernel"]), "bias": params["h2"]["bias"]}  # the mask must cut
    h1 = jax.random.normal(jax.random.PRNGKey(1), (1, 8, 8, 24))
    # one compiled Jacobian (op by op, the custom VJP is slow on a CPU): row o is the gradient of map o's sum
    g = np.asarray(jax.jit(jax.jacrev(lambda x: h2.linear(dense, x).reshape(1, 4, 4, 24).sum(axis=(0, 1, 2))))(h1))
    for o, blocks in ((0, (0, 1)), (8, (1, 2)), (16, (0, 2))):  # groups of 8 maps see blocks A+B, B+C, A+C
        seen = np.abs(g[o]).sum(axis=(0, 1, 2)) > 0
        want = np.zeros(24, bool)
        for b in blocks:
            want[8 * b : 8 * b + 8] = True
        np.testing.assert_array_equal(seen, want)


def test_width_must_split_into_three_blocks():
    c = config_lib.base()
    c.model.width = 0.3
    with pytest.raises(config_lib.ConfigError, match=r"config.model.width=0.3: valid: 4 \* width a whole number"):
        config_lib.validate(c)


@pytest.mark.slow
def test_eval_every_evaluates_on_schedule(tmp_path):
    c = config_lib.base()
    c.data.train_size, c.train.passes, c.train.eval_every = 200, 5, 2
    experiment.train_and_evaluate(c, tmp_path / "w", echo=lambda s: None, plots=False)
    passes = sorted({r["pass"] for r in reporting.read_jsonl(tmp_path / "w" / "metrics.jsonl")})
    assert passes == [2, 4, 5]  # every 2nd, and the last


@pytest.mark.slow
def test_scaling_sweep_writes_csv_and_plots(tmp_path):
    c = config_lib.load_file(REPO / "configs" / "scaling.py", "usps")
    assert c.sweep.grid == "data.train_size=500,1000,2000,4000,7291;model.width=0.5,1,2,4"
    assert (c.num_seeds, c.train.passes, c.model.activation, c.model.dropout) == (3, 80, "relu", 0.25)
    c.sweep.grid = "data.train_size=100,200;model.width=0.5,1"
    c.train.passes, c.num_seeds = 2, 1
    sweep.run(REPO / "configs" / "scaling.py", c, {}, tmp_path, echo=lambda s: None)
    rows = list(__import__("csv").DictReader(open(tmp_path / "scaling.csv")))
    assert [(int(r["train_size"]), float(r["width"])) for r in rows] == [(100, 0.5), (200, 0.5), (100, 1.0), (200, 1.0)]
    assert int(rows[2]["params"]) == 9760
    assert float(rows[3]["training_macs_per_network"]) == 3 * 63_660 * 2 * 200
    for name in ("scaling_heatmap.png", "scaling_size.png", "scaling_compute.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_scaling_config_is_the_issue_grid():
    relu_dropout = config_lib.load_file(REPO / "configs" / "ablations.py", "relu_dropout")
    for arg, sizes in (("mnist", [500, 1000, 2000, 4000, 7291, 10000]), ("usps", [500, 1000, 2000, 4000, 7291])):
        c = config_lib.load_file(REPO / "configs" / "scaling.py", arg)
        assert c.data.name == arg and c.num_seeds >= 3 and c.data.train_subset == "prefix"
        grid = dict(part.split("=") for part in c.sweep.grid.split(";"))
        assert [int(n) for n in grid["data.train_size"].split(",")] == sizes
        assert [float(w) for w in grid["model.width"].split(",")] == [0.5, 1, 2, 4]
        for field in ("loss", "model.activation", "model.dropout", "optimizer.name", "optimizer.learning_rate",
                      "augment.name", "augment.max_shift", "train.passes", "train.batch_size"):
            assert config_lib.get_path(c, field) == config_lib.get_path(relu_dropout, field), field


def test_speedrun_is_the_1989_network_on_mnist1989_over_5_seeds():
    c = config_lib.load_file(REPO / "configs" / "speedrun.py")
    assert (c.data.name, c.model.width, c.num_seeds, c.data.train_size) == ("mnist1989", 1.0, 5, None)
    model = train.make_model(c)
    assert M.count_params(M.abstract_params(model), model)["total"] == 9760
    assert (c.train.batch_size, c.optimizer.name, c.optimizer.learning_rate, c.train.passes) == (4, "adamw", 2e-3, 80)
    assert c.train.eval_every == c.train.passes  # only the final pass is evaluated
    with pytest.raises(ValueError, match="mnist1989 only"):
        config_lib.load_file(REPO / "configs" / "speedrun.py", "usps")
