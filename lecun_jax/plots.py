"""Pictures of runs and sweeps (matplotlib, PNG), from what a workdir holds.

    python -m lecun_jax.plots runs/lecun1989_mnist1989     # a run: plots/ in it
    python -m lecun_jax.plots runs/table                   # a sweep: ablations.png

A run gets ``plots/curves.png`` (train and test error and loss per pass; with
several seeds their mean and range), ``plots/misclassified.png`` (the test
digits the first network gets wrong, true -> predicted) and
``plots/confusion.png``. A sweep gets ``ablations.png``: test error per row,
mean +- std over seeds, with the published figure marked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lecun_jax import data, reporting  # noqa: E402

SPLIT_STYLE = {"train": "tab:blue", "test": "tab:orange"}


def _by_pass(records: list[dict], split: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(passes, values (pass, replica)) of one metric."""
    rows = [r for r in records if r["split"] == split]
    passes = sorted({r["pass"] for r in rows})
    replicas = sorted({r["replica"] for r in rows})
    values = np.full((len(passes), len(replicas)), np.nan)
    for r in rows:
        values[passes.index(r["pass"]), replicas.index(r["replica"])] = r[key]
    return np.asarray(passes), values


def curves(records: list[dict], path: Path, title: str = "") -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "error", "error %"), (axes[1], "loss", "loss")):
        for split, color in SPLIT_STYLE.items():
            passes, v = _by_pass(records, split, key)
            if v.size == 0:
                continue
            mean = np.nanmean(v, axis=1)
            ax.plot(passes, mean, color=color, label=f"{split}" + (f" (mean of {v.shape[1]})" if v.shape[1] > 1 else ""))
            if v.shape[1] > 1:
                ax.fill_between(passes, np.nanmin(v, axis=1), np.nanmax(v, axis=1), color=color, alpha=0.2)
        ax.set_xlabel("pass")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def misclassified(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, path: Path, limit: int = 120) -> Path:
    """A grid of the digits where ``predicted != labels``, each titled 'true->predicted'."""
    wrong = np.flatnonzero(predicted != labels)[:limit]
    cols = 12
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.05 + 0.4))
    axes = np.atleast_1d(axes).reshape(-1)
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, wrong):
        ax.imshow(images[i].reshape(16, 16), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(f"{labels[i]}→{predicted[i]}", fontsize=8)
    fig.suptitle(f"misclassified test digits: {len(np.flatnonzero(predicted != labels))} of {len(labels)} "
                 f"(true→predicted){'; first ' + str(limit) if len(wrong) == limit else ''}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def confusion(labels: np.ndarray, predicted: np.ndarray, path: Path) -> Path:
    m = np.zeros((10, 10), dtype=np.int64)
    np.add.at(m, (labels, predicted), 1)
    fig, ax = plt.subplots(figsize=(5.5, 5))
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
    ax.set_title(f"test confusion ({int(np.trace(m))} of {m.sum()} right)")
    fig.tight_layout()
    return save_figure(fig, path)


def ablation_chart(rows: list[dict], path: Path, title: str = "") -> Path:
    """Test error per sweep row: mean +- std over seeds, published figure as a marker."""
    ok = [r for r in rows if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4))
    x = np.arange(len(rows))
    means = [r.get("test_error_mean", np.nan) for r in rows]
    stds = [r.get("test_error_std", 0.0) if r["seeds"] > 1 else 0.0 for r in rows]
    ax.bar(x, means, yerr=stds, capsize=4, color="tab:orange", alpha=0.8, label="this project: test error, mean ± std")
    for i, r in enumerate(rows):
        if r["status"] == "ok" and r["seeds"] > 1:
            ax.scatter([i] * 2, [r["test_error_min"], r["test_error_max"]], color="black", s=8, zorder=3,
                       label="min and max over seeds" if i == 0 else None)
        if r["status"] != "ok":
            ax.text(i, 0.2, "failed", ha="center", color="red")
    refs = [(i, r["reference_test_error"]) for i, r in enumerate(rows) if r.get("reference_test_error") is not None]
    if refs:
        ax.scatter(*zip(*refs), marker="D", color="tab:blue", zorder=4, label="published (Karpathy 2022 / LeCun 1989)")
    ax.set_xticks(x)
    ax.set_xticklabels([r["row"] for r in rows], rotation=20)
    ax.set_ylabel("test error %")
    seeds = "/".join(str(s) for s in sorted({r["seeds"] for r in ok}))
    ax.set_title(title or f"ablations on {', '.join(sorted({r['dataset'] for r in rows}))}, {seeds} seed(s) each")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Writes ``fig`` to ``path`` (whole, then renamed) and closes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_run(workdir: str | Path) -> list[Path]:
    """The plots of a finished (or interrupted) run, into ``workdir/plots``."""
    workdir = Path(workdir)
    out_dir = workdir / reporting.PLOTS
    records = reporting.read_jsonl(workdir / reporting.METRICS)
    config = json.loads((workdir / reporting.CONFIG).read_text())
    written = [curves(records, out_dir / "curves.png", title=f"{workdir.name}: {config['data']['name']}")]
    if (workdir / reporting.TEST_OUTPUTS).exists():
        with np.load(workdir / reporting.TEST_OUTPUTS) as z:
            outputs, labels = z["outputs"], z["labels"]
        predicted = outputs[0].argmax(axis=-1)
        d = config["data"]
        if d["name"] == "mnist":  # tested on mnist1989's test digits
            images = data.load("mnist1989", data_dir=d["tfds_dir"]).test.images
        else:
            images = data.load(d["name"], source_dir=d["source_dir"], data_dir=d["tfds_dir"]).test.images
        written.append(misclassified(images, labels, predicted, out_dir / "misclassified.png"))
        written.append(confusion(labels, predicted, out_dir / "confusion.png"))
    return written


def write_sweep(workdir: str | Path) -> Path:
    workdir = Path(workdir)
    rows = json.loads((workdir / reporting.SWEEP_JSON).read_text())["rows"]
    return ablation_chart(rows, workdir / "ablations.png")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m lecun_jax.plots WORKDIR  (a run's or a sweep's)", file=sys.stderr)
        return 2
    workdir = Path(argv[1])
    if (workdir / reporting.SWEEP_JSON).exists():
        paths = [write_sweep(workdir)]
    elif (workdir / reporting.METRICS).exists():
        paths = write_run(workdir)
    else:
        print(f"error: {workdir}: neither a run (metrics.jsonl) nor a sweep (sweep.json)", file=sys.stderr)
        return 2
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
