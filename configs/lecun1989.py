"""The 1989 recipe: LeCun et al. (1989) as Karpathy (2022) reproduced it.

    python launch.py --config=configs/lecun1989.py            # on mnist1989 (the default)
    python launch.py --config=configs/lecun1989.py:usps       # on the paper's own USPS digits

The argument picks the dataset. The recipe: the 9,760-parameter network with
tanh everywhere and output bias -1; MSE (mean over the 10 outputs) against +-1
targets; plain SGD, learning rate 0.03, one digit per step in the same fixed
order every pass; 23 passes. Every field is listed, with what it may be, in
lecun_jax/config.py; override any with --config.<field>=<value>.
"""

from lecun_jax import config as config_lib


def get_config(arg: str | None = None):
    config = config_lib.base()
    dataset = arg or "mnist1989"
    if dataset not in ("mnist1989", "usps"):
        raise ValueError(f"configs/lecun1989.py:{dataset}: unknown dataset; valid: mnist1989, usps")
    config.data.name = dataset
    if dataset == "usps":  # the paper's own figures
        config.reference.label, config.reference.dataset = "LeCun et al. 1989", "usps"
        config.reference.train_error, config.reference.test_error = 0.14, 5.0
    else:  # Karpathy's repro.py on his MNIST proxy
        config.reference.label, config.reference.dataset = "Karpathy 2022", "mnist1989"
        config.reference.train_error, config.reference.test_error = 0.62, 4.09
    return config
