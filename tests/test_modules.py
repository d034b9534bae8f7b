"""Every module a researcher writes today: Flax NNX, modules with state beside their
parameters, optimisers that define their own evaluation point, and parts that do not fit."""

import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import lecun_jax
from lecun_jax.run import checkpoints, processes, reporting
from lecun_jax.core import train
from lecun_jax import config as config_lib
from lecun_jax import data as data_lib
from lecun_jax.core.modules import PartError
from conftest import REPO
from user_modules import (BatchNormCNN, FlaxExamplesCNN, KeywordNet1989, NNXBatchNormCNN, NNXMLP, ZeroedKeywordNet1989,
                          ZeroedNNXMLP)

quiet = dict(echo=lambda s: None, plots=False)
SGD = optax.sgd(0.01, momentum=0.9)


def _config(**fields):
    c = config_lib.base()
    for path, value in fields.items():
        config_lib.set_path(c, path.replace("__", "."), value)
    return c


def _misses(outputs, labels) -> int:
    return int(np.sum(np.argmax(np.asarray(outputs), -1) != labels))


# --- NNX -----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["instance", "factory"])
def test_an_nnx_mlp_learns_and_is_reported_under_its_own_layer_names(tmp_path, form):
    model = NNXMLP(nnx.Rngs(0)) if form == "instance" else (lambda rngs: NNXMLP(rngs))
    summary = lecun_jax.train_and_evaluate(_config(train__passes=2), tmp_path, model=model, optimizer=SGD, **quiet)
    assert summary["final"]["test"]["error"] < 30
    assert summary["params"] == {"l1": 256 * 30 + 30, "l2": 30 * 10 + 10, "total": 8020}
    assert summary["model"] == "NNXMLP"
    recorded = json.loads((tmp_path / "config.json").read_text())["parts"]["model"]
    assert recorded == {"class": "user_modules.NNXMLP", "api": f"nnx {form}", "fields": {"hidden": 30}}
    run = lecun_jax.load_run(tmp_path)
    assert jax.tree.map(np.shape, run.params) == {"l1": {"kernel": (256, 30), "bias": (30,)},
                                                   "l2": {"kernel": (30, 10), "bias": (10,)}}
    rebuilt = run.nnx_module(model)  # the user's module holding the trained weights
    test = data_lib.for_config(run.config).test
    assert isinstance(rebuilt, NNXMLP) and _misses(rebuilt(test.images), test.labels) == summary["final"]["test"]["misses"]


def test_an_nnx_instance_starts_from_its_own_weights(tmp_path):
    instance = NNXMLP(nnx.Rngs(7))
    state = train.init_state(lecun_jax.core.modules.as_module(instance), SGD, train.replica_key(1337, 0))
    np.testing.assert_array_equal(state["params"]["l1"]["kernel"], instance.l1.kernel[...])


@pytest.mark.slow
def test_three_seeds_of_an_nnx_factory_are_three_networks(tmp_path):
    summary = lecun_jax.train_and_evaluate(_config(train__passes=1, num_seeds=3, data__train_size=500), tmp_path,
                                           model=lambda rngs: NNXMLP(rngs), optimizer=SGD, **quiet)
    kernels = lecun_jax.load_run(tmp_path).params["l1"]["kernel"]
    assert kernels.shape == (3, 256, 30)
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
    assert len(set(summary["final"]["test"]["misses"])) > 1


@pytest.mark.slow
def test_a_zeroed_nnx_module_is_at_chance(tmp_path):
    summary = lecun_jax.train_and_evaluate(_config(train__passes=1, data__train_size=500), tmp_path,
                                           model=lambda rngs: ZeroedNNXMLP(rngs), optimizer=SGD, **quiet)
    assert summary["final"]["test"]["error"] > 80


