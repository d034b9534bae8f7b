"""``python -m lecun_jax.distributions run|report``: the command of :mod:`lecun_jax.studies.distributions`."""

import sys

from lecun_jax.studies.distributions import main

if __name__ == "__main__":
    sys.exit(main())
