"""The fast paths give the numbers of the plain ones: formulations, sharding, padding."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lecun_jax import config as config_lib
from lecun_jax.run import experiment, processes
from lecun_jax.core import losses, train
from lecun_jax.core import model as M
from conftest import REPO
from reference import karpathy_forward, mse_1989


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 5])
def test_patch_gradients_equal_the_reference_including_the_input(batch):
    params = M.init(M.Net1989(), jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(batch), (batch, 16, 16, 1), minval=-1, maxval=1)
    y = jnp.arange(batch) % 10
    ref = jax.grad(lambda p, x: mse_1989(karpathy_forward(p, x), y), argnums=(0, 1))(params, x)
    for conv in ("patches", "lax"):
        ours = jax.grad(lambda p, x: mse_1989(M.Net1989(conv=conv).apply({"params": p}, x), y), argnums=(0, 1))(params, x)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
            np.testing.assert_allclose(a, b, atol=3e-7, rtol=1e-5)


@pytest.mark.slow
def test_optimised_pass_gives_the_plain_formulations_metrics(mnist1989):
    n = 500
    images, labels = mnist1989.train.images[:n], mnist1989.train.labels[:n]
    results = {}
    for conv in ("patches", "lax"):
        c = config_lib.base()
        c.model.conv = conv
        model, tx = train.make_model(c), train.make_optimizer(c, n)
        state = train.init_state(model, tx, train.replica_key(c.seed, 0))
        state = jax.jit(train.make_train_pass(model, tx, losses.mse, num_train=n, batch_size=1, shuffle=False))(
            state, images, labels
        )
        results[conv] = jax.jit(train.make_evaluate(M.Net1989(conv="lax"), losses.mse, 2007))(
            state["params"], mnist1989.test.images, mnist1989.test.labels
        )
    assert int(results["patches"]["misses"]) == int(results["lax"]["misses"])
    assert float(results["patches"]["loss"]) == pytest.approx(float(results["lax"]["loss"]), rel=1e-4)


def _launch(tmp_path, name, devices, *overrides):
    env = os.environ | {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    workdir = tmp_path / name
    result = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), f"--workdir={workdir}", "--config.data.train_size=400",
         "--config.train.passes=2", *overrides],
        capture_output=True, text=True, env=env, timeout=600, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return summary, records


@pytest.mark.slow
@pytest.mark.parametrize("seeds,devices", [(8, 8), (3, 2)])
def test_sharded_runs_equal_the_single_device_run(tmp_path, seeds, devices):
    one, r1 = _launch(tmp_path, "one", 1, f"--config.num_seeds={seeds}", "--config=configs/ablations.py:relu_dropout")
    many, rn = _launch(tmp_path, "many", devices, f"--config.num_seeds={seeds}", "--config=configs/ablations.py:relu_dropout")
    assert one["device"]["used"] == 1 and many["device"]["used"] == min(seeds, devices)
    assert len(r1) == len(rn) == 2 * 2 * seeds  # passes x splits x replicas: no spare replica reported
    for a, b in zip(r1, rn):
        assert (a["pass"], a["split"], a["replica"]) == (b["pass"], b["split"], b["replica"])
        assert a["misses"] == b["misses"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_replica_layout_pads_to_the_mesh():
    mesh, replicas = processes.replica_layout(1)
    assert mesh is None and replicas == 1
    mesh, replicas = processes.replica_layout(5)
    n = min(jax.device_count(), 5)
    assert replicas == -(-5 // n) * n and (mesh is None) == (n == 1)
