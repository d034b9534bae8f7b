"""The paper's optimiser: the SDLM transformation and its two curvature estimators."""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lecun_jax import config as config_lib
from lecun_jax.core import conv as conv_lib
from lecun_jax.core import losses, sdlm, train
from lecun_jax.core import model as M
from lecun_jax import load_run, train_and_evaluate
from lecun_jax.core.modules import PartError
from conftest import REPO
from user_modules import TanhMLP

MSE = losses.mse  # mean over outputs of (o - t)^2, targets +-1


@dataclasses.dataclass(frozen=True)
class Layer:
    """What becker_lecun needs of a layer (as lecun_jax.core.model.Layer has it)."""

    name: str
    linear: Callable  # linear(p, x, squared=False)
    activation: Callable


def _dense(p, x, squared=False):
    del squared
    return x @ p["w"] + p["b"]


def test_sdlm_with_no_curvature_and_mu_1_is_plain_sgd():
    params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(0.3)}
    grads = {"w": jnp.array([0.1, 0.2, -0.3]), "b": jnp.array(-0.5)}
    sgd, tx = optax.sgd(0.03), sdlm.sdlm(0.03, mu=1.0)
    a, _ = sgd.update(grads, sgd.init(params), params)
    b, _ = tx.update(grads, tx.init(params), params)  # h = 0 until set
    jax.tree.map(np.testing.assert_allclose, a, b)


def test_sdlm_step_is_lr_over_mu_plus_h():
    params = {"w": jnp.array([1.0, -2.0])}
    tx = sdlm.sdlm(0.1, mu=0.02)
    state = sdlm.with_hessian(tx.init(params), {"w": jnp.array([0.08, 0.48])})
    updates, _ = tx.update({"w": jnp.array([1.0, 1.0])}, state, params)
    np.testing.assert_allclose(updates["w"], [-0.1 / 0.1, -0.1 / 0.5], rtol=1e-6)
    assert sdlm.uses_hessian(state) and not sdlm.uses_hessian(optax.sgd(0.1).init(params))


@pytest.mark.slow
def test_exact_ggn_is_the_diagonal_of_jt_h_j():
    # one tanh layer, 4 inputs -> 10 outputs, and a linear one with cross-entropy: against jacfwd/hessian directly
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {"w": jax.random.normal(k[0], (4, 10)) * 0.5, "b": jax.random.normal(k[1], (10,)) * 0.1}
    x = jax.random.normal(k[2], (3, 4))
    y = jnp.array([1, 7, 3])
    for act, loss in ((jnp.tanh, MSE), (lambda a: a, losses.cross_entropy)):
        apply = lambda p, x: act(x @ p["w"] + p["b"])
        got = sdlm.exact_ggn(apply, loss, params, x, y)
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        diags = []
        for i in range(3):
            f = lambda v: apply(unravel(v), x[i : i + 1])[0]
            jac = jax.jacfwd(f)(flat)  # (10, P)
            h = jax.hessian(lambda o: loss(o[None], y[i : i + 1])[0])(f(flat))  # (10, 10)
            diags.append(jnp.diag(jac.T @ h @ jac))
        want = unravel(jnp.mean(jnp.stack(diags), axis=0))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), got, want)


def test_becker_lecun_by_hand_on_two_layers():
    # 2 inputs -> 2 tanh units -> 2 tanh outputs, MSE over 2 outputs: d2E/do^2 = 2/2 = 1.
    x = np.array([0.5, -1.0])
    w1, b1 = np.array([[0.8, -0.4], [0.3, 0.9]]), np.array([0.1, -0.2])
    w2, b2 = np.array([[-1.2, 0.7], [0.5, 0.6]]), np.array([0.3, 0.0])
    a1 = x @ w1 + b1
    h = np.tanh(a1)
    a2 = h @ w2 + b2
    o = np.tanh(a2)
    d2_o = np.array([1.0, 1.0])
    d2_a2 = (1 - o**2) ** 2 * d2_o
    want_w2, want_b2 = np.outer(h**2, d2_a2), d2_a2
    d2_h = (w2**2) @ d2_a2  # drop off-diagonal terms
    d2_a1 = (1 - h**2) ** 2 * d2_h
    want_w1, want_b1 = np.outer(x**2, d2_a1), d2_a1
    layers = [Layer("l1", _dense, jnp.tanh), Layer("l2", _dense, jnp.tanh)]
    params = {"l1": {"w": jnp.asarray(w1), "b": jnp.asarray(b1)}, "l2": {"w": jnp.asarray(w2), "b": jnp.asarray(b2)}}
    got = sdlm.becker_lecun(layers, MSE, params, jnp.asarray(x)[None], jnp.array([0]))
    np.testing.assert_allclose(got["l2"]["w"], want_w2, rtol=1e-5)
    np.testing.assert_allclose(got["l2"]["b"], want_b2, rtol=1e-5)
    np.testing.assert_allclose(got["l1"]["w"], want_w1, rtol=1e-5)
    np.testing.assert_allclose(got["l1"]["b"], want_b1, rtol=1e-5)
    # with two layers and a diagonal loss Hessian no cross term exists yet: the exact diagonal agrees
    apply = lambda p, x: jnp.tanh(jnp.tanh(x @ p["l1"]["w"] + p["l1"]["b"]) @ p["l2"]["w"] + p["l2"]["b"])
    exact = sdlm.exact_ggn(apply, MSE, params, jnp.asarray(x)[None], jnp.array([0]))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), exact, got)


