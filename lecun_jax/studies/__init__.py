"""Many runs: sweeps (and rows trained together), the data x width scaling sweep, and rows
over many seeds (distributions).
"""
