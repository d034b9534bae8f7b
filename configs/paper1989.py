"""The paper's own figures (10 train, 102 test mistakes on the USPS digits): how close
does each faithful reading of what the 1989 paper leaves open get?

    python -m lecun_jax.distributions study paper1989            # the whole study; resumes
    python -m lecun_jax.distributions report results/paper1989    # its table and figures
    python launch.py --config=configs/paper1989.py:scaled_linear_sdlm   # one reading, one seed

A reading is an output regime and an initialisation rule, trained with the
paper's optimiser (``_sdlm``) or with SGD (``_sgd``):

    tanh_pm1   plain tanh on every layer, targets +-1 (this project's 1989 recipe)
    tanh_t     plain tanh, targets +-t inside its range: t = 1/sqrt(3), where tanh's
               curvature is largest ("within the quasilinear range", the paper)
    scaled     1.7159 tanh(2a/3) on every layer, targets +-1 (LeCun et al. 1998)
    _sqrt      weights U(+-2.4/sqrt(F)) (Karpathy's reading); _linear: U(+-2.4/F), as printed

``get_config("study")`` is the study itself: which readings, the learning
rates searched on held-out training digits (never on the test split), and the
secondary knobs tried on the best reading.
"""

import math

import ml_collections

from lecun_jax import config as config_lib

REGIMES = ("tanh_pm1", "tanh_t", "scaled")
INITS = ("sqrt", "linear")
OPTIMIZERS = ("sdlm", "sgd")
READINGS = tuple(f"{r}_{i}" for r in REGIMES for i in INITS)
TARGET_INSIDE = 1 / math.sqrt(3)  # tanh(a) where |tanh''| peaks


def study() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "rows": ",".join(f"{r}_{o}" for o in OPTIMIZERS for r in READINGS),
        # the searched field and its values, per optimiser; chosen by mean held-out mistakes
        "search": {"sdlm": "optimizer.learning_rate=0.0003,0.001,0.003",
                   "sgd": "optimizer.learning_rate=0.01,0.03,0.1"},
        "validation_size": 1291,  # the last 1,291 training digits held out: 6,000 train on
        "validation_seeds": 8,
        "seeds": 100,
        # name: overrides, tried on the reading with the lowest mean test mistakes
        "secondary": {"order_seed": "train.order=seed",
                      "lenet5_schedule": "optimizer.schedule=lenet5",
                      "summed_loss_estimate": "optimizer.sdlm_loss_scale=10"},
    })


def get_config(arg: str | None = None):
    if arg == "study":
        return study()
    reading, _, optimizer = (arg or "tanh_pm1_sqrt_sdlm").rpartition("_")
    if reading not in READINGS or optimizer not in OPTIMIZERS:
        valid = ", ".join(f"{r}_{o}" for r in READINGS for o in OPTIMIZERS)
        raise ValueError(f"configs/paper1989.py:{arg}: unknown reading; valid: study, {valid}")
    c = config_lib.load_file("configs/lecun1989.py", "usps_sdlm" if optimizer == "sdlm" else "usps")
    regime, init = reading.rsplit("_", 1)
    c.model.init_rule = init
    if regime == "tanh_t":
        c.loss_target, c.model.output_bias_init = TARGET_INSIDE, -TARGET_INSIDE
    elif regime == "scaled":
        c.model.activation = c.model.output_activation = "scaled_tanh"
    return c
