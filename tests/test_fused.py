"""The hand-derived SGD steps (one network, replicas) and the Toeplitz evaluation against the general formulations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lecun_jax import config as config_lib
from lecun_jax import conv as conv_lib
from lecun_jax import fused, losses, model as model_lib, train
from reference import karpathy_forward, mse_1989

STEPS = 40


def _config(**fields):
    c = config_lib.base()
    for key, value in fields.items():
        section, name = key.split("__")
        c[section][name] = value
    return c


def _allclose(a, b, rtol=1e-4, atol=2e-6):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def test_im2col_matches_the_patch_gather_and_col2im_is_its_transpose():
    spec = conv_lib.ConvSpec(8, 12, 12, model_lib.H2_INPUTS)
    h = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 8, 8))  # (R, C, 8, 8)
    ours = fused._im2col(h, -1.0)  # (R, C * 25, 16), K ordered (c, ky, kx)
    patch, _, _, _ = conv_lib._tables(spec)  # (16, 25 * C) into [h (y, x, c) ..., pad], K ordered (ky, kx, c)
    for r in range(2):
        flat = np.concatenate([np.asarray(h[r]).transpose(1, 2, 0).reshape(-1), [-1.0]])
        expected = flat[patch].reshape(16, 25, 12).transpose(2, 1, 0).reshape(300, 16)
        np.testing.assert_array_equal(np.asarray(ours[r]), expected)
    # col2im is the VJP of im2col (the pad value is a constant): <im2col(h), g> = <h, col2im(g)>
    g = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 300))
    _, vjp = jax.vjp(lambda v: fused._im2col(v, -1.0).transpose(0, 2, 1), h)
    np.testing.assert_allclose(fused._col2im(g, 12, 8), vjp(g)[0], rtol=1e-5, atol=1e-5)


def test_single_step_tables_match_the_patch_gathers_and_the_inverse_is_the_transpose():
    # H1: the (25, 64) table reads the same pixels as conv's (64, 25) patch table, -1 for the padding.
    spec1 = conv_lib.ConvSpec(16, 1, 12, ((0,),))
    patch1, _, _, _ = conv_lib._tables(spec1)
    image = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (256,)))
    expected1 = np.concatenate([image, [-1.0]])[patch1].T
    np.testing.assert_array_equal(np.asarray(fused._gather(jnp.asarray(image), fused._h1_table(), -1.0)), expected1)
    # H2: the (16, C * 25) table on maps laid out (C, 64) equals conv's patch gather on (y, x, c), K reordered.
    spec2 = conv_lib.ConvSpec(8, 12, 12, model_lib.H2_INPUTS)
    patch2, _, _, _ = conv_lib._tables(spec2)
    table, inverse = fused._h2_tables(12)
    h = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (12, 64)))
    expected2 = np.concatenate([h.T.reshape(-1), [0.5]])[patch2].reshape(16, 25, 12).transpose(0, 2, 1).reshape(16, 300)
    np.testing.assert_array_equal(np.asarray(fused._gather(jnp.asarray(h.reshape(-1)), table, 0.5)), expected2)
    # Each H1 unit is copied into at most 3 x 3 windows (5 x 5 kernels, stride 2), and 16 * 300 places
    # minus the padded ones are listed exactly once.
    assert inverse.shape == (768, 9)
    assert np.array_equal(np.sort(inverse[inverse >= 0]), np.flatnonzero(table.reshape(-1) >= 0))
    # The gather-and-sum over the inverse is the gather's VJP.
    g = jax.random.normal(jax.random.PRNGKey(4), (16, 300))
    _, vjp = jax.vjp(lambda v: fused._gather(v, table, -1.0), jnp.asarray(h.reshape(-1)))
    np.testing.assert_allclose(fused._scatter_sum(g, inverse), vjp(g)[0], rtol=1e-5, atol=1e-5)


def test_fused_pass_equals_hand_written_sgd(mnist1989):
    c = config_lib.base()
    model = train.make_model(c)
    state = train.init_states(c, model, train.make_optimizer(c, STEPS))
    images, labels = mnist1989.train.images[:STEPS], mnist1989.train.labels[:STEPS]
    ours = jax.jit(fused.make_train_pass(model, loss="mse", learning_rate=0.03, num_train=STEPS))(state, images, labels)
    grad = jax.jit(jax.grad(lambda p, x, y: mse_1989(karpathy_forward(p, x), y)))
    params = state["params"]
    for i in range(STEPS):
        params = jax.tree.map(lambda w, g: w - 0.03 * g, params, grad(params, images[i : i + 1], labels[i : i + 1]))
    _allclose(ours["params"], params)
    assert int(ours["pass"]) == 1


@pytest.mark.parametrize(
    "fields",
    [
        {},  # 1989: tanh, mse
        {"model__activation": "relu", "model__output_activation": "linear", "loss__": "cross_entropy", "model__hidden_pad_value": 0.0},
        {"model__activation": "scaled_tanh", "model__output_activation": "scaled_tanh", "model__width": 0.5},
    ],
    ids=["1989", "relu_ce", "scaled_tanh_width0.5"],
)
@pytest.mark.parametrize(
    "replicas, batched",  # batched: the replica-batched step (by default above SINGLE_STEPS_UP_TO replicas)
    [(1, None), (1, True), (3, None), (3, True)],
    ids=["1", "1 batched", "3", "3 batched"],
)
def test_fused_pass_equals_the_general_pass(mnist1989, fields, replicas, batched):
    fields = dict(fields)  # parametrize shares the dict between the replica cases
    loss = fields.pop("loss__", "mse")
    c = _config(**fields)
    c.loss, c.num_seeds = loss, replicas
    assert fused.unsupported(c) is None
    model, tx = train.make_model(c), train.make_optimizer(c, STEPS)
    state = train.init_states(c, model, tx)
    images, labels = mnist1989.train.images[:STEPS], mnist1989.train.labels[:STEPS]
    general = train.make_train_pass(model, tx, losses.get(loss), num_train=STEPS, batch_size=1, shuffle=False)
    if replicas > 1:
        general = jax.vmap(general, in_axes=(0, None, None))
    expected = jax.jit(general)(state, images, labels)["params"]
    got = jax.jit(fused.make_train_pass(model, loss=loss, learning_rate=0.03, num_train=STEPS, batched=batched))(
        state, images, labels
    )
    _allclose(got["params"], expected)
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), got["params"], state["params"])
    assert min(jax.tree.leaves(moved)) > 0


def test_fused_shuffled_pass_follows_the_general_order(mnist1989):
    c = config_lib.base()
    c.train.shuffle = True
    model, tx = train.make_model(c), train.make_optimizer(c, STEPS)
    state = train.init_states(c, model, tx)
    images, labels = mnist1989.train.images[:STEPS], mnist1989.train.labels[:STEPS]
    general = train.make_train_pass(model, tx, losses.mse, num_train=STEPS, batch_size=1, shuffle=True)
    expected = jax.jit(general)(state, images, labels)["params"]
    got = jax.jit(fused.make_train_pass(model, loss="mse", learning_rate=0.03, num_train=STEPS, shuffle=True))(
        state, images, labels
    )
    _allclose(got["params"], expected)


def test_make_step_in_a_loop_equals_the_pass(mnist1989):
    c = config_lib.base()
    model = train.make_model(c)
    state = train.init_states(c, model, train.make_optimizer(c, STEPS))
    images, labels = mnist1989.train.images[:STEPS], mnist1989.train.labels[:STEPS]
    step, to_fast, from_fast = fused.make_step(model, loss="mse", learning_rate=0.03)
    f, step = to_fast(state["params"]), jax.jit(step)
    for i in range(STEPS):
        f = step(f, images[i], labels[i])
    expected = jax.jit(fused.make_train_pass(model, loss="mse", learning_rate=0.03, num_train=STEPS))(state, images, labels)
    _allclose(from_fast(f), expected["params"])


# 3 replicas: one group; 6: two groups of 3; 8: two groups of fused.EVAL_GROUP = 4 (a loop over groups)
@pytest.mark.parametrize("activation, output, replicas", [("tanh", "tanh", 3), ("relu", "linear", 6), ("tanh", "tanh", 8)])
def test_replicas_evaluated_together_equal_one_at_a_time(mnist1989, activation, output, replicas):
    c = config_lib.base()
    c.num_seeds, c.model.activation, c.model.output_activation = replicas, activation, output
    model = train.make_model(c)
    params = train.init_states(c, model, train.make_optimizer(c, 100))["params"]
    images, labels = mnist1989.test.images[:300], mnist1989.test.labels[:300]
    assert train.replicas_in_one_evaluation(model)
    evaluate = jax.jit(train.make_evaluate(model, losses.mse, 300, chunk=128))  # 3 chunks, the last one padded
    together = evaluate(params, images, labels)
    assert together["misses"].shape == (replicas,)
    for r in range(replicas):
        one = jax.tree.map(lambda a, r=r: a[r], params)
        alone = evaluate(one, images, labels)
        assert int(together["misses"][r]) == int(alone["misses"])
        np.testing.assert_allclose(together["loss"][r], alone["loss"], rtol=1e-5)
        outputs = model.apply({"params": one}, images)
        assert int(alone["misses"]) == int(np.sum(np.argmax(outputs, -1) != labels))


def test_epoch_with_fused_replicas_gives_the_general_metrics(mnist1989):
    c = config_lib.base()
    c.num_seeds = 3
    c.data.train_size = 200
    ds = train.load_data(c)
    n_train, n_test = len(ds.train), len(ds.test)
    arrays = train.device_data(ds)
    model, tx = train.make_model(c), train.make_optimizer(c, n_train)
    results = {}
    for use in (True, False):
        state = train.init_states(c, model, tx)
        results[use] = jax.jit(train.make_epoch(c, n_train, n_test, fused=use))(state, arrays)
    (s1, m1), (s0, m0) = results[True], results[False]
    _allclose(s1["params"], s0["params"])
    for split in ("train", "test"):
        np.testing.assert_array_equal(m1[split]["misses"], m0[split]["misses"])
        np.testing.assert_allclose(m1[split]["loss"], m0[split]["loss"], rtol=1e-4)


@pytest.mark.parametrize(
    "fields, why",
    [
        ({"train__batch_size": 4}, "batch_size"),
        ({"optimizer__name": "adamw"}, "optimizer.name"),
        ({"optimizer__schedule": "linear", "optimizer__final_learning_rate": 0.01}, "schedule"),
        ({"augment__name": "shift"}, "augment"),
        ({"model__dropout": 0.25}, "dropout"),
    ],
)
def test_unsupported_recipes_say_why_and_fused_true_refuses_them(fields, why):
    c = _config(**fields)
    assert why in fused.unsupported(c)
    with pytest.raises(ValueError, match="cannot use the fused step"):
        train.make_epoch(c, 10, 10, fused=True)


@pytest.mark.parametrize("activation, output, pad", [("tanh", "tanh", -1.0), ("relu", "linear", 0.0)])
def test_dense_apply_equals_the_flax_module(mnist1989, activation, output, pad):
    c = _config(model__activation=activation, model__output_activation=output, model__hidden_pad_value=pad)
    model = train.make_model(c)
    params = jax.tree.map(lambda w: w + 0.05, model_lib.init(model, jax.random.PRNGKey(3)))
    images = mnist1989.test.images[:300]
    matrices, apply = fused.make_apply_dense(model)
    got = jax.jit(lambda p, x: apply(p, matrices(p), x))(params, images)
    expected = model.apply({"params": params}, images)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # each H2 kernel entry lands once per output position: in its input's row, or in the pad row
    m2 = matrices(params)
    k2 = np.asarray(params["h2"]["kernel"])
    np.testing.assert_allclose(float(jnp.sum(m2)), 16 * k2.sum(), rtol=1e-4)
    np.testing.assert_allclose(float(jnp.sum(m2[-1])), _on_padding(k2, 8), rtol=1e-4)
    # and nowhere else: an input row holds one weight per (position, map) that sees it
    in_bounds = sum(0 <= 2 * q + k - 2 < 8 for q in range(4) for k in range(5)) ** 2
    connections = model.block * sum(len(group) for group in model_lib.h2_inputs(model.block))  # 12 maps x 8 inputs
    assert connections == 96
    assert int(jnp.sum(m2[:-1] != 0)) == in_bounds * connections


def _on_padding(kernel, size):
    """The kernel weight that falls on the padding, summed over the output positions."""
    out = size // 2
    total = 0.0
    for qy in range(out):
        for qx in range(out):
            for ky in range(5):
                for kx in range(5):
                    if not (0 <= 2 * qy + ky - 2 < size and 0 <= 2 * qx + kx - 2 < size):
                        total += kernel[ky, kx].sum()
    return total
