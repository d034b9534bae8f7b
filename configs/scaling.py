"""Data vs model scaling: the modern recipe over training-set sizes x widths.

    python launch.py --config=configs/scaling.py --config.data.source_dir=/path/to/mnist --workdir=runs/scaling
    python launch.py --config=configs/scaling.py:usps --workdir=runs/scaling_usps

Karpathy's step 4 (relu_dropout: AdamW 3e-4 -> 1e-4, shifts of 1 pixel,
ReLU, dropout 0.25, 80 passes, one digit per step) on the first N training
digits (N in {500, 1000, 2000, 4000, 7291, 10000}; on usps up to all 7,291)
and networks of width {0.5, 1, 2, 4} (feature maps and H3 units x width;
1 = the 1989 network), 3 seeds each, all tested on the same 2,007 digits
(mnist1989's test split; usps's own). Both splits are evaluated every 10
passes and after the last. Seeds run in one compiled program, sharded over
the devices; each (size, width) is its own program. `python -m
lecun_jax.studies.scaling runs/scaling` draws the heatmap and curves and writes
scaling.csv (the sweep does it at the end). On the project's 2-core CPU the
mnist sweep takes about 45 min, the usps one 36 min (docs/results.md, "33 years from now").
"""

from pathlib import Path

from lecun_jax import config as config_lib

SIZES = {"mnist": (500, 1000, 2000, 4000, 7291, 10000), "usps": (500, 1000, 2000, 4000, 7291)}
WIDTHS = (0.5, 1, 2, 4)
SEEDS = 3


def get_config(arg: str | None = None):
    dataset = arg or "mnist"
    if dataset not in SIZES:
        raise ValueError(f"configs/scaling.py:{dataset}: valid: {', '.join(SIZES)}")
    c = config_lib.load_file(Path(__file__).with_name("ablations.py"), "relu_dropout")
    c.data.name = dataset
    c.data.train_subset = "prefix"  # nested subsets: every size contains the smaller ones
    c.num_seeds = SEEDS
    c.train.eval_every = 10
    c.reference.label = c.reference.dataset = ""
    c.reference.train_error = c.reference.test_error = None
    sizes = ",".join(str(n) for n in SIZES[dataset])
    c.sweep.grid = f"data.train_size={sizes};model.width={','.join(str(w) for w in WIDTHS)}"
    return c
