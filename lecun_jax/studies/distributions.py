"""Distributions, not single runs: every row of the ablation tables over many seeds.

    python -m lecun_jax.studies.distributions run --seeds=100            # every row; resumes where it stopped
    python -m lecun_jax.studies.distributions run --seeds=100 --rows=mnist1989/repro,usps/sgd
    python -m lecun_jax.studies.distributions study paper1989            # a study: searched on held-out digits, then run
    python -m lecun_jax.studies.distributions report results             # tables and figures from the CSV files

``run`` trains each row (:mod:`lecun_jax.studies.rows`); ``study`` the rows of a
config file's study (:mod:`lecun_jax.studies.study`).
A finished row's per-seed results go to ``<results>/<dataset>_<row>.csv``, with
a manifest beside it (``.json``: the exact command, versions, device, wall time). ``report`` reads
those files and writes ``table.md`` and one figure per dataset
(``<dataset>.png``): every seed of every row, the means with their 95 %
intervals, the published single runs marked.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from lecun_jax import errors
from lecun_jax.run import plots, reporting
from lecun_jax.studies import study
from lecun_jax.studies.rows import COLUMNS, PUBLISHED_COUNTS, ROWS, Row, command, export, row_config, run_row  # noqa: F401

BOOTSTRAP = 10_000  # resamples for the intervals


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
                     **{c: np.asarray([float(l[c]) for l in lines]) for c in COLUMNS[4:]}})
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
           "median": float(np.median(values)), "min": float(values.min()), "p5": float(np.percentile(values, 5)), "p95": float(np.percentile(values, 95)),
           "published": published, "published_percentile": None, "change": None}
    if published is not None:  # the share of seeds below it, ties counting half
        out["published_percentile"] = float(100 * (np.sum(values < published) + 0.5 * np.sum(values == published)) / len(values))
    if previous is not None:
        diffs = means - _bootstrap_means(previous, rng)
        out["change"] = {"mean": float(values.mean() - previous.mean()),
                         "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]}
    return out


def _published_error(r: dict) -> float | None:
    """The published test error %, from its count of mistakes where the paper gives one
    (102 of 2,007 is 5.08 %, which it printed as 5.0 %)."""
    published = r["manifest"]["published"]
    if published.get("test_misses") is None:
        return published["test_error"]
    digits = np.round(100 * r["test_misses"] / r["test_error"])[r["test_error"] > 0]
    return 100 * published["test_misses"] / digits[0] if digits.size else published["test_error"]


def statistics(rows: list[dict]) -> list[dict]:
    out, previous = [], {}
    for r in rows:
        stats = describe(r["test_error"], _published_error(r), previous.get(r["dataset"]))
        counted = mistakes(r)
        if counted:  # where the paper counts its mistakes, its percentile is counted in mistakes (no rounding)
            stats["published_percentile"] = counted["test"]["published_percentile"]
        out.append({"key": r["key"], "dataset": r["dataset"], "row": r["row"], **stats, "mistakes": counted})
        previous[r["dataset"]] = r["test_error"]
    return out


def mistakes(r: dict) -> dict | None:
    """Beside a paper that counts its mistakes: train and test mistakes (mean, std, 95 % CI),
    the share of seeds at or under the paper's test count, and the MSEs."""
    published = {k: r["manifest"]["published"].get(k) for k in PUBLISHED_COUNTS}
    if published["test_misses"] is None:
        return None
    out = {split: describe(r[f"{split}_misses"], published[f"{split}_misses"], None) for split in ("train", "test")}
    out["share_at_or_under_published"] = float(np.mean(r["test_misses"] <= published["test_misses"]))
    out["mse"] = {split: float(np.mean(r[f"{split}_loss"])) for split in ("train", "test")}
    return out | {"published": published}


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
    return head + "\n".join(lines) + "\n" + mistakes_markdown(stats)


