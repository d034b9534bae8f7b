"""Pictures of runs and sweeps (matplotlib, PNG), from what a workdir holds.

    python -m lecun_jax.run.plots runs/lecun1989_mnist1989     # a run: plots/ in it
    python -m lecun_jax.run.plots runs/table                   # a sweep: ablations.png

A run gets ``plots/curves.png`` (train and test error and loss per pass; with
several seeds their mean and range), ``plots/misclassified.png`` (the test
digits the first network gets wrong, true -> predicted) and
``plots/confusion.png`` (with several seeds: of the first replica, named in
the title). A sweep gets ``ablations.png``: test error per row, mean +- std
over seeds beside every seed as a dot, with the published single run marked on
the rows of its recipe. Figures are drawn with matplotlib's object API (no
pyplot), so they can be drawn off the main thread; a run's are written by its
:class:`lecun_jax.run.store.RunStore`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from lecun_jax.files import save_figure  # the studies' figures are saved with it too
from lecun_jax.run import processes, reporting, runs, store

SPLIT_STYLE = {"train": "tab:blue", "test": "tab:orange"}
DPI = 110


def prefetch() -> None:
    """Imports what drawing needs (for a thread to do while other work runs)."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import matplotlib.ticker  # noqa: F401


def figure(width: float, height: float):
    """A matplotlib Figure drawn by Agg, without pyplot (no global state: safe off the main thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)  # saved at its own dpi
    FigureCanvasAgg(fig)
    return fig


def _integer_ticks(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _by_pass(records: list[dict], split: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(passes, values (pass, replica)) of one metric."""
    rows = [r for r in records if r["split"] == split]
    passes = sorted({r["pass"] for r in rows})
    replicas = sorted({r["replica"] for r in rows})
    values = np.full((len(passes), len(replicas)), np.nan)
    for r in rows:
        values[passes.index(r["pass"]), replicas.index(r["replica"])] = r[key]
    return np.asarray(passes), values


