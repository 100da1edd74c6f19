"""The local server: safe static paths, loopback-only binding and Host checks, /api/analyze limits
and errors, and the live analysis with the tiny Gemma-3 LM and random-init SAEs."""

from __future__ import annotations

import http.client
import json
import os

import pytest
import torch

from tempolens.errors import ConfigError, TempolensError
from tempolens.serve import ServeConfig, is_loopback, make_analyzer, make_server, safe_path, start_in_thread

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def analyzer(tiny_lm_dir):
    from tempolens.saes.random_init import random_temporal_sae, random_topk_sae
    from tempolens.sources.open import load_subject_model

    model = load_subject_model(str(tiny_lm_dir), layer=2, progress=None)
    return make_analyzer(
        model, random_temporal_sae(32, 64, 8, seed=0), random_topk_sae(32, 64, 8, seed=1), max_tokens=40
    )


@pytest.fixture()
def site(tmp_path):
    root = tmp_path / "site"
    (root / "kernels").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>site</title>dashboards")
    (root / "kernels" / "index.html").write_text("kernels index")
    (root / "data.js").write_text("x()")
    (tmp_path / "secret.txt").write_text("do not serve")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    return root


@pytest.fixture()
def server(site, analyzer):
    srv = make_server(ServeConfig(site=site, port=0, max_chars=200), analyzer)
    start_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def request(srv, method, path, body=None, headers=None):
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    h = {"Host": f"127.0.0.1:{port}"}
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.getheader("Content-Type") or "", data


def post(srv, obj, **headers):
    return request(
        srv, "POST", "/api/analyze", json.dumps(obj).encode(), {"Content-Type": "application/json", **headers}
    )


def test_config_refuses_remote_hosts(site):
    with pytest.raises(ConfigError, match="not a loopback address"):
        ServeConfig(site=site, host="0.0.0.0")
    assert ServeConfig(site=site, host="0.0.0.0", allow_remote=True).host == "0.0.0.0"
    assert (
        is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("192.168.1.2")
    )
    with pytest.raises(ConfigError, match="--port"):
        ServeConfig(site=site, port=70000)
    with pytest.raises(ConfigError, match="is not a directory"):
        ServeConfig(site=site / "nope")


def test_safe_path(site):
    assert safe_path(site, "/index.html") == (site / "index.html").resolve()
    assert safe_path(site, "/kernels/") == (site / "kernels" / "index.html").resolve()
    assert safe_path(site, "/") == (site / "index.html").resolve()
    assert safe_path(site, "/data.js?v=1#x") == (site / "data.js").resolve()
    for bad in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/kernels/../../secret.txt",
        "/link.txt",
        "/..%2fsecret.txt",
        "/%00index.html",
        "/..\\secret.txt",
        "/missing.html",
    ]:
        assert safe_path(site, bad) is None, bad


def test_static_site_and_traversal_over_http(server):
    status, ctype, body = request(server, "GET", "/")
    assert status == 200 and b"dashboards" in body and ctype.startswith("text/html")
    status, _, body = request(server, "GET", "/../secret.txt")
    assert status == 404 and b"do not serve" not in body
    status, _, body = request(server, "GET", "/%2e%2e/secret.txt")
    assert status == 404
    status, _, _ = request(server, "GET", "/link.txt")
    assert status == 404
    status, _, body = request(server, "GET", "/index.html", headers={"Host": "evil.example:80"})
    assert status == 403 and b"localhost" in body
    status, ctype, body = request(server, "GET", "/live")
    assert status == 200 and b'data-page="live"' in body and b"Content-Security-Policy" in body
    assert b"/api/analyze" in request(server, "GET", "/live/assets/temporal.js")[2]


def test_analyze_returns_the_viewer_payload(server):
    status, ctype, body = post(server, {"text": "the cat sat . || the <script>alert(1)</script> ship & sea"})
    assert status == 200 and ctype.startswith("application/json")
    data = json.loads(body)
    assert data["n"] == len(data["tokens"]) and data["tokens"][:2] == ["the", "cat"]
    assert {m["id"] for m in data["matrices"]} >= {"predicted", "novel", "sae", "activations", "attn-0-0"}
    assert data["boundaries"] == [4] and "predicted" in data["scores"]
    assert b"<script>" not in body and "<script>" in data["tokens"] or "<" in data["tokens"]  # JSON escapes <, >, &
    assert len(data["top_novel"]) == data["n"]