def test_several_seeds_of_one_nnx_instance_are_refused_with_the_factory_form(tmp_path):
    with pytest.raises(PartError, match=r"model=lambda rngs: NNXMLP\(\.\.\., rngs=rngs\)"):
        lecun_jax.train_and_evaluate(_config(num_seeds=2), tmp_path, model=NNXMLP(nnx.Rngs(0)), **quiet)
    assert not tmp_path.joinpath("config.json").exists()


@pytest.mark.slow
def test_nnx_dropout_draws_a_fresh_mask_every_step():
    module = lecun_jax.core.modules.as_module(lambda rngs: NNXBatchNormCNN(rngs))
    variables = module.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 16, 16, 1)))
    x = jnp.ones((4, 16, 16, 1))
    out = lambda key: module.apply(variables, x, train=True, rngs={"dropout": key}, mutable=["state"])[0]
    a, b = out(jax.random.PRNGKey(1)), out(jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a, out(jax.random.PRNGKey(1)))  # a pure function of the step's key
    assert not np.allclose(a, b)
    evaluated = [module.apply(variables, x, train=False) for _ in range(2)]
    np.testing.assert_array_equal(*evaluated)  # no dropout in evaluation


# --- linen modules with no train argument, or with **kwargs --------------------------


@pytest.mark.slow
def test_the_flax_examples_cnn_with_no_train_argument_learns(tmp_path):
    c = _config(train__passes=2, data__train_size=300, loss="cross_entropy")
    summary = lecun_jax.train_and_evaluate(c, tmp_path, model=FlaxExamplesCNN(), **quiet)
    assert summary["final"]["test"]["error"] < 50  # chance is 90 %
    assert summary["model"] == "FlaxExamplesCNN"
    run = lecun_jax.load_run(tmp_path)
    assert set(run.params) == {"Conv_0", "Conv_1", "Dense_0", "Dense_1"}  # the module's own tree, not nested
    test = data_lib.for_config(c).test
    own = FlaxExamplesCNN().apply({"params": run.params}, test.images)  # the user's apply, as flax's example calls it
    assert _misses(own, test.labels) == summary["final"]["test"]["misses"]


@pytest.mark.slow
def test_a_net1989_subclass_passing_keywords_on_that_zeroes_its_outputs_is_at_chance(tmp_path):
    c = _config(train__passes=1, data__train_size=300)
    summary = lecun_jax.train_and_evaluate(c, tmp_path, model=ZeroedKeywordNet1989(), **quiet)
    labels = data_lib.for_config(c).test.labels
    # all outputs equal: arg-max picks class 0 for every digit, so every other digit is a miss
    assert summary["final"]["test"]["misses"] == int(np.sum(labels != 0))
    assert summary["final"]["test"]["error"] > 80


@pytest.mark.slow
def test_train_reaches_net1989_through_a_subclasss_kwargs():
    module = lecun_jax.core.modules.as_module(KeywordNet1989(dropout_rate=0.5))
    reference = lecun_jax.Net1989(dropout_rate=0.5)
    # jitted: op by op, Net1989 is slow on a CPU
    variables = jax.jit(lambda k: module.init({"params": k}, jnp.zeros((1, 16, 16, 1)), train=False))(jax.random.PRNGKey(0))
    x, rngs = jax.random.uniform(jax.random.PRNGKey(1), (4, 16, 16, 1), minval=-1), {"dropout": jax.random.PRNGKey(2)}
    apply = jax.jit(lambda m, train_: m.apply(variables, x, train=train_, rngs=rngs), static_argnums=(0, 1))
    for train_ in (True, False):
        np.testing.assert_array_equal(apply(module, train_), apply(reference, train_))
    assert not np.allclose(apply(module, True), apply(module, False))  # dropout on in training only


# --- state beside the parameters ------------------------------------------------------


BN_MODELS = {"linen": BatchNormCNN(), "nnx": lambda rngs: NNXBatchNormCNN(rngs)}
BN_RECIPE = dict(train__batch_size=32, loss="cross_entropy", model__output_activation="linear")