def curves(records: list[dict], title: str = ""):
    """Error % and loss per pass, train and test, on linear axes; with several seeds their mean and range."""
    fig = figure(11, 4)
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "error", "error %"), (axes[1], "loss", "loss")):
        for split, color in SPLIT_STYLE.items():
            passes, v = _by_pass(records, split, key)
            if v.size == 0:
                continue
            mean = np.nanmean(v, axis=1)
            ax.plot(passes, mean, color=color, marker="." if len(passes) < 30 else None,
                    label=f"{split}" + (f" (mean of {v.shape[1]} seeds; band: min to max)" if v.shape[1] > 1 else ""))
            if v.shape[1] > 1:
                ax.fill_between(passes, np.nanmin(v, axis=1), np.nanmax(v, axis=1), color=color, alpha=0.2)
        ax.set_xlabel("pass")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        _integer_ticks(ax.xaxis)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def mosaic(images: np.ndarray, cols: int = 12, pad: int = 2) -> np.ndarray:
    """The 16x16 digits tiled row-major into one grey image, ``pad`` background pixels around each."""
    n = len(images)
    rows = max(1, -(-n // cols))
    cell = 16 + 2 * pad
    out = np.full((rows * cell, cols * cell), -1.0, dtype=np.float32)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        out[r * cell + pad : r * cell + pad + 16, c * cell + pad : c * cell + pad + 16] = img.reshape(16, 16)
    return out


def misclassified(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, limit: int = 120, which: str = ""):
    """The digits where ``predicted != labels`` as one mosaic, each labelled 'true→predicted'.

    ``which`` names the network shown (e.g. "replica 0 of 5, seed 0").
    """
    all_wrong = np.flatnonzero(predicted != labels)
    wrong = all_wrong[:limit]
    cols, cell = 12, 20  # 16 pixels and 2 of padding each side
    rows = max(1, -(-len(wrong) // cols))
    width, title_h = cols * 0.8, 0.45
    height = 0.98 * width * rows / cols + title_h  # square cells: the mosaic's own aspect
    fig = figure(width, height)
    ax = fig.add_axes((0.01, 0.005, 0.98, 1 - title_h / height))
    ax.imshow(mosaic(images[wrong], cols), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
    for k, i in enumerate(wrong):
        r, c = divmod(k, cols)
        ax.text(c * cell + 1, r * cell + 1, f"{labels[i]}→{predicted[i]}", fontsize=7, color="tab:red", va="top")
    ax.axis("off")
    fig.suptitle(f"misclassified test digits{' (' + which + ')' if which else ''}: {len(all_wrong)} of {len(labels)} "
                 f"(true→predicted){'; first ' + str(limit) if len(all_wrong) > limit else ''}", fontsize=10)
    return fig


def confusion(labels: np.ndarray, predicted: np.ndarray, which: str = ""):
    m = np.zeros((10, 10), dtype=np.int64)
    np.add.at(m, (labels, predicted), 1)
    fig = figure(5.5, 5)
    ax = fig.subplots()
    ax.imshow(np.log1p(m), cmap="Blues")
    for t in range(10):
        for p in range(10):
            if m[t, p]:
                ax.text(p, t, str(m[t, p]), ha="center", va="center", fontsize=7,
                        color="white" if t == p else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_title(f"test confusion{' (' + which + ')' if which else ''}: {int(np.trace(m))} of {m.sum()} right")
    fig.tight_layout()
    return fig


def _reference(r: dict) -> float | None:
    return r.get("reference_test_error") if r.get("status") == "ok" or "status" not in r else None


def ablation_chart(rows: list[dict], title: str = ""):
    """Test error per sweep row, two panels: mean ± std over seeds (bars), and every seed
    as a dot; the published figure marked only on rows of the published recipe."""
    ok = [r for r in rows if r["status"] == "ok"]
    per_seed = any(len(r.get("test_errors") or ()) > 1 for r in ok)
    fig = figure(max(6, 1.3 * len(rows)) * (2 if per_seed else 1), 4.5)
    axes = fig.subplots(1, 2 if per_seed else 1, sharey=True, squeeze=False)[0]
    x = np.arange(len(rows))
    names = [r["row"] for r in rows]
    refs = [(i, _reference(r)) for i, r in enumerate(rows) if _reference(r) is not None]
    ax = axes[0]
    means = [r.get("test_error_mean", np.nan) if r["status"] == "ok" else np.nan for r in rows]
    stds = [r.get("test_error_std", 0.0) if r["status"] == "ok" and r["seeds"] > 1 else 0.0 for r in rows]
    ax.bar(x, means, yerr=stds, capsize=4, color="tab:orange", alpha=0.8, label="this project: mean ± std over seeds")
    ax.set_title("mean ± std")
    if per_seed:
        dots = axes[1]
        rng = np.random.default_rng(0)  # jitter only: the same picture every time
        for i, r in enumerate(rows):
            v = np.asarray(r.get("test_errors") or [], dtype=float)
            if v.size:
                dots.scatter(i + rng.uniform(-0.18, 0.18, v.size), v, s=14, color="tab:orange", alpha=0.8,
                             edgecolors="black", linewidths=0.3, label="one seed" if i == 0 else None)
        dots.set_title("every seed")
    for ax in axes:
        for i, r in enumerate(rows):
            if r["status"] != "ok":
                ax.text(i, 0.2, "failed", ha="center", color="red")
        if refs:
            ax.scatter(*zip(*refs), marker="D", s=40, color="tab:blue", zorder=4,
                       label="published single run (Karpathy 2022 / LeCun 1989)")
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("test error %")
    seeds = "/".join(str(s) for s in sorted({r["seeds"] for r in ok}))
    fig.suptitle(title or f"test error per row on {', '.join(sorted({r['dataset'] for r in rows}))}, {seeds} seed(s) each")
    fig.tight_layout()
    return fig


def run_figures(records: list[dict], title: str, seed: int, outputs: np.ndarray | None = None,
                labels: np.ndarray | None = None, test_images: np.ndarray | None = None) -> dict:
    """A run's plots by file name: ``curves.png`` and, with its test ``outputs`` (replicas, N, 10),
    ``labels`` and digits, the first network's ``misclassified.png`` and ``confusion.png``."""
    figures = {"curves.png": curves(records, title=title)}
    if outputs is not None:
        predicted = outputs[0].argmax(axis=-1)
        which = f"replica 0 of {len(outputs)}, seed {seed}" if len(outputs) > 1 else ""
        figures["misclassified.png"] = misclassified(test_images, labels, predicted, which=which)
        figures["confusion.png"] = confusion(labels, predicted, which=which)
    return figures


def write_run(workdir: str | Path) -> list[Path]:
    """The plots of a finished (or interrupted) run, drawn again into ``workdir/plots``."""
    run = runs.load_run(workdir)
    outputs, labels = (run.test_outputs, run.test_labels) if run.test_outputs is not None else (None, None)
    # the run's own test digits (held-out ones for a validation run), only when there are outputs to show
    images = run.dataset().test.images if outputs is not None else None
    figures = run_figures(run.metrics, f"{run.workdir.name}: {run.config.data.name}", run.config.seed, outputs, labels, images)
    return store.RunStore(run.workdir, processes.local()).write_plots(figures)


def write_sweep(workdir: str | Path) -> Path:
    """``ablations.png`` beside a sweep's table (the sweep's file, not a run's)."""
    workdir = Path(workdir)
    rows = json.loads((workdir / reporting.SWEEP_JSON).read_text())["rows"]
    return save_figure(ablation_chart(rows), workdir / "ablations.png")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m lecun_jax.run.plots WORKDIR  (a run's or a sweep's)", file=sys.stderr)
        return 2
    workdir = Path(argv[1])
    if (workdir / reporting.SWEEP_JSON).exists():
        paths = [write_sweep(workdir)]
    elif (workdir / store.METRICS).exists():
        paths = write_run(workdir)
    else:
        print(f"error: {workdir}: neither a run (metrics.jsonl) nor a sweep (sweep.json)", file=sys.stderr)
        return 2
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
