"""Runs an experiment: ``python launch.py [--config=configs/FILE.py[:ARG]] [--workdir=DIR]``.

Without flags it runs the 1989 recipe on mnist1989 into runs/lecun1989_mnist1989.
Override any config field with ``--config.<field>=<value>``, e.g.
``--config.optimizer.learning_rate=0.01 --config.train.passes=5``.

The command itself is :mod:`lecun_jax.launch` (``python -m lecun_jax.launch``, the
same flags, from any folder once the package is installed); this file is the
checkout's short name for it.
"""

from lecun_jax import launch  # sets the XLA device count on import, before JAX starts

if __name__ == "__main__":
    launch.run()
