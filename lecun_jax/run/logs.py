"""What a run tells as it goes and records of itself: progress, timeline, ledger, versions
(its TensorBoard scalars are written by :mod:`lecun_jax.run.store`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lecun_jax import data as data_lib

PROGRESS_AFTER_S = 3.0  # print elapsed time and ETA once a run is past this

# The time-travel ledger's yardsticks: one network, the 1989 recipe.
SUN4_1989_S = 3 * 24 * 3600  # LeCun et al.: "3 days" on a SUN-4/260
KARPATHY_M1_S = 90.0  # Karpathy 2022: about 90 s on a MacBook Air M1 CPU


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("lecun_jax", "jax", "jaxlib", "flax", "optax", "tensorflow-datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def ledger(config, sizes: dict[str, int], train_s: float | None, macs: int | None = None) -> dict:
    """The time-travel ledger: what was computed, and how long it took against 1989 and 2022.

    ``train_s``: the passes' wall time (for a resumed run, the median pass times the passes).
    """
    presentations = config.train.passes * sizes["train"] * config.num_seeds
    if train_s is None:  # no pass timed (resumed after the last one)
        train_s = per_network_s = per_presentation_s = None
    else:
        per_network_s = train_s / config.num_seeds
        # per presentation (one SGD step, its share of the evaluation), against the 1989 recipe's 23 x 7,291
        per_presentation_s = per_network_s / (config.train.passes * sizes["train"])
    yardstick = 23 * data_lib.SPLIT_SIZES["train"]
    return {
        "presentations": presentations,
        "forward_macs_per_digit": macs,
        "training_macs": None if macs is None else 3 * macs * presentations,  # forward, and the backward's two products
        "evaluation_macs": None if macs is None else macs * config.train.passes * (sizes["train"] + sizes["test"]) * config.num_seeds,
        "wall_s": train_s,
        "wall_s_per_network": per_network_s,
        "speedup_vs_sun4_260_1989": None if train_s is None else SUN4_1989_S / yardstick / per_presentation_s,
        "speedup_vs_karpathy_m1_2022": None if train_s is None else KARPATHY_M1_S / yardstick / per_presentation_s,
        "note": "per network and per presentation; the yardsticks are 3 days (LeCun et al. 1989, SUN-4/260) "
        "and about 90 s (Karpathy 2022, MacBook Air M1) for the 23 x 7,291 presentations of the 1989 "
        "recipe, evaluation included",
    }


def process_age() -> float | None:
    """Seconds since this process started (Linux: from /proc), for the start-up phase; None elsewhere."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def timeline(t: dict) -> str:
    """One line of a run's phases: where the wall time of the process went."""
    phases = [("start-up", t.get("startup_s")), ("data", t["data_s"]), ("compile", t["compile_s"]),
              ("passes", t["train_s"] - t.get("checkpoint_s", 0.0)), ("checkpoints", t.get("checkpoint_s")),
              ("params+test outputs", t.get("outputs_s")), ("plots", t.get("plots_s"))]
    total = (t.get("startup_s") or 0.0) + t["wall_s"]
    return "timeline: " + " | ".join(f"{n} {v:.2f} s" for n, v in phases if v is not None) + f" | process {total:.2f} s"


def progress(p: int, passes: int, times: list[float], elapsed: float) -> str:
    """``pass 3/23 (1.02 s)``, with the elapsed time and an ETA once a run is long enough to want them."""
    line = f"pass {p}/{passes} ({times[-1]:.2f} s)"
    if elapsed > PROGRESS_AFTER_S or times[-1] * passes > PROGRESS_AFTER_S:
        eta = float(np.median(times)) * (passes - p)
        line += f"; elapsed {elapsed:.1f} s, ETA {eta:.1f} s"
    return line


def done_line(summary: dict, workdir) -> str:
    """The run's last line: passes, time per step, compile, wall, and the ledger's speed-ups."""
    t, led = summary["time"], summary["ledger"]
    speed = (f"; {led['speedup_vs_sun4_260_1989']:,.0f}x the 1989 SUN-4, "
             f"{led['speedup_vs_karpathy_m1_2022']:.1f}x Karpathy's M1 per network" if led["wall_s"] is not None else "")
    return (f"done: {len(t['pass_s'])} passes in {t['train_s']:.1f} s "
            f"({t['us_per_step'] or 0:.1f} µs per step, median pass) + {t['compile_s']:.1f} s compile; "
            f"wall {t['wall_s']:.1f} s{speed}; results in {workdir}")
