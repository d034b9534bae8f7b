"""Karpathy's ablations: presets, augmentation, optimisers, replicas, more data."""

import functools
import http.server
import socket
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lecun_jax.core import augment, losses, optimizers, train
from lecun_jax import data
from lecun_jax import config as config_lib
from conftest import REPO

ABLATIONS = REPO / "configs" / "ablations.py"


def preset(row):
    return config_lib.load_file(ABLATIONS, row)


# docs/spec.md, "Karpathy's ablations": its table, field by field (cumulative, as Karpathy's steps are).
RECIPES = {
    "repro": dict(loss="mse", opt=("sgd", 0.03, "constant", None), out="tanh", act="tanh", drop=0.0, shift=None, passes=23, data="mnist1989"),
    "ce": dict(loss="cross_entropy", opt=("sgd", 0.01, "constant", None), out="linear", act="tanh", drop=0.0, shift=None, passes=23, data="mnist1989"),
    "adamw": dict(loss="cross_entropy", opt=("adamw", 3e-4, "linear", 1e-4), out="linear", act="tanh", drop=0.0, shift=None, passes=46, data="mnist1989"),
    "augment": dict(loss="cross_entropy", opt=("adamw", 3e-4, "linear", 1e-4), out="linear", act="tanh", drop=0.0, shift=(1, "roll"), passes=60, data="mnist1989"),
    "relu_dropout": dict(loss="cross_entropy", opt=("adamw", 3e-4, "linear", 1e-4), out="linear", act="relu", drop=0.25, shift=(1, "roll"), passes=80, data="mnist1989"),
    "more_data": dict(loss="cross_entropy", opt=("adamw", 3e-4, "linear", 1e-4), out="linear", act="relu", drop=0.25, shift=(1, "roll"), passes=80, data="mnist"),
}
PUBLISHED_TEST = {"repro": 4.09, "ce": 4.38, "adamw": 3.59, "augment": 2.19, "relu_dropout": 1.59, "more_data": 1.25}


@pytest.mark.parametrize("row", RECIPES)
def test_each_preset_is_the_recipe_of_the_spec(row):
    c, r = preset(row), RECIPES[row]
    config_lib.validate(c)
    assert c.loss == r["loss"]
    o = c.optimizer
    assert (o.name, o.learning_rate, o.schedule, o.final_learning_rate) == r["opt"]
    if o.name == "adamw":
        assert o.weight_decay == 0.01 and (o.b1, o.b2, o.eps) == (0.9, 0.999, 1e-8)  # torch's AdamW, not optax's
    assert (c.model.output_activation, c.model.activation, c.model.dropout) == (r["out"], r["act"], r["drop"])
    assert c.model.hidden_pad_value == -1.0  # Karpathy pads with -1 even after ReLU
    assert (c.augment.name == "shift") == (r["shift"] is not None)
    if r["shift"]:
        assert (c.augment.max_shift, c.augment.mode) == r["shift"]
    assert (c.train.passes, c.train.batch_size, c.train.shuffle) == (r["passes"], 1, False)
    assert c.data.name == r["data"] and c.num_seeds == 1
    assert c.reference.test_error == PUBLISHED_TEST[row]


def test_all_is_the_five_rows_on_1989_data():
    assert preset("all").sweep.rows == "repro,ce,adamw,augment,relu_dropout"


IMAGE = np.arange(16, dtype=np.float32).reshape(4, 4)