def test_a_shared_weight_sums_its_connections():
    # one weight w used twice: a_1 = w x_1, a_2 = w x_2 (a 1-D "convolution"); linear outputs, MSE over 2
    layer = Layer("c", lambda p, x, squared=False: x * p["w"], lambda a: a)
    x = jnp.array([[0.5, -2.0]])
    got = sdlm.becker_lecun([layer], MSE, {"c": {"w": jnp.array(0.7)}}, x, jnp.array([0]))
    assert float(got["c"]["w"]) == pytest.approx(0.5**2 * 1.0 + 2.0**2 * 1.0)  # x_j^2 * d2E/da^2, summed


@pytest.mark.slow
def test_net1989_estimators_agree_where_they_must(mnist1989):
    model = M.Net1989()
    params = M.init(model, jax.random.PRNGKey(0))
    x, y = mnist1989.train.images[:8], mnist1989.train.labels[:8]
    out = x
    for layer in model.layers():  # the layer-by-layer forward is the model's
        out = layer.activation(layer.linear(params[layer.name], out))
    np.testing.assert_allclose(out, model.apply({"params": params}, x), atol=1e-5)
    direct = sdlm.becker_lecun(model.layers(), MSE, params, x, y)
    bl = sdlm.estimator("becker_lecun", model, MSE)(params, x, y)
    jax.tree.map(np.testing.assert_array_equal, bl, direct)
    ggn = sdlm.estimator("exact_ggn", model, MSE)(params, x, y)
    # MSE's Hessian is diagonal, so for the output layer the two are the same number
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9), bl["out"], ggn["out"])
    for layer in ("h1", "h2", "h3"):
        assert all(float(jnp.min(v)) >= 0 for v in jax.tree.leaves(bl[layer]))  # positive, as the paper needs
        assert jax.tree.map(jnp.shape, bl[layer]) == jax.tree.map(jnp.shape, params[layer])
    # H2's unconnected kernel entries are no parameters: no curvature either
    unconnected = conv_lib.connection_mask(12, 12, M.H2_INPUTS) == 0
    for est in (bl, ggn):
        assert np.all(np.asarray(est["h2"]["kernel"])[unconnected] == 0)
        assert np.all(np.asarray(est["h2"]["kernel"])[~unconnected] > 0)
    # deeper down, Becker-LeCun drops the cross terms between units that the exact diagonal keeps
    assert not np.allclose(bl["h1"]["kernel"], ggn["h1"]["kernel"], rtol=1e-2)


@pytest.mark.slow
def test_training_re_estimates_before_each_pass(mnist1989):
    c = config_lib.load_file(REPO / "configs" / "lecun1989.py", "usps_sdlm")
    c.optimizer.sdlm_samples = 50
    n = 200
    model, tx = train.make_model(c), train.make_optimizer(c, n)
    state = train.init_state(model, tx, train.replica_key(c.seed, 0))
    assert float(jnp.max(state["opt_state"][0].h["h3"]["kernel"])) == 0.0
    train_pass = jax.jit(train.make_train_pass(
        model, tx, losses.mse, num_train=n, batch_size=1, shuffle=False,
        curvature=sdlm.estimator("becker_lecun", model, losses.mse), curvature_samples=50,
    ))
    after = train_pass(state, mnist1989.train.images[:n], mnist1989.train.labels[:n])
    h = after["opt_state"][0].h
    assert float(jnp.min(h["h3"]["kernel"])) >= 0 and float(jnp.max(h["h3"]["kernel"])) > 0
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(after["params"]))


def test_sdlm_loss_scale_scales_the_refreshed_estimate(mnist1989):
    # the diagonal is of the loss times the scale: 10x the loss, exactly 10x h (same params, same digits)
    n = 20
    x, y = mnist1989.train.images[:n], mnist1989.train.labels[:n]
    h = {}
    for scale in (1.0, 10.0):
        c = config_lib.load_file(REPO / "configs" / "lecun1989.py", "usps_sdlm")
        c.optimizer.sdlm_samples, c.optimizer.sdlm_loss_scale = n, scale  # all n digits: the pick is only their order
        parts = train.make_parts(c, n)
        train_pass, _ = train.make_step_fns(c, parts, n, n)
        state = train.init_state(parts.model, parts.optimizer, train.replica_key(c.seed, 0))
        h[scale] = _h(jax.jit(train_pass)(state, x, y)["opt_state"])  # the pass's estimate, held for the pass
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(b, np.float32(10.0) * np.asarray(a)), h[1.0], h[10.0])
    assert config_lib.base().optimizer.sdlm_loss_scale == 1.0  # the default: the estimate of the mean loss itself
    want = jax.jit(lambda p: sdlm.becker_lecun(M.Net1989().layers(), MSE, p, x, y))(state["params"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9), h[1.0], want)