@pytest.mark.parametrize(
    "body,headers,status,needle",
    [
        ({"text": "x" * 201}, {}, 413, "the limit is 200"),
        ({"text": "   "}, {}, 400, "empty"),
        ({"txt": "a"}, {}, 400, "string field 'text'"),
        ({"text": "the cat . " * 15}, {}, 400, "above the limit of 40"),
        ({"text": "a || || b"}, {}, 400, "empty event"),
        ({"text": "the cat"}, {"Origin": "http://evil.example"}, 403, "cross-origin"),
        ({"text": "the cat"}, {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ],
)
def test_analyze_errors_are_clear_json(server, body, headers, status, needle):
    got, ctype, data = post(server, body, **headers)
    assert got == status and ctype.startswith("application/json")
    assert needle in json.loads(data)["error"]


def test_bad_json_and_oversized_body(server):
    st, _, data = request(server, "POST", "/api/analyze", b"{nope", {"Content-Type": "application/json"})
    assert st == 400 and "not valid UTF-8 JSON" in json.loads(data)["error"]
    st, _, data = request(server, "POST", "/api/analyze", b"x" * 300_000, {"Content-Type": "application/json"})
    assert st == 413
    st, _, _ = request(server, "POST", "/elsewhere", b"{}", {"Content-Type": "application/json"})
    assert st == 404


def test_static_only_server_and_port_in_use(site):
    srv = make_server(ServeConfig(site=site, port=0, live=False))
    start_in_thread(srv)
    try:
        assert request(srv, "GET", "/live")[0] == 404
        assert request(srv, "GET", "/kernels/index.html")[0] == 200
        with pytest.raises(TempolensError, match="cannot listen"):
            make_server(ServeConfig(site=site, port=srv.server_address[1], live=False))
    finally:
        srv.shutdown()
        srv.server_close()


# -- hardening (issue: adversarial pass) -----------------------------------------------------------------
def raw_exchange(srv, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes; the answer (b'' when it closed without one)."""
    import socket

    with socket.create_connection(srv.server_address[:2], timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "ctype,ok",
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON;charset=UTF-8", True),
        ("text/plain;charset=application/json", False),  # CORS-safelisted: no preflight, so it must be refused
        ("application/json; charset=latin-1", False),
        ("application/json; boundary=x", False),
        ("application/jsonp", False),
        ("multipart/form-data; application/json", False),
        ("", False),
    ],
)
def test_content_type_must_be_exactly_json(server, ctype, ok):
    headers = {"Content-Type": ctype} if ctype else {}
    st, _, data = request(server, "POST", "/api/analyze", json.dumps({"text": "the cat"}).encode(), headers)
    if ok:
        assert st == 200, data
    else:
        assert st == 415 and "application/json" in json.loads(data)["error"]


def test_origin_must_be_absent_or_the_served_origin(server):
    port = server.server_address[1]
    assert post(server, {"text": "the cat"})[0] == 200  # no Origin: curl, same-origin navigations
    assert post(server, {"text": "the cat"}, Origin=f"http://127.0.0.1:{port}")[0] == 200
    for origin in (
        "null",
        "http://127.0.0.1:1",
        f"https://127.0.0.1:{port}",
        f"http://localhost:{port}",
        "file://",
        f"http://127.0.0.1:{port}/x",
    ):
        st, _, data = post(server, {"text": "the cat"}, Origin=origin)
        assert st == 403 and "cross-origin" in json.loads(data)["error"], origin


def test_deeply_nested_json_is_a_400_not_a_dropped_connection(server):
    for depth in (33, 100_000):
        body = ("[" * depth + "]" * depth).encode()
        st, _, data = request(server, "POST", "/api/analyze", body, {"Content-Type": "application/json"})
        assert st == 400 and "nested deeper than 32" in json.loads(data)["error"], depth
    # brackets inside strings do not count
    st, _, _ = post(server, {"text": "the cat " + "[" * 100})
    assert st in (200, 400)
    st, _, data = post(server, {"text": "the cat " + "[" * 100})
    assert "nested" not in json.loads(data).get("error", "")


def test_long_paths_are_answered_414_or_404(server):
    st, _, data = request(server, "GET", "/" + "a" * 300)  # one segment over 255 characters (was: dropped, traceback)
    assert st == 404 and json.loads(data)["error"] == "not found"
    st, _, _ = request(server, "GET", "/kernels/" + "b" * 256 + "/index.html")
    assert st == 404
    st, _, data = request(server, "GET", "/" + "a/" * 1500)
    assert st == 414 and "longer than 2048" in json.loads(data)["error"]
    # a request line over the stdlib's 65,536 limit: its own 414, as JSON with the security headers
    answer = raw_exchange(server, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 414") and b"X-Frame-Options: DENY" in answer


def _headers(srv, method, path, body=None, headers=None):
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request(method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def test_security_headers_on_every_response(server, site):
    import re

    from tempolens.dashboards.site import ASSETS_DIR, PAGE_CSP
    from tempolens.temporal.page import write_events_page

    empty = {"columns": [], "rows": []}
    write_events_page(site, {"header": "h", "summary": empty, "texts": empty})
    cases = [
        ("GET", "/", None, 200),
        ("GET", "/live", None, 200),
        ("GET", "/data.js", None, 200),
        ("GET", "/nope", None, 404),
        ("GET", "/live/assets/temporal.js", None, 200),
        ("GET", "/live/assets/style.css", None, 200),
        ("GET", "/live/assets/secret.txt", None, 404),
        ("GET", "/live/assets/../serve.py", None, 404),
        ("GET", "/kernels/events.html", None, 200),
        ("GET", "/api/health", None, 200),
        ("HEAD", "/live", None, 200),
        ("POST", "/api/analyze", b"{}", 415),
        ("PUT", "/", None, 501),
        ("GET", "/" + "a/" * 1500, None, 414),
    ]
    for method, path, body, status in cases:
        st, h, data = _headers(server, method, path, body)
        assert st == status, (method, path, st)
        assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer"
        assert h["x-content-type-options"] == "nosniff"
        csp = h["content-security-policy"]
        script_src = csp.split("script-src", 1)[-1].split(";")[0]
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in script_src, (path, csp)
    # /live and the kernel pages: the header is the pages' own meta CSP (no inline script or style) + no framing
    for path in ("/live", "/kernels/events.html", "/index.html"):
        st, h, data = _headers(server, "GET", path)
        assert h["content-security-policy"] == PAGE_CSP + "; frame-ancestors 'none'", path
        assert "unsafe-inline" not in h["content-security-policy"]
        assert re.findall(r"<script(?![^>]*\bsrc=)", data.decode()) == [] and "<style" not in data.decode(), path
        if path != "/index.html":  # the test site's own index.html is a plain stub
            meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', data.decode()).group(1)
            assert meta == PAGE_CSP, path
    st, h, data = _headers(server, "GET", "/live/assets/temporal.js")
    assert data == (ASSETS_DIR / "temporal.js").read_bytes() and h["content-type"].startswith("text/javascript")
    assert '<script src="/live/assets/temporal.js" defer>' in _headers(server, "GET", "/live")[2].decode()


def test_no_page_of_the_site_or_of_serve_allows_inline_script_or_style(site):
    import re
    from pathlib import Path

    import tempolens

    src = Path(tempolens.__file__).parent
    offenders = [
        p
        for p in src.rglob("*")
        if p.is_file()
        and p.suffix in (".py", ".html", ".js")
        and re.search(r"(script|style)-src[^;\"]*unsafe-inline", p.read_text(errors="replace"))
    ]
    assert offenders == []


def test_surrogates_get_a_message_about_the_text(server):
    body = b'{"text": "the cat \\ud800 sat"}'
    st, _, data = request(server, "POST", "/api/analyze", body, {"Content-Type": "application/json"})
    err = json.loads(data)["error"]
    assert st == 400 and "U+D800 at character 8" in err and "surrogate" in err and "offset" not in err


def test_idle_and_slow_connections_are_ended(site):
    import socket
    import time

    srv = make_server(ServeConfig(site=site, port=0, live=False, timeout=1.0))
    start_in_thread(srv)
    try:
        t0 = time.monotonic()
        idle = raw_exchange(srv, b"")  # connects, sends nothing
        assert idle.startswith(b"HTTP/1.0 408") and time.monotonic() - t0 < 5
        with socket.create_connection(srv.server_address[:2], timeout=10) as s:  # drips a header byte every 0.3 s
            t0 = time.monotonic()
            answer = b""
            for ch in b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                try:
                    s.sendall(bytes([ch]))
                except OSError:
                    break
                time.sleep(0.3)
                if time.monotonic() - t0 > 6:
                    break
            try:
                answer = s.recv(65536)
            except OSError:
                pass
            assert time.monotonic() - t0 < 6 and answer.startswith(b"HTTP/1.0 408")
        assert request(srv, "GET", "/index.html")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_serve_timeout_option_is_validated(site):
    with pytest.raises(ConfigError, match="--timeout"):
        ServeConfig(site=site, timeout=0)
