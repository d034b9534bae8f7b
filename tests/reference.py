"""Independent references the tests compare the library against."""

import jax.numpy as jnp
from jax import lax


def karpathy_forward(p, x):
    """Karpathy's lecun1989-repro forward, transcribed to JAX (NHWC): explicit
    -1 padding, H2 as three sliced convolutions, tanh everywhere."""
    conv = lambda x, w: lax.conv_general_dilated(
        x, w, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest"
    )
    x = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    x = jnp.tanh(conv(x, p["h1"]["kernel"]) + p["h1"]["bias"])
    x = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    w = p["h2"]["kernel"]
    s1 = conv(x[..., 0:8], w[..., 0:4])  # maps 0-3 see H1 0-7
    s2 = conv(x[..., 4:12], w[..., 4:8])  # maps 4-7 see H1 4-11
    s3 = conv(jnp.concatenate([x[..., 0:4], x[..., 8:12]], -1), w[..., 8:12])  # maps 8-11 see H1 0-3, 8-11
    x = jnp.tanh(jnp.concatenate([s1, s2, s3], -1) + p["h2"]["bias"]).reshape(x.shape[0], -1)
    x = jnp.tanh(x @ p["h3"]["kernel"] + p["h3"]["bias"])
    return jnp.tanh(x @ p["out"]["kernel"] + p["out"]["bias"])


def mse_1989(outputs, labels):
    """mean over the 10 outputs of (output - target)^2, targets +1 / -1."""
    targets = jnp.where(jnp.arange(10) == labels[:, None], 1.0, -1.0)
    return jnp.mean((outputs - targets) ** 2)
