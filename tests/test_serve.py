"""sayno.serve: the HTTP API (TestClient) and the web page in a real headless Chromium."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sayno.search import Searcher, build_index
from sayno.search.testing import common_objects, object_truth, tiny_world
from sayno.serve import ServeConfig, create_app

UPLOAD_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def bb(embedded):
    return embedded


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    tiny_world(out, groups=100)
    (out / "secret.txt").write_text("top secret")
    shutil.copy2(next((out / "images" / "test").glob("*.png")), out / "outside.png")
    (out / "images" / "escape.png").symlink_to(out / "outside.png")  # indexed, but points outside the folder
    Image.new("RGB", (20, 20), (1, 2, 3)).save(out / "only-outside.png")  # a content found only outside
    (out / "images" / "escape2.png").symlink_to(out / "only-outside.png")
    return out


@pytest.fixture(scope="module")
def app(world, bb, tmp_path_factory):
    idx = tmp_path_factory.mktemp("index") / "idx"
    build_index(world / "images", idx, backbone=bb, progress=False)
    return create_app(idx, ServeConfig(max_upload_bytes=UPLOAD_LIMIT, max_k=50),
                      searcher=Searcher(idx, backbone=bb))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:  # the Host the app answers (ServeConfig)
        yield c


def _png(path: Path) -> bytes:
    return path.read_bytes()


# ------------------------------------------------------------------------------------------ search
def test_page_info_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="search-form"' in page.text and 'id="classify-form"' in page.text
    info = client.get("/api/info").json()
    assert info["images"] == 202 and info["model"] == "embedded" and info["glasses"] and info["clipn"]
    spec = client.get("/openapi.json").json()
    for path in ("/api/search", "/api/compare", "/api/classify", "/api/thumb/{image_id}", "/api/image/{image_id}"):
        assert path in spec["paths"], path
    assert client.get("/docs").status_code == 200


def test_search_and_compare(client, world):
    truth = object_truth(world)
    obj = common_objects(truth, 1)[0]
    r = client.get("/api/search", params={"q": f"no {obj}", "k": 10})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["method"] == "glasses" and res["phrases"][0]["phrase"] == obj and res["phrases"][0]["lambda"] > 0
    assert len(res["hits"]) == 10 and not any(obj in truth.get(h["path"], set()) for h in res["hits"])
    both = client.get("/api/compare", params={"q": f"no {obj}", "k": 10}).json()
    assert both["clip"]["method"] == "clip" and both["sayno"]["method"] == "glasses"
    assert any(obj in truth.get(h["path"], set()) for h in both["clip"]["hits"])
    assert [h["path"] for h in both["sayno"]["hits"]] == [h["path"] for h in res["hits"]]
    plain = client.get("/api/search", params={"q": f"a {obj}", "k": 5}).json()
    assert plain["method"] == "clip" and not plain["negated"]


def test_bad_search_requests(client):
    r = client.get("/api/search", params={"q": "   "})
    assert r.status_code == 400 and "empty query" in r.json()["detail"]
    assert client.get("/api/search").status_code == 422
    assert client.get("/api/search", params={"q": "a dog " * 200}).status_code == 422
    r = client.get("/api/search", params={"q": "a dog", "k": 51})
    assert r.status_code == 400 and "at most 50" in r.json()["detail"]
    assert client.get("/api/search", params={"q": "a dog", "mode": "evil"}).status_code == 422
    r = client.get("/api/search", params={"q": "no"})
    # a cue with no phrase: the Glasses' fallback (the Lens on the whole query, issue 24), said in the notes
    assert r.status_code == 200 and r.json()["method"] == "glasses" and r.json()["notes"]
    assert [p["kind"] for p in r.json()["phrases"]] == ["caption"]


def test_thumbnails_and_images(client):
    hit = client.get("/api/search", params={"q": "a dog", "k": 1}).json()["hits"][0]
    t = client.get(hit["thumb"], params={"size": 48})
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    im = Image.open(io.BytesIO(t.content))
    assert im.format == "JPEG" and max(im.size) <= 48
    full = client.get(hit["image"])
    assert full.status_code == 200 and Image.open(io.BytesIO(full.content)).size == (64, 64)


@pytest.mark.parametrize("path", [
    "../secret.txt", "%2e%2e/secret.txt", "..%2Fsecret.txt", "%2Fetc%2Fpasswd", "test/../../secret.txt",
    "escape.png", "outside.png", "test/nope.png", "%2e%2e/outside.png", "0" * 40, "A" * 40, "only-outside"])
def test_no_file_outside_the_index(client, world, path):
    if path == "only-outside":  # the id of a row whose file (a symlink) resolves outside the folder
        path = hashlib.sha1((world / "only-outside.png").read_bytes()).hexdigest()
    for kind in ("image", "thumb"):
        r = client.get(f"/api/{kind}/{path}")
        assert r.status_code == 404, (kind, path, r.status_code)
        assert b"top secret" not in r.content


# ------------------------------------------------------------------------------------------ CLIPN check
def test_classify_matches_clipn(client, app, world, bb):
    from sayno.data.images import load_image

    truth = object_truth(world)
    rel = min(truth)
    file = world / "images" / rel
    objs = sorted(truth[rel])
    absent = [o for o in common_objects(truth, 12) if o not in truth[rel]][:5]
    clipn = app.state.clipn
    feats = bb.encode_image([load_image(file)]).numpy()
    for names, rule in ((objs + absent, "atd"), (absent, "atd"), (objs + absent, "ctw")):
        r = client.post("/api/classify", files={"file": ("x.png", _png(file), "image/png")},
                        data={"classes": "\n".join(names), "rule": rule})
        assert r.status_code == 200, r.text
        res = r.json()
        d = clipn.decide(feats, clipn.class_texts(names), rule)
        assert res["decision"] == ("OOD" if d.is_ood[0] else "ID")
        assert res["predicted"] == names[int(d.pred[0])]
        assert res["score"] == pytest.approx(float(d.score[0]), abs=1e-6)
        assert sorted(c["name"] for c in res["classes"]) == sorted(names)
    r = client.post("/api/classify", files={"file": ("x.png", _png(file), "image/png")},
                    data={"classes": ", ".join(absent)})
    assert r.json()["decision"] == "OOD"  # none of the classes is in the image
    assert list(app.state.upload_dir.iterdir()) == []  # uploads do not stay


def test_upload_limits(client, world):
    good = _png(next((world / "images" / "test").glob("*.png")))
    rng = np.random.default_rng(0)
    noise = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(noise, "PNG")
    assert len(noise.getvalue()) > UPLOAD_LIMIT
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")

    def post(content: bytes, ctype: str, classes: str = "dog\ncat"):
        return client.post("/api/classify", files={"file": ("f", content, ctype)}, data={"classes": classes})

    assert post(noise.getvalue(), "image/png").status_code == 413
    assert post(b"hello", "text/plain").status_code == 415
    assert post(b"hello, I am text", "image/png").status_code == 415
    assert post(gif.getvalue(), "image/png").status_code == 415
    assert post(b"", "image/png").status_code == 415
    assert post(good, "image/png", classes=" \n ").status_code == 422
    assert post(good, "image/png", classes="dog\ndog").status_code == 422
    assert post(good, "image/png", classes="dog\ncat").status_code == 200


# ------------------------------------------------------------------------------------------ the browser
def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture
def server(app):
    from sayno.serve.testing import running_server

    with running_server(app) as url:
        yield url


@pytest.mark.slow
def test_browser_negated_query(server, world, tmp_path):
    found = _chromium()
    if found is None:
        pytest.skip("chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    truth = object_truth(world)
    obj = common_objects(truth, 1)[0]
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,900", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=found[1]))
    try:
        driver.get(server + "/")
        WebDriverWait(driver, 20).until(lambda d: "images" in d.find_element(By.ID, "info").text)
        box = driver.find_element(By.ID, "q")
        box.clear()
        box.send_keys(f"no {obj}", Keys.ENTER)
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                        in ("done", "error"))
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done"
        sayno = [f.get_attribute("data-path") for f in driver.find_elements(By.CSS_SELECTOR, "#sayno-grid .hit")]
        clip = [f.get_attribute("data-path") for f in driver.find_elements(By.CSS_SELECTOR, "#clip-grid .hit")]
        assert len(sayno) == len(clip) == 12
        assert not any(obj in truth.get(p, set()) for p in sayno), sayno
        assert any(obj in truth.get(p, set()) for p in clip), clip
        assert obj in driver.find_element(By.ID, "status").text
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#sayno-grid img')].every(i => i.complete && i.naturalWidth > 0)"))
        scores = [float(f.get_attribute("data-score")) for f in driver.find_elements(By.CSS_SELECTOR,
                                                                                       "#sayno-grid .hit")]
        assert scores == sorted(scores, reverse=True)
        box.clear()
        box.send_keys("   ", Keys.ENTER)
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                        == "error")
        assert "empty query" in driver.find_element(By.ID, "status").text
    finally:
        driver.quit()


# ------------------------------------------------------------------------------------------ the command
def test_serve_command(tmp_path):
    """`sayno serve` comes from sayno.serve.cli.register; a missing index is a one-line error (exit 2)."""
    import typer
    from typer.testing import CliRunner

    from sayno.search import cli as search_cli
    from sayno.serve import cli as serve_cli

    app = typer.Typer()
    search_cli.register(app)
    serve_cli.register(app)
    r = CliRunner().invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and all(o in r.output for o in ("--clipn", "--max-upload-mb", "--threads", "--port"))
    r = CliRunner().invoke(app, ["serve", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such index" in " ".join(r.output.split())
