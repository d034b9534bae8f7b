"""lecun_jax: LeCun et al. (1989) and Karpathy's 2022 ablations in JAX.

    import lecun_jax
    run = lecun_jax.load_run("runs/lecun1989_mnist1989")  # config, params, metrics of a run
    ds = lecun_jax.data.load("usps")                 # the 1989 digits, in memory
    net = lecun_jax.Net1989()                        # the 9,760-parameter network
    params = lecun_jax.model.init(net, jax.random.PRNGKey(0))

Importing the package registers the TFDS builders ``mnist1989`` and ``usps``.
"""

from lecun_jax import augment, config, data, experiment, losses, model, optimizers, reporting, sweep, tfds_datasets, train
from lecun_jax.experiment import load_run, train_and_evaluate
from lecun_jax.model import Net1989

__version__ = "0.1.0"
__all__ = [
    "Net1989", "load_run", "train_and_evaluate", "augment", "config", "data", "experiment", "losses", "model", "optimizers", "reporting", "sweep",
    "tfds_datasets", "train",
]
