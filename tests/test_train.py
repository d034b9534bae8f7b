"""The compiled training pass against hand-written SGD, evaluation, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lecun_jax import config as config_lib
from lecun_jax import experiment, losses, reporting, train
from reference import karpathy_forward, mse_1989


def _setup(config=None):
    config = config or config_lib.base()
    model = train.make_model(config)
    tx = train.make_optimizer(config, 7291)
    state = train.init_states(config, model, tx)
    return config, model, tx, state


def _hand_written_sgd(params, images, labels, lr, batch_size=1):
    """w <- w - lr * dL/dw, one (mini-)batch at a time in order, on Karpathy's forward."""
    grad = jax.jit(jax.grad(lambda p, x, y: mse_1989(karpathy_forward(p, x), y)))
    for start in range(0, len(labels), batch_size):
        g = grad(params, images[start : start + batch_size], labels[start : start + batch_size])
        params = jax.tree.map(lambda w, gw: w - lr * gw, params, g)
    return params


@pytest.mark.parametrize("num_steps", [1, 5])
def test_scanned_pass_equals_hand_written_sgd(mnist1989, num_steps):
    config, model, tx, state = _setup()
    images, labels = mnist1989.train.images[:num_steps], mnist1989.train.labels[:num_steps]
    train_pass = jax.jit(train.make_train_pass(model, tx, losses.mse, num_train=num_steps, batch_size=1, shuffle=False))
    ours = train_pass(state, images, labels)
    theirs = _hand_written_sgd(state["params"], images, labels, lr=0.03)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), ours["params"], theirs)
    assert int(ours["pass"]) == 1
    # the step really moved the weights
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), ours["params"], state["params"])
    assert min(jax.tree.leaves(moved)) > 0


def test_last_short_batch_is_masked_not_dropped(mnist1989):
    # 7 examples in batches of 3: [0 1 2] [3 4 5] [6]; the last step averages over one example.
    config, model, tx, state = _setup()
    images, labels = mnist1989.train.images[:7], mnist1989.train.labels[:7]
    train_pass = jax.jit(train.make_train_pass(model, tx, losses.mse, num_train=7, batch_size=3, shuffle=False))
    ours = train_pass(state, images, labels)["params"]
    theirs = _hand_written_sgd(state["params"], images, labels, lr=0.03, batch_size=3)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), ours, theirs)


def test_evaluate_counts_misses_and_averages_the_loss(mnist1989):
    config, model, tx, state = _setup()
    params = jax.tree.map(lambda w: w + 0.05, state["params"])  # untrained, but not symmetric
    images, labels = mnist1989.test.images, mnist1989.test.labels
    outputs = np.asarray(karpathy_forward(params, images))
    expected_misses = int(np.sum(outputs.argmax(axis=1) != labels))
    expected_loss = float(np.mean((outputs - np.where(np.arange(10) == labels[:, None], 1.0, -1.0)) ** 2))
    for chunk in (2007, 500):  # one chunk, and several with a padded last chunk
        got = jax.jit(train.make_evaluate(model, losses.mse, 2007, chunk=chunk))(params, images, labels)
        assert got["misses"].dtype == jnp.int32 and int(got["misses"]) == expected_misses
        assert float(got["loss"]) == pytest.approx(expected_loss, rel=1e-5)


def test_a_pass_lowers_the_loss(mnist1989):
    config, model, tx, state = _setup()
    n = 2000
    images, labels = mnist1989.train.images[:n], mnist1989.train.labels[:n]
    evaluate = jax.jit(train.make_evaluate(model, losses.mse, n))
    before = evaluate(state["params"], images, labels)
    train_pass = jax.jit(train.make_train_pass(model, tx, losses.mse, num_train=n, batch_size=1, shuffle=False))
    after = evaluate(train_pass(state, images, labels)["params"], images, labels)
    assert float(after["loss"]) < 0.5 * float(before["loss"])
    assert int(after["misses"]) < int(before["misses"])


def _run(tmp_path, name, **overrides):
    config = config_lib.base()
    config.train.passes, config.data.train_size = 1, 1000
    for k, v in overrides.items():
        section, field = k.split("__")
        config[section][field] = v
    summary = experiment.train_and_evaluate(config, tmp_path / name, echo=lambda s: None, plots=False)
    return summary, reporting.read_jsonl(tmp_path / name / reporting.METRICS), reporting.load_params(tmp_path / name / reporting.PARAMS)


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    _, m1, p1 = _run(tmp_path, "a")
    _, m2, p2 = _run(tmp_path, "b")
    assert m1 == m2  # every metric, bit for bit
    jax.tree.map(np.testing.assert_array_equal, p1, p2)
    config = config_lib.base()
    config.seed, config.train.passes, config.data.train_size = 7, 1, 1000
    experiment.train_and_evaluate(config, tmp_path / "c", echo=lambda s: None, plots=False)
    m3 = reporting.read_jsonl(tmp_path / "c" / reporting.METRICS)
    assert [r["loss"] for r in m3] != [r["loss"] for r in m1]
