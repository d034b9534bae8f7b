"""Karpathy's "time travel" ablations (docs/spec.md, "Karpathy's ablations"), each row a preset.

    python launch.py --config=configs/ablations.py:augment --config.num_seeds=5
    python launch.py --config=configs/ablations.py:all --config.num_seeds=5 --workdir=runs/table

Each row adds one modern idea to the previous one, on the same 9,760-parameter
network and Karpathy's passes and learning rates:

    repro         the 1989 recipe: tanh, MSE on +-1 targets, SGD 0.03, 23 passes     (his test error 4.09%)
    ce            output linear (logits), softmax cross-entropy, SGD 0.01, 23 passes (4.38%)
    adamw         AdamW 3e-4 (weight decay 0.01, torch's), linear to 1e-4, 46 passes (3.59%)
    augment       + random shift of at most 1 pixel in x and y (roll), 60 passes   (2.19%)
    relu_dropout  + ReLU instead of tanh, dropout 0.25 on the input of H3, 80 passes (1.59%)
    more_data     relu_dropout on every MNIST training digit available, same test  (1.25%, on 50,000)

``all`` runs the first five as one sweep and writes table.md / table.csv;
overrides given on the command line (--config.num_seeds=5,
--config.data.name=usps, ...) apply to every row. ``more_data`` needs MNIST
files: --config.data.source_dir=DIR (IDX .gz), or network access to download.
"""

from lecun_jax import config as config_lib

ROWS = ("repro", "ce", "adamw", "augment", "relu_dropout", "more_data")
SWEEPS = {"all": ROWS[:5], "all_with_more_data": ROWS}


def get_config(arg: str | None = None):
    row = arg or "repro"
    c = config_lib.base()
    if row in SWEEPS:
        c.sweep.rows = ",".join(SWEEPS[row])
        return c
    if row not in ROWS:
        raise ValueError(f"configs/ablations.py:{row}: unknown preset; valid: {', '.join(ROWS + tuple(SWEEPS))}")

    def reference(train, test, dataset="mnist1989"):
        c.reference.label, c.reference.dataset = f"Karpathy 2022, {row}", dataset
        c.reference.train_error, c.reference.test_error = train, test

    reference(0.62, 4.09)  # repro: the 1989 recipe as it is
    if row == "repro":
        return c

    c.model.output_activation = "linear"  # step 1: logits...
    c.model.output_bias_init = 0.0  # ...with no reason left for the -1 bias
    c.loss = "cross_entropy"
    c.optimizer.learning_rate = 0.01
    reference(0.00, 4.38)
    if row == "ce":
        return c

    c.optimizer.name = "adamw"  # step 2
    c.optimizer.learning_rate = 3e-4
    c.optimizer.schedule = "linear"
    c.optimizer.final_learning_rate = 1e-4
    c.optimizer.weight_decay = 0.01
    c.train.passes = 46
    reference(0.00, 3.59)
    if row == "adamw":
        return c

    c.augment.name = "shift"  # step 3
    c.augment.max_shift = 1
    c.augment.mode = "roll"
    c.train.passes = 60
    reference(1.70, 2.19)
    if row == "augment":
        return c

    c.model.activation = "relu"  # step 4
    c.model.dropout = 0.25
    c.train.passes = 80
    reference(1.47, 1.59)
    if row == "relu_dropout":
        return c

    c.data.name = "mnist"  # more data: every training digit there is
    reference(None, 1.25, "mnist")
    return c