@pytest.mark.parametrize(
    "mode,dy,dx,expected",
    [
        ("roll", 1, 0, [[12, 13, 14, 15], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]),
        ("roll", 0, -1, [[1, 2, 3, 0], [5, 6, 7, 4], [9, 10, 11, 8], [13, 14, 15, 12]]),
        ("roll", -1, 1, [[7, 4, 5, 6], [11, 8, 9, 10], [15, 12, 13, 14], [3, 0, 1, 2]]),
        ("fill", 1, 0, [[-1, -1, -1, -1], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]),
        ("fill", 0, -1, [[1, 2, 3, -1], [5, 6, 7, -1], [9, 10, 11, -1], [13, 14, 15, -1]]),
        ("fill", -1, 1, [[-1, 4, 5, 6], [-1, 8, 9, 10], [-1, 12, 13, 14], [-1, -1, -1, -1]]),
        ("fill", 0, 0, IMAGE.tolist()),
    ],
)
def test_shifts_against_hand_made_arrays(mode, dy, dx, expected):
    expected = np.asarray(expected, np.float32)
    one = augment.shift_image(jnp.asarray(IMAGE)[..., None], dy, dx, max_shift=1, mode=mode)[..., 0]
    np.testing.assert_array_equal(one, expected)
    batch = augment.shift_batch(jnp.asarray(IMAGE)[None, ..., None], jnp.array([[dy, dx]]), max_shift=1, mode=mode)
    np.testing.assert_array_equal(batch[0, ..., 0], expected)


def test_random_shifts_cover_the_range_uniformly():
    shifts = np.asarray(augment.sample_shifts(jax.random.PRNGKey(0), (9000,), 1))
    counts = np.bincount((shifts[:, 0] + 1) * 3 + shifts[:, 1] + 1, minlength=9)
    assert counts.min() > 900 and counts.max() < 1100  # 9 outcomes, 1000 expected each


def test_dropout_is_off_at_eval_and_scales_in_training():
    from lecun_jax.core import model as M

    params = M.init(M.Net1989(), jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (64, 16, 16, 1), minval=-1, maxval=1)
    y = jnp.arange(64) % 10
    with_dropout, without = M.Net1989(dropout_rate=0.25), M.Net1989()
    a = train.make_evaluate(with_dropout, losses.mse, 64)(params, x, y)
    b = train.make_evaluate(without, losses.mse, 64)(params, x, y)
    assert float(a["loss"]) == float(b["loss"]) and int(a["misses"]) == int(b["misses"])
    # in training, dropout zeroes about a quarter of H3's 192 inputs and scales the rest by 1/(1 - rate)
    rngs = {"dropout": jax.random.PRNGKey(2)}
    out, state = with_dropout.apply({"params": params}, x, train=True, rngs=rngs, capture_intermediates=True)
    dropped_in = state["intermediates"]["Dropout_0"]["__call__"][0]  # H3's input after dropout
    h2 = x
    for layer in without.layers()[:2]:
        h2 = layer.activation(layer.linear(params[layer.name], h2))
    assert h2.shape == dropped_in.shape == (64, 192) and np.all(np.asarray(h2) != 0)
    zeroed = np.asarray(dropped_in) == 0
    assert 0.22 < zeroed.mean() < 0.28  # 12,288 draws: the std of the fraction is 0.004
    np.testing.assert_allclose(np.asarray(dropped_in)[~zeroed], np.asarray(h2 / 0.75)[~zeroed], rtol=1e-6)
    # and H3 and the output see exactly that
    h3, o = without.layers()[2:]
    expected = o.activation(o.linear(params["out"], h3.activation(h3.linear(params["h3"], dropped_in))))
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # other keys drop other units; every unit dropped leaves nothing of the digit to H3
    again = with_dropout.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
    assert not np.allclose(out, again)
    all_dropped = M.Net1989(dropout_rate=1.0).apply({"params": params}, x, train=True, rngs=rngs)
    assert np.allclose(all_dropped, all_dropped[0])


def test_adamw_matches_torchs_update_by_hand():
    # torch.optim.AdamW, one parameter: w <- w * (1 - lr * wd); m, v moments; w -= lr * m_hat / (sqrt(v_hat) + eps)
    c = config_lib.base().optimizer
    c.name, c.learning_rate = "adamw", 0.1
    tx = optimizers.make(c, steps_per_pass=10, passes=1)
    w, grads = np.array([1.0, -2.0]), [np.array([0.5, 0.1]), np.array([-0.3, 0.2]), np.array([0.05, -1.0])]
    params = {"w": jnp.asarray(w, jnp.float32)}
    state = tx.init(params)
    m = v = np.zeros(2)
    for t, g in enumerate(grads, 1):
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        w = w * (1 - 0.1 * 0.01)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
        w = w - 0.1 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(params["w"], w, rtol=1e-5)


