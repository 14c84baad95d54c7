"""Take the screenshot of the search page in docs/img/search.png (headless Chromium, as the e2e test does).

    .venv/bin/python scripts/screenshot_search.py --query "no spider"

Builds the emoji world's test scenes (``--world``, if missing) and their index (``--index``, incremental),
serves it on a free local port, types the query, waits for both result grids and their thumbnails, and writes
the screenshot. Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from sayno.search import IndexConfig, build_index
from sayno.serve import create_app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, default=Path("runs/world-search"))
    ap.add_argument("--index", type=Path, default=Path("runs/world-search.index"))
    ap.add_argument("--query", default="no spider")
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--out", type=Path, default=Path("docs/img/search.png"))
    ap.add_argument("--upload", type=Path, default=Path("runs/world-search/images/test/000350a.png"),
                    help="image for the CLIPN class check (shown in the screenshot)")
    ap.add_argument("--classes", default="spider,gorilla,goat", help="comma-separated classes for the check")
    args = ap.parse_args()

    if not (args.world / "images").is_dir():
        from sayno.world import WorldConfig, build_world

        build_world(args.world, WorldConfig(seed=0), parts=("test",))
    print(build_index(args.world / "images", args.index, IndexConfig()).summary())
    app = create_app(args.index)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,860", "--hide-scrollbars"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(
        executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 20).until(lambda d: "images" in d.find_element(By.ID, "info").text)
        k = driver.find_element(By.ID, "k")
        k.clear()
        k.send_keys(str(args.k))
        driver.find_element(By.ID, "q").send_keys(args.query, Keys.ENTER)
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                        == "done")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('.grid img')].every(i => i.complete && i.naturalWidth > 0)"))
        if args.upload is not None:  # the CLIPN check: one of the world's images against a class list
            driver.find_element(By.ID, "upload").send_keys(str(args.upload.resolve()))
            classes = driver.find_element(By.ID, "classes")
            classes.clear()
            classes.send_keys(args.classes.replace(",", "\n"))
            driver.find_element(By.ID, "check").click()
            WebDriverWait(driver, 30).until(lambda d: "score" in d.find_element(By.ID, "classify-result").text)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, int(height) + 140)  # + the window's own frame in headless mode
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
