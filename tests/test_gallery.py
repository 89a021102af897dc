"""The browser gallery: /ui/ (and a browser's GET /) serve a static page that uses only the REST API.

The first half checks over plain HTTP what any client sees: which requests the
gallery takes, its security headers, that WebDAV clients on / are unaffected.
The second half drives Debian's chromium through Playwright (the Python
package only: no browser is downloaded). Without chromium or playwright those
tests skip, or fail under CI, which must install them. A failing browser test
names the screenshot it saved under its temporary directory.
"""

from __future__ import annotations

import base64
import functools
import html.parser
import io
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import trustme
from PIL import Image
from werkzeug.test import Client

from tests.client import unavailable
from tests.server import RunningServer, ServerFactory
from uss_dav.ui import STATIC_DIR, accepts_html, make_ui_app, wants_ui

CHROMIUM_ARGS = [
    "--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
#: What Chrome sends when a user types the server's address.
BROWSER_HEADERS = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
}
REQUIRED_CSP = {
    "default-src": "'self'", "img-src": "'self' blob:", "script-src": "'self'", "style-src": "'self'",
    "object-src": "'none'", "base-uri": "'none'", "frame-ancestors": "'none'", "connect-src": "'self'",
}
HOSTILE = "<img src=x onerror=alert(1)>.png"
PAGE_BUDGET = 100 * 1024


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    """An unoptimized PNG (zlib level 0): lossless compression shrinks it."""
    image = Image.new("RGB", size, color)
    image.putpixel((0, 0), (color[0] ^ 255, 0, 0))
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def upload_via_rest(url: str, key: str, files: dict[str, bytes], **kw: Any) -> None:
    parts = [("file", (name, data, "application/octet-stream")) for name, data in files.items()]
    r = requests.post(f"{url}/api/v1/images", files=parts, headers={"Authorization": f"Bearer {key}"}, timeout=60, **kw)
    assert r.status_code == 201, r.text


def rest_names(url: str, key: str, **kw: Any) -> list[str]:
    r = requests.get(f"{url}/api/v1/images", headers={"Authorization": f"Bearer {key}"}, timeout=30, **kw)
    assert r.status_code == 200, r.text
    return [image["name"] for image in r.json()["images"]]


# --- which requests the gallery takes ----------------------------------------------------


def environ(method: str = "GET", path: str = "/", **headers: str) -> dict[str, Any]:
    env: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": ""}
    env.update({"HTTP_" + name.upper(): value for name, value in headers.items()})
    return env


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (environ(accept=BROWSER_HEADERS["Accept"]), True),
        (environ(accept="text/html"), True),
        (environ(path="/ui/"), True),
        (environ(path="/ui"), True),
        (environ("HEAD", "/ui/app.js"), True),
        (environ(path="/ui/index.html", authorization="Basic eDo="), True),
        # A browser that once answered a Basic challenge still gets the page on navigation.
        (environ(accept="text/html", authorization="Basic eDo=", sec_fetch_mode="navigate"), True),
        # WebDAV clients and scripts: no Accept, */*, a key, a WebDAV header, another method.
        (environ(), False),
        (environ(accept="*/*"), False),
        (environ(accept="text/html;q=0"), False),
        (environ(accept="text/html", authorization="Basic eDo="), False),
        (environ(accept="text/html", depth="0"), False),
        (environ(accept="text/html", translate="f"), False),
        (environ("HEAD", accept="text/html"), False),
        (environ("PROPFIND", accept="text/html"), False),
        (environ("OPTIONS", accept="text/html"), False),
        (environ("PUT", "/ui/app.js"), False),
        (environ("PROPFIND", "/ui/"), False),
        (environ(path="/ui/photo.png"), False),
        (environ(path="/ui/sub/app.js"), False),
        (environ(path="/uix/app.js"), False),
        (environ(path="/photo.png", accept="text/html"), False),
        (environ(path="/api/v1/images", accept="text/html"), False),
    ],
)
def test_wants_ui_takes_browser_page_loads_and_its_own_files_only(env: dict[str, Any], expected: bool) -> None:
    assert wants_ui(env) is expected


