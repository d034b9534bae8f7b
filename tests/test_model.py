"""The 1989 network: sizes from the paper, connectivity, initialisation, formulations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lecun_jax import model as M
from reference import karpathy_forward

# LeCun et al. (1989) / Karpathy: parameters per layer and in all.
PAPER_PARAMS = {"h1": 1068, "h2": 2592, "h3": 5790, "out": 310, "total": 9760}


@pytest.fixture(scope="module")
def params():
    return M.init(M.Net1989(), jax.random.PRNGKey(0))


def test_parameter_counts_match_the_paper(params):
    counted = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in params.items()}
    assert counted == {k: v for k, v in PAPER_PARAMS.items() if k != "total"}
    assert sum(counted.values()) == 9760
    assert M.count_params(params) == PAPER_PARAMS
    assert M.count_params() == PAPER_PARAMS  # from shapes alone


def test_mac_count_is_63660():
    # outputs x fan-in, by hand: H1 8*8*12 units x 25, H2 4*4*12 x 5*5*8, H3 30 x 192, out 10 x 30.
    by_hand = {"h1": 768 * 25, "h2": 192 * 200, "h3": 30 * 192, "out": 10 * 30}
    assert M.count_macs() == by_hand | {"total": 63_660}


def test_shapes(params):
    assert params["h1"]["kernel"].shape == (5, 5, 1, 12) and params["h1"]["bias"].shape == (8, 8, 12)
    assert params["h2"]["kernel"].shape == (5, 5, 8, 12) and params["h2"]["bias"].shape == (4, 4, 12)
    for batch in (1, 7):
        out = M.Net1989().apply({"params": params}, jnp.zeros((batch, 16, 16, 1)))
        assert out.shape == (batch, 10)
    with pytest.raises(ValueError, match=r"\(batch, 16, 16, 1\)"):
        M.Net1989().apply({"params": params}, jnp.zeros((16, 16)))


def test_init_ranges_and_biases(params):
    for layer, fan_in in {"h1": 25, "h2": 200, "h3": 192, "out": 30}.items():
        w = np.asarray(params[layer]["kernel"])
        bound = 2.4 / np.sqrt(fan_in)
        assert np.abs(w).max() <= bound
        # uniform on the whole interval: the extremes are approached, the mean is ~0
        assert np.abs(w).max() > 0.9 * bound
        assert abs(w.mean()) < 0.1 * bound
    # a uniform's std is bound/sqrt(3): check on the largest layer
    w = np.asarray(params["h3"]["kernel"])
    assert np.isclose(w.std(), 2.4 / np.sqrt(192) / np.sqrt(3), rtol=0.05)
    for layer in ("h1", "h2", "h3"):
        assert np.all(np.asarray(params[layer]["bias"]) == 0)
    assert np.all(np.asarray(params["out"]["bias"]) == -1)


def _h2_map_dependence(params, conv):
    """Which H1 maps each H2 map's output depends on, by differentiating through H2."""
    h2 = M.Conv1989(12, M.H2_INPUTS, -1.0, conv, name="h2")
    h1 = jax.random.normal(jax.random.PRNGKey(1), (1, 8, 8, 12))
    depends = np.zeros((12, 12), bool)  # [h2 map, h1 map]
    for o in range(12):
        g = jax.grad(lambda x: h2.apply({"params": params["h2"]}, x)[..., o].sum())(h1)
        depends[o] = np.abs(np.asarray(g)).sum(axis=(0, 1, 2)) > 0
    return depends


@pytest.mark.parametrize("conv", M.CONV_IMPLS)
def test_h2_connectivity_by_gradients(params, conv):
    expected = np.zeros((12, 12), bool)
    expected[0:4, 0:8] = True  # maps 0-3 <- H1 0-7
    expected[4:8, 4:12] = True  # maps 4-7 <- H1 4-11
    expected[8:12, 0:4] = expected[8:12, 8:12] = True  # maps 8-11 <- H1 0-3, 8-11
    assert np.array_equal(_h2_map_dependence(params, conv), expected)
    assert expected.sum(axis=1).tolist() == [8] * 12


@pytest.mark.parametrize("conv", M.CONV_IMPLS)
def test_forward_equals_karpathys_formulation(params, conv):
    x = jax.random.uniform(jax.random.PRNGKey(2), (9, 16, 16, 1), minval=-1, maxval=1)
    ours = M.Net1989(conv=conv).apply({"params": params}, x)
    np.testing.assert_allclose(ours, karpathy_forward(params, x), atol=2e-6)


def test_padding_is_minus_one(params):
    # A blank digit is -1 everywhere; padded with -1 it stays constant, so every
    # H1 unit of map c sums -1 times its whole kernel: -sum(kernel[..., c]) + bias 0.
    x = -jnp.ones((1, 16, 16, 1))
    _, state = M.Net1989().apply({"params": params}, x, capture_intermediates=True)
    h1 = state["intermediates"]["h1"]["__call__"][0][0]  # before tanh
    expected = jnp.broadcast_to(-params["h1"]["kernel"].sum(axis=(0, 1, 2)), (8, 8, 12))
    np.testing.assert_allclose(h1, expected, atol=1e-6)


def test_options_change_what_they_say(params):
    x = jax.random.uniform(jax.random.PRNGKey(3), (4, 16, 16, 1), minval=-1, maxval=1)
    tanh_out = M.Net1989().apply({"params": params}, x)
    linear_out = M.Net1989(output_activation="linear").apply({"params": params}, x)
    np.testing.assert_allclose(jnp.tanh(linear_out), tanh_out, atol=1e-6)
    relu_out = M.Net1989(activation="relu", output_activation="linear").apply({"params": params}, x)
    assert not np.allclose(relu_out, linear_out)
    bias = M.init(M.Net1989(output_bias_init=0.5), jax.random.PRNGKey(0))["out"]["bias"]
    assert np.all(np.asarray(bias) == 0.5)


def test_dropout_only_in_training(params):
    x = jax.random.uniform(jax.random.PRNGKey(4), (4, 16, 16, 1), minval=-1, maxval=1)
    net = M.Net1989(dropout_rate=0.5)
    plain = M.Net1989().apply({"params": params}, x)
    np.testing.assert_array_equal(net.apply({"params": params}, x, train=False), plain)
    a = net.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(0)})
    b = net.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    assert not np.allclose(a, plain) and not np.allclose(a, b)
