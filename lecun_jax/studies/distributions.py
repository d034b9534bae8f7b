"""Distributions, not single runs: every row of the ablation tables over many seeds.

    python -m lecun_jax.studies.distributions run --seeds=100            # every row; resumes where it stopped
    python -m lecun_jax.studies.distributions run --seeds=100 --rows=mnist1989/repro,usps/sgd
    python -m lecun_jax.studies.distributions report results             # tables and figures from the CSV files

``run`` trains each row as an ordinary run (``python -m lecun_jax.launch
--config=configs/... --config.num_seeds=N``, only the last pass evaluated) in
``<runs>/<dataset>_<row>``, started in the current folder: the configs are the
package's own where that folder has no ``configs/``, so it runs from a checkout
or from an installed wheel alike. An interrupted row resumes from its last pass.
A finished row's per-seed results go to ``<results>/<dataset>_<row>.csv``, with
a manifest beside it (``.json``: the exact command, versions, device, wall time). ``report`` reads
those files and writes ``table.md`` and one figure per dataset
(``<dataset>.png``): every seed of every row, the means with their 95 %
intervals, the published single runs marked.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lecun_jax import config as config_lib
from lecun_jax.run import plots, reporting

COLUMNS = ("row", "dataset", "seed", "replica", "train_misses", "train_error", "test_misses", "test_error",
           "train_loss", "test_loss")
BOOTSTRAP = 10_000  # resamples for the intervals


@dataclasses.dataclass(frozen=True)
class Row:
    dataset: str
    name: str
    config: str  # the config file and preset, as --config takes it
    overrides: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.dataset}_{self.name}"


ROWS = (
    Row("mnist1989", "repro", "configs/ablations.py:repro"),
    Row("mnist1989", "ce", "configs/ablations.py:ce"),
    Row("mnist1989", "adamw", "configs/ablations.py:adamw"),
    Row("mnist1989", "augment", "configs/ablations.py:augment"),
    Row("mnist1989", "relu_dropout", "configs/ablations.py:relu_dropout"),
    Row("usps", "sgd", "configs/lecun1989.py:usps"),
    Row("usps", "sdlm", "configs/lecun1989.py:usps_sdlm"),
    Row("usps", "relu_dropout", "configs/ablations.py:relu_dropout", ("--config.data.name=usps",)),
)


def row_config(row: Row):
    path, _, arg = row.config.partition(":")
    c = config_lib.load_file(path, arg or None)
    for o in row.overrides:
        field, _, value = o.removeprefix("--config.").partition("=")
        config_lib.set_path(c, field, value)
    return c


def command(row: Row, seeds: int, workdir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The command of a row, as a user reruns it from any folder: the last pass alone evaluated
    (the numbers do not change)."""
    passes = row_config(row).train.passes
    return ["python", "-m", "lecun_jax.launch", f"--config={row.config}", *row.overrides, f"--config.num_seeds={seeds}",
            f"--config.train.eval_every={passes}", *extra, f"--workdir={workdir}"]


def _shown(path: Path) -> Path:
    """``path`` as the recorded command shows it: from the current folder where it is inside."""
    path, here = path.resolve(), Path.cwd().resolve()
    return path.relative_to(here) if path.is_relative_to(here) else path