def test_accepts_html_reads_media_types_and_q_values() -> None:
    assert accepts_html("text/html") and accepts_html("TEXT/HTML; q=0.5, */*")
    assert not accepts_html("*/*") and not accepts_html("text/html-sandboxed") and not accepts_html("text/html;q=0")
    assert not accepts_html("") and not accepts_html("text/html;q=x")


def test_ui_app_revalidates_with_etag_and_refuses_writes() -> None:
    client = Client(make_ui_app())
    first = client.get("/ui/app.js")
    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-cache"
    again = client.get("/ui/app.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert client.head("/ui/").data == b"" and client.head("/ui/").headers["Content-Type"].startswith("text/html")
    assert client.get("/ui/nothing.js").status_code == 404
    assert client.post("/ui/app.js").status_code == 405
    prefixed = client.get("/", environ_overrides={"SCRIPT_NAME": "/photos"})
    assert prefixed.status_code == 302 and prefixed.headers["Location"] == "/photos/ui/"


# --- over HTTP, against the real server --------------------------------------------------


def test_browser_get_of_root_leads_to_the_gallery(server: RunningServer) -> None:
    r = requests.get(server.url + "/", headers=BROWSER_HEADERS, allow_redirects=False, timeout=10)
    if r.is_redirect:
        assert r.headers["Location"].rstrip("/").endswith("/ui")
        assert "no-store" in r.headers.get("Cache-Control", "")
    page = requests.get(server.url + "/", headers=BROWSER_HEADERS, timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert '<script type="module" src="app.js"></script>' in page.text
    assert page.text == requests.get(server.url + "/ui/", timeout=10).text


@pytest.mark.parametrize(("name", "content_type"), [("", "text/html"), ("app.js", "text/javascript"), ("app.css", "text/css")])
def test_gallery_files_are_served_with_strict_security_headers(server: RunningServer, name: str, content_type: str) -> None:
    r = requests.get(f"{server.url}/ui/{name}", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == content_type
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["Cache-Control"]
    policy = {
        d.split()[0]: " ".join(d.split()[1:]) for d in r.headers["Content-Security-Policy"].split(";") if d.strip()
    }
    for directive, value in REQUIRED_CSP.items():
        assert policy.get(directive) == value, f"{directive}: {policy.get(directive)!r}"


def test_webdav_clients_on_root_are_unaffected(server: RunningServer, dav: requests.Session) -> None:
    url = server.url
    # curl, rclone, Finder, Explorer: no Accept: text/html, or a WebDAV method or header.
    anonymous = requests.get(url + "/", timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(url + "/", headers={"Accept": "*/*"}, timeout=10).status_code == 401
    assert requests.request("OPTIONS", url + "/", headers={"Accept": "text/html"}, timeout=10).status_code == 401
    assert dav.options(url + "/", headers={"Accept": "text/html"}).headers["DAV"].startswith("1")
    propfind = dav.request("PROPFIND", url + "/", headers={"Depth": "1", "Accept": "text/html"})
    assert propfind.status_code == 207 and "multistatus" in propfind.text
    # A key with text/html (a script, not a page load) gets WebDAV's answer: the folder's plain-text listing.
    plain = dav.get(url + "/")
    scripted = dav.get(url + "/", headers={"Accept": "text/html"})
    assert scripted.status_code == plain.status_code == 200
    assert scripted.headers["Content-Type"] == plain.headers["Content-Type"] == "text/plain; charset=utf-8"
    # GET of a file is WebDAV's, whatever the Accept header says.
    assert dav.put(url + "/page.html", data=b"<p>mine</p>").status_code == 201
    got = dav.get(url + "/page.html", headers=BROWSER_HEADERS)
    assert got.status_code == 200 and got.content == b"<p>mine</p>"


def test_a_collection_folder_named_ui_stays_webdav_except_the_gallery_files(server: RunningServer, dav: requests.Session) -> None:
    url = server.url
    assert dav.request("MKCOL", url + "/ui/").status_code == 201
    assert dav.put(url + "/ui/notes.txt", data=b"mine").status_code == 201
    assert dav.get(url + "/ui/notes.txt", headers=BROWSER_HEADERS).content == b"mine"
    assert dav.request("PROPFIND", url + "/ui/", headers={"Depth": "1"}).status_code == 207
    assert dav.request("DELETE", url + "/ui/").status_code == 204


def test_index_has_no_inline_script_style_or_foreign_reference() -> None:
    class Audit(html.parser.HTMLParser):
        problems: list[str] = []
        in_script = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            attributes = dict(attrs)
            self.in_script = tag == "script"
            if tag == "script" and not attributes.get("src"):
                self.problems.append("inline <script>")
            if tag == "style":
                self.problems.append("<style> element")
            for name, value in attrs:
                if name.startswith("on") or name == "style":
                    self.problems.append(f"{name}= on <{tag}>")
                if name in ("src", "href", "action") and value and re.match(r"^(\w+:|//)", value):
                    self.problems.append(f"foreign {name}={value}")

        def handle_data(self, data: str) -> None:
            if self.in_script and data.strip():
                self.problems.append("inline script text")

        def handle_endtag(self, tag: str) -> None:
            self.in_script = False

    audit = Audit()
    audit.feed((STATIC_DIR / "index.html").read_text(encoding="utf-8"))
    assert audit.problems == []
    script = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|\beval\(", script)
    assert not re.search(r"https?://", script + (STATIC_DIR / "app.css").read_text(encoding="utf-8"))


def test_page_files_total_under_100_kb() -> None:
    sizes = {path.name: path.stat().st_size for path in STATIC_DIR.iterdir() if path.is_file()}
    assert {"index.html", "app.js", "app.css"} <= set(sizes)
    assert sum(sizes.values()) < PAGE_BUDGET, sizes


# --- in a real browser -------------------------------------------------------------------


def until(page: Any, script: str, arg: Any = None, timeout: float = 15.0) -> Any:
    """Poll a JavaScript expression or function in the page until it is truthy; its value.

    Playwright's wait_for_function evaluates its predicate with eval(), which the
    gallery's CSP (rightly) forbids; page.evaluate goes through the debugger protocol.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(script, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {script}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright Python package is not installed (pip install -e '.[test]')")
    # USS_CHROMIUM: another build of Chromium (a distribution that calls it chromium-browser).
    executable = os.environ.get("USS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(executable, os.X_OK):
        unavailable(f"chromium is not installed at {executable} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=30_000)
        yield browser
        browser.close()


class Gallery:
    """A browser tab on the gallery of `url`, recording what the page did."""

    def __init__(self, browser: Any, url: str, key: str, shots: Path) -> None:
        self.browser, self.shots = browser, shots
        self.reopen(url, key)

    def reopen(self, url: str, key: str, **context: Any) -> None:
        """A fresh tab (and storage) on the gallery of `url`."""
        if getattr(self, "context", None) is not None:
            self.context.close()
        self.url, self.key = url, key
        self.context = self.browser.new_context(viewport={"width": 1100, "height": 800}, accept_downloads=True, **context)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.requested: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requested.append(request.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def open(self) -> None:
        self.page.goto(self.url + "/")
        assert self.page.url == self.url + "/ui/"

    def login(self, key: str | None = None) -> None:
        self.page.fill("#key", key or self.key)
        self.page.click("#login-form button[type=submit]")

    def open_with_key(self) -> None:
        self.open()
        self.login()
        self.page.wait_for_selector("#gallery:not([hidden])")
        until(self.page, "document.querySelector('#status').textContent === ''")

    def tile(self, name: str) -> Any:
        return self.page.locator(".tile").filter(has=self.page.get_by_text(name, exact=True))

    def tile_names(self) -> list[str]:
        return self.page.locator(".tile .caption .name").all_inner_texts()

    def wait_for_thumbnails(self, count: int) -> None:
        """`count` tiles whose thumbnail is a decoded blob: image."""
        until(self.page, 
            """n => { const imgs = [...document.querySelectorAll('.tile img')];
                      return imgs.length === n && imgs.every(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0); }""",
            arg=count,
        )

    def screenshot(self, name: str) -> Path:
        path = self.shots / name
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def gallery(browser: Any, server: RunningServer, tmp_path: Path) -> Iterator[Gallery]:
    # The pixel mode (no longer the default): the summary's "compression saved" needs bytes rewritten.
    _key_id, key = server.create_key("--compression", "lossless")
    g = Gallery(browser, server.url, key, tmp_path)
    yield g
    g.close()


def browser_test(test: Callable[..., None]) -> Callable[..., None]:
    """On failure, save a screenshot under the test's tmp_path and name it in the failure message."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            test(*args, **kwargs)
        except Exception as exc:
            g: Gallery = kwargs["gallery"]
            try:
                where = f"screenshot: {g.screenshot('failure.png')}"
            except Exception as shot_error:  # noqa: BLE001 -- the test's own error matters more
                where = f"no screenshot ({shot_error})"
            detail = f"\npage errors: {g.errors}" if g.errors else ""
            raise AssertionError(f"{type(exc).__name__}: {exc}\n{where}{detail}") from exc

    return run


@browser_test
def test_wrong_key_is_refused_clearly_and_forget_key_clears_it(gallery: Gallery) -> None:
    page = gallery.page
    gallery.open()
    gallery.login("uss_not_a_key")
    until(page, "document.querySelector('#login-error').textContent !== ''")
    assert "not accepted" in page.inner_text("#login-error")
    assert page.is_hidden("#gallery")
    assert page.evaluate("sessionStorage.length") == 0

    gallery.login()
    page.wait_for_selector("#gallery:not([hidden])")
    assert page.inner_text("#login-error") == ""
    assert page.evaluate("Object.values(sessionStorage)") == [gallery.key]
    page.reload()  # entered once: the tab keeps it
    page.wait_for_selector("#gallery:not([hidden])")

    page.click("#forget")
    page.wait_for_selector("#login:not([hidden])")
    assert page.evaluate("sessionStorage.length") == 0
    assert page.locator(".tile").count() == 0
    page.reload()
    page.wait_for_selector("#login:not([hidden])")
    assert page.is_hidden("#gallery")


@browser_test
def test_upload_of_two_images_and_a_text_file_shows_two_thumbnails_and_one_error(gallery: Gallery) -> None:
    page = gallery.page
    gallery.open_with_key()
    assert "0 images" in page.inner_text("#summary")
    page.set_input_files("#picker", [
        {"name": "red.png", "mimeType": "image/png", "buffer": png((220, 20, 20))},
        {"name": "blue.png", "mimeType": "image/png", "buffer": png((20, 20, 220))},
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image\n"},
    ])
    gallery.wait_for_thumbnails(2)
    assert gallery.tile_names() == ["blue.png", "red.png"]
    failed = page.locator("#uploads li.failed")
    failed.first.wait_for()
    assert failed.count() == 1
    assert "notes.txt" in failed.inner_text() and "Not an image" in failed.inner_text()
    until(page, "/2 images/.test(document.querySelector('#summary').textContent)")
    until(page, "() => !/ 0 B stored/.test(document.querySelector('#summary').textContent)")
    assert re.search(r"compression saved [\d.]+ KB", page.inner_text("#summary"))
    assert sorted(rest_names(gallery.url, gallery.key)) == ["blue.png", "red.png"]
    assert [page.get_attribute(".tile img >> nth=%d" % i, "alt") for i in range(2)] == ["blue.png", "red.png"]
    gallery.screenshot("grid.png")
    assert gallery.errors == [] and gallery.dialogs == []


@browser_test
def test_dropped_files_are_uploaded_and_appear_without_reload(gallery: Gallery) -> None:
    page = gallery.page
    gallery.open_with_key()
    files = [{"name": "dropped.png", "type": "image/png", "b64": base64.b64encode(png((20, 160, 20))).decode()}]
    page.evaluate(
        """files => {
            const dt = new DataTransfer();
            for (const f of files) dt.items.add(new File([Uint8Array.from(atob(f.b64), c => c.charCodeAt(0))], f.name, { type: f.type }));
            const target = document.querySelector('#grid');
            for (const type of ['dragenter', 'dragover', 'drop'])
                target.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }));
        }""",
        files,
    )
    gallery.wait_for_thumbnails(1)
    assert gallery.tile_names() == ["dropped.png"]
    assert rest_names(gallery.url, gallery.key) == ["dropped.png"]


@browser_test
def test_details_rename_download_and_delete(gallery: Gallery) -> None:
    page = gallery.page
    original = png((200, 200, 20))
    upload_via_rest(gallery.url, gallery.key, {"a.png": original})
    meta = requests.get(f"{gallery.url}/api/v1/images/a.png/meta", headers={"Authorization": f"Bearer {gallery.key}"}, timeout=10).json()
    gallery.open_with_key()
    gallery.wait_for_thumbnails(1)

    gallery.tile("a.png").locator("button").click()
    page.wait_for_selector("#details[open]")
    until(page, f"document.querySelector('#d-facts').textContent.includes('{meta['sha1']}')")
    facts = page.inner_text("#d-facts")
    for expected in ("64 × 48 px", "image/png", meta["sha1"], "Uploaded size", "Stored size", "Saved", "Modified"):
        assert expected in facts
    assert re.search(r"Saved\s+[\d.]+ [KM]?B \([\d.]+ %\)", facts), facts

    with page.expect_download() as download:
        page.click("#d-download")
    assert download.value.suggested_filename == "a.png"
    assert Path(download.value.path()).read_bytes() == requests.get(
        f"{gallery.url}/api/v1/images/a.png", headers={"Authorization": f"Bearer {gallery.key}"}, timeout=10).content

    page.fill("#rename-input", "renamed.png")
    page.click("#rename-form button")
    until(page, "document.querySelector('#d-name').textContent === 'renamed.png'")
    assert page.inner_text("#d-error") == ""
    assert gallery.tile_names() == ["renamed.png"]
    assert rest_names(gallery.url, gallery.key) == ["renamed.png"]

    page.click("#d-delete")
    page.wait_for_selector("#confirm[open]")
    assert "renamed.png" in page.inner_text("#confirm-text")
    page.click("#confirm-ok")
    until(page, "document.querySelectorAll('.tile').length === 0")
    assert page.is_hidden("#details")
    assert rest_names(gallery.url, gallery.key) == []
    assert gallery.errors == []


@browser_test
def test_hostile_name_is_shown_as_text(gallery: Gallery) -> None:
    page = gallery.page
    upload_via_rest(gallery.url, gallery.key, {HOSTILE: png((9, 9, 9))})
    gallery.open_with_key()
    gallery.wait_for_thumbnails(1)
    assert gallery.tile_names() == [HOSTILE]
    assert page.locator("img[src='x']").count() == 0
    assert page.get_attribute(".tile img", "alt") == HOSTILE
    gallery.tile(HOSTILE).locator("button").click()
    page.wait_for_selector("#details[open]")
    assert page.inner_text("#d-name") == HOSTILE
    page.fill("#filter", "onerror")
    until(page, "document.querySelectorAll('.tile').length === 1")
    page.wait_for_timeout(200)  # an injected onerror would have fired by now
    assert gallery.dialogs == [] and gallery.errors == []


@browser_test
def test_key_appears_in_no_url_cookie_or_log_line(gallery: Gallery, server: RunningServer) -> None:
    page = gallery.page
    upload_via_rest(gallery.url, gallery.key, {"one.png": png((1, 100, 200))})
    gallery.open_with_key()
    page.set_input_files("#picker", [{"name": "two.png", "mimeType": "image/png", "buffer": png((100, 1, 200))}])
    gallery.wait_for_thumbnails(2)
    gallery.tile("one.png").locator("button").click()
    page.wait_for_selector("#details[open]")
    with page.expect_download():
        page.click("#d-download")
    page.reload()
    gallery.wait_for_thumbnails(2)
    for variant in (gallery.key, quote(gallery.key, safe="")):
        assert not [url for url in gallery.requested if variant in url]
        assert variant not in page.url
    assert any("/api/v1/images" in url for url in gallery.requested)
    assert gallery.context.cookies() == []
    assert page.evaluate("history.length") >= 1 and gallery.key not in page.evaluate("location.href")
    assert gallery.key not in server.log()


@browser_test
def test_keyboard_only_at_phone_width(gallery: Gallery) -> None:
    page = gallery.page
    upload_via_rest(gallery.url, gallery.key, {f"k{i}.png": png((i * 60, 90, 90)) for i in range(3)})
    page.set_viewport_size({"width": 390, "height": 844})
    gallery.open()
    page.focus("#key")
    page.keyboard.type(gallery.key)
    page.keyboard.press("Enter")
    gallery.wait_for_thumbnails(3)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.focus(".tile button >> nth=0")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.closest('.tile').dataset.name") == "k1.png"
    page.keyboard.press("Enter")
    page.wait_for_selector("#details[open]")
    assert page.inner_text("#d-name") == "k1.png"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.keyboard.press("Escape")
    page.wait_for_selector("#details", state="hidden")
    assert page.evaluate("document.activeElement.closest('.tile').dataset.name") == "k1.png"
    page.keyboard.press("Delete")
    page.wait_for_selector("#confirm[open]")
    page.keyboard.press("Escape")  # cancel keeps the image
    page.wait_for_selector("#confirm", state="hidden")
    assert len(rest_names(gallery.url, gallery.key)) == 3
    gallery.screenshot("phone.png")


@browser_test
def test_ten_thousand_images_are_paged_and_stay_responsive(gallery: Gallery) -> None:
    """The REST API is simulated in the browser: the page, not the server, is under test."""
    page = gallery.page
    total, limit = 10_000, 1000
    records = [
        {"name": f"img-{i:05d}.png", "size": 1000 + (i * 7919) % 50_000, "content_type": "image/png", "format": "png",
         "width": 64, "height": 48, "modified": f"2026-01-01T00:{(i // 60) % 60:02d}:{i % 60:02d}Z",
         "etag": f'"e{i}"', "sha1": "0" * 40, "uploaded_size": 2000, "stored_size": 1000}
        for i in range(total)
    ]
    thumb = png((128, 128, 128), (16, 16))

    def fake_api(route: Any) -> None:
        url = route.request.url
        if "/usage" in url:
            return route.fulfill(json={"files": total, "bytes": 1000 * total, "quota": None})
        if "/thumbnail" in url:
            return route.fulfill(body=thumb, content_type="image/png")
        cursor = re.search(r"cursor=(\d+)", url)
        start = int(cursor.group(1)) if cursor else 0
        page_records = records[start:start + limit]
        following = str(start + limit) if start + limit < total else None
        return route.fulfill(json={"images": page_records, "next_cursor": following})

    page.route(re.compile(r".*/api/v1/.*"), fake_api)
    page.add_init_script(
        "window.__longest = 0; new PerformanceObserver(l => { for (const e of l.getEntries()) "
        "window.__longest = Math.max(window.__longest, e.duration); }).observe({ type: 'longtask', buffered: true });"
    )
    gallery.open()
    started = time.monotonic()
    gallery.login("any")
    until(page, "/Page 1 of 167/.test(document.querySelector('#page-info').textContent)")
    until(page, "document.querySelector('#status').textContent === ''")
    loaded = time.monotonic() - started
    assert loaded < 10, f"10,000 records took {loaded:.1f} s to list"
    assert "10000 images" in page.inner_text("#summary") and "compression saved" in page.inner_text("#summary")
    assert page.locator(".tile").count() == 60
    thumbnails = [url for url in gallery.requested if "/thumbnail" in url]
    assert 0 < len(thumbnails) <= 60, "thumbnails are fetched for the visible page only"

    page.click("#next")
    until(page, "document.querySelector('.tile').dataset.name === 'img-00060.png'")
    page.select_option("#sort", "size")
    largest = min(records, key=lambda r: (-r["size"], r["name"]))["name"]
    until(page, f"document.querySelector('.tile').dataset.name === '{largest}'")
    page.fill("#filter", "img-0999")
    until(page, "document.querySelectorAll('.tile').length === 10")
    assert page.evaluate("window.__longest") < 1000, "the main thread was blocked for a second or more"


@browser_test
def test_gallery_works_over_tls(gallery: Gallery, tmp_path: Path, make_server: ServerFactory) -> None:
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    pem = str(tmp_path / "server.pem")
    srv = make_server(tls={"cert": pem, "key": pem}, verify=str(tmp_path / "ca.pem"))
    key = srv.create_key()[1]
    upload_via_rest(srv.url, key, {"secure.png": png((5, 5, 250))}, verify=str(tmp_path / "ca.pem"))
    gallery.reopen(srv.url, key, ignore_https_errors=True)  # the test CA is not the browser's
    gallery.open_with_key()
    gallery.wait_for_thumbnails(1)
    assert gallery.tile_names() == ["secure.png"]
    assert gallery.errors == []
