"""The config files, loaded by path (``--config=configs/ablations.py:augment``); installed
as ``lecun_jax.configs`` so that an installed package finds them too."""