def _bn_predict(kind, run):
    test = data_lib.for_config(run.config).test
    if kind == "linen":
        return BatchNormCNN().apply(run.variables(), test.images, train=False), test.labels
    return run.nnx_module(BN_MODELS["nnx"])(test.images), test.labels


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_batch_norm_learns_its_statistics_move_and_load_run_reproduces_its_misses(tmp_path, kind):
    summary = lecun_jax.train_and_evaluate(_config(train__passes=3, **BN_RECIPE), tmp_path, model=BN_MODELS[kind],
                                           optimizer=optax.adam(1e-3), **quiet)
    assert summary["final"]["test"]["error"] < 10
    run = lecun_jax.load_run(tmp_path)
    stats = run.model_state["batch_stats"]["BatchNorm_0"] if kind == "linen" else run.model_state["state"]["bn"]
    assert stats["mean"].shape == stats["var"].shape == (8,)
    assert np.abs(stats["mean"]).min() > 0 and np.abs(stats["var"] - 1).min() > 0  # moved from 0 and 1
    outputs, labels = _bn_predict(kind, run)
    assert _misses(outputs, labels) == summary["final"]["test"]["misses"]


_KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import optax, lecun_jax
from lecun_jax import config as config_lib
from user_modules import BatchNormCNN, NNXBatchNormCNN
kind, workdir, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = config_lib.base()
c.data.train_size, c.train.batch_size, c.train.passes = 1000, 32, 4
c.loss, c.model.output_activation = "cross_entropy", "linear"
model = BatchNormCNN() if kind == "linen" else (lambda rngs: NNXBatchNormCNN(rngs))
def echo(line):
    if line.startswith(f"pass {{kill_after}}/"):  # after that pass's checkpoint
        os.kill(os.getpid(), signal.SIGKILL)
lecun_jax.train_and_evaluate(c, workdir, model=model, optimizer=optax.adam(1e-3), echo=echo, plots=False)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_batch_norm_killed_after_pass_2_resumes_bit_identical(tmp_path, kind):
    script = _KILLED_RUN.format(tests=str(REPO / "tests"))
    run = lambda workdir, kill_after: subprocess.run([sys.executable, "-c", script, kind, str(workdir), str(kill_after)],
                                                     capture_output=True, text=True, cwd=REPO)
    assert run(tmp_path / "whole", 0).returncode == 0
    killed = run(tmp_path / "killed", 2)
    assert killed.returncode == -9 and not (tmp_path / "killed" / "summary.json").exists()
    assert checkpoints.Checkpoints(tmp_path / "killed" / "checkpoints").latest() == 2
    again = run(tmp_path / "killed", 0)
    assert again.returncode == 0, again.stderr
    for name in ("metrics.jsonl",):
        assert (tmp_path / "whole" / name).read_text() == (tmp_path / "killed" / name).read_text()
    for name in ("params.npz", "model_state.npz"):
        jax.tree.map(np.testing.assert_array_equal, reporting.load_params(tmp_path / "whole" / name),
                     reporting.load_params(tmp_path / "killed" / name))
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["resumed_after_pass"] == 2


# --- the optimiser's evaluation point -------------------------------------------------


@pytest.mark.slow
def test_schedule_free_runs_are_evaluated_at_the_methods_own_weights(tmp_path):
    c = _config(train__passes=1, data__train_size=500)
    tx = optax.contrib.schedule_free_sgd(0.03)
    summary = lecun_jax.train_and_evaluate(c, tmp_path, optimizer=tx, **quiet)
    assert summary["evaluation_params"] == "optax.contrib.schedule_free_eval_params"
    model = train.make_model(c)
    template = processes.to_numpy(train.init_states(c, model, tx))
    state, _, _ = checkpoints.Checkpoints(tmp_path / "checkpoints").read(1, template)
    state = jax.tree.map(lambda a: a[0], state)  # the state's replica axis: one seed
    test = data_lib.for_config(c).test
    misses = lambda params: _misses(model.apply({"params": params}, test.images, train=False), test.labels)
    evaluation = optax.contrib.schedule_free_eval_params(state["opt_state"], state["params"])
    assert misses(evaluation) == summary["final"]["test"]["misses"]
    assert misses(state["params"]) != summary["final"]["test"]["misses"]  # the raw point is another network
    saved = lecun_jax.load_run(tmp_path).params
    # params.npz holds that point too (computed in the compiled program: equal to float rounding)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), saved, jax.tree.map(np.asarray, evaluation))


