"""The 1989 network speedrun: the fastest recipe found to <= 1.59% on mnist1989.

    python launch.py --config=configs/speedrun.py --workdir=runs/speedrun
    python benchmarks/speedrun.py          # time-to-target beside Karpathy's 80-pass recipe

Same network as 1989 (width 1, 9,760 parameters), Karpathy's step-4 recipe
(cross-entropy, ReLU, dropout 0.25 on the input of H3, shifts of 1 pixel with
wraparound) with two changes that buy accuracy per second on a CPU:

    batch 4       four digits per AdamW step: a pass costs ~0.23 s instead of
                  ~0.36 s at batch 1 (the step's fixed cost is shared), and
                  1,823 steps per pass are still plenty of updates;
    lr 2e-3       AdamW from 2e-3 down to 1e-5, linear, over the 80 passes
                  (Karpathy: 3e-4 -> 1e-4 at batch 1).

Searched (5 seeds from 1337, final test error, mean +- std; all 80 passes
unless noted): batch 8 1e-3 60p 1.97 +- 0.15; batch 16 2e-3 60p 1.76; batch 16
3e-3 1.69; batch 8 2e-3 1.61; batch 4 1e-3 1.58 +- 0.08; batch 4 2e-3 1.44 +-
0.14 (this); batch 4 2e-3 60p 1.69 +- 0.07, 70p 1.52 +- 0.12 but 1.68 +- 0.12
on 5 fresh seeds (from 2026), so not reliably under; `fill` shifts of 2 pixels
worse (2.92). The search read the test split, so benchmarks/speedrun.py
confirms the chosen recipe on 5 fresh seeds (from 2026: 1.48 +- 0.19; with
the code since 2026-11-30 1.82 +- 0.10 there, 1.54 +- 0.15 on 10 seeds from
100: the recipe sits at the target, see the README's Speedrun).
Only the final pass is evaluated (train.eval_every = passes).
"""

from pathlib import Path

from lecun_jax import config as config_lib

TARGET = 1.59  # % mean test error over 5 seeds on mnist1989: Karpathy's best with this network


def get_config(arg: str | None = None):
    if arg not in (None, "", "mnist1989"):
        raise ValueError(f"configs/speedrun.py:{arg}: the speedrun is defined on mnist1989 only")
    c = config_lib.load_file(Path(__file__).with_name("ablations.py"), "relu_dropout")
    c.train.batch_size = 4
    c.optimizer.learning_rate = 2e-3
    c.optimizer.final_learning_rate = 1e-5
    c.train.passes = 80
    c.train.eval_every = c.train.passes
    c.num_seeds = 5
    c.reference.label = "Karpathy 2022, relu_dropout (target)"
    return c
