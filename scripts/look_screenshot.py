"""A screenshot of the look page (``python -m lecun_jax.look``) in headless Chromium.

    python scripts/look_screenshot.py runs/lecun1989_mnist1989 --out=docs/look.png [--seed=3]

Serves the run on a free port of 127.0.0.1, draws a 3 on the pad with pointer
events, waits for the page to show the network's answer and writes the PNG
where told. Needs Chromium and its driver (Debian: ``apt-get install chromium
chromium-driver``) and ``pip install selenium`` (in ``.[test]``).
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHROMEDRIVER = "/usr/bin/chromedriver"


def three() -> list[list[tuple[int, int]]]:
    """A handwritten-looking 3 on the 280-pixel pad: two arcs meeting in the middle."""
    def arc(cx, cy, r, start, stop, n=40):
        return [(round(cx + r * math.cos(math.radians(a))), round(cy + 1.1 * r * math.sin(math.radians(a))))
                for a in (start + (stop - start) * i / n for i in range(n + 1))]

    return [arc(138, 92, 46, -160, 95), arc(140, 188, 52, -95, 165)]


def driver(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def draw(browser, strokes) -> None:
    """Each stroke as a pointer press, moves and release on the pad (offsets from its centre)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    pad = browser.find_element(By.ID, "pad")
    half = pad.size["width"] // 2, pad.size["height"] // 2
    for stroke in strokes:
        actions = ActionChains(browser, duration=10)
        actions.move_to_element_with_offset(pad, stroke[0][0] - half[0], stroke[0][1] - half[1]).click_and_hold()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            actions.move_by_offset(x1 - x0, y1 - y0)
        actions.release().perform()


def wait_shown(browser, timeout: float = 30) -> None:
    """Until the page shows the answer to its latest drawing."""
    from selenium.webdriver.support.ui import WebDriverWait

    done = "const b = document.body.dataset; return b.busy === '0' && b.shown === b.version && b.version !== '0';"
    WebDriverWait(browser, timeout).until(lambda b: b.execute_script(done))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir")
    parser.add_argument("--out", required=True, help="where to write the PNG")
    parser.add_argument("--seed", type=int, default=0, help="the seed the layer views show")
    parser.add_argument("--size", default="1400x1150", help="window WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    if not Path(CHROMEDRIVER).exists():
        parser.error(f"{CHROMEDRIVER} not found: apt-get install chromium chromium-driver")

    from lecun_jax import look
    from lecun_jax.look.server import make_server

    server = make_server(look.load_views(args.workdir))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = driver(*map(int, args.size.split("x")))
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.ready === '1'"))
        if args.seed:
            browser.execute_script("const s = document.getElementById('seed'); s.value = arguments[0];"
                                   "s.dispatchEvent(new Event('input'));", args.seed)
        draw(browser, three())
        wait_shown(browser)
        browser.save_screenshot(args.out)
    finally:
        browser.quit()
        server.shutdown()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