def test_linear_schedule_is_karpathys_per_pass_rate():
    c = preset("adamw").optimizer
    rates = optimizers.pass_learning_rates(c, 46)
    expected = [(1 - p / 45) * 3e-4 + p / 45 * 1e-4 for p in range(46)]
    np.testing.assert_allclose(rates, expected, rtol=1e-5)
    lr = optimizers.learning_rate(c, steps_per_pass=7291, passes=46)
    assert float(lr(7290)) == pytest.approx(3e-4) and float(lr(7291)) == pytest.approx(expected[1], rel=1e-5)
    assert float(lr(46 * 7291 - 1)) == pytest.approx(1e-4, rel=1e-5)


def test_lenet5_schedule_is_lenet5s_steps_per_pass():
    # LeCun et al. 1998: 0.0005 for 2 passes, 0.0002 for 3, 0.0001 for 3, 0.00005 for 4, then 0.00001;
    # at learning_rate 0.0005 the schedule is those rates, at any other the same steps scaled
    c = config_lib.base().optimizer
    c.schedule, c.learning_rate = "lenet5", 5e-4
    lenet5 = [5e-4] * 2 + [2e-4] * 3 + [1e-4] * 3 + [5e-5] * 4 + [1e-5] * 11
    np.testing.assert_allclose(optimizers.pass_learning_rates(c, 23), lenet5, rtol=1e-6)
    c.learning_rate = 0.03
    by_hand = [0.03, 0.03, 0.012, 0.012, 0.012, 0.006, 0.006, 0.006, 0.003, 0.003, 0.003, 0.003] + [0.0006] * 11
    np.testing.assert_allclose(optimizers.pass_learning_rates(c, 23), by_hand, rtol=1e-6)
    lr = optimizers.learning_rate(c, steps_per_pass=7291, passes=23)  # set each pass, for every step of it
    for step, rate in [(7291, 0.03), (2 * 7291 - 1, 0.03), (2 * 7291, 0.012), (3 * 7291 - 1, 0.012), (23 * 7291 - 1, 0.0006)]:
        assert float(lr(step)) == pytest.approx(rate, rel=1e-6), step


def test_cross_entropy_by_hand():
    logits = jnp.array([[2.0, 1.0, 0.0] + [0.0] * 7])
    expected = -np.log(np.exp(2.0) / (np.exp(2.0) + np.exp(1.0) + 8 * np.exp(0.0)))
    assert float(losses.cross_entropy(logits, jnp.array([0]))[0]) == pytest.approx(expected, rel=1e-6)


def test_the_1989_targets_and_mse_by_hand():
    targets = np.asarray(losses.pm1_targets(jnp.array([3, 0])))
    assert targets.shape == (2, 10) and targets[0, 3] == 1 and targets[1, 0] == 1
    assert (targets == -1).sum() == 18  # nine -1 per digit
    outputs = jnp.zeros((1, 10))  # every output 0: each error is 1 in size
    assert float(losses.mse(outputs, jnp.array([7]))[0]) == pytest.approx(1.0)
    outputs = outputs.at[0, 7].set(1.0)  # the true class exact: 9 errors of 1 over 10 outputs
    assert float(losses.mse(outputs, jnp.array([7]))[0]) == pytest.approx(0.9)


def test_loss_target_targets_and_mse_by_hand():
    t = 0.8
    targets = np.asarray(losses.pm1_targets(jnp.array([3, 0]), target=t))
    assert targets[0, 3] == pytest.approx(t) and targets[1, 0] == pytest.approx(t)
    assert np.allclose(np.delete(targets[0], 3), -t) and np.allclose(np.delete(targets[1], 0), -t)
    c = config_lib.base()
    c.loss_target = t
    mse = train.make_parts(c, 10).loss  # the loss a run of this config trains with
    outputs = jnp.zeros((1, 10))  # every error is t in size
    assert float(mse(outputs, jnp.array([7]))[0]) == pytest.approx(t**2)
    assert float(losses.mse(outputs, jnp.array([7]), target=t)[0]) == pytest.approx(t**2)
    outputs = outputs.at[0, 7].set(t)  # the true class exact: 9 errors of t over 10 outputs
    assert float(mse(outputs, jnp.array([7]))[0]) == pytest.approx(0.9 * t**2)
    # cross-entropy has no targets: another value is refused, not ignored
    assert losses.get("cross_entropy", target=1.0) is losses.cross_entropy
    with pytest.raises(ValueError, match=r"^loss_target=0.8: loss=cross_entropy has no targets"):
        losses.get("cross_entropy", target=t)