# --- the paper's optimiser wherever it stands in the chain ------------------------------

BY_HAND = {  # the usps_sdlm preset's optimiser (lr 1e-3, mu 0.02, constant), built by a user
    "chain": lambda: optax.chain(optax.clip_by_global_norm(10.0), sdlm.sdlm(1e-3)),
    "alone": lambda: sdlm.sdlm(1e-3),
}
quiet = dict(echo=lambda s: None, plots=False)


def _h(opt_state):
    is_state = lambda s: isinstance(s, sdlm.DiagonalHessianState)
    (state,) = [s for s in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(s)]
    return state.h


@pytest.mark.slow
@pytest.mark.parametrize("form,module,estimator", [("chain", None, "becker_lecun"), ("alone", TanhMLP(), "exact_ggn")],
                         ids=["net1989-chain", "mlp-alone"])
def test_the_training_pass_refreshes_an_sdlm_state_a_user_built(mnist1989, form, module, estimator):
    c = config_lib.base()  # optimizer.name=sgd: the SDLM state comes from the user's optimiser alone
    n = c.train.batch_size = 50  # sdlm_samples (500) > n: the estimate is on all n digits
    c.optimizer.sdlm_estimator = estimator
    parts = train.make_parts(c, n, model=module, optimizer=BY_HAND[form]())
    train_pass, _ = train.make_step_fns(c, parts, n, n)
    state = train.init_state(parts.model, parts.optimizer, train.replica_key(c.seed, 0))
    x, y = mnist1989.train.images[:n], mnist1989.train.labels[:n]
    after = jax.jit(train_pass)(state, x, y)
    if module is None:
        layers = M.Net1989().layers()
        reference = lambda p, x, y: sdlm.becker_lecun(layers, MSE, p, x, y)
    else:
        reference = lambda p, x, y: sdlm.exact_ggn(lambda p, x: module.apply({"params": p}, x), MSE, p, x, y)
    want = jax.jit(reference)(state["params"], x, y)  # jitted: op by op, it is slow on a CPU
    assert all(float(jnp.max(jnp.abs(v))) == 0.0 for v in jax.tree.leaves(_h(state["opt_state"])))  # h = 0 at init
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9), _h(after["opt_state"]), want)


def _usps_sdlm():
    c = config_lib.load_file(REPO / "configs" / "lecun1989.py", "usps_sdlm")
    assert (c.optimizer.learning_rate, c.optimizer.sdlm_mu, c.optimizer.schedule) == (1e-3, 0.02, "constant")
    c.data.train_size, c.train.passes, c.optimizer.sdlm_samples = 300, 2, 100
    return c


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("preset")
    train_and_evaluate(_usps_sdlm(), workdir, **quiet)
    return load_run(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("form", BY_HAND)
def test_an_sdlm_optimizer_passed_by_hand_trains_as_the_preset(preset_run, tmp_path, form):
    train_and_evaluate(_usps_sdlm(), tmp_path, optimizer=BY_HAND[form](), **quiet)
    run = load_run(tmp_path)
    misses = lambda r: [(m["pass"], m["split"], m["misses"]) for m in r.metrics]
    assert misses(run) == misses(preset_run)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), run.params, preset_run.params)


def _mlp_config(estimator):
    c = config_lib.base()
    c.data.train_size, c.train.passes, c.optimizer.sdlm_estimator = 300, 2, estimator
    return c


def test_becker_lecun_on_a_module_without_layers_is_refused_before_any_pass(tmp_path):
    with pytest.raises(PartError, match=r"^optimizer.sdlm_estimator=becker_lecun needs a module with layers\(\) "
                                        r"like Net1989, not TanhMLP; valid for any module: exact_ggn$"):
        train_and_evaluate(_mlp_config("becker_lecun"), tmp_path / "run", model=TanhMLP(), optimizer=BY_HAND["chain"](),
                           **quiet)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.slow
def test_exact_ggn_trains_a_module_without_layers_with_a_hand_built_sdlm(tmp_path):
    c = _mlp_config("exact_ggn")
    train_and_evaluate(c, tmp_path / "run", model=TanhMLP(), optimizer=BY_HAND["chain"](), **quiet)
    errors = [m["error"] for m in load_run(tmp_path / "run").metrics if m["split"] == "test"]
    assert errors[0] > errors[1] and errors[1] < 50  # learning; untrained, this MLP misses 88 %