def mistakes_markdown(stats: list[dict]) -> str:
    """The rows measured against a paper that counts mistakes, in its units."""
    chosen = [s for s in stats if s["mistakes"]]
    if not chosen:
        return ""
    p = chosen[0]["mistakes"]["published"]
    at = p["test_misses"]
    head = (f"\n| row | seeds | train mistakes mean ± std (95 % CI) | test mistakes mean ± std (95 % CI) | min | "
            f"seeds at ≤ {at} | train MSE | test MSE |\n|" + "---|" * 8 + "\n"
            f"| the paper (one run) | 1 | {p['train_misses']} | {at} | | | {_g(p['train_mse'])} | {_g(p['test_mse'])} |\n")
    cell = lambda d: f"{d['mean']:.1f} ± {d['std']:.1f} ({d['mean_ci95'][0]:.1f}–{d['mean_ci95'][1]:.1f})"
    lines = [f"| {s['row']} | {s['seeds']} | {cell(s['mistakes']['train'])} | {cell(s['mistakes']['test'])} | "
             f"{s['mistakes']['test']['min']:.0f} | {100 * s['mistakes']['share_at_or_under_published']:.0f} % | "
             f"{_g(s['mistakes']['mse']['train'])} | {_g(s['mistakes']['mse']['test'])} |" for s in chosen]
    return head + "\n".join(lines) + "\n"


def _g(x: float | None) -> str:
    return "" if x is None else f"{x:.1e}"


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


def mistakes_figure(rows: list[dict], stats: list[dict], path: Path) -> Path:
    """Every seed as a point (train mistakes, test mistakes), one colour a row, the paper's run marked."""
    chosen = [(r, s) for r, s in zip(rows, stats) if s["mistakes"]]
    fig = plots.figure(7.5, 5.5)
    ax = fig.subplots()
    jitter = np.random.default_rng(0)
    markers = "os^Dv<>p"
    for i, (r, s) in enumerate(chosen):
        x = r["train_misses"] + jitter.uniform(-0.25, 0.25, r["train_misses"].size)  # mistakes are whole numbers
        ax.scatter(x, r["test_misses"], s=10, alpha=0.45, linewidths=0, marker=markers[(i // 10) % len(markers)],
                   label=f"{r['row']} ({s['mistakes']['test']['mean']:.1f})")
    p = chosen[0][1]["mistakes"]["published"]
    ax.scatter([p["train_misses"]], [p["test_misses"]], marker="*", s=260, color="black", zorder=3,
               label=f"the paper ({p['train_misses']}, {p['test_misses']})")
    ax.set_xlabel("train mistakes (of the training digits)")
    ax.set_ylabel("test mistakes")
    ax.set_title(f"{chosen[0][0]['dataset']}: every seed of every row (legend: mean test mistakes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
        counted = [(r, s) for r, s in zip(rows, stats) if r["dataset"] == dataset and s["mistakes"]]
        if counted:
            paths.append(mistakes_figure(*map(list, zip(*counted)), results / f"{dataset}_mistakes.png"))
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
    st = sub.add_parser("study", help="a study of configs/NAME.py:study: each row searched on held-out digits, then run")
    st.add_argument("name", help="e.g. paper1989")
    st.add_argument("--runs", type=Path, default=None, help="where its runs go (default: runs/NAME)")
    st.add_argument("--results", type=Path, default=None, help="where its CSV files go (default: results/NAME)")
    st.add_argument("--override", action="append", default=[], help="a config override for every run of the study")
    rep = sub.add_parser("report", help="tables and figures from the CSV files")
    rep.add_argument("results", type=Path, nargs="?", default=Path("results"))
    args = parser.parse_args(argv)
    if args.what == "report":
        for path in report(args.results):
            print(f"wrote {path}")
        return 0
    if args.what == "study":
        try:
            study.run(args.name, args.runs or Path("runs") / args.name, args.results or Path("results") / args.name,
                      tuple(args.override))
        except errors.USER_ERRORS as e:  # e.g. a config file that does not load: one line
            print(f"error: {e}", file=sys.stderr)
            return errors.exit_code(e)
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
