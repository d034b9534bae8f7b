"""The paper's optimiser: stochastic diagonal Levenberg-Marquardt.

LeCun et al. (1989) trained with "a special version of Newton's algorithm
that uses a positive, diagonal approximation of the Hessian" (Becker & LeCun
1988). LeCun, Bottou, Orr & Müller (1998, *Efficient BackProp*, section 9.1)
and LeCun et al. (1998, *Gradient-Based Learning*, appendix C) spell it out:
every parameter w_k takes the step

    w_k <- w_k - eta / (mu + h_kk) * dE/dw_k

where h_kk estimates the diagonal of the Gauss-Newton approximation of the
Hessian, re-estimated on a few hundred examples before each pass, and mu
(about 0.02) keeps the step bounded where the curvature is small.

Here: :func:`sdlm` is the Optax ``GradientTransformation`` (the diagonal is
part of its state; :func:`with_hessian` replaces it), and two estimators give
the diagonal, averaged over a batch of examples:

* ``becker_lecun`` — the paper's: second derivatives back-propagated like
  gradients but with squared weights and squared activation slopes, dropping
  the off-diagonal terms (and the f'' terms: Gauss-Newton). A weight shared by
  several connections (the convolutions) sums its connections' terms.
* ``exact_ggn`` — the exact diagonal of J^T H J (J the Jacobian of the
  outputs, H the Hessian of the loss in the outputs), from one VJP per output.

With h = 0 and mu = 1 the step is plain SGD.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

ESTIMATORS = ("becker_lecun", "exact_ggn")


class DiagonalHessianState(NamedTuple):
    """The current estimate of diag(H), shaped like the parameters."""

    h: Any


def scale_by_diagonal_hessian(mu: float) -> optax.GradientTransformation:
    """g -> g / (mu + h), h the diagonal in the state (zero until :func:`with_hessian` sets it)."""

    def init(params):
        return DiagonalHessianState(h=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda g, h: g / (mu + h), updates, state.h), state

    return optax.GradientTransformation(init, update)


def sdlm(learning_rate, mu: float = 0.02) -> optax.GradientTransformation:
    """Stochastic diagonal Levenberg-Marquardt: w <- w - lr / (mu + h) * g (lr may be a schedule)."""
    return optax.chain(scale_by_diagonal_hessian(mu), optax.scale_by_learning_rate(learning_rate))


def with_hessian(opt_state, h):
    """``opt_state`` with the diagonal estimate of every SDLM transformation in it replaced by ``h``."""
    is_state = lambda s: isinstance(s, DiagonalHessianState)
    return jax.tree.map(lambda s: DiagonalHessianState(h=h) if is_state(s) else s, opt_state, is_leaf=is_state)


def uses_hessian(opt_state) -> bool:
    """Whether ``opt_state`` (concrete or abstract) holds an SDLM diagonal, wherever in the chain."""
    is_state = lambda s: isinstance(s, DiagonalHessianState)
    return any(is_state(s) for s in jax.tree.leaves(opt_state, is_leaf=is_state))


# ---------------------------------------------------------------------------
# Estimators: the diagonal of the Gauss-Newton matrix, averaged over examples.


def loss_curvature(loss_fn: Callable, output, label):
    """H: the exact Hessian (10, 10) of one example's loss in the network's outputs."""
    return jax.hessian(lambda o: loss_fn(o[None], label[None])[0])(output)


def exact_ggn(apply_fn: Callable, loss_fn: Callable, params, images, labels):
    """Mean over examples of diag(J^T H J), J = d outputs / d params, one VJP per output."""

    def one(x, y):
        output, vjp = jax.vjp(lambda p: apply_fn(p, x[None])[0], params)
        h = loss_curvature(loss_fn, output, y)
        jac = jax.vmap(lambda e: vjp(e)[0])(jnp.eye(output.shape[-1], dtype=output.dtype))  # rows of J
        return jax.tree.map(lambda j: jnp.einsum("a...,ab,b...->...", j, h, j), jac)

    return jax.tree.map(lambda t: jnp.mean(t, axis=0), jax.vmap(one)(images, labels))


def _slope(f: Callable, a: jax.Array) -> jax.Array:
    """f'(a) of an elementwise function."""
    return jax.jvp(f, (a,), (jnp.ones_like(a),))[1]


def becker_lecun(layers, loss_fn: Callable, params: dict, images, labels):
    """Mean over examples of the Becker-LeCun diagonal, layer by layer.

    ``layers``: ``lecun_jax.core.model.Layer`` s, each ``a = linear(p, x)``, ``x' = activation(a)``,
    ``linear(p, x, squared=True)`` the same map on squared values.

    For each unit i with a_i = sum_j w_ij x_j and x_i = f(a_i):

        d2E/da_i^2  = f'(a_i)^2 d2E/dx_i^2
        d2E/dx_j^2  = sum_i w_ij^2 d2E/da_i^2
        d2E/dw_ij^2 = x_j^2 d2E/da_i^2      (summed over the connections a shared weight serves)

    starting from the diagonal of the loss's Hessian in the outputs. The sums
    over i and over connections are the transposes of the layer's linear map,
    taken (by VJP) at the squared weights and squared inputs.
    """
    xs, pre = [images], []
    for layer in layers:
        pre.append(layer.linear(params[layer.name], xs[-1]))
        xs.append(layer.activation(pre[-1]))
    d2 = jax.vmap(lambda o, y: jnp.diag(loss_curvature(loss_fn, o, y)))(xs[-1], labels)
    out = {}
    for i in reversed(range(len(layers))):
        layer = layers[i]
        d2_a = _slope(layer.activation, pre[i]) ** 2 * d2
        squared_params = jax.tree.map(jnp.square, params[layer.name])
        _, vjp = jax.vjp(lambda p, x: layer.linear(p, x, squared=True), squared_params, jnp.square(xs[i]))
        out[layer.name], d2 = vjp(d2_a)
    batch = images.shape[0]
    return jax.tree.map(lambda t: t / batch, out)


def estimator(name: str, model, loss_fn: Callable) -> Callable:
    """``estimate(params, images, labels) -> diag`` (shaped like params) for ``model``.

    ``becker_lecun`` walks the layers the module itself applies
    (:meth:`lecun_jax.core.model.Net1989.layers`); ``exact_ggn`` needs only
    ``model.apply`` and so serves any module.
    """
    if name == "becker_lecun":
        if not hasattr(model, "layers"):
            raise ValueError(
                f"optimizer.sdlm_estimator=becker_lecun needs a module with layers() like Net1989, "
                f"not {getattr(model, 'user_class', type(model)).__name__}; valid for any module: exact_ggn"
            )
        layers = model.layers()
        return lambda params, images, labels: becker_lecun(layers, loss_fn, params, images, labels)
    if name == "exact_ggn":
        apply = lambda p, x: model.apply({"params": p}, x, train=False)
        return lambda params, images, labels: exact_ggn(apply, loss_fn, params, images, labels)
    raise ValueError(f"optimizer.sdlm_estimator={name!r}: valid: {', '.join(ESTIMATORS)}")
