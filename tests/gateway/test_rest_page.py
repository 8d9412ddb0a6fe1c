"""The trading page as HTTP: what the REST listener serves at ``/`` and ``/static/``.

What a browser does with it is tested in ``tests/browser/``; here, the answers
themselves: the page names the WebSocket listener (the host the browser asked
for, on the WebSocket port) and the depth window, the static files carry their
content types and are cached for good under a versioned path, ETags revalidate,
and every file the page loads is in the package (the wheel ships them).
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

import trio

from gateway._rest._page import Page, load_files

TIMEOUT = 10


def page_refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', html)


async def test_the_page_names_the_websocket_listener_and_the_depth_window(gateway, http):
    with trio.fail_after(TIMEOUT):
        answer = await http.get("/", headers={"Host": f"localhost:{gateway.endpoints.rest_port}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.headers["x-content-type-options"] == "nosniff"
    ws = f"ws://localhost:{gateway.endpoints.ws_port}"
    assert f'<meta name="trade-engine-ws" content="{ws}/ws">' in answer.text
    assert '<meta name="trade-engine-depth-levels" content="10">' in answer.text
    policy = answer.headers["content-security-policy"]
    assert f"connect-src 'self' {ws};" in policy
    assert "script-src 'self';" in policy
    assert "{{" not in answer.text


async def test_static_files_have_their_types_and_are_cached_under_a_version(gateway, http):
    with trio.fail_after(TIMEOUT):
        page = await http.get("/")
        refs = page_refs(page.text)
        assert sorted(ref.rsplit("/", 1)[1] for ref in refs) == ["app.js", "style.css"]
        script = await http.get(next(ref for ref in refs if ref.endswith("app.js")))
        style = await http.get(next(ref for ref in refs if ref.endswith("style.css")))
        imported = await http.get(refs[0].rsplit("/", 1)[0] + "/connection.js")
        etag = imported.headers["etag"]
        again = await http.get(imported.url.path, headers={"If-None-Match": etag})
        head = await http.head(imported.url.path)
    assert (script.status_code, style.status_code, imported.status_code) == (200, 200, 200)
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert imported.headers["content-type"] == "text/javascript; charset=utf-8"
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == imported.headers["etag"]
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(imported.content))
    assert imported.content == (files("gateway") / "web" / "connection.js").read_bytes()


async def test_the_page_revalidates_with_its_etag(gateway, http):
    with trio.fail_after(TIMEOUT):
        first = await http.get("/")
        second = await http.get("/", headers={"If-None-Match": first.headers["etag"]})
        index = await http.get("/index.html")
    assert second.status_code == 304
    assert index.text == first.text


async def test_stale_versions_unknown_files_and_other_methods_are_refused(gateway, http):
    with trio.fail_after(TIMEOUT):
        page = await http.get("/")
        version = page_refs(page.text)[0].split("/")[2]
        stale = await http.get("/static/0123456789abcdef/app.js")
        unknown = await http.get(f"/static/{version}/nothing.js")
        escape = await http.get(f"/static/{version}/../__init__.py")
        posted = await http.post("/", content=b"x")
        elsewhere = await http.get("/nowhere")  # still the ops app's 404
    assert stale.status_code == 404
    assert "reload the page" in stale.json()["error"]["message"]
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert escape.status_code == 404
    assert posted.status_code == 405
    assert posted.headers["allow"] == "GET, HEAD"
    assert elsewhere.status_code == 404


def test_every_file_the_page_loads_ships_in_the_package():
    shipped = load_files()
    imports = set()
    for name, data in shipped.items():
        if name.endswith(".js"):
            imports |= set(re.findall(r'from "\./([\w.]+)"', data.decode()))
    assert imports
    assert imports <= set(shipped), imports - set(shipped)
    refs = {ref.rsplit("/", 1)[1] for ref in page_refs(shipped["index.html"].decode())}
    assert refs <= set(shipped)


async def test_while_the_websocket_listener_starts_the_page_says_to_reload():
    page = Page(load_files(), websocket_url=lambda scope: None, depth_levels=10)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await page({"method": "GET", "path": "/", "headers": []}, send)
    start, body = sent
    assert start["status"] == 503
    assert (b"retry-after", b"1") in start["headers"]
    assert b"reload the page" in body["body"]
