"""The pure core: the 1989 network and its convolution, a user's parts (linen or NNX), losses,
shifts, the paper's optimiser and the Optax chains, and training as pure functions of
(state, data). Imports nothing of the package outside ``core/``: only JAX, Flax, Optax and numpy.
"""
