"""A researcher's own parts: their module, optimiser and loss are what trains and what is evaluated."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lecun_jax
from lecun_jax import config as config_lib
from lecun_jax import data as data_lib
from lecun_jax.run import experiment, processes
from lecun_jax.core import model as model_lib, train
from lecun_jax.run.workdir import WorkdirError


class MLP(nn.Module):
    """A user's 2-layer perceptron: 256 -> hidden -> 10."""

    hidden: int = 30
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        x = jnp.tanh(nn.Dense(self.hidden)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return jnp.tanh(nn.Dense(10)(x))


class Silenced(model_lib.Net1989):
    """The 1989 network with its outputs multiplied by 0."""

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        return super().__call__(x, train=train) * 0.0


def squared_error(outputs, labels):
    """The user's own loss: per example, the mean squared error to +-1 targets."""
    targets = jnp.where(jnp.arange(10) == labels[:, None], 1.0, -1.0)
    return jnp.mean((outputs - targets) ** 2, axis=-1)


def _config(**fields):
    c = config_lib.base()
    for path, value in fields.items():
        config_lib.set_path(c, path.replace("__", "."), value)
    return c


quiet = dict(echo=lambda s: None, plots=False)


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs") / "mlp"
    summary = lecun_jax.train_and_evaluate(
        _config(train__passes=2), workdir, model=MLP(), optimizer=optax.sgd(0.01, momentum=0.9), loss=squared_error, **quiet
    )
    return workdir, summary


def test_a_users_mlp_optimizer_and_loss_learn(mlp_run):
    _, summary = mlp_run
    assert summary["final"]["test"]["error"] < 30.0  # chance is 90%


def test_a_users_module_is_reported_with_its_own_parameters(mlp_run):
    workdir, summary = mlp_run
    dense_0, dense_1 = 256 * 30 + 30, 30 * 10 + 10  # kernel + bias of each layer
    assert summary["params"] == {"Dense_0": dense_0, "Dense_1": dense_1, "total": 8020}
    assert dense_0 + dense_1 == 8020
    assert summary["model"] == "MLP" and summary["macs_per_digit"] is None
    recorded = json.loads((workdir / "config.json").read_text())["parts"]
    assert recorded["model"]["class"].endswith("MLP") and recorded["model"]["fields"]["hidden"] == 30
    # sgd with momentum is optax's chain of trace and scale: the record names chain's init
    assert recorded["optimizer"]["init"] == "optax.transforms._combining.chain.<locals>.init_fn"
    assert recorded["loss"]["function"].endswith("squared_error")
    assert summary["parts"] == recorded
    run = lecun_jax.load_run(workdir)
    assert set(run.params) == {"Dense_0", "Dense_1"}
    assert run.params["Dense_0"]["kernel"].shape == (256, 30)
    assert run.parts == recorded
    with pytest.raises(ValueError, match="user's module"):
        run.model


def test_the_runs_test_outputs_are_the_users_apply(mlp_run):
    workdir, summary = mlp_run
    run = lecun_jax.load_run(workdir)
    ds = run.dataset()
    own = np.asarray(MLP().apply({"params": run.params}, ds.test.images, train=False))
    np.testing.assert_allclose(run.test_outputs[0], own, rtol=1e-5, atol=1e-5)
    assert summary["final"]["test"]["misses"] == int(np.sum(own.argmax(-1) != ds.test.labels))


def test_a_run_of_another_module_is_refused_in_the_same_workdir(mlp_run):
    workdir, _ = mlp_run
    with pytest.raises(WorkdirError, match="parts"):
        lecun_jax.train_and_evaluate(_config(train__passes=2), workdir, model=MLP(hidden=20),
                                     optimizer=optax.sgd(0.01, momentum=0.9), loss=squared_error, **quiet)


def test_a_run_of_another_learning_rate_is_refused_in_the_same_workdir(mlp_run):
    workdir, _ = mlp_run
    with pytest.raises(WorkdirError, match="parts.optimizer.fingerprint"):
        lecun_jax.train_and_evaluate(_config(train__passes=2), workdir, model=MLP(),
                                     optimizer=optax.sgd(0.1, momentum=0.9), loss=squared_error, **quiet)


@pytest.mark.slow
def test_a_subclass_whose_outputs_are_zero_is_at_chance(tmp_path):
    summary = lecun_jax.train_and_evaluate(_config(train__passes=1, data__train_size=500), tmp_path, model=Silenced(), **quiet)
    labels = data_lib.for_config(_config()).test.labels
    # all outputs equal: arg-max picks class 0 for every digit, so every other digit is a miss
    assert summary["final"]["test"]["misses"] == int(np.sum(labels != 0))
    assert summary["final"]["test"]["error"] > 80.0


def test_the_given_optimizer_is_the_one_that_updates(tmp_path):
    c = _config(train__passes=1, data__train_size=200)
    lecun_jax.train_and_evaluate(c, tmp_path, optimizer=optax.set_to_zero(), **quiet)
    run = lecun_jax.load_run(tmp_path)
    net = train.make_model(c)
    initial = train.init_state(net, optax.set_to_zero(), train.replica_key(c.seed, 0))["params"]
    jax.tree.map(np.testing.assert_array_equal, run.params, jax.tree.map(np.asarray, initial))


@pytest.mark.slow
def test_make_train_is_one_pure_function_equal_to_the_host_loop(tmp_path):
    c = _config(train__passes=2, data__train_size=300, num_seeds=2)
    summary = lecun_jax.train_and_evaluate(c, tmp_path, **quiet)
    assert summary["num_seeds"] == 2
    records = lecun_jax.load_run(tmp_path).metrics
    dataset = data_lib.for_config(c)
    data = processes.device_data(dataset)
    parts = train.make_parts(c, len(dataset.train))
    keys = jax.vmap(lambda r: train.replica_key(c.seed, r))(jnp.arange(2))
    _, metrics = jax.jit(jax.vmap(lecun_jax.make_train(c, parts, data)))(keys)
    for r in records:  # metrics (replica, pass): the host loop's numbers, each replica alone in a vmap
        got = metrics[r["split"]]
        assert int(got["misses"][r["replica"], r["pass"] - 1]) == r["misses"]
        assert float(got["loss"][r["replica"], r["pass"] - 1]) == pytest.approx(r["loss"], rel=1e-5)


@pytest.mark.slow
def test_a_users_dropout_module_gets_the_dropout_rng(tmp_path):
    c = _config(train__passes=1, data__train_size=300)
    with_dropout = lecun_jax.train_and_evaluate(c, tmp_path / "a", model=MLP(dropout=0.5), loss=squared_error, **quiet)
    without = lecun_jax.train_and_evaluate(c, tmp_path / "b", model=MLP(dropout=0.0), loss=squared_error, **quiet)
    assert with_dropout["final"]["train"]["loss"] != without["final"]["train"]["loss"]


def test_becker_lecun_needs_the_modules_layers():
    from lecun_jax.core import sdlm

    with pytest.raises(ValueError, match="exact_ggn"):
        sdlm.estimator("becker_lecun", MLP(), squared_error)
    layers = model_lib.Net1989().layers()
    assert [l.name for l in layers] == ["h1", "h2", "h3", "out"]


@pytest.mark.slow
def test_a_users_module_resumes_from_its_checkpoint(mlp_run, tmp_path):
    import shutil

    workdir, summary = mlp_run
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    (copy / "summary.json").unlink()  # as if killed after the last checkpoint
    (copy / "params.npz").unlink()
    again = lecun_jax.train_and_evaluate(
        _config(train__passes=2), copy, model=MLP(), optimizer=optax.sgd(0.01, momentum=0.9), loss=squared_error, **quiet
    )
    assert again["resumed_after_pass"] == 2 and again["final"] == summary["final"]
    assert again["ledger"]["wall_s"] is None  # no pass ran: no time, and no NaN in strict JSON

    def no_nan(constant):
        raise ValueError(f"summary.json holds {constant}")

    json.loads((copy / "summary.json").read_text(), parse_constant=no_nan)
    jax.tree.map(np.testing.assert_array_equal, lecun_jax.load_run(copy).params, lecun_jax.load_run(workdir).params)


@pytest.mark.slow
def test_a_users_module_trains_several_seeds_at_once(tmp_path):
    c = _config(train__passes=1, data__train_size=300, num_seeds=3)
    summary = lecun_jax.train_and_evaluate(c, tmp_path, model=MLP(), loss=squared_error, **quiet)
    run = lecun_jax.load_run(tmp_path)
    assert run.params["Dense_0"]["kernel"].shape == (3, 256, 30)
    assert summary["params"]["total"] == 8020 and len(set(summary["final"]["test"]["misses"])) > 1
