"""Independent references the tests compare the library against."""

import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

H2_GROUP_INPUTS = ([0, 1, 2, 3, 4, 5, 6, 7], [4, 5, 6, 7, 8, 9, 10, 11], [0, 1, 2, 3, 8, 9, 10, 11])


def hwio(k):
    """A PyTorch-layout (out, in, 5, 5) kernel as lax's HWIO (5, 5, in, out)."""
    return k.transpose(2, 3, 1, 0)


def karpathy_forward(p, x, act=jnp.tanh, out_act=jnp.tanh, hidden_pad=-1.0):
    """Karpathy's lecun1989-repro forward, transcribed to JAX (NHWC): explicit
    -1 padding, H2 as three sliced convolutions, tanh everywhere (by default:
    ``act``, ``out_act`` and H1's padding ``hidden_pad`` are the ablations' switches).

    ``p`` is in the library's layout: conv kernels (out, in, 5, 5), H2's dense
    (12, 12, 5, 5) (only the connected slices are read), dense kernels (out, in).
    """
    conv = lambda x, w: lax.conv_general_dilated(
        x, hwio(w), (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest"
    )
    x = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    x = act(conv(x, p["h1"]["kernel"]) + p["h1"]["bias"])
    x = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=hidden_pad)
    k = p["h2"]["kernel"]
    s1 = conv(x[..., 0:8], k[0:4, 0:8])  # maps 0-3 see H1 0-7
    s2 = conv(x[..., 4:12], k[4:8, 4:12])  # maps 4-7 see H1 4-11
    both = [0, 1, 2, 3, 8, 9, 10, 11]
    s3 = conv(jnp.concatenate([x[..., 0:4], x[..., 8:12]], -1), k[8:12][:, both])  # maps 8-11 see H1 0-3, 8-11
    x = act(jnp.concatenate([s1, s2, s3], -1) + p["h2"]["bias"]).reshape(x.shape[0], -1)
    x = act(x @ p["h3"]["kernel"].T + p["h3"]["bias"])
    return out_act(x @ p["out"]["kernel"].T + p["out"]["bias"])


def mse_1989(outputs, labels):
    """mean over the 10 outputs of (output - target)^2, targets +1 / -1."""
    targets = jnp.where(jnp.arange(10) == labels[:, None], 1.0, -1.0)
    return jnp.mean((outputs - targets) ** 2)


def cross_entropy(logits, labels):
    """mean over examples of -log softmax(logits)[label]."""
    logp = logits - logsumexp(logits, axis=-1, keepdims=True)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], -1))
