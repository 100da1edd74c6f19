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
    from tempolens.sources.models import load_subject_model

    model = load_subject_model(str(tiny_lm_dir), layer=2, progress=None)
    return make_analyzer(model, random_temporal_sae(32, 64, 8, seed=0), random_topk_sae(32, 64, 8, seed=1), max_tokens=40)


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
    return request(srv, "POST", "/api/analyze", json.dumps(obj).encode(), {"Content-Type": "application/json", **headers})


def test_config_refuses_remote_hosts(site):
    with pytest.raises(ConfigError, match="not a loopback address"):
        ServeConfig(site=site, host="0.0.0.0")
    assert ServeConfig(site=site, host="0.0.0.0", allow_remote=True).host == "0.0.0.0"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("192.168.1.2")
    with pytest.raises(ConfigError, match="--port"):
        ServeConfig(site=site, port=70000)
    with pytest.raises(ConfigError, match="is not a directory"):
        ServeConfig(site=site / "nope")


def test_safe_path(site):
    assert safe_path(site, "/index.html") == (site / "index.html").resolve()
    assert safe_path(site, "/kernels/") == (site / "kernels" / "index.html").resolve()
    assert safe_path(site, "/") == (site / "index.html").resolve()
    assert safe_path(site, "/data.js?v=1#x") == (site / "data.js").resolve()
    for bad in ["/../secret.txt", "/%2e%2e/secret.txt", "/kernels/../../secret.txt", "/link.txt", "/..%2fsecret.txt",
                "/%00index.html", "/..\\secret.txt", "/missing.html"]:
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
    assert status == 200 and b"/api/analyze" in body and b"Content-Security-Policy" in body


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
