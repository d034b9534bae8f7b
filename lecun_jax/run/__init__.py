"""The host loop of a run: processes and devices, the store (the one owner of a run's
workdir and its files), checkpoints, logs and plots, reloading a finished run, and
``train_and_evaluate``.
"""
