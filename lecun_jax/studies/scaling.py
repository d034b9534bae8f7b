"""Scaling analysis of a sweep over training-set sizes and widths (configs/scaling.py).

    python -m lecun_jax.studies.scaling runs/scaling

reads the sweep's runs and writes, beside its table:

    scaling.csv            one row per (size, width): params, MACs per digit,
                           training MACs per network, train/test error mean,
                           std, min, max over seeds, wall time
    scaling_heatmap.png    mean test error, size x width
    scaling_size.png       test error against training-set size, one curve per width
    scaling_compute.png    test error against training compute, the 1989 network marked
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from lecun_jax.run import reporting
from lecun_jax.run.plots import figure, save_figure
from lecun_jax.run.store import RunStore

CSV = "scaling.csv"


def collect(workdir: str | Path) -> list[dict]:
    """One record per finished run of the sweep in ``workdir``."""
    workdir = Path(workdir)
    rows = json.loads((workdir / reporting.SWEEP_JSON).read_text())["rows"]
    out = []
    for r in rows:
        run = RunStore(r["workdir"])  # a reader
        summary = run.summary() if r["status"] == "ok" else None
        if summary is None:
            continue
        config = run.config_json()
        led = summary["ledger"]
        out.append({
            "dataset": config["data"]["name"],
            "train_size": config["data"]["train_size"] or led["presentations"] // (config["train"]["passes"] * config["num_seeds"]),
            "width": config["model"]["width"],
            "params": summary["params"]["total"],
            "macs_per_digit": summary["macs_per_digit"],
            "training_macs_per_network": led["training_macs"] / config["num_seeds"],
            "seeds": config["num_seeds"],
            **{f"{s}_error_{k}": r[f"{s}_error_{k}"] for s in ("train", "test") for k in ("mean", "std", "min", "max")},
            "wall_s": summary["time"]["wall_s"],
            "run": run.workdir.name,
        })
    return sorted(out, key=lambda x: (x["width"], x["train_size"]))


def write_csv(records: list[dict], path: Path) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    reporting.atomic_write_bytes(path, buf.getvalue().encode())
    return path


def plots(records: list[dict], workdir: Path) -> list[Path]:
    """The three figures, drawn as :mod:`lecun_jax.run.plots` draws (its :func:`~lecun_jax.run.plots.figure`, no pyplot)."""
    from matplotlib.ticker import NullLocator

    sizes = sorted({r["train_size"] for r in records})
    widths = sorted({r["width"] for r in records})
    grid = np.full((len(widths), len(sizes)), np.nan)
    for r in records:
        grid[widths.index(r["width"]), sizes.index(r["train_size"])] = r["test_error_mean"]
    dataset = records[0]["dataset"]
    written = []

    fig = figure(1.2 * len(sizes) + 2, 0.8 * len(widths) + 1.5)
    ax = fig.subplots()
    im = ax.imshow(grid, cmap="viridis_r", aspect="auto", origin="lower")
    for i in range(len(widths)):
        for j in range(len(sizes)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="white", fontsize=9)
    ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
    ax.set_yticks(range(len(widths)), [f"{w:g}" for w in widths])
    ax.set_xlabel("training digits")
    ax.set_ylabel("width (1 = the 1989 network)")
    ax.set_title(f"test error %, mean over seeds ({dataset}, modern recipe)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    written.append(save_figure(fig, workdir / "scaling_heatmap.png"))

    fig = figure(6.5, 4.5)
    ax = fig.subplots()
    for w in widths:
        rs = [r for r in records if r["width"] == w]
        x = [r["train_size"] for r in rs]
        ax.errorbar(x, [r["test_error_mean"] for r in rs], yerr=[r["test_error_std"] for r in rs], marker="o",
                    capsize=3, label=f"width {w:g} ({rs[0]['params']:,} params)")
    _log_axes(ax, "training digits", f"data scaling per model size ({dataset})")
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    fig.tight_layout()
    written.append(save_figure(fig, workdir / "scaling_size.png"))

    fig = figure(6.5, 4.5)
    ax = fig.subplots()
    for w in widths:
        rs = [r for r in records if r["width"] == w]
        ax.plot([r["training_macs_per_network"] for r in rs], [r["test_error_mean"] for r in rs], marker="o",
                label=f"width {w:g}")
    for r in records:
        if r["width"] == 1 and r["train_size"] == 7291:
            ax.scatter([r["training_macs_per_network"]], [r["test_error_mean"]], s=180, facecolors="none",
                       edgecolors="red", linewidths=2, zorder=5, label="the 1989 network, 7,291 digits")
    _log_axes(ax, "training compute per network (multiply-accumulates)", f"error against compute ({dataset})")
    fig.tight_layout()
    written.append(save_figure(fig, workdir / "scaling_compute.png"))
    return written


def _log_axes(ax, xlabel: str, title: str) -> None:
    """Log-log test error against ``xlabel``, gridded, with the legend."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test error %")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 2, 3, 6 rather than 2x10^0
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)


def write(workdir: str | Path) -> list[Path]:
    workdir = Path(workdir)
    records = collect(workdir)
    if not records:
        return []
    return [write_csv(records, workdir / CSV), *plots(records, workdir)]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m lecun_jax.studies.scaling SWEEP_WORKDIR", file=sys.stderr)
        return 2
    for p in write(argv[1]):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
