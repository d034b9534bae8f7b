"""The look page's latency: per drawing, and to start, for a 1-seed and a 100-seed run.

    python benchmarks/look.py                          # trains the two small runs in a scratch folder
    python benchmarks/look.py --seeds=1,100 --drawings=300

For each seed count: a small run (the 1989 recipe on --train_size digits, one
pass; the network's size, not its training, sets the cost), then

  start      ``python -m lecun_jax.look WORKDIR`` until it prints its address
             (load, compile once, warm up), beside ``python -c "import jax"``
  drawing    POST /api/look with the strokes of a test digit (``digit.strokes_of``
             on the 280-pixel pad, as the page sends them), one after the other,
             over HTTP to a server in this process: normalisation, every seed's
             apply, the JSON; median and p95 over --drawings test digits
  parts      the same drawings in-process: normalisation alone, apply alone

Like the command, one XLA device (no ``benchmarks/_setup``). Prints the figures
and writes JSON (--out).
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
flags.DEFINE_list("seeds", ["1", "100"], "Seed counts of the runs measured.")
flags.DEFINE_integer("drawings", 200, "Drawings timed per run (test digits drawn as strokes).")
flags.DEFINE_integer("train_size", 300, "Training digits of each run.")
flags.DEFINE_string("out", str(REPO / "benchmarks" / "results" / "look.json"), "JSON output path.")
FLAGS = flags.FLAGS
PEN = 20  # look.js's pen on its 280-pixel pad


def train(workdir: Path, seeds: int) -> None:
    import lecun_jax

    config = lecun_jax.config.base()
    config.data.train_size, config.train.passes, config.num_seeds = FLAGS.train_size, 1, seeds
    lecun_jax.train_and_evaluate(config, workdir, echo=lambda line: None, plots=False)


def seconds_to_start(workdir: Path) -> float:
    """Wall time of ``python -m lecun_jax.look WORKDIR`` until its address line."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lecun_jax.look", str(workdir)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - t
    proc.terminate()
    proc.wait()
    if "http://" not in line:
        raise SystemExit(f"python -m lecun_jax.look {workdir} printed: {line}")
    return elapsed


def seconds_to_import_jax() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import jax, flax.linen"], check=True)
    return time.perf_counter() - t


def summary(times: list[float]) -> dict:
    ms = sorted(1000 * t for t in times)
    return {"median_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2), "n": len(ms)}


def time_http(port: int, bodies: list[bytes]) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for body in bodies:
        t = time.perf_counter()
        connection.request("POST", "/api/look", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        times.append(time.perf_counter() - t)
        assert response.status == 200, response.status
    connection.close()
    return times


def time_parts(views, requests: list[dict]) -> dict:
    from lecun_jax.look import digit

    norm, apply = [], []
    for r in requests:
        t = time.perf_counter()
        x = digit.normalise_strokes(r["strokes"], r["pen"], views.style)
        norm.append(time.perf_counter() - t)
        t = time.perf_counter()
        views.apply(x)
        apply.append(time.perf_counter() - t)
    return {"normalise": summary(norm), "apply": summary(apply)}


def measure(workdir: Path) -> dict:
    import lecun_jax
    from lecun_jax.look import digit, server

    views = lecun_jax.look.load_views(workdir)
    test = views.mistakes.images
    requests = [{"strokes": digit.strokes_of(test[i]), "pen": PEN} for i in range(FLAGS.drawings)]
    bodies = [json.dumps(r).encode() for r in requests]
    s = server.make_server(views)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        time_http(s.server_address[1], bodies[:10])  # the connection and the caches warm
        drawing = summary(time_http(s.server_address[1], bodies))
    finally:
        s.shutdown()
        s.server_close()
    return {"drawing": drawing, "parts": time_parts(views, requests), "start_s": round(seconds_to_start(workdir), 2),
            "response_kib": round(statistics.median(len(json.dumps(views.look(r))) for r in requests[:20]) / 1024, 1)}


def main(argv):
    del argv
    import jax

    results = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "drawings": FLAGS.drawings,
               "import_jax_s": round(seconds_to_import_jax(), 2), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="look_bench_") as scratch:
        for seeds in map(int, FLAGS.seeds):
            workdir = Path(scratch) / f"seeds{seeds}"
            train(workdir, seeds)
            results["runs"][seeds] = r = measure(workdir)
            print(f"{seeds:>4} seed(s): per drawing over HTTP median {r['drawing']['median_ms']} ms, p95 "
                  f"{r['drawing']['p95_ms']} ms (normalise {r['parts']['normalise']['median_ms']} ms, apply "
                  f"{r['parts']['apply']['median_ms']} ms; {r['response_kib']} KiB); starts in {r['start_s']} s", flush=True)
    print(f"import jax, flax.linen alone: {results['import_jax_s']} s")
    Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(FLAGS.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
