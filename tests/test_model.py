"""The 1989 network: sizes from the paper, connectivity, initialisation, formulations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lecun_jax.core import conv as conv_lib
from lecun_jax.core import model as M
from reference import karpathy_forward

# LeCun et al. (1989) / Karpathy: parameters per layer and in all.
PAPER_PARAMS = {"h1": 1068, "h2": 2592, "h3": 5790, "out": 310, "total": 9760}


@pytest.fixture(scope="module")
def params():
    return M.init(M.Net1989(), jax.random.PRNGKey(0))


def test_parameter_counts_match_the_paper(params):
    # H2's kernel is stored dense (12, 12, 5, 5); the paper's parameters are its connected entries
    mask = conv_lib.connection_mask(12, 12, M.h2_inputs(4))
    counted = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in params.items()}
    counted["h2"] = int(mask.sum()) + params["h2"]["bias"].size
    assert counted == {k: v for k, v in PAPER_PARAMS.items() if k != "total"}
    assert sum(counted.values()) == 9760
    assert M.count_params(params, M.Net1989()) == PAPER_PARAMS
    assert M.count_params(M.abstract_params(M.Net1989()), M.Net1989()) == PAPER_PARAMS
    assert M.count_params() == PAPER_PARAMS  # from shapes alone
    # without the model, every array entry counts: the 1,200 unconnected H2 entries too
    assert M.count_params(params)["total"] == 9760 + 1200 == 10_960


def test_mac_count_is_63660():
    # outputs x fan-in, by hand: H1 8*8*12 units x 25, H2 4*4*12 x 5*5*8, H3 30 x 192, out 10 x 30.
    by_hand = {"h1": 768 * 25, "h2": 192 * 200, "h3": 30 * 192, "out": 10 * 30}
    assert M.count_macs() == by_hand | {"total": 63_660}
    net = M.Net1989()
    assert M.count_macs(M.abstract_params(net), net) == by_hand | {"total": 63_660}


def test_shapes(params):
    # PyTorch's (out, in, ...) layout; H2 dense and masked
    assert params["h1"]["kernel"].shape == (12, 1, 5, 5) and params["h1"]["bias"].shape == (8, 8, 12)
    assert params["h2"]["kernel"].shape == (12, 12, 5, 5) and params["h2"]["bias"].shape == (4, 4, 12)
    assert params["h3"]["kernel"].shape == (30, 192) and params["h3"]["bias"].shape == (30,)
    assert params["out"]["kernel"].shape == (10, 30) and params["out"]["bias"].shape == (10,)
    assert [l.name for l in M.Net1989().layers()] == ["h1", "h2", "h3", "out"]
    for layer in M.Net1989().layers():
        assert params[layer.name]["kernel"].shape == layer.kernel_shape
        assert params[layer.name]["bias"].shape == layer.bias_shape
    for batch in (1, 7):
        out = M.Net1989().apply({"params": params}, jnp.zeros((batch, 16, 16, 1)))
        assert out.shape == (batch, 10)
    with pytest.raises(ValueError, match=r"\(batch, 16, 16, 1\)"):
        M.Net1989().apply({"params": params}, jnp.zeros((16, 16)))


def _h2_expected_connections():
    expected = np.zeros((12, 12), bool)  # [h2 map, h1 map]
    expected[0:4, 0:8] = True  # maps 0-3 <- H1 0-7
    expected[4:8, 4:12] = True  # maps 4-7 <- H1 4-11
    expected[8:12, 0:4] = expected[8:12, 8:12] = True  # maps 8-11 <- H1 0-3, 8-11
    return expected


def test_init_ranges_and_biases(params):
    # the unconnected H2 entries are initialised to 0; the connected ones are drawn like the rest
    k2 = np.asarray(params["h2"]["kernel"])
    connected = np.broadcast_to(_h2_expected_connections()[:, :, None, None], k2.shape)
    assert np.all(k2[~connected] == 0) and np.all(k2[connected] != 0)
    for layer, fan_in in {"h1": 25, "h2": 200, "h3": 192, "out": 30}.items():
        w = np.asarray(params[layer]["kernel"])
        if layer == "h2":
            w = w[connected]
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


# The fan-ins by hand: H1 sees 5x5 pixels, H2 5x5 on 8 maps, H3 all 4x4x12 H2 units, out the 30 H3 units.
FAN_IN = {"h1": 25, "h2": 200, "h3": 192, "out": 30}


@pytest.mark.parametrize("rule,bound", [("sqrt", lambda f: 2.4 / np.sqrt(f)), ("linear", lambda f: 2.4 / f)])
def test_init_rule_bounds_every_layer(rule, bound):
    params = M.init(M.Net1989(init_rule=rule), jax.random.PRNGKey(0))
    connected = np.broadcast_to(_h2_expected_connections()[:, :, None, None], (12, 12, 5, 5))
    assert {l.name: l.fan_in for l in M.Net1989().layers()} == FAN_IN
    for layer, fan_in in FAN_IN.items():
        w = np.asarray(params[layer]["kernel"])
        w = w[connected] if layer == "h2" else w
        assert bound(fan_in) * 0.9 < np.abs(w).max() <= bound(fan_in), layer


def test_the_default_init_rule_is_todays_draw_bit_for_bit():
    """sqrt is the default; its params for PRNGKey(0) are those drawn before init_rule existed
    (a digest of them taken then), and linear draws the same numbers, scaled by 1/sqrt(F)."""
    import hashlib

    sqrt = M.init(M.Net1989(), jax.random.PRNGKey(0))
    digest = hashlib.sha256(b"".join(np.asarray(sqrt[l][k]).tobytes() for l in FAN_IN for k in ("kernel", "bias")))
    assert digest.hexdigest() == "46c3ce4becfcca82480bbdd64c4d15e63e40c83a537f0e173855c427b9959556"
    assert M.Net1989().init_rule == "sqrt"
    linear = M.init(M.Net1989(init_rule="linear"), jax.random.PRNGKey(0))
    for layer, fan_in in FAN_IN.items():
        np.testing.assert_allclose(linear[layer]["kernel"], sqrt[layer]["kernel"] / np.sqrt(fan_in), rtol=1e-5, atol=1e-8)
        np.testing.assert_array_equal(linear[layer]["bias"], sqrt[layer]["bias"])


def test_scaled_tanh_value_and_slope():
    # f(a) = 1.7159 tanh(2a/3): f(0) = 0, f'(0) = 1.7159 * 2/3, f(+-1) = +-1.7159 tanh(2/3),
    # f'(+-1) = 1.7159 * 2/3 * (1 - tanh(2/3)^2)
    for a, value, slope in [(0.0, 0.0, 1.7159 * 2 / 3), (1.0, 1.7159 * np.tanh(2 / 3), 1.7159 * 2 / 3 * (1 - np.tanh(2 / 3) ** 2)),
                            (-1.0, -1.7159 * np.tanh(2 / 3), 1.7159 * 2 / 3 * (1 - np.tanh(2 / 3) ** 2))]:
        for f in (M.ACTIVATIONS["scaled_tanh"], M.OUTPUT_ACTIVATIONS["scaled_tanh"]):
            assert float(f(jnp.float32(a))) == pytest.approx(value, abs=1e-6)
            assert float(jax.grad(f)(jnp.float32(a))) == pytest.approx(slope, rel=1e-6)
    assert 1.7159 * 2 / 3 == pytest.approx(1.1439, abs=1e-4)
    assert 1.7159 * np.tanh(2 / 3) == pytest.approx(1.0, abs=1e-3)  # the point of 1.7159: f(1) is about 1


def _h2_map_dependence(params, conv):
    """Which H1 maps each H2 map's output depends on, by differentiating through H2.

    The kernel is filled with ones everywhere, the unconnected entries too: the mask must cut them."""
    h2 = M.Net1989(conv=conv).layers()[1]
    p = {"kernel": jnp.ones_like(params["h2"]["kernel"]), "bias": params["h2"]["bias"]}
    h1 = jax.random.normal(jax.random.PRNGKey(1), (1, 8, 8, 12))
    # one compiled Jacobian (op by op, the custom VJP is slow on a CPU): row o is the gradient of map o's sum
    g = jax.jit(jax.jacrev(lambda x: h2.linear(p, x).reshape(1, 4, 4, 12).sum(axis=(0, 1, 2))))(h1)  # (12, 1, 8, 8, 12)
    depends = np.abs(np.asarray(g)).sum(axis=(1, 2, 3)) > 0  # [h2 map, h1 map]
    return depends


@pytest.mark.parametrize("conv", M.CONV_IMPLS)
def test_h2_connectivity_by_gradients(params, conv):
    expected = _h2_expected_connections()
    assert np.array_equal(_h2_map_dependence(params, conv), expected)
    assert expected.sum(axis=1).tolist() == [8] * 12
    mask = conv_lib.connection_mask(12, 12, M.H2_INPUTS)
    assert mask.shape == (12, 12, 5, 5) and np.array_equal(mask[:, :, 0, 0] > 0, expected)
    assert M.h2_inputs(4) == M.H2_INPUTS


@pytest.mark.parametrize("conv", M.CONV_IMPLS)
def test_unconnected_h2_entries_never_act_and_get_no_gradient(params, conv):
    net = M.Net1989(conv=conv)
    x = jax.random.uniform(jax.random.PRNGKey(5), (3, 16, 16, 1), minval=-1, maxval=1)
    connected = np.broadcast_to(_h2_expected_connections()[:, :, None, None], (12, 12, 5, 5))
    noisy = jax.tree.map(lambda a: a, params)
    noisy["h2"] = dict(params["h2"], kernel=jnp.where(connected, params["h2"]["kernel"], 100.0))
    apply = jax.jit(net.apply)  # compiled: op by op, the custom VJP is slow on a CPU
    np.testing.assert_array_equal(apply({"params": noisy}, x), apply({"params": params}, x))
    g = jax.jit(jax.grad(lambda p: jnp.sum(net.apply({"params": p}, x) ** 2)))(params)
    g2 = np.asarray(g["h2"]["kernel"])
    assert np.all(g2[~connected] == 0) and np.any(g2[connected] != 0)


@pytest.mark.parametrize("conv", M.CONV_IMPLS)
def test_forward_equals_karpathys_formulation(params, conv):
    x = jax.random.uniform(jax.random.PRNGKey(2), (9, 16, 16, 1), minval=-1, maxval=1)
    ours = M.Net1989(conv=conv).apply({"params": params}, x)
    np.testing.assert_allclose(ours, karpathy_forward(params, x), atol=2e-6)


def test_padding_is_minus_one(params):
    # A blank digit is -1 everywhere; padded with -1 it stays constant, so every
    # H1 unit of map c sums -1 times its whole kernel: -sum(kernel[..., c]) + bias 0.
    x = -jnp.ones((1, 16, 16, 1))
    for conv in M.CONV_IMPLS:
        h1_layer = M.Net1989(conv=conv).layers()[0]
        h1 = h1_layer.linear(params["h1"], x)[0]  # before tanh
        expected = jnp.broadcast_to(-params["h1"]["kernel"].sum(axis=(1, 2, 3)), (8, 8, 12))
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
    # rate 0: training mode is evaluation mode
    zero = M.Net1989(dropout_rate=0.0).apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(0)})
    np.testing.assert_array_equal(zero, plain)


@pytest.mark.parametrize("batch, size, channels, features, pad", [
    (1, 16, 1, 12, -1.0),
    pytest.param(3, 8, 12, 12, 0.5, marks=pytest.mark.slow),
    pytest.param(2, 8, 6, 4, 0.0, marks=pytest.mark.slow),
])
def test_patch_convolution_and_its_custom_vjp_equal_lax(batch, size, channels, features, pad):
    k = jax.random.split(jax.random.PRNGKey(6), 3)
    x = jax.random.normal(k[0], (batch, size, size, channels))
    w = jax.random.normal(k[1], (features, channels, 5, 5))
    o = conv_lib.out_size(size)
    dy = jax.random.normal(k[2], (batch, o, o, features))
    a, vjp_a = jax.vjp(lambda x, w: conv_lib.conv_patches(x, w, pad), x, w)
    b, vjp_b = jax.vjp(lambda x, w: conv_lib.conv_lax(x, w, pad), x, w)
    assert a.shape == (batch, o, o, features)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for ga, gb in zip(vjp_a(dy), vjp_b(dy)):
        np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="valid: auto, patches, lax"):
        conv_lib.conv(x, w, pad, "toeplitz")