@pytest.mark.slow
def test_a_users_optimiser_declares_its_evaluation_point_on_its_state(tmp_path):
    class Halved(optax.EmptyState):
        def evaluation_params(self, params):  # evaluate at half the weights
            return jax.tree.map(lambda p: 0.5 * p, params)

    tx = optax.chain(optax.sgd(0.03), optax.GradientTransformation(lambda p: Halved(), lambda u, s, p=None: (u, s)))
    summary = lecun_jax.train_and_evaluate(_config(train__passes=1, data__train_size=300), tmp_path, optimizer=tx, **quiet)
    assert summary["evaluation_params"].endswith("Halved.evaluation_params")
    assert lecun_jax.core.optimizers.defines_evaluation_params(tx.init({"w": jnp.zeros(2)}))
    assert not lecun_jax.core.optimizers.defines_evaluation_params(optax.sgd(0.1).init({"w": jnp.zeros(2)}))


# --- parts that do not fit ------------------------------------------------------------


class FiveScores(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        return nn.Dense(5)(x.reshape(x.shape[0], -1))


class WantsMNIST(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        return nn.Dense(10)(x.reshape(x.shape[0], 28 * 28))


BAD_PARTS = [
    (dict(model=FiveScores()), r"^model returned \(2, 5\) for \(2, 16, 16, 1\) digits; a model must return \(batch, 10\) scores$"),
    (dict(model=WantsMNIST()), r"^model cannot take \(batch, 16, 16, 1\) digits: "),
    (dict(model=FiveScores), r"^model is the class FiveScores; pass an instance"),
    (dict(loss=lambda outputs, labels: jnp.mean(outputs)), r"^loss returned \(\) for a batch of 2; a loss must return one value per example"),
    (dict(optimizer=optax.sgd), r"^optimizer is function; an optimizer must be an optax.GradientTransformation"),
]


@pytest.mark.parametrize("parts,message", BAD_PARTS, ids=[m.split(":")[0][1:30] for _, m in BAD_PARTS])
def test_a_part_that_does_not_fit_is_refused_in_one_line_before_anything_runs(tmp_path, parts, message):
    lines = []
    with pytest.raises(PartError, match=message) as e:
        lecun_jax.train_and_evaluate(_config(), tmp_path / "run", echo=lines.append, **parts)
    assert "\n" not in str(e.value) and lines == []
    assert not (tmp_path / "run").exists()  # nothing written: not even the workdir


@pytest.mark.parametrize("by_hand", [False, True], ids=["config", "chain"])
def test_the_sdlm_optimiser_refuses_a_module_with_batch_statistics(tmp_path, by_hand):
    if by_hand:  # the config says sgd; the SDLM state is in the user's chain
        c, parts = _config(), dict(optimizer=optax.chain(optax.clip_by_global_norm(10.0), lecun_jax.sdlm.sdlm(1e-3)))
    else:
        c, parts = _config(optimizer__name="sdlm", optimizer__learning_rate=0.001), {}
    with pytest.raises(PartError, match=r"^model keeps batch_stats beside its params; the sdlm optimiser's curvature"):
        lecun_jax.train_and_evaluate(c, tmp_path / "run", model=BatchNormCNN(), **quiet, **parts)
    assert not (tmp_path / "run").exists()


def test_the_command_line_maps_a_part_error_to_one_line_and_exit_2(capsys):
    from lecun_jax import cli

    with pytest.raises(SystemExit) as e, cli.one_line_errors():
        raise PartError("model returned (1, 5); a model must return (batch, 10) scores")
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: model returned (1, 5); a model must return (batch, 10) scores\n"
