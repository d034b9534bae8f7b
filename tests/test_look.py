"""The look page (python -m lecun_jax.look): the drawing made into a digit as the datasets'
digits were, the run's own module answering it layer by layer and seed by seed, a server
that refuses bad requests in one line and keeps serving, and the page in a real browser."""

import http.client
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import lecun_jax
from lecun_jax import errors
from lecun_jax.data import sources
from lecun_jax.look import digit, server as server_lib, views as views_lib
from conftest import REPO, small_config
from reference import hwio

CHROMEDRIVER = Path("/usr/bin/chromedriver")
PEN = 20  # look.js's pen on its 280-pixel pad


# ---- the drawing made into a digit ------------------------------------------------------


def test_area_resampling_is_the_mean_of_what_each_pixel_covers():
    v = np.arange(8.0)
    np.testing.assert_allclose(digit.area_matrix(8, 4, 0.5) @ v, v.reshape(4, 2).mean(1))
    np.testing.assert_allclose(digit.area_matrix(3, 2, 2 / 3), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    np.testing.assert_allclose(digit.area_matrix(2, 4, 1.0), [[0, 0], [1, 0], [0, 1], [0, 0]])  # centred


def test_an_mnist_digit_normalised_again_is_its_mnist1989_digit(mnist1989):
    """MNIST's own 28x28 digits (a 20-pixel box placed by its centre of mass), fed back as a
    raster, come out as the package's 16x16 mnist1989 digits, bit for bit."""
    images = sources.mnist1989_source()["test"][0][:1000]
    full = [k for k, im in enumerate(images) if im.max() == 255]  # the darkest ink is full ink (nine in ten)
    same = [np.array_equal(digit.normalise_raster(images[k] / 255, "mnist"), mnist1989.test.images[k, ..., 0]) for k in full]
    assert len(full) > 850 and np.mean(same) > 0.99


def test_a_usps_digit_normalised_again_is_itself(usps):
    """The 1989 digits fill 16 pixels on their longer side, centred, grey levels spanning [-1, 1]."""
    images = usps.test.images[..., 0]
    out = np.stack([digit.normalise_raster((im + 1) / 2, "usps") for im in images])
    np.testing.assert_allclose(out, images, atol=1e-6)


def test_strokes_are_normalised_by_their_bounding_box_keeping_the_aspect_ratio():
    tall = [[[0.0, 0.0], [10.0, 0.0], [10.0, 20.0], [0.0, 20.0], [0.0, 0.0]]]  # a 10x20 rectangle
    image = digit.normalise_strokes(tall, 1.0, "usps")
    rows, cols = np.flatnonzero((image > -1).any(1)), np.flatnonzero((image > -1).any(0))
    assert (rows[0], rows[-1]) == (0, 15) and len(cols) in (8, 9) and cols[0] + cols[-1] in (14, 15, 16)
    assert image.min() == -1 and image.max() == 1
    moved = [[[3 * x + 100, 3 * y - 7] for x, y in tall[0]]]  # the same drawing, bigger, elsewhere
    np.testing.assert_allclose(digit.normalise_strokes(moved, 3.0, "usps"), image, atol=1e-6)
    mnist = digit.normalise_strokes(tall, 1.0, "mnist")
    assert mnist[0].max() == -1 and mnist[:, 0].max() == -1  # a 20-in-28 box: a margin all round


def test_a_test_digit_drawn_as_strokes_comes_back(usps):
    image = usps.test.images[7, ..., 0]
    drawn = digit.normalise_strokes(digit.strokes_of(image), PEN, "usps")
    assert np.corrcoef(image.ravel(), drawn.ravel())[0, 1] > 0.85


@pytest.mark.parametrize("strokes,pen,reason", [
    ([], 3, "strokes"), ([[]], 3, r"strokes\[0\]"), ([[[1, float("nan")]]], 3, r"strokes\[0\]"),
    ([[[1, 2, 3]]], 3, r"strokes\[0\]"), ([[[1, True]]], 3, r"strokes\[0\]"), ([[[1, 2]]], 0, "pen"),
    ([[[1, 2]]], None, "pen"), ([[[0, 0]]] * 101, 3, "strokes"), ([[[0, 0]] * 2501] * 2, 3, "5000 points"),
])
def test_bad_strokes_are_refused_in_one_line(strokes, pen, reason):
    with pytest.raises(digit.DrawingError, match=reason) as e:
        digit.normalise_strokes(strokes, pen, "usps")
    assert "\n" not in str(e.value)


# ---- the runs and what the views make of them ---------------------------------------------


@pytest.fixture(scope="session")
def look_runs(tmp_path_factory) -> dict[int, Path]:
    """Finished runs of 1 and of 3 seeds: 300 digits, one pass."""
    root = tmp_path_factory.mktemp("look_runs")
    for seeds in (1, 3):
        lecun_jax.train_and_evaluate(small_config(train__passes=1, num_seeds=seeds), root / f"seeds{seeds}",
                                     echo=lambda line: None, plots=False)
    return {seeds: root / f"seeds{seeds}" for seeds in (1, 3)}


@pytest.fixture(scope="session")
def look_views(look_runs) -> dict[int, views_lib.Views]:
    return {seeds: lecun_jax.look.load_views(workdir) for seeds, workdir in look_runs.items()}


def reference_layers(p, x):
    """H1, H2, H3 and the outputs of the 1989 network, transcribed apart from the library
    (as tests/reference.py's karpathy_forward): explicit -1 padding, H2 as three convolutions."""
    conv = lambda x, w: lax.conv_general_dilated(x, hwio(w), (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                 precision="highest")
    pad = lambda x: jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    h1 = jnp.tanh(conv(pad(x), p["h1"]["kernel"]) + p["h1"]["bias"])
    k, both = p["h2"]["kernel"], [0, 1, 2, 3, 8, 9, 10, 11]
    x = pad(h1)
    h2 = jnp.tanh(jnp.concatenate([conv(x[..., 0:8], k[0:4, 0:8]), conv(x[..., 4:12], k[4:8, 4:12]),
                                   conv(x[..., both], k[8:12][:, both])], -1) + p["h2"]["bias"])
    h3 = jnp.tanh(h2.reshape(1, -1) @ p["h3"]["kernel"].T + p["h3"]["bias"])
    return {"h1": h1[0], "h2": h2[0], "h3": h3[0], "out": jnp.tanh(h3 @ p["out"]["kernel"].T + p["out"]["bias"])[0]}


def own_capture(run, seed: int, x):
    """The module's own outputs and what Flax's capture_intermediates finds in it (Net1989: its dropout's input, H2)."""
    variables = jax.tree.map(lambda a: a[seed] if run.config.num_seeds > 1 else a, {"params": run.params})
    out, state = run.model.apply(variables, jnp.asarray(x, jnp.float32).reshape(1, 16, 16, 1), train=False,
                                 capture_intermediates=True, mutable=["intermediates"])
    return np.asarray(out[0]), {k: np.asarray(v["__call__"][0][0]) for k, v in state["intermediates"].items() if k != "__call__"}


def check_answer(run, answer: dict, seed: int) -> None:
    """What the page got for one digit is the run's module on the digit it shows, and the reference's layers."""
    x = np.asarray(answer["input"], np.float32)
    outputs, captured = own_capture(run, seed, x)
    np.testing.assert_allclose(answer["scores"], outputs, atol=1e-6)
    assert answer["answer"] == int(np.argmax(outputs))
    layers = {layer["name"]: np.asarray(layer["values"]) for layer in answer["layers"]}
    assert list(layers) == ["h1", "h2", "h3"]
    np.testing.assert_allclose(layers["h2"].ravel(), captured["Dropout_0"], atol=1e-6)
    params = jax.tree.map(lambda a: a[seed] if run.config.num_seeds > 1 else a, run.params)
    reference = reference_layers(params, x.reshape(1, 16, 16, 1))
    for name in ("h1", "h2", "h3"):
        np.testing.assert_allclose(layers[name], reference[name], atol=1e-5)
    np.testing.assert_allclose(answer["kernel"]["values"], params["h1"]["kernel"][:, 0], atol=0)


@pytest.fixture(scope="session")
def serving(look_views):
    """Both runs served on free ports of 127.0.0.1, each by a thread."""
    servers = {seeds: server_lib.make_server(views) for seeds, views in look_views.items()}
    for s in servers.values():
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield {seeds: s.server_address[1] for seeds, s in servers.items()}
    for s in servers.values():
        s.shutdown()
        s.server_close()


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def look(port: int, request: dict) -> dict:
    status, _, body = call(port, "POST", "/api/look", json.dumps(request).encode())
    assert status == 200, body
    return json.loads(body)


def test_a_digit_is_answered_by_the_runs_own_module_layer_by_layer(look_runs, look_views, usps):
    run = lecun_jax.load_run(look_runs[1])
    answer = look_views[1].look({"image": usps.test.images[3, ..., 0].tolist()})
    check_answer(run, answer, 0)
    assert answer["seeds"]["votes"][answer["answer"]] == 1


def test_every_seed_answers_the_same_drawing(look_runs, serving, mnist1989):
    run = lecun_jax.load_run(look_runs[3])
    strokes = digit.strokes_of(mnist1989.test.images[11])
    answers = [look(serving[3], {"strokes": strokes, "pen": PEN, "seed": seed}) for seed in range(3)]
    x = answers[0]["input"]
    assert all(a["input"] == x and a["seeds"] == answers[0]["seeds"] for a in answers)  # one digit, every seed
    scores = np.stack([own_capture(run, seed, x)[0] for seed in range(3)])
    seeds = answers[0]["seeds"]
    assert seeds["answers"] == scores.argmax(1).tolist()
    assert seeds["votes"] == np.bincount(scores.argmax(1), minlength=10).tolist()
    np.testing.assert_allclose(seeds["winner_scores"], scores[:, seeds["winner"]], atol=1e-6)
    for seed, answer in enumerate(answers):
        check_answer(run, answer, seed)


def test_the_mistakes_are_the_test_digits_the_seed_gets_wrong(look_runs, serving, mnist1989):
    run = lecun_jax.load_run(look_runs[3])
    status, _, body = call(serving[3], "GET", "/api/mistakes?seed=2")
    mistakes = json.loads(body)
    wrong = np.flatnonzero(run.test_outputs[2].argmax(-1) != mnist1989.test.labels)
    assert status == 200 and mistakes["count"] == len(wrong) and mistakes["total"] == len(mnist1989.test.labels)
    assert [d["index"] for d in mistakes["digits"]] == wrong[:views_lib.MAX_MISTAKES].tolist()
    first = mistakes["digits"][0]
    answer = look(serving[3], {"test_index": first["index"], "seed": 2})
    np.testing.assert_array_equal(np.asarray(answer["input"], np.float32), mnist1989.test.images[first["index"], ..., 0])
    assert answer["answer"] == first["predicted"] != first["label"]  # the run's recorded outputs, again


@pytest.mark.parametrize("kind", ["linen", pytest.param("nnx", marks=pytest.mark.slow)])
def test_a_users_module_shows_its_input_outputs_and_the_layers_it_exposes(tmp_path, kind):
    import optax
    from flax import nnx
    from user_modules import BatchNormCNN, NNXBatchNormCNN

    model = BatchNormCNN() if kind == "linen" else (lambda rngs: NNXBatchNormCNN(rngs))
    c = small_config(train__passes=1, loss="cross_entropy", model__output_activation="linear")
    lecun_jax.train_and_evaluate(c, tmp_path, model=model, optimizer=optax.adam(1e-3), echo=lambda line: None, plots=False)
    views = lecun_jax.look.load_views(tmp_path, model=model)
    x = np.linspace(-1, 1, 256).reshape(16, 16)
    answer = views.look({"image": x.tolist()})
    run = lecun_jax.load_run(tmp_path)
    images = jnp.asarray(x, jnp.float32).reshape(1, 16, 16, 1)
    if kind == "linen":
        outputs, state = BatchNormCNN().apply(run.variables(), images, train=False, capture_intermediates=True, mutable=["intermediates"])
        captured = {k: v["__call__"][0] for k, v in state["intermediates"].items() if k != "__call__"}
    else:
        outputs, state = nnx.capture(run.nnx_module(model), nnx.Intermediate, method_outputs=nnx.Intermediate)(images)
        captured = {k: v["__call__"][0] for k, v in nnx.to_pure_dict(state).items() if k != "__call__"}
    np.testing.assert_allclose(answer["scores"], outputs[0], atol=1e-5)
    shown = {layer["name"]: np.asarray(layer["values"]) for layer in answer["layers"]}
    inner = {k for k, v in captured.items() if v.shape != outputs.shape or not np.allclose(v, outputs)}  # not the outputs again
    assert set(shown) == inner and len(shown) >= 2
    for name, values in shown.items():
        np.testing.assert_allclose(values, captured[name][0], atol=1e-5)
    assert answer["kernel"]["layer"] in ("Conv_0", "conv") and np.shape(answer["kernel"]["values"]) == (8, 5, 5)
    rebuilt = views_lib.Views(run)  # no model given: the class the run recorded, imported (tests/ is on the path)
    np.testing.assert_array_equal(rebuilt.look({"image": x.tolist()})["scores"], answer["scores"])


def test_a_users_module_that_cannot_be_rebuilt_is_one_line():
    class Run:  # what a run of a user's module offers: no module of its own, the class it recorded
        parts = {"model": {"class": "somewhere_else.Missing", "fields": {}}}

        @property
        def model(self):
            raise ValueError("runs/x trained a user's module, somewhere_else.Missing: apply that module to run.variables()")

    with pytest.raises(views_lib.ModelError, match=r"^runs/x trained a user's module, somewhere_else\.Missing: cannot rebuild") as e:
        views_lib.module_of(Run())
    assert "\n" not in str(e.value) and "model=" in str(e.value)


# ---- the server ------------------------------------------------------------------------------


def test_the_page_is_the_packages_own_files_and_needs_nothing_from_elsewhere(serving):
    for path, kind in (("/", "text/html"), ("/look.js", "text/javascript"), ("/look.css", "text/css")):
        status, content_type, body = call(serving[1], "GET", path)
        assert status == 200 and content_type.startswith(kind) and body
        assert b"http://" not in body and b"https://" not in body and b"//cdn" not in body  # offline
    status, _, body = call(serving[1], "GET", "/api/run")
    run = json.loads(body)
    assert (run["seeds"], run["data"], run["model"], run["kernel"]) == (1, "mnist1989", "Net1989", "h1")


BAD = [
    ("POST", "/api/look", b"{not json", 400, "not JSON"),
    ("POST", "/api/look", b'{"strokes": [[[1, NaN]]], "pen": 3}', 400, "not a finite number"),
    ("POST", "/api/look", b'{"strokes": [[[1, 1e999]]], "pen": 3}', 400, "finite"),
    ("POST", "/api/look", b'{"image": [[0, 0]]}', 400, "16 rows of 16"),
    ("POST", "/api/look", json.dumps({"image": [[0] * 16] * 15}).encode(), 400, "16 rows of 16"),
    ("POST", "/api/look", json.dumps({"image": [[2.0] * 16] * 16}).encode(), 400, "within"),
    ("POST", "/api/look", json.dumps({"image": [["a"] * 16] * 16}).encode(), 400, "16 rows of 16"),
    ("POST", "/api/look", b'{"strokes": [], "pen": 3}', 400, "strokes"),
    ("POST", "/api/look", b'{"strokes": [[[1, 2]]]}', 400, "pen"),
    ("POST", "/api/look", b'{"test_index": 5, "seed": 7}', 400, "seed"),
    ("POST", "/api/look", b'{"test_index": 99999}', 400, "test_index"),
    ("POST", "/api/look", b'{"image": 1, "test_index": 1}', 400, "one of"),
    ("POST", "/api/look", b'{"colour": "red"}', 400, "unknown field"),
    ("POST", "/api/look", b"[1, 2]", 400, "JSON object"),
    ("POST", "/api/look", b"\xff\xfe", 400, "not JSON"),
    ("POST", "/api/look", b"x" * (server_lib.MAX_BODY + 1), 413, "at most"),
    ("GET", "/api/mistakes?seed=two", None, 400, "whole number"),
    ("GET", "/api/mistakes?seed=3", None, 400, "seed"),
    ("GET", "/../pyproject.toml", None, 404, "no such page"),
    ("GET", "/static/look.js", None, 404, "no such page"),
    ("POST", "/api/run", b"{}", 404, "no such endpoint"),
    ("DELETE", "/api/look", None, 405, "only GET"),
]


@pytest.mark.parametrize("method,path,body,status,reason", BAD, ids=[f"{m} {p} {r}" for m, p, _, _, r in BAD])
def test_a_bad_request_gets_one_line_and_the_server_keeps_serving(serving, method, path, body, status, reason):
    got, content_type, answer = call(serving[1], method, path, body)
    error = json.loads(answer)["error"]
    assert (got, content_type) == (status, "application/json") and reason in error and "\n" not in error
    assert call(serving[1], "GET", "/api/run")[0] == 200


def test_a_post_without_length_or_to_another_host_is_refused(serving):
    connection = http.client.HTTPConnection("127.0.0.1", serving[1], timeout=30)
    connection.putrequest("POST", "/api/look")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 400 and "Content-Length" in json.loads(response.read())["error"]
    connection.close()
    status, _, body = call(serving[1], "GET", "/api/run", headers={"Host": "attacker.example:80"})
    assert status == 400 and "Host" in json.loads(body)["error"]
    assert call(serving[1], "GET", "/api/run")[0] == 200


def test_serving_beyond_this_machine_accepts_any_host_name():
    assert server_lib.accepted_hosts("0.0.0.0", 8800) is None
    assert "localhost:8800" in server_lib.accepted_hosts("127.0.0.1", 8800)


def look_command(*args, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "lecun_jax.look", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def test_an_unfinished_run_is_refused_before_serving(tmp_path, look_runs):
    (tmp_path / "config.json").write_text((look_runs[1] / "config.json").read_text())  # begun, not finished
    done = look_command(tmp_path)
    assert done.returncode == errors.USAGE and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "not a finished run" in done.stderr and "Traceback" not in done.stderr


def test_a_bad_flag_is_one_line_and_the_usage_code():
    done = look_command("somewhere", "--port=eighty")
    assert done.returncode == errors.USAGE and done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")


def test_a_port_taken_is_one_line_and_the_fault_code(look_runs, serving, capsys):
    from lecun_jax.look.__main__ import main

    assert main([str(look_runs[1]), f"--port={serving[1]}"]) == errors.FAULT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use" in err


# ---- the page in a real browser -------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (in '.[test]')")
    if not CHROMEDRIVER.exists() or not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no Chromium and chromedriver: apt-get install chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def open_page(browser, port: int) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"http://127.0.0.1:{port}/")
    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.ready === '1'"))


def draw(browser, strokes, kind: str = "mouse") -> None:
    """Each stroke as pointer down, moves, up on the pad: a real pointer of ``kind`` (mouse, touch, pen)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    pad = browser.find_element(By.ID, "pad")
    half = pad.size["width"] / 2
    for stroke in strokes:
        actions = ActionBuilder(browser, mouse=PointerInput(kind, kind), duration=5)
        first, *rest = [(round(x - half), round(y - half)) for x, y in stroke]
        actions.pointer_action.move_to(pad, *first).pointer_down()
        for point in rest:
            actions.pointer_action.move_to(pad, *point)
        actions.pointer_action.pointer_up()
        actions.perform()


def shown(browser) -> dict:
    """Once the page shows the answer to its latest drawing: the 16x16 and the answer on the page, and its data."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    done = "const b = document.body.dataset; return b.busy === '0' && b.shown === b.version && b.version !== '0';"
    WebDriverWait(browser, 30).until(lambda b: b.execute_script(done))
    assert browser.find_element(By.ID, "problem").text == ""
    return {"input": json.loads(browser.find_element(By.ID, "input").get_attribute("data-values")),
            "answer": int(browser.find_element(By.ID, "answer").text),
            "data": browser.execute_script("return window.look.last"),
            "strokes": browser.execute_script("return window.look.strokes")}


def test_the_page_in_a_browser_answers_a_drawing_like_apply(browser, look_runs, serving, mnist1989):
    """One seed: drawn with a mouse; the answer shown is argmax apply(params, the 16x16 shown)."""
    run = lecun_jax.load_run(look_runs[1])
    open_page(browser, serving[1])
    draw(browser, digit.strokes_of(mnist1989.test.images[0]))
    page = shown(browser)
    assert len(page["strokes"]) == len(digit.strokes_of(mnist1989.test.images[0]))
    np.testing.assert_array_equal(page["input"], digit.normalise_strokes(page["strokes"], PEN, "mnist"))
    outputs, _ = own_capture(run, 0, page["input"])
    assert page["answer"] == int(np.argmax(outputs))
    check_answer(run, page["data"], 0)


@pytest.mark.slow
def test_the_page_in_a_browser_shows_every_seed_and_its_mistakes(browser, look_runs, serving, mnist1989):
    """Three seeds: drawn with a finger (touch), seed 2 picked; then a mistake clicked."""
    from selenium.webdriver.common.by import By

    run = lecun_jax.load_run(look_runs[3])
    open_page(browser, serving[3])
    browser.execute_script("const s = document.getElementById('seed'); s.value = 2; s.dispatchEvent(new Event('input'));")
    draw(browser, digit.strokes_of(mnist1989.test.images[1]), kind="touch")
    page = shown(browser)
    scores = np.stack([own_capture(run, seed, page["input"])[0] for seed in range(3)])
    assert page["answer"] == int(np.argmax(scores[2])) and page["data"]["seed"] == 2
    assert page["data"]["seeds"]["votes"] == np.bincount(scores.argmax(1), minlength=10).tolist()
    check_answer(run, page["data"], 2)
    thumbnail = browser.find_elements(By.CSS_SELECTOR, "#mistakes .mistake")[3]
    index = int(thumbnail.get_attribute("data-index"))
    thumbnail.click()
    page = shown(browser)
    np.testing.assert_array_equal(np.asarray(page["input"], np.float32), mnist1989.test.images[index, ..., 0])
    assert page["answer"] == run.test_outputs[2, index].argmax() != mnist1989.test.labels[index]
    check_answer(run, page["data"], 2)


@pytest.mark.slow
def test_the_page_in_a_browser_draws_with_a_pen_and_clears(browser, serving, mnist1989):
    from selenium.webdriver.common.by import By

    open_page(browser, serving[1])
    draw(browser, digit.strokes_of(mnist1989.test.images[2]), kind="pen")
    assert shown(browser)["answer"] in range(10)
    browser.find_element(By.ID, "clear").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.shown === document.body.dataset.version"))
    assert browser.find_element(By.ID, "answer").text == "–" and browser.execute_script("return window.look.last") is None
