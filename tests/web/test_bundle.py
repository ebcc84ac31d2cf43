"""The committed bundle is exactly what web/ builds, and roost serves it with its CSP."""

from __future__ import annotations

import subprocess

import httpx

from roost.server.web_page.routes import ASSETS, CONTENT_SECURITY_POLICY
from roost.web import STATIC_DIR

from .driver import WEB, require


def test_committed_bundle_is_the_build_of_web_sources(tmp_path):
    require(browser=False)
    subprocess.run(["node", str(WEB / "build.mjs"), str(tmp_path)], check=True, cwd=WEB)
    built = sorted(p.name for p in tmp_path.iterdir())
    assert built == sorted(ASSETS)
    for name in built:
        assert (tmp_path / name).read_bytes() == (STATIC_DIR / name).read_bytes(), (
            f"src/roost/web/static/{name} differs from a fresh build: run `npm run build` in web/"
        )


def test_page_and_assets_are_served_with_a_same_origin_csp(web_server):
    served = (
        ("/", "index.html"),
        ("/app.js", "app.js"),
        ("/sw.js", "sw.js"),
        ("/app.css", "app.css"),
    )
    for path, name in (*served, ("/favicon.svg", "favicon.svg")):
        r = httpx.get(web_server.url + path)
        assert r.status_code == 200
        assert r.headers["content-type"] == ASSETS[name]
        assert r.content == (STATIC_DIR / name).read_bytes()
        assert r.headers["x-content-type-options"] == "nosniff"
        csp = r.headers["content-security-policy"]
        assert csp == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'none'"
    for d in ("script-src", "style-src", "connect-src"):
        assert directives[d] == "'self'"  # no inline code, no other host
    # The page loads its script and stylesheet as files, never inline.
    html = httpx.get(web_server.url + "/").text
    assert '<script src="/app.js" defer></script>' in html
    assert "<style" not in html and "onclick" not in html


def test_page_files_are_gzipped_and_revalidated_with_an_etag(web_server):
    script = (STATIC_DIR / "app.js").read_bytes()
    raw = httpx.get(web_server.url + "/app.js", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip" and raw.headers["vary"] == "Accept-Encoding"
    assert int(raw.headers["content-length"]) < len(script) / 2  # what went over the wire
    assert raw.content == script  # as httpx decoded it
    etag = raw.headers["etag"]
    # A reload with the validator: 304 and no body, whatever the encoding asked for.
    again = httpx.get(web_server.url + "/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    # Clients that refuse gzip get the bytes as they are.
    for refusal in ("identity", "gzip;q=0", "br"):
        plain = httpx.get(web_server.url + "/app.js", headers={"Accept-Encoding": refusal})
        assert "content-encoding" not in plain.headers, refusal
        assert plain.content == script
    # Another file, or a changed one, has another validator.
    other = httpx.get(web_server.url + "/", headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["etag"] != etag


def test_api_routes_are_unaffected(web_server):
    assert httpx.get(web_server.url + "/.well-known/roost").json()["api"] == "/v1"
    r = httpx.get(web_server.url + "/no-such-page")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert "content-security-policy" not in r.headers
    schema = httpx.get(web_server.url + "/openapi.json").json()
    assert "/" not in schema["paths"] and "/app.js" not in schema["paths"]