def test_train_subsets(mnist1989):
    prefix = data.select_train(mnist1989, 100, "prefix")
    np.testing.assert_array_equal(prefix.train.labels, mnist1989.train.labels[:100])
    a = data.select_train(mnist1989, 100, "random", seed=3)
    b = data.select_train(mnist1989, 100, "random", seed=3)
    c = data.select_train(mnist1989, 100, "random", seed=4)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    assert not np.array_equal(a.train.labels, c.train.labels) or not np.array_equal(a.train.images, c.train.images)
    assert len(a.train) == 100 and a.test is mnist1989.test


@pytest.mark.slow
@pytest.mark.parametrize("row", ["repro", "relu_dropout"])
def test_vmapped_replicas_equal_separate_runs(mnist1989, row):
    c = preset(row)
    c.num_seeds, n = 3, 300
    images, labels = mnist1989.train.images[:n], mnist1989.train.labels[:n]
    model, tx = train.make_model(c), train.make_optimizer(c, n)
    train_pass = train.make_train_pass(
        model, tx, losses.get(c.loss), num_train=n, batch_size=1, shuffle=False, augment=c.augment
    )
    evaluate = jax.jit(train.make_evaluate(model, losses.get(c.loss), n))
    together = jax.jit(jax.vmap(train_pass, in_axes=(0, None, None)))
    states = train.init_states(c, model, tx)
    for _ in range(2):
        states = together(states, images, labels)
    for r in range(3):
        alone = train.init_state(model, tx, train.replica_key(c.seed, r))
        for _ in range(2):
            alone = jax.jit(train_pass)(alone, images, labels)
        mine = evaluate(jax.tree.map(lambda a: a[r], states["params"]), images, labels)
        theirs = evaluate(alone["params"], images, labels)
        assert int(mine["misses"]) == int(theirs["misses"])
        assert float(mine["loss"]) == pytest.approx(float(theirs["loss"]), rel=1e-4)


@pytest.mark.slow
def test_mnist16_builder_equals_the_idx_reader(shared_data, tfds_dir):
    loaded = data.load("mnist", source_dir=shared_data / "mnist", data_dir=tfds_dir)
    images, labels = data.read_mnist(shared_data / "mnist", "train")
    assert len(loaded.train) == 10_000
    np.testing.assert_array_equal(loaded.train.labels, labels)
    np.testing.assert_array_equal(loaded.train.images, data.resize_mnist(images))  # example by example
    # tested on the 2,007 mnist1989 test digits, like the 1989-sized rows
    np.testing.assert_array_equal(loaded.test.labels, data.load("mnist1989", data_dir=tfds_dir).test.labels)


@pytest.fixture
def mnist_server(shared_data):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shared_data / "mnist"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.mark.slow
def test_mnist16_download_path_over_loopback(mnist_server, shared_data, tmp_path):
    downloaded = data.load("mnist", mnist_url=mnist_server, data_dir=tmp_path)
    from_dir = data.load("mnist", source_dir=shared_data / "mnist", data_dir=tmp_path)
    np.testing.assert_array_equal(downloaded.train.images, from_dir.train.images)
    np.testing.assert_array_equal(downloaded.train.labels, from_dir.train.labels)
    assert any((tmp_path / "downloads").rglob("train-images-idx3-ubyte.gz"))


def test_mnist16_without_source_or_network_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(data.DataError, match=r"could not download .*set data.source_dir to a directory"):
        data.load("mnist", mnist_url=f"http://127.0.0.1:{port}/", data_dir=tmp_path)
