"""A study of configs/paper1989.py's readings on a sample (500 digits, 2 passes, a few seeds):
what tests/test_study.py runs, and what made tests/data/paper1989_sample (``python -m
lecun_jax.distributions study tiny`` from a folder holding this file as configs/tiny.py)."""

import ml_collections

from lecun_jax import config as config_lib


def get_config(arg=None):
    if arg == "study":
        return ml_collections.ConfigDict({
            "rows": "tanh_pm1_sqrt_sdlm,scaled_linear_sdlm,tanh_t_sqrt_sgd",
            "search": {"sdlm": "optimizer.learning_rate=0.001,0.003", "sgd": "optimizer.learning_rate=0.01,0.03"},
            "validation_size": 100, "validation_seeds": 2, "seeds": 4,
            "secondary": {"order_seed": "train.order=seed"},
        })
    c = config_lib.load_file("configs/paper1989.py", arg)
    c.data.train_size, c.train.passes, c.optimizer.sdlm_samples = 500, 2, 100
    return c
