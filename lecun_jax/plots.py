"""``python -m lecun_jax.plots WORKDIR``: the command of :mod:`lecun_jax.run.plots`."""

import sys

from lecun_jax.run.plots import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