def run_row(row: Row, seeds: int, runs: Path, results: Path, extra: tuple[str, ...] = ()) -> Path:
    """Trains (or resumes, or finds finished) one row, then writes its CSV and manifest."""
    workdir = runs.resolve() / row.key
    cmd = command(row, seeds, _shown(workdir), extra)
    print(f"== {row.key}: {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *cmd[1:]])  # the command as shown, from this folder
    if done.returncode != 0:
        raise SystemExit(f"error: {row.key} stopped (exit {done.returncode}); run the same command again to resume")
    return export(row, workdir, results, shlex.join(cmd), time.perf_counter() - start)


def export(row: Row, workdir: Path, results: Path, cmd: str, wall_s: float) -> Path:
    """``<results>/<row>.csv`` (one line per seed) and its manifest, from a finished run."""
    summary = json.loads((workdir / reporting.SUMMARY).read_text())
    last = summary["passes"]
    final = {}
    for r in reporting.read_jsonl(workdir / reporting.METRICS):
        if r["pass"] == last:
            final.setdefault(r["replica"], {})[r["split"]] = r
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for replica, splits in sorted(final.items()):
        tr, te = splits["train"], splits["test"]
        w.writerow([row.name, row.dataset, te["seed"], replica, tr["misses"], f"{tr['error']:.4f}", te["misses"],
                    f"{te['error']:.4f}", tr["loss"], te["loss"]])
    path = results / f"{row.key}.csv"
    reporting.atomic_write_bytes(path, out.getvalue().encode())
    config = json.loads((workdir / reporting.CONFIG).read_text())
    ref = config["reference"]  # a published figure counts only on the digits it was measured on
    published = ref["test_error"] if ref["dataset"] == config["data"]["name"] else None
    reporting.write_json(path.with_suffix(".json"), {
        "row": row.name, "dataset": row.dataset, "command": cmd, "seeds": len(final), "passes": last,
        "published": {"label": ref["label"] if published is not None else "", "test_error": published},
        "wall_s_this_process": wall_s, "resumed_after_pass": summary["resumed_after_pass"],
        "train_s": summary["time"]["train_s"], "compile_s": summary["time"]["compile_s"],
        "device": summary["device"], "versions": summary["versions"],
    })
    print(f"wrote {path} ({len(final)} seeds)", flush=True)
    return path


# --- statistics --------------------------------------------------------------------------


def read(results: Path) -> list[dict]:
    """Every row's CSV and manifest under ``results``, in the order of :data:`ROWS`."""
    order = {r.key: i for i, r in enumerate(ROWS)}
    rows = []
    for path in sorted(results.glob("*.csv"), key=lambda p: (order.get(p.stem, len(order)), p.stem)):
        with open(path, newline="") as f:
            lines = list(csv.DictReader(f))
        if not path.with_suffix(".json").is_file():
            raise SystemExit(f"error: {path}: no manifest {path.with_suffix('.json').name} beside it; "
                             "write both with `run` (or distributions.export)")
        manifest = json.loads(path.with_suffix(".json").read_text())
        rows.append({"key": path.stem, "dataset": manifest["dataset"], "row": manifest["row"], "manifest": manifest,
                     "test_error": np.asarray([float(l["test_error"]) for l in lines]),
                     "train_error": np.asarray([float(l["train_error"]) for l in lines])})
    return rows


def _bootstrap_means(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return values[rng.integers(0, len(values), (BOOTSTRAP, len(values)))].mean(axis=1)


def describe(values: np.ndarray, published: float | None, previous: np.ndarray | None, seed: int = 0) -> dict:
    """Mean, std, the mean's 95 % interval (bootstrap), median, 5th-95th percentiles,
    the percentile at which ``published`` falls, and the change from ``previous``."""
    rng = np.random.default_rng(seed)
    means = _bootstrap_means(values, rng)
    out = {"seeds": len(values), "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
           "mean_ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
           "median": float(np.median(values)), "p5": float(np.percentile(values, 5)), "p95": float(np.percentile(values, 95)),
           "published": published, "published_percentile": None, "change": None}
    if published is not None:  # the share of seeds below it, ties counting half
        out["published_percentile"] = float(100 * (np.sum(values < published) + 0.5 * np.sum(values == published)) / len(values))
    if previous is not None:
        diffs = means - _bootstrap_means(previous, rng)
        out["change"] = {"mean": float(values.mean() - previous.mean()),
                         "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]}
    return out


def statistics(rows: list[dict]) -> list[dict]:
    out, previous = [], {}
    for r in rows:
        stats = describe(r["test_error"], r["manifest"]["published"]["test_error"], previous.get(r["dataset"]))
        out.append({"key": r["key"], "dataset": r["dataset"], "row": r["row"], **stats})
        previous[r["dataset"]] = r["test_error"]
    return out


def table_markdown(stats: list[dict]) -> str:
    head = ("| dataset | row | seeds | test error % mean ± std | 95 % CI of the mean | median | 5th–95th pct "
            "| published | its percentile | change from the row above (95 % CI) |\n|" + "---|" * 10 + "\n")
    lines = []
    for s in stats:
        change = "" if s["change"] is None else f"{s['change']['mean']:+.2f} ({s['change']['ci95'][0]:+.2f} to {s['change']['ci95'][1]:+.2f})"
        published = "" if s["published"] is None else f"{s['published']:.2f}"
        pct = "" if s["published_percentile"] is None else f"{s['published_percentile']:.0f}"
        lines.append(f"| {s['dataset']} | {s['row']} | {s['seeds']} | {s['mean']:.2f} ± {s['std']:.2f} | "
                     f"{s['mean_ci95'][0]:.2f}–{s['mean_ci95'][1]:.2f} | {s['median']:.2f} | {s['p5']:.2f}–{s['p95']:.2f} | "
                     f"{published} | {pct} | {change} |")
    return head + "\n".join(lines) + "\n"


# --- figures -----------------------------------------------------------------------------


def figure(rows: list[dict], stats: list[dict], dataset: str, path: Path) -> Path:
    """Every seed of every row of ``dataset`` (points), the means with their 95 % intervals,
    and the published single runs (stars)."""
    chosen = [(r, s) for r, s in zip(rows, stats) if r["dataset"] == dataset]
    fig = plots.figure(1.3 + 1.25 * len(chosen), 4.0)
    ax = fig.subplots()
    jitter = np.random.default_rng(0)
    for i, (r, s) in enumerate(chosen):
        x = i + jitter.uniform(-0.18, 0.18, len(r["test_error"]))
        ax.scatter(x, r["test_error"], s=7, alpha=0.35, color="tab:blue", linewidths=0,
                   label="one seed" if i == 0 else None)
        lo, hi = s["mean_ci95"]
        ax.errorbar([i + 0.3], [s["mean"]], yerr=[[s["mean"] - lo], [hi - s["mean"]]], fmt="o", color="black",
                    capsize=3, markersize=4, label="mean, 95 % CI" if i == 0 else None)
        if s["published"] is not None:
            ax.scatter([i], [s["published"]], marker="*", s=130, color="tab:red", zorder=3,
                       label="published single run" if i == 0 or not any(c[1]["published"] for c in chosen[:i]) else None)
    ax.set_xticks(range(len(chosen)), [r["row"] for r, _ in chosen])
    ax.set_ylabel("test error %")
    ax.set_title(f"{dataset}: {chosen[0][0]['test_error'].size if chosen else 0} seeds a row")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return plots.save_figure(fig, path)


def report(results: Path) -> list[Path]:
    """table.md, stats.json and one figure per dataset, from the CSV files in ``results``."""
    rows = read(results)
    if not rows:
        raise SystemExit(f"error: {results}: no <dataset>_<row>.csv files; make them with `run`")
    stats = statistics(rows)
    reporting.atomic_write_bytes(results / "table.md", table_markdown(stats).encode())
    reporting.write_json(results / "stats.json", stats)
    paths = [results / "table.md", results / "stats.json"]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        paths.append(figure(rows, stats, dataset, results / f"{dataset}.png"))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lecun_jax.studies.distributions", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run", help="train the rows and write their CSV files")
    run.add_argument("--seeds", type=int, default=100)
    run.add_argument("--rows", default="", help="dataset/row,... (default: every row)")
    run.add_argument("--runs", type=Path, default=Path("runs/distributions"), help="where the rows' runs go")
    run.add_argument("--results", type=Path, default=Path("results"))
    run.add_argument("--override", action="append", default=[],
                     help="a config override for every row, e.g. --override=--config.data.train_size=300 (a sample)")
    rep = sub.add_parser("report", help="tables and figures from the CSV files")
    rep.add_argument("results", type=Path, nargs="?", default=Path("results"))
    args = parser.parse_args(argv)
    if args.what == "report":
        for path in report(args.results):
            print(f"wrote {path}")
        return 0
    known = {f"{r.dataset}/{r.name}": r for r in ROWS}
    wanted = [w for w in args.rows.split(",") if w] or list(known)
    unknown = [w for w in wanted if w not in known]
    if unknown:
        parser.error(f"--rows: {', '.join(unknown)}? valid: {', '.join(known)}")
    for w in wanted:
        run_row(known[w], args.seeds, args.runs, args.results, tuple(args.override))
    return 0


if __name__ == "__main__":
    sys.exit(main())
